package gateway

// What a Gateway becomes: a LoadBalancer Service of zerohop's class, and
// the EndpointSlices of each listener's route, weighted. Pure.

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/controller"
)

// targetPortName is the target port of every port of a Gateway's Service.
// A name, not a number: a slice serves a port only if it lists it by
// name (the datapath and kube-proxy both read it so), so one listener's
// endpoints never serve another listener.
const targetPortName = "gateway"

// weightScale is what a listener's weights add up to: each endpoint's
// weight is its backendRef's share of the rule's total weight, divided
// among that backend's ready endpoints, times weightScale. 2^30 keeps a
// share of a millionth of a thousand endpoints apart, and every sum below
// 2^32.
const weightScale = 1 << 30

// LabelPort on the Gateway's EndpointSlices names the Service port, and
// so the listener, whose endpoints they hold.
const LabelPort = "gateway.zerohop.io/port"

// maxEndpointsPerSlice is what Kubernetes' EndpointSlice controller puts
// in a slice by default.
const maxEndpointsPerSlice = 100

// ServiceName is the name of the Service a Gateway becomes:
// <gateway>-<class>, as GEP-1762 recommends, or a shortened form with a
// hash when that is no valid Service name.
func ServiceName(gateway, class string) string {
	name := gateway + "-" + class
	if len(validation.IsDNS1035Label(name)) == 0 {
		return name
	}
	h := fnv.New32a()
	h.Write([]byte(gateway + "/" + class))
	base := strings.Trim(strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '-'
	}, strings.ToLower(gateway)), "-")
	base = strings.TrimLeft(base, "0123456789-")
	return strings.TrimSuffix(fmt.Sprintf("gw-%s", base[:min(len(base), 48)]), "-") + fmt.Sprintf("-%08x", h.Sum32())
}

// service is the Service the plan asks for, or nil when the Gateway is
// not accepted.
func (p *plan) service() *corev1.Service {
	if p.accepted.Status != metav1.ConditionTrue {
		return nil
	}
	gw := p.gw
	svc := &corev1.Service{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: gw.Namespace,
			Name:      ServiceName(gw.Name, p.className),
			Labels: map[string]string{
				gatewayv1.GatewayNameLabelKey:      gw.Name,
				gatewayv1.GatewayClassNameLabelKey: p.className,
			},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: gatewayv1.GroupVersion.String(), Kind: "Gateway",
				Name: gw.Name, UID: gw.UID, Controller: new(true),
			}},
		},
		Spec: corev1.ServiceSpec{
			Type:                          corev1.ServiceTypeLoadBalancer,
			LoadBalancerClass:             new(controller.Class),
			AllocateLoadBalancerNodePorts: new(false),
			// Cluster: every node takes the Gateway's traffic and the
			// Maglev table, weights and all, is the same on every node.
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyCluster,
		},
	}
	// Infrastructure labels and annotations go on what the Gateway
	// becomes; zerohop.io/address-pool there picks the pool.
	if inf := gw.Spec.Infrastructure; inf != nil {
		for k, v := range inf.Labels {
			if _, ours := svc.Labels[string(k)]; !ours {
				svc.Labels[string(k)] = string(v)
			}
		}
		for k, v := range inf.Annotations {
			if svc.Annotations == nil {
				svc.Annotations = map[string]string{}
			}
			svc.Annotations[string(k)] = string(v)
		}
	}
	if len(p.requested) > 0 {
		if svc.Annotations == nil {
			svc.Annotations = map[string]string{}
		}
		var ips []string
		for _, ip := range p.requested {
			ips = append(ips, ip.String())
			svc.Spec.IPFamilies = append(svc.Spec.IPFamilies, family(ip.Is4()))
		}
		svc.Annotations[controller.AnnotationIPs] = strings.Join(ips, ",")
		policy := corev1.IPFamilyPolicySingleStack
		if len(ips) > 1 {
			policy = corev1.IPFamilyPolicyRequireDualStack
		}
		svc.Spec.IPFamilyPolicy = &policy
	} else {
		// The families the cluster has, as many as it has.
		svc.Spec.IPFamilyPolicy = new(corev1.IPFamilyPolicyPreferDualStack)
	}
	for _, l := range p.listeners {
		if !l.accepted {
			continue
		}
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{
			Name: l.port, Protocol: l.kind.proto, Port: l.spec.Port,
			TargetPort: intstr.FromString(targetPortName),
		})
	}
	return svc
}

func family(v4 bool) corev1.IPFamily {
	if v4 {
		return corev1.IPv4Protocol
	}
	return corev1.IPv6Protocol
}

// entry is one endpoint of a listener as the Gateway's slices hold it.
type entry struct {
	ap     netip.AddrPort
	src    discoveryv1.Endpoint // as the backend's slice has it
	weight uint64
	// ready: it takes new flows in its backend; drained: it does but its
	// backendRef's weight is 0, so it keeps its flows and takes no new
	// one (written as serving and terminating).
	ready, drained bool
}

// endpoints returns the EndpointSlices of the Gateway's Service: for each
// listener, the endpoints of the Services its route sends to, with
// weights, and the reject share of its backendRefs that answer nothing,
// for the families of the addresses the Service holds (families): a
// family without a VIP has no client to refuse. slicesOf gives a
// Service's EndpointSlices.
func (p *plan) endpoints(svcName string, families []corev1.IPFamily, slicesOf func(types.NamespacedName) []*discoveryv1.EndpointSlice) []*discoveryv1.EndpointSlice {
	if p.accepted.Status != metav1.ConditionTrue {
		return nil
	}
	var out []*discoveryv1.EndpointSlice
	for _, l := range p.listeners {
		r := l.active()
		if !l.accepted || r == nil {
			continue
		}
		for _, at := range []discoveryv1.AddressType{discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6} {
			entries, reject := listenerEntries(p.backends[r], at, slicesOf)
			if !slices.Contains(families, family(at == discoveryv1.AddressTypeIPv4)) {
				reject = 0
			}
			out = append(out, p.slices(svcName, l, at, entries, reject)...)
		}
	}
	slices.SortFunc(out, func(a, b *discoveryv1.EndpointSlice) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// listenerEntries merges the endpoints of a route's backends of one
// address type: each ready endpoint gets its backendRef's share of the
// total weight divided by the backend's ready endpoints; an endpoint that
// two backendRefs reach gets both shares. reject is the share, on the same
// scale, of the backendRefs that do not resolve or have no ready endpoint
// of the type: the Gateway API has their connections rejected, not spread
// over the others.
func listenerEntries(backends []backend, at discoveryv1.AddressType, slicesOf func(types.NamespacedName) []*discoveryv1.EndpointSlice) (out map[netip.AddrPort]*entry, reject uint64) {
	var total uint64
	for _, b := range backends {
		total += uint64(max(b.weight, 0))
	}
	out = map[netip.AddrPort]*entry{}
	for _, b := range backends {
		if !b.resolved() {
			if b.weight > 0 {
				reject += uint64(b.weight) * weightScale / total
			}
			continue
		}
		mine := map[netip.AddrPort]*entry{}
		for _, sl := range slicesOf(types.NamespacedName{Namespace: b.svc.Namespace, Name: b.svc.Name}) {
			if sl.AddressType != at {
				continue
			}
			port, ok := slicePort(sl, b.port)
			if !ok {
				continue
			}
			for _, ep := range sl.Endpoints {
				if len(ep.Addresses) == 0 {
					continue
				}
				a, err := netip.ParseAddr(ep.Addresses[0])
				if err != nil {
					continue
				}
				ap := netip.AddrPortFrom(a.Unmap(), uint16(port))
				e := &entry{ap: ap, src: ep, ready: eligible(ep.Conditions)}
				if have, ok := mine[ap]; ok && (have.ready || !e.ready) {
					continue
				}
				mine[ap] = e
			}
		}
		var n uint64
		for _, e := range mine {
			if e.ready {
				n++
			}
		}
		if n == 0 && b.weight > 0 {
			reject += uint64(b.weight) * weightScale / total
		}
		for ap, e := range mine {
			if e.ready {
				if b.weight > 0 {
					e.weight = uint64(b.weight) * weightScale / (total * n)
					e.weight = max(e.weight, 1)
				} else {
					e.ready, e.drained = false, true
				}
			}
			have, ok := out[ap]
			switch {
			case !ok:
				out[ap] = e
			case e.weight > 0 && have.weight > 0:
				have.weight += e.weight
			case e.weight > 0, e.drained && !have.ready && !have.drained:
				// Ready (or draining) through this backend beats what
				// another one says.
				out[ap] = e
			}
		}
	}
	return out, reject
}

// eligible is the datapath's reading of an endpoint: ready (unset means
// ready) and not terminating.
func eligible(c discoveryv1.EndpointConditions) bool {
	return (c.Ready == nil || *c.Ready) && (c.Terminating == nil || !*c.Terminating)
}

// slicePort is the port a backend's slice serves a Service port on: the
// slice port of that name and protocol, or, for a slice that lists none,
// the numeric target port (a named one it does not serve).
func slicePort(sl *discoveryv1.EndpointSlice, sp corev1.ServicePort) (int32, bool) {
	proto := cmp.Or(sp.Protocol, corev1.ProtocolTCP)
	for _, p := range sl.Ports {
		name, pp := "", corev1.ProtocolTCP
		if p.Name != nil {
			name = *p.Name
		}
		if p.Protocol != nil {
			pp = *p.Protocol
		}
		if name == sp.Name && pp == proto && p.Port != nil {
			return *p.Port, *p.Port > 0 && *p.Port <= 65535
		}
	}
	switch {
	case sp.TargetPort.Type == intstr.String:
		return 0, false
	case sp.TargetPort.IntVal > 0:
		return sp.TargetPort.IntVal, true
	default:
		return sp.Port, true
	}
}

// slices groups a listener's entries of one address type into slices of
// one target port and one weight each, and puts a reject share on a slice
// of its own, without endpoints.
func (p *plan) slices(svcName string, l *listener, at discoveryv1.AddressType, entries map[netip.AddrPort]*entry, reject uint64) []*discoveryv1.EndpointSlice {
	type group struct {
		port   uint16
		weight uint64
	}
	groups := map[group][]*entry{}
	for _, e := range entries {
		g := group{port: e.ap.Port(), weight: e.weight}
		groups[g] = append(groups[g], e)
	}
	var out []*discoveryv1.EndpointSlice
	for _, g := range slices.SortedFunc(maps.Keys(groups), func(a, b group) int {
		return cmp.Or(cmp.Compare(a.port, b.port), cmp.Compare(a.weight, b.weight))
	}) {
		es := groups[g]
		slices.SortFunc(es, func(a, b *entry) int { return a.ap.Compare(b.ap) })
		for chunk := 0; len(es) > 0; chunk++ {
			n := min(len(es), maxEndpointsPerSlice)
			sl := p.slice(svcName, l, at, int32(g.port), fmt.Sprintf("%d/%d/%d", g.port, g.weight, chunk))
			if g.weight > 0 {
				sl.Annotations = map[string]string{v1alpha1.AnnotationEndpointWeight: strconv.FormatUint(g.weight, 10)}
			}
			for _, e := range es[:n] {
				ep := discoveryv1.Endpoint{
					Addresses:  []string{e.ap.Addr().String()},
					Conditions: e.src.Conditions,
					NodeName:   e.src.NodeName,
					Zone:       e.src.Zone,
					TargetRef:  e.src.TargetRef,
				}
				if e.drained {
					ep.Conditions = discoveryv1.EndpointConditions{Ready: new(false), Serving: new(true), Terminating: new(true)}
				}
				sl.Endpoints = append(sl.Endpoints, ep)
			}
			out = append(out, sl)
			es = es[n:]
		}
	}
	if reject > 0 {
		// No endpoint uses the port's number; a slice port needs one
		// (kube-proxy skips one without), so it is the listener's.
		sl := p.slice(svcName, l, at, l.spec.Port, "reject")
		sl.Annotations = map[string]string{v1alpha1.AnnotationRejectWeight: strconv.FormatUint(reject, 10)}
		out = append(out, sl)
	}
	return out
}

// slice is an empty slice of the listener's port on target port port,
// named after the Service and a hash of what sets it apart (variant).
func (p *plan) slice(svcName string, l *listener, at discoveryv1.AddressType, port int32, variant string) *discoveryv1.EndpointSlice {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%s/%s", l.port, at, variant)
	return &discoveryv1.EndpointSlice{
		TypeMeta: metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: p.gw.Namespace,
			Name:      fmt.Sprintf("%s-%010x", svcName, h.Sum64()>>24),
			Labels: map[string]string{
				discoveryv1.LabelServiceName:  svcName,
				discoveryv1.LabelManagedBy:    ManagedBy,
				gatewayv1.GatewayNameLabelKey: p.gw.Name,
				LabelPort:                     l.port,
			},
		},
		AddressType: at,
		Ports: []discoveryv1.EndpointPort{{
			Name: new(l.port), Protocol: new(l.kind.proto), Port: new(port),
		}},
	}
}

// answers reports whether the slices answer new flows: one holds an
// endpoint that takes them, or a reject share that refuses them.
func answers(sls []*discoveryv1.EndpointSlice) bool {
	for _, sl := range sls {
		if _, ok := sl.Annotations[v1alpha1.AnnotationRejectWeight]; ok {
			return true
		}
		for _, ep := range sl.Endpoints {
			if eligible(ep.Conditions) {
				return true
			}
		}
	}
	return false
}
