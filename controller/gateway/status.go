package gateway

// The Gateway's status, computed back from the Service it became: its
// addresses and the Service's zerohop.io/ conditions. Pure.

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/zerohop/zerohop/controller"
	"github.com/zerohop/zerohop/controller/ipam"
)

// observed is what the reconciler saw of the Gateway's Service.
type observed struct {
	// svc is the Service as the cache holds it (nil: not there yet).
	svc *corev1.Service
	// blocked is set when a Service of that name exists that is not this
	// Gateway's.
	blocked string
	// answers: some listener's route answers new flows, with an
	// endpoint that takes them or a reject share that refuses them.
	answers bool
}

// programmed is the Gateway's Programmed condition: True once its address
// is assigned, the datapath entries are in place on every node that runs
// the datapath, and the address is announced. A Gateway whose routes
// answer no new flow at all (no listener has a route with a backendRef of
// weight above 0, valid or not) is Programmed without being
// announced: the speakers attract no traffic they could only drop, and the
// message says so.
func (p *plan) programmed(o observed) metav1.Condition {
	c := metav1.Condition{Type: string(gatewayv1.GatewayConditionProgrammed), ObservedGeneration: p.gw.Generation, Status: metav1.ConditionFalse}
	set := func(reason gatewayv1.GatewayConditionReason, format string, args ...any) metav1.Condition {
		c.Reason, c.Message = string(reason), fmt.Sprintf(format, args...)
		return c
	}
	if p.accepted.Status != metav1.ConditionTrue {
		return set(gatewayv1.GatewayReasonInvalid, "the Gateway is not accepted")
	}
	if o.blocked != "" {
		return set(gatewayv1.GatewayReasonInvalid, "%s", o.blocked)
	}
	if p.addressProblem != "" {
		return set(gatewayv1.GatewayReasonAddressNotUsable, "%s", p.addressProblem)
	}
	if o.svc == nil {
		return set(gatewayv1.GatewayReasonPending, "Service %s/%s not created yet", p.gw.Namespace, ServiceName(p.gw.Name, p.className))
	}
	svc := o.svc
	name := svc.Namespace + "/" + svc.Name
	assigned := meta.FindStatusCondition(svc.Status.Conditions, controller.ConditionAddressAssigned)
	ips := ingressIPs(svc)
	var missing []string
	for _, ip := range p.requested {
		if !slices.Contains(ips, ip) {
			missing = append(missing, ip.String())
		}
	}
	switch {
	case assigned == nil:
		return set(gatewayv1.GatewayReasonAddressNotAssigned, "Service %s: no address yet", name)
	case len(missing) > 0:
		msg := assigned.Message
		if assigned.Status == metav1.ConditionTrue {
			msg = "held: " + msg
		}
		return set(gatewayv1.GatewayReasonAddressNotUsable, "%s not assigned (%s: %s); see the Events of Service %s", strings.Join(missing, ", "), assigned.Reason, msg, name)
	case assigned.Status != metav1.ConditionTrue || len(ips) == 0:
		reason := gatewayv1.GatewayReasonAddressNotAssigned
		switch ipam.Reason(assigned.Reason) {
		case ipam.ReasonIPNotInPool, ipam.ReasonIPInUse, ipam.ReasonInvalidRequest:
			reason = gatewayv1.GatewayReasonAddressNotUsable
		}
		return set(reason, "%s: %s (Service %s)", assigned.Reason, assigned.Message, name)
	}
	var parts []string
	if dp := meta.FindStatusCondition(svc.Status.Conditions, controller.ConditionDatapathProgrammed); dp != nil {
		if dp.Status != metav1.ConditionTrue {
			return set(gatewayv1.GatewayReasonPending, "datapath: %s", dp.Message)
		}
		parts = append(parts, "datapath "+dp.Message)
	}
	switch ann := meta.FindStatusCondition(svc.Status.Conditions, controller.ConditionAnnounced); {
	case ann != nil && ann.Status == metav1.ConditionTrue:
		parts = append(parts, ann.Message)
	case !o.answers:
		parts = append(parts, "not announced: no route has a ready backend or a backendRef to reject for, so no traffic is attracted until one has")
	case ann == nil:
		return set(gatewayv1.GatewayReasonPending, "not announced yet")
	default:
		return set(gatewayv1.GatewayReasonPending, "%s: %s", ann.Reason, ann.Message)
	}
	c.Status = metav1.ConditionTrue
	return set(gatewayv1.GatewayReasonProgrammed, "%s", strings.Join(parts, "; "))
}

func ingressIPs(svc *corev1.Service) []netip.Addr {
	var out []netip.Addr
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if ip, err := netip.ParseAddr(in.IP); err == nil {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

// status is the Gateway's whole status as zerohop writes it, merged into
// have: the conditions of other types are kept.
func (p *plan) status(have gatewayv1.GatewayStatus, o observed) gatewayv1.GatewayStatus {
	st := *have.DeepCopy()
	gen := p.gw.Generation
	prog := p.programmed(o)
	meta.SetStatusCondition(&st.Conditions, p.accepted)
	meta.SetStatusCondition(&st.Conditions, prog)

	st.Addresses = nil
	if o.svc != nil && o.blocked == "" && p.accepted.Status == metav1.ConditionTrue {
		for _, ip := range ingressIPs(o.svc) {
			st.Addresses = append(st.Addresses, gatewayv1.GatewayStatusAddress{Type: new(gatewayv1.IPAddressType), Value: ip.String()})
		}
	}

	old := map[gatewayv1.SectionName][]metav1.Condition{}
	for _, l := range have.Listeners {
		old[l.Name] = l.Conditions
	}
	st.Listeners = nil
	for _, l := range p.listeners {
		ls := gatewayv1.ListenerStatus{Name: l.spec.Name, SupportedKinds: l.kinds, Conditions: old[l.spec.Name]}
		if ls.SupportedKinds == nil {
			ls.SupportedKinds = []gatewayv1.RouteGroupKind{}
		}
		ls.AttachedRoutes = int32(len(l.attached))
		cond := func(t gatewayv1.ListenerConditionType, status metav1.ConditionStatus, reason gatewayv1.ListenerConditionReason, msg string) {
			meta.SetStatusCondition(&ls.Conditions, metav1.Condition{Type: string(t), Status: status, Reason: string(reason), Message: msg, ObservedGeneration: gen})
		}
		if l.accepted {
			cond(gatewayv1.ListenerConditionAccepted, metav1.ConditionTrue, gatewayv1.ListenerReasonAccepted, fmt.Sprintf("%s on port %d", l.spec.Protocol, l.spec.Port))
		} else {
			cond(gatewayv1.ListenerConditionAccepted, metav1.ConditionFalse, gatewayv1.ListenerConditionReason(l.refused.reason), l.refused.message)
		}
		if len(l.badKinds) > 0 {
			cond(gatewayv1.ListenerConditionResolvedRefs, metav1.ConditionFalse, gatewayv1.ListenerReasonInvalidRouteKinds,
				fmt.Sprintf("allowedRoutes.kinds %s: a %s listener takes %ss only", strings.Join(l.badKinds, ", "), l.spec.Protocol, l.kind.kind))
		} else {
			cond(gatewayv1.ListenerConditionResolvedRefs, metav1.ConditionTrue, gatewayv1.ListenerReasonResolvedRefs, "route kinds resolved")
		}
		switch {
		case !l.accepted || p.accepted.Status != metav1.ConditionTrue:
			cond(gatewayv1.ListenerConditionProgrammed, metav1.ConditionFalse, gatewayv1.ListenerReasonInvalid, "not accepted")
		case prog.Status == metav1.ConditionTrue:
			msg := "no route attached: connections are dropped"
			if r := l.active(); r != nil {
				msg = "connections go to " + r.String()
			}
			cond(gatewayv1.ListenerConditionProgrammed, metav1.ConditionTrue, gatewayv1.ListenerReasonProgrammed, msg)
		default:
			cond(gatewayv1.ListenerConditionProgrammed, metav1.ConditionFalse, gatewayv1.ListenerReasonPending, prog.Message)
		}
		st.Listeners = append(st.Listeners, ls)
	}
	return st
}

// routeStatus is a route's status.parents with this Gateway's entries
// replaced by the plan's (or removed, with nil results): entries of other
// controllers and of other parents stay as they are.
func routeStatus(have []gatewayv1.RouteParentStatus, gw *gatewayv1.Gateway, routeNS string, results []parentResult) []gatewayv1.RouteParentStatus {
	var out []gatewayv1.RouteParentStatus
	for _, ps := range have {
		if ps.ControllerName == ControllerName && namesGateway(ps.ParentRef, routeNS, gw) {
			continue
		}
		out = append(out, ps)
	}
	for _, res := range results {
		var conds []metav1.Condition
		for _, ps := range have {
			if ps.ControllerName == ControllerName && sameRef(ps.ParentRef, res.ref) {
				conds = slices.Clone(ps.Conditions)
			}
		}
		meta.SetStatusCondition(&conds, res.accepted)
		meta.SetStatusCondition(&conds, res.resolved)
		out = append(out, gatewayv1.RouteParentStatus{ParentRef: res.ref, ControllerName: ControllerName, Conditions: conds})
	}
	return out
}

func sameRef(a, b gatewayv1.ParentReference) bool { return reflect.DeepEqual(a, b) }
