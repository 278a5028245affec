package speaker

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/speaker/announce"
	"github.com/zerohop/zerohop/speaker/l2"
	"github.com/zerohop/zerohop/speaker/l2/election"
)

// l2VIP is one Service IP that some L2Advertisement selects, with the
// advertisements' rules merged: when several advertisements select the
// same pool, a node is eligible if any of them allows it, so that every
// speaker still computes one owner per VIP.
type l2VIP struct {
	svc types.NamespacedName
	ip  netip.Addr
	// selectors are the merged node selectors; nil means every node.
	selectors []v1alpha1.LabelSelector
	// interfaces named by the advertisements; nil means the interface
	// on the VIP's subnet (l2.InterfaceFor).
	interfaces []string
	// local, for externalTrafficPolicy Local, is the set of nodes with a
	// ready endpoint; nil for Cluster.
	local map[string]bool
}

// l2VIPs finds the L2 VIPs among the Services: IPs whose pool an
// L2Advertisement selects.
func l2VIPs(pools []*v1alpha1.IPAddressPool, advs []v1alpha1.L2Advertisement, svcs []corev1.Service,
	slicesOf map[types.NamespacedName][]*discoveryv1.EndpointSlice) ([]l2VIP, []error) {
	if len(advs) == 0 {
		return nil, nil
	}
	idx, errs := announce.NewPools(pools)
	var out []l2VIP
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
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			ip, err := netip.ParseAddr(ing.IP)
			if err != nil {
				continue
			}
			ip = ip.Unmap()
			pool := idx.Of(ip)
			if pool == nil {
				continue
			}
			v := l2VIP{svc: key, ip: ip, local: local}
			matched, allNodes, anyIface := false, false, false
			for j := range advs {
				spec := &advs[j].Spec
				ok, err := announce.SelectsPool(spec.IPAddressPools, spec.IPAddressPoolSelectors, pool)
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
				v.selectors = append(v.selectors, spec.NodeSelectors...)
				if len(spec.Interfaces) == 0 {
					anyIface = true
				}
				v.interfaces = append(v.interfaces, spec.Interfaces...)
			}
			if !matched {
				continue
			}
			if allNodes {
				v.selectors = nil
			}
			if anyIface {
				v.interfaces = nil
			} else {
				slices.Sort(v.interfaces)
				v.interfaces = slices.Compact(v.interfaces)
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

// l2Input is everything one L2 decision depends on.
type l2Input struct {
	self    string
	nodes   []election.Node
	vips    []l2VIP
	members []string // live, ready memberlist members
	// majority is false when this speaker sees no more than half of the
	// expected speakers: it then answers for nothing.
	majority bool
	ifaces   []l2.Interface
	// linkDown lists announcing interfaces found down; any makes the
	// speaker answer for nothing (and leave the election).
	linkDown map[string]bool
}

// l2Owned is one VIP this node answers for.
type l2Owned struct {
	vip l2VIP
	// ifaces are where it is answered.
	ifaces []string
}

// interfacesOf is where this node would answer for v.
func interfacesOf(v l2VIP, ifaces []l2.Interface) []string {
	if v.interfaces == nil {
		if name, ok := l2.InterfaceFor(v.ip, ifaces); ok {
			return []string{name}
		}
		return nil
	}
	var out []string
	for _, name := range v.interfaces {
		if slices.ContainsFunc(ifaces, func(i l2.Interface) bool { return i.Name == name }) {
			out = append(out, name)
		}
	}
	return out
}

// announcingInterfaces is every interface this node could answer on for
// the VIPs, owned or not: the ones whose link state decides readiness.
func announcingInterfaces(vips []l2VIP, ifaces []l2.Interface) []string {
	set := map[string]bool{}
	for _, v := range vips {
		for _, n := range interfacesOf(v, ifaces) {
			set[n] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// planL2 decides which VIPs this node answers for, by interface. Every
// speaker computes it from the same Services, Nodes and members, so all
// agree on one owner per VIP without talking to the API server.
func planL2(in l2Input) (owned []l2Owned, errs []error) {
	if !in.majority || len(in.linkDown) > 0 {
		return nil, nil
	}
	alive := map[string]bool{}
	for _, m := range in.members {
		alive[m] = true
	}
	for _, v := range in.vips {
		eligible, err := election.Eligible(in.nodes, v.selectors, alive, v.local)
		if err != nil {
			errs = append(errs, fmt.Errorf("service %s: l2 %v: %w", v.svc, v.ip, err))
			continue
		}
		if election.Owner(v.ip, eligible) != in.self {
			continue
		}
		ifs := interfacesOf(v, in.ifaces)
		if len(ifs) == 0 {
			errs = append(errs, fmt.Errorf("service %s: l2 %v: no local interface on its subnet, and the L2Advertisement names none present", v.svc, v.ip))
			continue
		}
		owned = append(owned, l2Owned{vip: v, ifaces: ifs})
	}
	return owned, errs
}
