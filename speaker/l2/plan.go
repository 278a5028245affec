package l2

// The planner: which Service IPs are L2 VIPs (VIPs), and which of them
// this node answers for, on which interfaces (Compute). It does no I/O; the
// speaker gathers the members, interfaces and link states and hands the
// result to the Announcer.

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/zerohop/zerohop/config/crosscheck"
	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/speaker/l2/election"
)

// VIP is one Service IP that some L2Advertisement selects, with the
// advertisements' rules merged: when several advertisements select the
// same pool, a node is eligible if any of them allows it, so that every
// speaker still computes one owner per VIP.
type VIP struct {
	Service types.NamespacedName
	IP      netip.Addr
	// Selectors are the merged node selectors; nil means every node.
	Selectors []v1alpha1.LabelSelector
	// Interfaces named by the advertisements; nil means the interface
	// on the VIP's subnet (InterfaceFor).
	Interfaces []string
	// Local, for externalTrafficPolicy Local, is the set of nodes with a
	// ready endpoint; nil for Cluster.
	Local map[string]bool
}

// VIPs finds the L2 VIPs among the Services: IPs whose pool an
// L2Advertisement selects.
func VIPs(pools []*v1alpha1.IPAddressPool, advs []v1alpha1.L2Advertisement, svcs []corev1.Service,
	slicesOf map[types.NamespacedName][]*discoveryv1.EndpointSlice) ([]VIP, []error) {
	if len(advs) == 0 {
		return nil, nil
	}
	idx, errs := crosscheck.NewPools(pools)
	var out []VIP
	for i := range svcs {
		svc := &svcs[i]
		if svc.DeletionTimestamp != nil || svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		key := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
		var local map[string]bool
		if svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
			local = readyNodes(slicesOf[key])
		}
		from := svc.Annotations[v1alpha1.AnnotationAllocatedFrom]
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			ip, err := netip.ParseAddr(ing.IP)
			if err != nil {
				continue
			}
			ip = ip.Unmap()
			// The pool the address was allocated from, never a pool added
			// later that declares it too; and the last check before an
			// address is answered for: it lies inside that pool.
			pool := idx.Of(ip, v1alpha1.AllocatedFrom(from, ip))
			if pool == nil || !idx.Within(netip.PrefixFrom(ip, ip.BitLen()), pool) {
				continue
			}
			v := VIP{Service: key, IP: ip, Local: local}
			matched, allNodes, anyIface := false, false, false
			for j := range advs {
				spec := &advs[j].Spec
				ok, err := spec.SelectsPool(pool)
				if err != nil {
					errs = append(errs, fmt.Errorf("l2advertisement %s: %w", advs[j].Name, err))
					continue
				}
				if !ok {
					continue
				}
				matched = true
				if len(spec.NodeSelectors) == 0 {
					allNodes = true
				}
				v.Selectors = append(v.Selectors, spec.NodeSelectors...)
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
			out = append(out, v)
		}
	}
	return out, errs
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
		eligible, err := election.Eligible(in.Nodes, v.Selectors, alive, v.Local)
		if err != nil {
			errs = append(errs, fmt.Errorf("service %s: l2 %v: %w", v.Service, v.IP, err))
			continue
		}
		if election.Owner(v.IP, eligible) != in.Self {
			continue
		}
		ifs := interfacesOf(v, in.Ifaces)
		if len(ifs) == 0 {
			errs = append(errs, fmt.Errorf("service %s: l2 %v: no local interface on its subnet, and the L2Advertisement names none present", v.Service, v.IP))
			continue
		}
		owned = append(owned, Owned{VIP: v, Interfaces: ifs})
	}
	return owned, errs
}
