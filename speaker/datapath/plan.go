package datapath

// The planner: Translate turns Services and EndpointSlices into the plain
// services and backends of package bpf, and Diff works out the smallest set
// of map updates that moves the datapath from what it holds to what the
// cluster wants. Both are pure; program.go does the writing.

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/zerohop/zerohop/bpf"
	"github.com/zerohop/zerohop/config/v1alpha1"
)

// Entry is what one service key should hold in the datapath.
type Entry struct {
	// Service is namespace/name, for messages. Diff ignores it.
	Service string
	Flags   bpf.ServiceFlags
	// SourceRanges are the admitted clients of this VIP's family, with
	// bpf.ServiceSourceRanges set (loadBalancerSourceRanges).
	SourceRanges []netip.Prefix
	// AffinityTimeout is ClientIP affinity's timeout, with
	// bpf.ServiceAffinity set.
	AffinityTimeout time.Duration
	// Backends are sorted by address and port, so two nodes given the
	// same endpoints produce the same list (and the same Maglev table).
	Backends []bpf.Backend
	// RejectWeight is the port's reject share (bpf.ServiceConfig's), the
	// sum of its slices' v1alpha1.AnnotationRejectWeight.
	RejectWeight uint32
}

// known is false for entries made by Observed: their content is unknown.
func (e Entry) known() bool { return e.Flags&(bpf.ServiceLocal|bpf.ServiceCluster) != 0 }

// Translate computes the datapath entries of this node: one per VIP, port
// and protocol of every LoadBalancer Service with an ingress IP. node is
// this node's name; nodeAddrs holds every node's underlay addresses, which
// remote backends of Cluster services are encapsulated to. shuttingDown
// holds the nodes in a graceful shutdown: their endpoints take no new
// flows while the Service has a ready endpoint elsewhere, since their
// Pods are killed without being deleted first, and so stay ready in their
// EndpointSlices until after they stop answering.
//
// Problems (an SCTP port, a remote endpoint whose node has no address of
// the VIP's family, two Services claiming one VIP and port) are returned as
// errors naming the Service; everything else is still translated, so one
// bad Service never takes the others down.
func Translate(node string, svcs []*corev1.Service, endpointSlices []*discoveryv1.EndpointSlice, nodeAddrs map[string][]netip.Addr, shuttingDown map[string]bool) (map[bpf.ServiceKey]Entry, []error) {
	t := translator{node: node, nodeAddrs: nodeAddrs, shuttingDown: shuttingDown, seen: map[string]bool{}}
	bySvc := map[string][]*discoveryv1.EndpointSlice{}
	for _, sl := range endpointSlices {
		name := sl.Labels[discoveryv1.LabelServiceName]
		if name == "" {
			continue
		}
		k := sl.Namespace + "/" + name
		bySvc[k] = append(bySvc[k], sl)
	}
	// Services in name order: the first claimant of a key wins, stably.
	ordered := make([]*corev1.Service, 0, len(svcs))
	for _, s := range svcs {
		if s.Spec.Type == corev1.ServiceTypeLoadBalancer && s.DeletionTimestamp == nil {
			ordered = append(ordered, s)
		}
	}
	slices.SortFunc(ordered, func(a, b *corev1.Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})

	out := map[bpf.ServiceKey]Entry{}
	for _, svc := range ordered {
		name := svc.Namespace + "/" + svc.Name
		for key, e := range t.service(svc, bySvc[name]) {
			if prev, ok := out[key]; ok {
				t.errorf("service %s: %s is already used by service %s", name, key, prev.Service)
				continue
			}
			out[key] = e
		}
	}
	return out, t.errs
}

type translator struct {
	node         string
	nodeAddrs    map[string][]netip.Addr
	shuttingDown map[string]bool
	errs         []error
	seen         map[string]bool // one error per message, not per port and VIP
}

func (t *translator) errorf(format string, args ...any) {
	err := fmt.Errorf(format, args...)
	if t.seen[err.Error()] {
		return
	}
	t.seen[err.Error()] = true
	t.errs = append(t.errs, err)
}

func (t *translator) service(svc *corev1.Service, sls []*discoveryv1.EndpointSlice) map[bpf.ServiceKey]Entry {
	name := svc.Namespace + "/" + svc.Name
	var vips []netip.Addr
	for _, in := range svc.Status.LoadBalancer.Ingress {
		a, err := netip.ParseAddr(in.IP)
		if err != nil {
			continue // hostname-only ingress, or not set yet
		}
		if a = a.Unmap(); !slices.Contains(vips, a) {
			vips = append(vips, a)
		}
	}
	if len(vips) == 0 {
		return nil
	}
	local := svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
	flags := bpf.ServiceCluster
	if local {
		flags = bpf.ServiceLocal
	}
	var affinity time.Duration
	if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		flags |= bpf.ServiceAffinity
		affinity = time.Duration(corev1.DefaultClientIPServiceAffinitySeconds) * time.Second
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil && *c.ClientIP.TimeoutSeconds > 0 {
			affinity = time.Duration(*c.ClientIP.TimeoutSeconds) * time.Second
		}
	}
	ranges, restricted := t.sourceRanges(name, svc)
	if restricted {
		flags |= bpf.ServiceSourceRanges
	}
	// Sorted slices make the choice between duplicates stable.
	sls = slices.Clone(sls)
	slices.SortFunc(sls, func(a, b *discoveryv1.EndpointSlice) int { return cmp.Compare(a.Name, b.Name) })

	out := map[bpf.ServiceKey]Entry{}
	for _, sp := range svc.Spec.Ports {
		var proto bpf.Proto
		switch sp.Protocol {
		case corev1.ProtocolTCP, "":
			proto = bpf.TCP
		case corev1.ProtocolUDP:
			proto = bpf.UDP
		default:
			t.errorf("service %s: port %s %d/%s: the datapath balances only TCP and UDP", name, portName(sp), sp.Port, sp.Protocol)
			continue
		}
		if sp.Port <= 0 || sp.Port > 65535 {
			t.errorf("service %s: port %s: %d out of range", name, portName(sp), sp.Port)
			continue
		}
		for _, vip := range vips {
			key := bpf.ServiceKey{Addr: vip, Port: uint16(sp.Port), Proto: proto}
			e := Entry{Service: name, Flags: flags, AffinityTimeout: affinity, Backends: t.backends(name, sp, vip.Is4(), local, sls),
				RejectWeight: t.rejectWeight(name, sp, vip.Is4(), sls)}
			if restricted {
				// Fail closed: a family the Service lists no range for
				// admits nobody (kube-proxy would admit everyone).
				e.SourceRanges = []netip.Prefix{}
				for _, r := range ranges {
					if r.Addr().Is4() == vip.Is4() {
						e.SourceRanges = append(e.SourceRanges, r)
					}
				}
			}
			out[key] = e
		}
	}
	return out
}

// sourceRangesAnnotation is the older form of loadBalancerSourceRanges,
// honoured like kube-proxy does when the field is empty.
const sourceRangesAnnotation = "service.beta.kubernetes.io/load-balancer-source-ranges"

// sourceRanges parses loadBalancerSourceRanges (or its annotation). An
// entry that does not parse is reported and left out; the Service stays
// restricted to the others, never opened up by a typo.
func (t *translator) sourceRanges(name string, svc *corev1.Service) ([]netip.Prefix, bool) {
	field := "spec.loadBalancerSourceRanges"
	raw := svc.Spec.LoadBalancerSourceRanges
	if len(raw) == 0 {
		if v := strings.TrimSpace(svc.Annotations[sourceRangesAnnotation]); v != "" {
			field = "annotation " + sourceRangesAnnotation
			raw = strings.Split(v, ",")
		}
	}
	if len(raw) == 0 {
		return nil, false
	}
	var out []netip.Prefix
	for _, r := range raw {
		r = strings.TrimSpace(r)
		p, err := netip.ParsePrefix(r)
		if err != nil {
			t.errorf("service %s: %s: %q is not a CIDR; left out", name, field, r)
			continue
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		p = p.Masked()
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	return out, true
}

func portName(sp corev1.ServicePort) string {
	if sp.Name == "" {
		return `""`
	}
	return sp.Name
}

// state ranks an endpoint's conditions; a duplicate keeps the best.
type state int

const (
	excluded    state = iota
	terminating       // serving and terminating, or not ready: keeps its flows, no new ones
	eligible          // ready: takes new flows
)

func endpointState(c discoveryv1.EndpointConditions) state {
	// discovery/v1: nil ready and nil serving mean true, nil terminating
	// means false. Ready is never true while terminating; if a producer
	// says so anyway, terminating wins, as it is the safer reading.
	if c.Terminating != nil && *c.Terminating {
		if c.Serving == nil || *c.Serving {
			return terminating
		}
		return excluded
	}
	if !Waiting(c) {
		return eligible
	}
	// Its backend is written but takes no new flows, as a terminating
	// one: the gate can then see it in place before the Pod is Ready, and
	// flows a Pod already has survive a probe that fails for a while.
	return terminating
}

// Waiting reports whether an endpoint is neither ready nor terminating: a
// failing probe, or a Pod whose readiness gate waits for its entry
// (docs/readiness-gate.md).
func Waiting(c discoveryv1.EndpointConditions) bool {
	return c.Ready != nil && !*c.Ready && (c.Terminating == nil || !*c.Terminating)
}

// slicePort finds the slice's port for a Service port: the EndpointSlice
// controller names slice ports after Service ports and resolves named
// target ports per Pod. A slice that does not list the port serves it on
// the numeric target port; with a named target port it does not serve it.
func slicePort(sl *discoveryv1.EndpointSlice, sp corev1.ServicePort) (uint16, bool) {
	for _, p := range sl.Ports {
		pname, pproto := "", corev1.ProtocolTCP
		if p.Name != nil {
			pname = *p.Name
		}
		if p.Protocol != nil {
			pproto = *p.Protocol
		}
		sproto := cmp.Or(sp.Protocol, corev1.ProtocolTCP)
		if pname == sp.Name && pproto == sproto && p.Port != nil {
			if *p.Port <= 0 || *p.Port > 65535 {
				return 0, false
			}
			return uint16(*p.Port), true
		}
	}
	switch {
	case sp.TargetPort.Type == intstr.String && sp.TargetPort.StrVal != "":
		return 0, false
	case sp.TargetPort.IntVal > 0 && sp.TargetPort.IntVal <= 65535:
		return uint16(sp.TargetPort.IntVal), true
	default: // unset target port means the service port
		return uint16(sp.Port), true
	}
}

type candidate struct {
	be    bpf.Backend
	state state
	node  string
}

func (t *translator) backends(name string, sp corev1.ServicePort, v4, local bool, sls []*discoveryv1.EndpointSlice) []bpf.Backend {
	want := discoveryv1.AddressTypeIPv6
	if v4 {
		want = discoveryv1.AddressTypeIPv4
	}
	best := map[netip.AddrPort]candidate{}
	for _, sl := range sls {
		if sl.AddressType != want {
			continue
		}
		port, ok := slicePort(sl, sp)
		if !ok {
			continue
		}
		var weight uint32 // unweighted: every backend alike
		if v, ok := sl.Annotations[v1alpha1.AnnotationEndpointWeight]; ok {
			var err error
			if weight, err = v1alpha1.ParseEndpointWeight(v); err != nil {
				t.errorf("service %s: EndpointSlice %s: %v; weighed as 1", name, sl.Name, err)
			}
		}
		for _, ep := range sl.Endpoints {
			st := endpointState(ep.Conditions)
			if st == excluded {
				continue
			}
			nodeName := ""
			if ep.NodeName != nil {
				nodeName = *ep.NodeName
			}
			isLocal := nodeName == t.node && t.node != ""
			if local && !isLocal {
				continue
			}
			for _, s := range ep.Addresses {
				a, err := netip.ParseAddr(s)
				if err != nil || a.Unmap().Is4() != v4 || a.Zone() != "" {
					continue
				}
				a = a.Unmap()
				ap := netip.AddrPortFrom(a, port)
				if c, ok := best[ap]; ok && c.state >= st {
					continue
				}
				flags := bpf.BackendRemote
				if isLocal {
					flags = bpf.BackendLocal
				}
				if st == terminating {
					flags |= bpf.BackendTerminating
				}
				best[ap] = candidate{be: bpf.Backend{Addr: a, Port: port, Flags: flags, Weight: weight}, state: st, node: nodeName}
			}
		}
	}
	t.standbyShuttingDown(best)
	// Sorted before anything is reported, so errors come in a stable order.
	aps := slices.SortedFunc(maps.Keys(best), netip.AddrPort.Compare)
	out := make([]bpf.Backend, 0, len(best))
	for _, ap := range aps {
		c := best[ap]
		if c.be.Flags&bpf.BackendRemote != 0 {
			if c.node == "" {
				t.errorf("service %s: endpoint %s has no node name", name, c.be.Addr)
				continue
			}
			n, ok := t.nodeAddr(c.node, v4)
			if !ok {
				t.errorf("service %s: node %s has no %s address for its endpoints", name, c.node, familyName(v4))
				continue
			}
			c.be.Node = n
		}
		out = append(out, c.be)
	}
	return out
}

// rejectWeight adds up the reject shares of the slices of the VIP's
// family that name the port (a share is never taken from a slice that
// serves it by the target port's number alone). A value that does not
// parse is reported and left out: refusing connections is never the
// fallback.
func (t *translator) rejectWeight(name string, sp corev1.ServicePort, v4 bool, sls []*discoveryv1.EndpointSlice) uint32 {
	want := discoveryv1.AddressTypeIPv6
	if v4 {
		want = discoveryv1.AddressTypeIPv4
	}
	var sum uint64
	for _, sl := range sls {
		v, ok := sl.Annotations[v1alpha1.AnnotationRejectWeight]
		if !ok || sl.AddressType != want {
			continue
		}
		if !slices.ContainsFunc(sl.Ports, func(p discoveryv1.EndpointPort) bool {
			proto := corev1.ProtocolTCP
			if p.Protocol != nil {
				proto = *p.Protocol
			}
			return p.Name != nil && *p.Name == sp.Name && proto == cmp.Or(sp.Protocol, corev1.ProtocolTCP)
		}) {
			continue
		}
		w, err := v1alpha1.ParseRejectWeight(v)
		if err != nil {
			t.errorf("service %s: EndpointSlice %s: %v; left out", name, sl.Name, err)
			continue
		}
		sum += uint64(w)
	}
	return uint32(min(sum, math.MaxUint32))
}

// standbyShuttingDown makes the eligible endpoints on shutting-down nodes
// standbys (established flows kept, no new ones), unless no eligible
// endpoint would be left.
func (t *translator) standbyShuttingDown(best map[netip.AddrPort]candidate) {
	elsewhere := false
	for _, c := range best {
		if c.state == eligible && !t.shuttingDown[c.node] {
			elsewhere = true
			break
		}
	}
	if !elsewhere {
		return
	}
	for ap, c := range best {
		if c.state == eligible && t.shuttingDown[c.node] {
			c.state = terminating
			c.be.Flags |= bpf.BackendTerminating
			best[ap] = c
		}
	}
}

func (t *translator) nodeAddr(node string, v4 bool) (netip.Addr, bool) {
	for _, a := range t.nodeAddrs[node] {
		if a = a.Unmap(); a.IsValid() && a.Is4() == v4 {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func familyName(v4 bool) string {
	if v4 {
		return "IPv4"
	}
	return "IPv6"
}

// Upsert is one service to create or replace.
type Upsert struct {
	Key   bpf.ServiceKey
	Entry Entry
}

// Observed describes a datapath whose keys are known (bpf.Datapath's
// Services after a restart) but whose contents are not: Diff against it
// rewrites every wanted key once and deletes every other.
func Observed(keys []bpf.ServiceKey) map[bpf.ServiceKey]Entry {
	out := make(map[bpf.ServiceKey]Entry, len(keys))
	for _, k := range keys {
		out[k] = Entry{}
	}
	return out
}

// Diff returns what moves the datapath from current to desired: upserts
// for keys that are new or whose flags or backends changed, deletes for
// keys no longer wanted. Unchanged keys are left out, so a change to one
// Service rewrites no other Service's maps. Both lists are sorted by key.
func Diff(current, desired map[bpf.ServiceKey]Entry) (upserts []Upsert, deletes []bpf.ServiceKey) {
	for k, want := range desired {
		if have, ok := current[k]; ok && have.known() && sameContent(have, want) {
			continue
		}
		upserts = append(upserts, Upsert{Key: k, Entry: want})
	}
	for k := range current {
		if _, ok := desired[k]; !ok {
			deletes = append(deletes, k)
		}
	}
	slices.SortFunc(upserts, func(a, b Upsert) int { return compareKeys(a.Key, b.Key) })
	slices.SortFunc(deletes, compareKeys)
	return upserts, deletes
}

// Equal says whether both entries are known and hold the same flags,
// backends and reject share (the Service name is not compared).
func (e Entry) Equal(o Entry) bool {
	return e.known() && o.known() && sameContent(e, o)
}

func sameContent(a, b Entry) bool {
	return a.Flags == b.Flags && a.AffinityTimeout == b.AffinityTimeout && a.RejectWeight == b.RejectWeight &&
		slices.Equal(a.SourceRanges, b.SourceRanges) && slices.Equal(a.Backends, b.Backends)
}

func compareKeys(a, b bpf.ServiceKey) int {
	return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Proto, b.Proto))
}

// NodeAddrs are a node's InternalIPs: the underlay that Cluster mode
// encapsulates over, and what Translate's nodeAddrs holds per node.
func NodeAddrs(n *corev1.Node) []netip.Addr {
	var out []netip.Addr
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil {
			out = append(out, ip.Unmap())
		}
	}
	return out
}
