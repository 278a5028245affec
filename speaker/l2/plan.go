package l2

// The planner: which Service IPs are L2 VIPs (VIPs), and which of them
// this node answers for, on which interfaces (Compute). It does no I/O; the
// speaker gathers the members, interfaces and link states and hands the
// result to the Announcer.

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/zerohop/zerohop/config/crosscheck"
	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/speaker/l2/election"
)

// VIP is one address that some L2Advertisement selects, with every
// Service holding it (several when the address is shared) and the rules
// of the advertisements that apply merged: a node is eligible if any of
// them allows it, so that every speaker still computes one owner per
// address, and Services sharing an address are always answered for by one
// node.
type VIP struct {
	IP netip.Addr
	// Services hold the address, sorted.
	Services []types.NamespacedName
	// Selectors are the merged node selectors; nil means every node.
	Selectors []v1alpha1.LabelSelector
	// Preferences are the preferredNodeSelectors of every advertisement
	// that applies, compiled.
	Preferences []election.Preference
	// Interfaces named by the advertisements; nil means the interface
	// on the VIP's subnet (InterfaceFor).
	Interfaces []string
	// Local has, for each Service with externalTrafficPolicy Local that
	// holds the address, the nodes with a ready endpoint of it; empty when
	// no holder is Local. See Candidates.
	Local []map[string]bool
	// Cluster is set when a holder has externalTrafficPolicy Cluster.
	Cluster bool
}

// holder is a Service holding an address.
type holder struct {
	key      types.NamespacedName
	labels   map[string]string
	recorded string // the pool the controller recorded for the address
	local    map[string]bool
	isLocal  bool
}

// VIPs finds the L2 VIPs among the Services: one per address whose pool
// an L2Advertisement selects, and whose Services all match one of the
// advertisement's serviceSelectors (none: every Service). A Service that
// shares an address but matches no selector never widens an advertisement
// to that address.
func VIPs(pools []*v1alpha1.IPAddressPool, advs []v1alpha1.L2Advertisement, svcs []corev1.Service,
	slicesOf map[types.NamespacedName][]*discoveryv1.EndpointSlice) ([]VIP, []error) {
	if len(advs) == 0 {
		return nil, nil
	}
	idx, errs := crosscheck.NewPools(pools)

	// Each advertisement's selectors, compiled once; one in error is left
	// out (and reported) rather than read as "every Service".
	type rule struct {
		adv      *v1alpha1.L2Advertisement
		services v1alpha1.Selection
		prefs    []election.Preference
	}
	var rules []rule
	for i := range advs {
		a := &advs[i]
		sel, err := v1alpha1.NewSelection(a.Spec.ServiceSelectors)
		if err != nil {
			errs = append(errs, fmt.Errorf("l2advertisement %s: serviceSelectors: %w", a.Name, err))
			continue
		}
		r := rule{adv: a, services: sel}
		ok := true
		for j, p := range a.Spec.PreferredNodeSelectors {
			ps, err := v1alpha1.NewSelection([]v1alpha1.LabelSelector{p.Preference})
			if err != nil {
				errs = append(errs, fmt.Errorf("l2advertisement %s: preferredNodeSelectors[%d]: %w", a.Name, j, err))
				ok = false
				break
			}
			r.prefs = append(r.prefs, election.Preference{Weight: p.Weight, Nodes: ps})
		}
		if ok {
			rules = append(rules, r)
		}
	}

	// The holders of every address, in order of first appearance.
	var order []netip.Addr
	holders := map[netip.Addr][]holder{}
	for i := range svcs {
		svc := &svcs[i]
		if svc.DeletionTimestamp != nil || svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		h := holder{key: types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}, labels: svc.Labels}
		if svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
			h.isLocal, h.local = true, readyNodes(slicesOf[h.key])
		}
		from := svc.Annotations[v1alpha1.AnnotationAllocatedFrom]
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			ip, err := netip.ParseAddr(ing.IP)
			if err != nil {
				continue
			}
			ip = ip.Unmap()
			if _, seen := holders[ip]; !seen {
				order = append(order, ip)
			}
			h.recorded = v1alpha1.AllocatedFrom(from, ip)
			holders[ip] = append(holders[ip], h)
		}
	}

	var out []VIP
	for _, ip := range order {
		hs := holders[ip]
		slices.SortFunc(hs, func(a, b holder) int {
			return cmp.Or(cmp.Compare(a.key.Namespace, b.key.Namespace), cmp.Compare(a.key.Name, b.key.Name))
		})
		// The pool the address was allocated from (sharing Services
		// record the same one), never a pool added later that declares
		// it too; and the last check before an address is answered for:
		// it lies inside that pool.
		pool := idx.Of(ip, hs[0].recorded)
		if pool == nil || !idx.Within(netip.PrefixFrom(ip, ip.BitLen()), pool) {
			continue
		}
		v := VIP{IP: ip}
		for _, h := range hs {
			v.Services = append(v.Services, h.key)
		}
		matched, allNodes, anyIface := false, false, false
		for _, r := range rules {
			spec := &r.adv.Spec
			ok, err := spec.SelectsPool(pool)
			if err != nil {
				errs = append(errs, fmt.Errorf("l2advertisement %s: %w", r.adv.Name, err))
				continue
			}
			// serviceSelectors decide per address: every holder matches.
			if !ok || slices.ContainsFunc(hs, func(h holder) bool { return !r.services.Matches(h.labels) }) {
				continue
			}
			matched = true
			if len(spec.NodeSelectors) == 0 {
				allNodes = true
			}
			v.Selectors = append(v.Selectors, spec.NodeSelectors...)
			v.Preferences = append(v.Preferences, r.prefs...)
			if len(spec.Interfaces) == 0 {
				anyIface = true
			}
			v.Interfaces = append(v.Interfaces, spec.Interfaces...)
		}
		if !matched {
			continue
		}
		if allNodes {
			v.Selectors = nil
		}
		if anyIface {
			v.Interfaces = nil
		} else {
			slices.Sort(v.Interfaces)
			v.Interfaces = slices.Compact(v.Interfaces)
		}
		for _, h := range hs {
			if h.isLocal {
				v.Local = append(v.Local, h.local)
			} else {
				v.Cluster = true
			}
		}
		out = append(out, v)
	}
	return out, errs
}

// Candidates are the live nodes that may answer for v (election.Eligible):
// with Local holders, the nodes with a ready endpoint of every one of
// them, so that none loses its traffic; if no live node has all, the
// nodes with an endpoint of any (one Service served is better than none);
// if none has any and a holder is Cluster, any node, as for Cluster alone.
func Candidates(nodes []election.Node, v VIP, alive map[string]bool) ([]string, error) {
	switch {
	case len(v.Local) == 0:
		return election.Eligible(nodes, v.Selectors, alive, nil)
	case len(v.Local) == 1 && !v.Cluster:
		// The common case, without copying: one Local Service.
		return election.Eligible(nodes, v.Selectors, alive, nonNil(v.Local[0]))
	}
	every, anyOf := map[string]bool{}, map[string]bool{}
	maps.Copy(every, v.Local[0])
	for _, l := range v.Local {
		maps.DeleteFunc(every, func(n string, _ bool) bool { return !l[n] })
		maps.Copy(anyOf, l)
	}
	for _, with := range []map[string]bool{every, anyOf} {
		c, err := election.Eligible(nodes, v.Selectors, alive, with)
		if err != nil || len(c) > 0 {
			return c, err
		}
	}
	if v.Cluster {
		return election.Eligible(nodes, v.Selectors, alive, nil)
	}
	return nil, nil
}

// nonNil keeps an empty set of nodes from reading as "any node".
func nonNil(m map[string]bool) map[string]bool {
	if m == nil {
		return map[string]bool{}
	}
	return m
}

// ServiceList names the Services holding the address, for messages and
// the status: "service ns/a" or "services ns/a,ns/b".
func (v VIP) ServiceList() string {
	names := make([]string, len(v.Services))
	for i, k := range v.Services {
		names[i] = k.String()
	}
	if len(names) == 1 {
		return "service " + names[0]
	}
	return "services " + strings.Join(names, ",")
}

// readyNodes is the set of nodes with a ready endpoint in the slices.
func readyNodes(sls []*discoveryv1.EndpointSlice) map[string]bool {
	out := map[string]bool{}
	for _, sl := range sls {
		for _, ep := range sl.Endpoints {
			// A nil Ready means ready (discovery/v1 API contract).
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			if ep.NodeName != nil && len(ep.Addresses) > 0 {
				out[*ep.NodeName] = true
			}
		}
	}
	return out
}

// Input is everything one L2 decision depends on.
type Input struct {
	Self    string
	Nodes   []election.Node
	VIPs    []VIP
	Members []string // live, ready memberlist members
	// Majority is false when this speaker sees no more than half of the
	// expected speakers: it then answers for nothing.
	Majority bool
	Ifaces   []Interface
	// LinkDown lists announcing interfaces found down; any makes the
	// speaker answer for nothing (and leave the election).
	LinkDown map[string]bool
}

// Owned is one VIP this node answers for.
type Owned struct {
	VIP VIP
	// Interfaces are where it is answered.
	Interfaces []string
}

// interfacesOf is where this node would answer for v.
func interfacesOf(v VIP, ifaces []Interface) []string {
	if v.Interfaces == nil {
		if name, ok := InterfaceFor(v.IP, ifaces); ok {
			return []string{name}
		}
		return nil
	}
	var out []string
	for _, name := range v.Interfaces {
		if slices.ContainsFunc(ifaces, func(i Interface) bool { return i.Name == name }) {
			out = append(out, name)
		}
	}
	return out
}

// AnnouncingInterfaces is every interface this node could answer on for
// the VIPs, owned or not: the ones whose link state decides readiness.
func AnnouncingInterfaces(vips []VIP, ifaces []Interface) []string {
	set := map[string]bool{}
	for _, v := range vips {
		for _, n := range interfacesOf(v, ifaces) {
			set[n] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// Compute decides which VIPs this node answers for, by interface. Every
// speaker computes it from the same Services, Nodes and members, so all
// agree on one owner per VIP without talking to the API server.
func Compute(in Input) (owned []Owned, errs []error) {
	if !in.Majority || len(in.LinkDown) > 0 {
		return nil, nil
	}
	alive := map[string]bool{}
	for _, m := range in.Members {
		alive[m] = true
	}
	for _, v := range in.VIPs {
		eligible, err := Candidates(in.Nodes, v, alive)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: l2 %v: %w", v.ServiceList(), v.IP, err))
			continue
		}
		if election.Owner(v.IP, election.Preferred(in.Nodes, eligible, v.Preferences)) != in.Self {
			continue
		}
		ifs := interfacesOf(v, in.Ifaces)
		if len(ifs) == 0 {
			errs = append(errs, fmt.Errorf("%s: l2 %v: no local interface on its subnet, and the L2Advertisement names none present", v.ServiceList(), v.IP))
			continue
		}
		owned = append(owned, Owned{VIP: v, Interfaces: ifs})
	}
	return owned, errs
}
