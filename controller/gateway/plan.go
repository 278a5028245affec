package gateway

// The planner: which listeners a Gateway accepts, which routes attach to
// which listener and which one carries its traffic, which backendRefs
// resolve, and the conditions the spec defines for each. Pure: the
// reconciler hands it what it read from the cache.

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

const groupName = gatewayv1.GroupName

// routeKind is what differs between the two route kinds zerohop serves.
type routeKind struct {
	kind     gatewayv1.Kind
	protocol gatewayv1.ProtocolType // of the listeners it attaches to
	proto    corev1.Protocol        // of the backend ports it sends to
}

var (
	tcpRoute = routeKind{kind: "TCPRoute", protocol: gatewayv1.TCPProtocolType, proto: corev1.ProtocolTCP}
	udpRoute = routeKind{kind: "UDPRoute", protocol: gatewayv1.UDPProtocolType, proto: corev1.ProtocolUDP}
)

// kindFor is the route kind a listener protocol takes, if zerohop serves
// that protocol.
func kindFor(p gatewayv1.ProtocolType) (routeKind, bool) {
	switch p {
	case gatewayv1.TCPProtocolType:
		return tcpRoute, true
	case gatewayv1.UDPProtocolType:
		return udpRoute, true
	}
	return routeKind{}, false
}

// route is a TCPRoute or a UDPRoute as the planner reads it.
type route struct {
	// obj is the object read, for the status write.
	obj        client.Object
	kind       routeKind
	namespace  string
	name       string
	created    time.Time
	generation int64
	parents    []gatewayv1.ParentReference
	// backends are the backendRefs of the route's one rule (the CRD
	// allows exactly one).
	backends []gatewayv1.BackendRef
	// status is the route's status.parents as read.
	status []gatewayv1.RouteParentStatus
}

func (r *route) key() string { return r.namespace + "/" + r.name }

func (r *route) String() string { return string(r.kind.kind) + " " + r.key() }

func fromTCPRoute(o *gatewayv1.TCPRoute) *route {
	r := &route{obj: o, kind: tcpRoute, namespace: o.Namespace, name: o.Name, created: o.CreationTimestamp.Time,
		generation: o.Generation, parents: o.Spec.ParentRefs, status: o.Status.Parents}
	if len(o.Spec.Rules) > 0 {
		r.backends = o.Spec.Rules[0].BackendRefs
	}
	return r
}

func fromUDPRoute(o *gatewayv1.UDPRoute) *route {
	r := &route{obj: o, kind: udpRoute, namespace: o.Namespace, name: o.Name, created: o.CreationTimestamp.Time,
		generation: o.Generation, parents: o.Spec.ParentRefs, status: o.Status.Parents}
	if len(o.Spec.Rules) > 0 {
		r.backends = o.Spec.Rules[0].BackendRefs
	}
	return r
}

// older orders routes as the spec gives precedence: the oldest first,
// then by namespace/name.
func older(a, b *route) int {
	return cmp.Or(a.created.Compare(b.created), cmp.Compare(a.namespace, b.namespace), cmp.Compare(a.name, b.name))
}

// world is what the planner may look up besides the Gateway and its
// routes: namespaces' labels (allowedRoutes selectors), Services and their
// EndpointSlices (backends) and ReferenceGrants (cross-namespace
// backends). Absent keys are absent objects.
type world struct {
	namespaces map[string]labels.Set
	services   map[types.NamespacedName]*corev1.Service
	grants     map[string][]*gatewayv1.ReferenceGrant // by namespace
}

// listener is one listener of the Gateway and what the planner decided
// about it.
type listener struct {
	spec gatewayv1.Listener
	// port is the Service port name that carries the listener.
	port     string
	kind     routeKind
	accepted bool
	// refused says why the listener is not accepted (reason, message).
	refused condition
	// kinds are the route kinds it supports; badKinds those it was asked
	// for and does not.
	kinds    []gatewayv1.RouteGroupKind
	badKinds []string
	// attached are the accepted routes attached to it, oldest first; the
	// first carries its traffic (TCP and UDP listeners cannot tell the
	// routes' connections apart).
	attached []*route
}

// active is the route that carries the listener's traffic, or nil.
func (l *listener) active() *route {
	if len(l.attached) == 0 {
		return nil
	}
	return l.attached[0]
}

type condition struct{ reason, message string }

// backend is one backendRef of a route, resolved or not.
type backend struct {
	ref    gatewayv1.BackendRef
	weight int32
	// svc and port are set when the reference resolves.
	svc  *corev1.Service
	port corev1.ServicePort
	// problem is why it does not (reason, message).
	problem condition
}

func (b *backend) resolved() bool { return b.svc != nil }

// parentResult is a route's status towards one parentRef that names this
// Gateway.
type parentResult struct {
	ref      gatewayv1.ParentReference
	accepted metav1.Condition
	resolved metav1.Condition
}

// plan is everything decided about one Gateway.
type plan struct {
	gw        *gatewayv1.Gateway
	className string
	// accepted is the Gateway's Accepted condition; when False nothing
	// is built for it.
	accepted  metav1.Condition
	listeners []*listener
	// requested are the addresses spec.addresses asks for.
	requested []netip.Addr
	// addressProblem is set when spec.addresses cannot be served as
	// given (Programmed=False, AddressNotUsable).
	addressProblem string
	// routes holds, per route that names this Gateway, its status towards
	// each such parentRef, in the route's order.
	routes map[*route][]parentResult
	// backends holds each attached route's resolved backendRefs.
	backends map[*route][]backend
}

// classState is what the planner needs of the Gateway's class.
type classState struct {
	name     string
	accepted bool
	message  string
}

// makePlan decides about gw: its listeners, the routes that name it (in
// any order) and their backends.
func makePlan(gw *gatewayv1.Gateway, class classState, routes []*route, w world) *plan {
	p := &plan{gw: gw, className: class.name, routes: map[*route][]parentResult{}, backends: map[*route][]backend{}}
	gen := gw.Generation
	cond := func(status metav1.ConditionStatus, reason gatewayv1.GatewayConditionReason, format string, args ...any) metav1.Condition {
		return metav1.Condition{Type: string(gatewayv1.GatewayConditionAccepted), Status: status, Reason: string(reason),
			Message: fmt.Sprintf(format, args...), ObservedGeneration: gen}
	}

	p.listeners = planListeners(gw)
	var good, bad []string
	for _, l := range p.listeners {
		if l.accepted {
			good = append(good, string(l.spec.Name))
		} else {
			bad = append(bad, fmt.Sprintf("%s (%s)", l.spec.Name, l.refused.message))
		}
	}
	addrProblem, unsupported := p.planAddresses()
	switch {
	case !class.accepted:
		p.accepted = cond(metav1.ConditionFalse, gatewayv1.GatewayReasonInvalid, "GatewayClass %s is not accepted: %s", class.name, class.message)
	case gw.Spec.Infrastructure != nil && gw.Spec.Infrastructure.ParametersRef != nil:
		ref := gw.Spec.Infrastructure.ParametersRef
		p.accepted = cond(metav1.ConditionFalse, gatewayv1.GatewayReasonInvalidParameters,
			"infrastructure.parametersRef %s/%s %s: zerohop takes no parameters; use infrastructure.annotations (zerohop.io/address-pool) instead", ref.Group, ref.Kind, ref.Name)
	case unsupported != "":
		p.accepted = cond(metav1.ConditionFalse, gatewayv1.GatewayReasonUnsupportedAddress, "%s", unsupported)
	case len(good) == 0:
		p.accepted = cond(metav1.ConditionFalse, gatewayv1.GatewayReasonListenersNotValid, "no listener can be served: %s", strings.Join(bad, "; "))
	case len(bad) > 0:
		p.accepted = cond(metav1.ConditionTrue, gatewayv1.GatewayReasonListenersNotValid, "serving listeners %s; not %s", strings.Join(good, ", "), strings.Join(bad, "; "))
	default:
		p.accepted = cond(metav1.ConditionTrue, gatewayv1.GatewayReasonAccepted, "serving listeners %s", strings.Join(good, ", "))
	}
	p.addressProblem = addrProblem

	slices.SortFunc(routes, older)
	gwAccepted := p.accepted.Status == metav1.ConditionTrue
	for _, r := range routes {
		resolved, backends := resolveBackends(r, w)
		for _, ref := range r.parents {
			if !namesGateway(ref, r.namespace, gw) {
				continue
			}
			res := parentResult{ref: ref, resolved: resolved}
			res.resolved.ObservedGeneration = r.generation
			res.accepted = p.attach(r, ref, gwAccepted, w)
			res.accepted.ObservedGeneration = r.generation
			p.routes[r] = append(p.routes[r], res)
		}
		if _, named := p.routes[r]; named {
			p.backends[r] = backends
		}
	}
	// Routes that share a listener: the oldest carries its traffic; the
	// others say so.
	for r, results := range p.routes {
		for i := range results {
			if results[i].accepted.Status != metav1.ConditionTrue {
				continue
			}
			var shadowed []string
			for _, l := range p.listeners {
				if a := l.active(); a != nil && a != r && slices.Contains(l.attached, r) {
					shadowed = append(shadowed, fmt.Sprintf("listener %s's connections go to the older %s", l.spec.Name, a))
				}
			}
			if len(shadowed) > 0 {
				results[i].accepted.Message += "; " + strings.Join(shadowed, ", ")
			}
		}
	}
	return p
}

// planListeners decides each listener: protocol, route kinds, and the
// Service port that will carry it.
func planListeners(gw *gatewayv1.Gateway) []*listener {
	var out []*listener
	used := map[string]bool{}
	for _, spec := range gw.Spec.Listeners {
		l := &listener{spec: spec}
		out = append(out, l)
		kind, ok := kindFor(spec.Protocol)
		if !ok {
			l.refused = condition{string(gatewayv1.ListenerReasonUnsupportedProtocol),
				fmt.Sprintf("protocol %s: zerohop serves TCP and UDP listeners only", spec.Protocol)}
			continue
		}
		l.kind, l.accepted = kind, true
		l.port = portName(string(spec.Name), used)
		used[l.port] = true
		if spec.AllowedRoutes == nil || len(spec.AllowedRoutes.Kinds) == 0 {
			l.kinds = []gatewayv1.RouteGroupKind{{Group: new(gatewayv1.Group(groupName)), Kind: kind.kind}}
			continue
		}
		for _, k := range spec.AllowedRoutes.Kinds {
			g := groupName
			if k.Group != nil {
				g = string(*k.Group)
			}
			if g == groupName && k.Kind == kind.kind {
				if !slices.ContainsFunc(l.kinds, func(x gatewayv1.RouteGroupKind) bool { return x.Kind == k.Kind }) {
					l.kinds = append(l.kinds, gatewayv1.RouteGroupKind{Group: new(gatewayv1.Group(groupName)), Kind: kind.kind})
				}
				continue
			}
			l.badKinds = append(l.badKinds, fmt.Sprintf("%s/%s", g, k.Kind))
		}
	}
	return out
}

// portName is the Service port name for a listener: its own name when
// that is a valid port name, else a name derived from it.
func portName(listener string, used map[string]bool) string {
	name := listener
	if len(validation.IsDNS1123Label(name)) > 0 {
		h := fnv.New32a()
		h.Write([]byte(listener))
		name = fmt.Sprintf("listener-%08x", h.Sum32())
	}
	for i := 2; used[name]; i++ {
		name = fmt.Sprintf("%s-%d", strings.TrimSuffix(name[:min(len(name), 58)], "-"), i)
	}
	return name
}

// planAddresses reads spec.addresses: IP addresses are asked of the pools
// (at most one per family); a value-less IPAddress asks for any address,
// as no entry does. Other types are unsupported (Accepted=False); IP
// addresses zerohop cannot ask for as given give addrProblem
// (Programmed=False).
func (p *plan) planAddresses() (addrProblem, unsupported string) {
	families := map[bool]netip.Addr{}
	for i, a := range p.gw.Spec.Addresses {
		typ := gatewayv1.IPAddressType
		if a.Type != nil {
			typ = *a.Type
		}
		if typ != gatewayv1.IPAddressType {
			return "", fmt.Sprintf("spec.addresses[%d]: type %s: zerohop assigns IP addresses from IPAddressPools only", i, typ)
		}
		if a.Value == "" {
			continue
		}
		ip, err := netip.ParseAddr(a.Value)
		if err != nil || ip.Zone() != "" {
			return "", fmt.Sprintf("spec.addresses[%d]: %q is not an IP address", i, a.Value)
		}
		ip = ip.Unmap()
		if prev, ok := families[ip.Is4()]; ok {
			addrProblem = fmt.Sprintf("spec.addresses asks for %s and %s: zerohop gives a Gateway at most one address per family", prev, ip)
			continue
		}
		families[ip.Is4()] = ip
		p.requested = append(p.requested, ip)
	}
	return addrProblem, ""
}

// namesGateway reports whether a parentRef of a route in routeNS names gw.
func namesGateway(ref gatewayv1.ParentReference, routeNS string, gw *gatewayv1.Gateway) bool {
	group, kind, ns := groupName, gatewayv1.Kind("Gateway"), routeNS
	if ref.Group != nil {
		group = string(*ref.Group)
	}
	if ref.Kind != nil {
		kind = *ref.Kind
	}
	if ref.Namespace != nil {
		ns = string(*ref.Namespace)
	}
	return group == groupName && kind == "Gateway" && ns == gw.Namespace && string(ref.Name) == gw.Name
}

// attach decides a route's Accepted condition towards one parentRef, and
// records it on the listeners it attaches to.
func (p *plan) attach(r *route, ref gatewayv1.ParentReference, gwAccepted bool, w world) metav1.Condition {
	refuse := func(reason gatewayv1.RouteConditionReason, format string, args ...any) metav1.Condition {
		return metav1.Condition{Type: string(gatewayv1.RouteConditionAccepted), Status: metav1.ConditionFalse,
			Reason: string(reason), Message: fmt.Sprintf(format, args...)}
	}
	var matched []*listener
	for _, l := range p.listeners {
		if ref.SectionName != nil && l.spec.Name != *ref.SectionName {
			continue
		}
		if ref.Port != nil && l.spec.Port != *ref.Port {
			continue
		}
		matched = append(matched, l)
	}
	if len(matched) == 0 {
		var want []string
		if ref.SectionName != nil {
			want = append(want, fmt.Sprintf("named %s", *ref.SectionName))
		}
		if ref.Port != nil {
			want = append(want, fmt.Sprintf("on port %d", *ref.Port))
		}
		return refuse(gatewayv1.RouteReasonNoMatchingParent, "Gateway %s/%s has no listener %s", p.gw.Namespace, p.gw.Name, strings.Join(want, " "))
	}
	if !gwAccepted {
		return refuse(gatewayv1.RouteReasonNotAllowedByListeners, "Gateway %s/%s is not accepted: %s", p.gw.Namespace, p.gw.Name, p.accepted.Message)
	}
	var names, why []string
	for _, l := range matched {
		switch {
		case !l.accepted:
			why = append(why, fmt.Sprintf("listener %s: %s", l.spec.Name, l.refused.message))
		case !slices.ContainsFunc(l.kinds, func(k gatewayv1.RouteGroupKind) bool { return k.Kind == r.kind.kind }):
			why = append(why, fmt.Sprintf("listener %s does not take %ss", l.spec.Name, r.kind.kind))
		case !l.admits(p.gw.Namespace, r.namespace, w):
			why = append(why, fmt.Sprintf("listener %s does not take routes from namespace %s", l.spec.Name, r.namespace))
		default:
			names = append(names, string(l.spec.Name))
			if !slices.Contains(l.attached, r) {
				l.attached = append(l.attached, r) // routes come oldest first
			}
		}
	}
	if len(names) == 0 {
		return refuse(gatewayv1.RouteReasonNotAllowedByListeners, "%s", strings.Join(why, "; "))
	}
	return metav1.Condition{Type: string(gatewayv1.RouteConditionAccepted), Status: metav1.ConditionTrue,
		Reason: string(gatewayv1.RouteReasonAccepted), Message: "attached to listener " + strings.Join(names, ", ")}
}

// admits applies allowedRoutes.namespaces to a route in routeNS.
func (l *listener) admits(gwNS, routeNS string, w world) bool {
	from := gatewayv1.NamespacesFromSame
	var sel *metav1.LabelSelector
	if ar := l.spec.AllowedRoutes; ar != nil && ar.Namespaces != nil {
		if ar.Namespaces.From != nil {
			from = *ar.Namespaces.From
		}
		sel = ar.Namespaces.Selector
	}
	switch from {
	case gatewayv1.NamespacesFromAll:
		return true
	case gatewayv1.NamespacesFromSame:
		return routeNS == gwNS
	case gatewayv1.NamespacesFromSelector:
		if sel == nil {
			return false
		}
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			return false
		}
		nsLabels, ok := w.namespaces[routeNS]
		return ok && s.Matches(nsLabels)
	}
	return false
}

// resolveBackends resolves a route's backendRefs and gives its
// ResolvedRefs condition: True when every one resolves, else False with
// the first problem's reason and every problem in the message.
func resolveBackends(r *route, w world) (metav1.Condition, []backend) {
	var out []backend
	var problems []string
	reason := ""
	for i, ref := range r.backends {
		b := backend{ref: ref, weight: 1}
		if ref.Weight != nil {
			b.weight = *ref.Weight
		}
		b.problem = resolveBackend(&b, r, w)
		if !b.resolved() {
			problems = append(problems, fmt.Sprintf("backendRefs[%d]: %s", i, b.problem.message))
			if reason == "" {
				reason = b.problem.reason
			}
		}
		out = append(out, b)
	}
	c := metav1.Condition{Type: string(gatewayv1.RouteConditionResolvedRefs), Status: metav1.ConditionTrue,
		Reason: string(gatewayv1.RouteReasonResolvedRefs), Message: "every backendRef resolves"}
	if len(problems) > 0 {
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, reason, strings.Join(problems, "; ")
	}
	return c, out
}

func resolveBackend(b *backend, r *route, w world) condition {
	ref := b.ref.BackendObjectReference
	group, kind, ns := "", gatewayv1.Kind("Service"), r.namespace
	if ref.Group != nil {
		group = string(*ref.Group)
	}
	if ref.Kind != nil {
		kind = *ref.Kind
	}
	if ref.Namespace != nil {
		ns = string(*ref.Namespace)
	}
	if group != "" || kind != "Service" {
		return condition{string(gatewayv1.RouteReasonInvalidKind),
			fmt.Sprintf("%s %s: zerohop sends to Services (group \"\") only", strings.TrimPrefix(group+"/"+string(kind), "/"), ref.Name)}
	}
	if ns != r.namespace && !granted(w.grants[ns], r.kind.kind, r.namespace, string(ref.Name)) {
		return condition{string(gatewayv1.RouteReasonRefNotPermitted),
			fmt.Sprintf("Service %s/%s is in another namespace and no ReferenceGrant in %s allows %ss from %s to it", ns, ref.Name, ns, r.kind.kind, r.namespace)}
	}
	svc := w.services[types.NamespacedName{Namespace: ns, Name: string(ref.Name)}]
	if svc == nil {
		return condition{string(gatewayv1.RouteReasonBackendNotFound), fmt.Sprintf("Service %s/%s not found", ns, ref.Name)}
	}
	if ref.Port == nil {
		return condition{string(gatewayv1.RouteReasonBackendNotFound), fmt.Sprintf("Service %s/%s: no port given", ns, ref.Name)}
	}
	for _, sp := range svc.Spec.Ports {
		if sp.Port == *ref.Port && cmp.Or(sp.Protocol, corev1.ProtocolTCP) == r.kind.proto {
			b.svc, b.port = svc, sp
			return condition{}
		}
	}
	return condition{string(gatewayv1.RouteReasonBackendNotFound), fmt.Sprintf("Service %s/%s has no %s port %d", ns, ref.Name, r.kind.proto, *ref.Port)}
}

// granted reports whether one of grants (in the Service's namespace)
// allows routes of kind in fromNS to refer to the Service named name.
func granted(grants []*gatewayv1.ReferenceGrant, kind gatewayv1.Kind, fromNS, name string) bool {
	for _, g := range grants {
		from := slices.ContainsFunc(g.Spec.From, func(f gatewayv1.ReferenceGrantFrom) bool {
			return f.Group == groupName && f.Kind == kind && string(f.Namespace) == fromNS
		})
		to := slices.ContainsFunc(g.Spec.To, func(t gatewayv1.ReferenceGrantTo) bool {
			return t.Group == "" && t.Kind == "Service" && (t.Name == nil || string(*t.Name) == name)
		})
		if from && to {
			return true
		}
	}
	return false
}
