package bgp

// The planner: from Services with their IPs, pools, advertisements, peers,
// this node and its local endpoints, Compute decides the paths each peer
// receives. It does no I/O, so every rule is a row in a table test; the
// speaker feeds it objects from its cache and hands the plan to the Server.

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/zerohop/zerohop/config/crosscheck"
	"github.com/zerohop/zerohop/config/v1alpha1"
)

// Service is what the planner needs of one LoadBalancer Service.
type Service struct {
	// Key is namespace/name.
	Key string
	// Labels are the Service's labels, for serviceSelectors.
	Labels map[string]string
	// IPs are the ingress IPs from the Service's status.
	IPs []netip.Addr
	// Pools, parallel to IPs, are the pools the controller recorded the
	// addresses as allocated from (v1alpha1.AnnotationAllocatedFrom); ""
	// where none is recorded.
	Pools []string
	// LocalOnly is externalTrafficPolicy Local: only nodes with a ready
	// local endpoint announce.
	LocalOnly bool
	// LocalReady counts the ready endpoints on this node.
	LocalReady int
	// Ready counts the ready endpoints in the cluster. A Cluster-mode
	// Service with none is not announced: traffic would have nowhere to go.
	Ready int
	// Rejects is set when a slice of the Service carries a reject share
	// (v1alpha1.AnnotationRejectWeight): a Cluster-mode Service with one
	// is announced with no ready endpoint, since its datapath answers new
	// connections with resets (a Gateway route none of whose backendRefs
	// resolves).
	Rejects bool
}

// Node is the node the speaker runs on.
type Node struct {
	Name   string
	Labels map[string]string
	// Healthy is false when the node must not attract traffic (see
	// NodeHealthy); its sessions stay up but carry no paths.
	Healthy bool
}

// ExcludeLabel is the well-known label that keeps a node out of external
// load balancers.
const ExcludeLabel = "node.kubernetes.io/exclude-from-external-load-balancers"

// NodeHealthy reports whether node may announce: it is not labelled out of
// load balancing, not cordoned (kubectl drain cordons before it evicts),
// not shutting down, and its network is not reported unavailable. Other
// readiness of the kubelet is left to the endpoints, which go unready
// with it. Withdrawing on cordon and shutdown moves the node's traffic
// before its Pods are evicted (docs/readiness-gate.md, "Drain order").
func NodeHealthy(node *corev1.Node) bool {
	if node == nil {
		return false
	}
	if _, ok := node.Labels[ExcludeLabel]; ok {
		return false
	}
	if node.Spec.Unschedulable {
		return false
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeNetworkUnavailable && c.Status == corev1.ConditionTrue {
			return false
		}
	}
	return !NodeShuttingDown(node)
}

// NodeShuttingDown reports whether node is in kubelet's graceful node
// shutdown, which says so on the Ready condition before it terminates any
// Pod.
func NodeShuttingDown(node *corev1.Node) bool {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status != corev1.ConditionTrue && strings.Contains(c.Message, ShutdownMessage) {
			return true
		}
	}
	return false
}

// ShutdownMessage is what kubelet's Ready condition says during a
// graceful node shutdown.
const ShutdownMessage = "node is shutting down"

// Input is everything the planner looks at.
type Input struct {
	Node           Node
	Pools          []*v1alpha1.IPAddressPool
	Peers          []*v1alpha1.BGPPeer
	Advertisements []*v1alpha1.BGPAdvertisement
	Services       []Service
}

// LargeCommunity is an RFC 8092 community.
type LargeCommunity struct {
	GlobalAdmin, LocalData1, LocalData2 uint32
}

// Path is one prefix announced to one peer.
type Path struct {
	Prefix netip.Prefix
	// Communities are standard communities, sorted, without duplicates.
	Communities []uint32
	// LargeCommunities are sorted, without duplicates.
	LargeCommunities []LargeCommunity
	// LocalPref is set on iBGP sessions only; 0 means not set. Several
	// advertisements of one prefix: the highest wins.
	LocalPref uint32
	// Weight, when not 0, is the number of ready local endpoints behind
	// the prefix, announced as the Link Bandwidth extended community.
	Weight uint32
	// Services are the keys of the Services behind the prefix, sorted.
	Services []string
}

// PeerPlan is what one peer receives.
type PeerPlan struct {
	Peer *v1alpha1.BGPPeer
	// Paths are sorted by prefix.
	Paths []Path
}

// Plan is the planner's answer for one node.
type Plan struct {
	// Peers are the BGPPeers selected for this node, sorted by name, each
	// with its paths (maybe none).
	Peers []PeerPlan
	// RouterID is the routerID the peers ask for (crosscheck.RouterID);
	// invalid when none sets one.
	RouterID netip.Addr
}

// IBGP reports whether a session with peer is internal: its AS is the
// session's own, given (peerASN) or required of the router's OPEN
// (dynamicASN internal). A dynamicASN external session is external.
func IBGP(peer *v1alpha1.BGPPeerSpec) bool {
	if peer.DynamicASN != "" {
		return peer.DynamicASN == v1alpha1.DynamicASNInternal
	}
	return peer.PeerASN == peer.MyASN
}

// Well-known communities (RFC 1997, RFC 3765, RFC 7999).
var wellKnown = map[string]uint32{
	"no-export":    0xFFFFFF01,
	"no-advertise": 0xFFFFFF02,
	"no-peer":      0xFFFFFF04,
	"blackhole":    0xFFFF029A,
}

// ParseCommunity parses one entry of BGPAdvertisement.spec.communities:
// "65000:100", "large:65000:1:2" or a well-known name. Exactly one of the
// results is meaningful: large reports which.
func ParseCommunity(s string) (std uint32, lc LargeCommunity, large bool, err error) {
	if v, ok := wellKnown[s]; ok {
		return v, LargeCommunity{}, false, nil
	}
	if rest, ok := strings.CutPrefix(s, "large:"); ok {
		parts := strings.Split(rest, ":")
		if len(parts) != 3 {
			return 0, lc, true, fmt.Errorf("community %q: want large:ASN:N:N", s)
		}
		var v [3]uint32
		for i, p := range parts {
			n, err := strconv.ParseUint(p, 10, 32)
			if err != nil {
				return 0, lc, true, fmt.Errorf("community %q: %w", s, err)
			}
			v[i] = uint32(n)
		}
		return 0, LargeCommunity{v[0], v[1], v[2]}, true, nil
	}
	hi, lo, ok := strings.Cut(s, ":")
	if !ok {
		return 0, lc, false, fmt.Errorf("community %q: want ASN:N, large:ASN:N:N or a well-known name", s)
	}
	h, err := strconv.ParseUint(hi, 10, 16)
	if err != nil {
		return 0, lc, false, fmt.Errorf("community %q: %w", s, err)
	}
	l, err := strconv.ParseUint(lo, 10, 16)
	if err != nil {
		return 0, lc, false, fmt.Errorf("community %q: %w", s, err)
	}
	return uint32(h)<<16 | uint32(l), lc, false, nil
}

// advert is a BGPAdvertisement that applies to this node, parsed once.
type advert struct {
	adv *v1alpha1.BGPAdvertisement
	// services are the compiled serviceSelectors; selects caches, by
	// address, whether every Service holding it matches.
	services v1alpha1.Selection
	selects  map[netip.Addr]bool
	std      []uint32
	large    []LargeCommunity
	peers    []*v1alpha1.BGPPeer
	len4     int
	len6     int
	weights  bool
}

// pathAcc accumulates the contributions to one (peer, prefix).
type pathAcc struct {
	std      map[uint32]bool
	large    map[LargeCommunity]bool
	pref     uint32
	weighted bool           // every contributor is a weighted Local Service
	weight   map[string]int // service/ip -> ready local endpoints
	services map[string]bool
}

// Compute plans the announcements of one node. Objects with errors (a bad
// selector, a bad community) are left out and reported; the rest of the
// plan stands, so one typo does not withdraw every route.
func Compute(in Input) (Plan, []error) {
	var errs []error
	pools, perrs := crosscheck.NewPools(in.Pools)
	errs = append(errs, perrs...)

	// Peers of this node: where two name one address, the older keeps it
	// (a newcomer never takes a working session over).
	peers, conflicts, perrs := crosscheck.Peers(in.Peers, in.Node.Labels)
	errs = append(errs, perrs...)
	for _, c := range conflicts {
		errs = append(errs, c)
	}
	// One router per node: a peer asking for another router ID than an
	// older one is not used.
	routerID, peers, idConflicts := crosscheck.RouterID(peers)
	for _, c := range idConflicts {
		errs = append(errs, c)
	}
	slices.SortFunc(peers, func(a, b *v1alpha1.BGPPeer) int { return cmp.Compare(a.Name, b.Name) })
	plan := Plan{Peers: make([]PeerPlan, len(peers)), RouterID: routerID}
	for i, p := range peers {
		plan.Peers[i].Peer = p
	}
	if !in.Node.Healthy || len(peers) == 0 {
		return plan, errs
	}

	// Advertisements of this node.
	var adverts []advert
	for _, adv := range in.Advertisements {
		a, ok, err := parseAdvert(adv, in.Node, peers)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok {
			adverts = append(adverts, a)
		}
	}

	// The Services holding each address, ready or not: serviceSelectors
	// decide per address, and a shared address is one route.
	holders := map[netip.Addr][]*Service{}
	for i := range in.Services {
		for _, ip := range in.Services[i].IPs {
			holders[ip.Unmap()] = append(holders[ip.Unmap()], &in.Services[i])
		}
	}

	acc := make(map[string]map[netip.Prefix]*pathAcc) // peer name -> prefix
	// covers caches, per advertisement, whether it announces a pool: it
	// selects the pool and its aggregation stays inside it.
	covers := make([]map[*v1alpha1.IPAddressPool]bool, len(adverts))
	for _, svc := range in.Services {
		if svc.LocalOnly && svc.LocalReady <= 0 || !svc.LocalOnly && svc.Ready <= 0 && !svc.Rejects {
			continue
		}
		for k, ip := range svc.IPs {
			ip = ip.Unmap()
			recorded := ""
			if k < len(svc.Pools) {
				recorded = svc.Pools[k]
			}
			pool := pools.Of(ip, recorded)
			if pool == nil {
				continue // not a zerohop address
			}
			for i := range adverts {
				a := &adverts[i]
				if covers[i] == nil {
					covers[i] = map[*v1alpha1.IPAddressPool]bool{}
				}
				ok, seen := covers[i][pool]
				if !seen {
					var err error
					ok, err = a.adv.Spec.SelectsPool(pool)
					if err != nil {
						errs = append(errs, fmt.Errorf("bgpadvertisement %s: ipAddressPoolSelectors: %w", a.adv.Name, err))
					} else if ok {
						if err := crosscheck.Aggregation(a.adv, pool); err != nil {
							errs = append(errs, err)
							ok = false
						}
					}
					covers[i][pool] = ok
				}
				if !ok || !a.selectsAddress(ip, holders[ip]) {
					continue
				}
				bits := a.len4
				if ip.Is6() {
					bits = a.len6
				}
				prefix, err := ip.Prefix(bits)
				if err != nil {
					errs = append(errs, fmt.Errorf("bgpadvertisement %s: %w", a.adv.Name, err))
					continue
				}
				// The last check before a path is planned: nothing outside
				// the pool it comes from is ever announced.
				if !pools.Within(prefix, pool) {
					errs = append(errs, fmt.Errorf("bgpadvertisement %s: %s lies outside pool %s; not announced", a.adv.Name, prefix, pool.Name))
					continue
				}
				for _, peer := range a.peers {
					byPrefix := acc[peer.Name]
					if byPrefix == nil {
						byPrefix = make(map[netip.Prefix]*pathAcc)
						acc[peer.Name] = byPrefix
					}
					pa := byPrefix[prefix]
					if pa == nil {
						pa = &pathAcc{std: map[uint32]bool{}, large: map[LargeCommunity]bool{},
							weighted: true, weight: map[string]int{}, services: map[string]bool{}}
						byPrefix[prefix] = pa
					}
					for _, c := range a.std {
						pa.std[c] = true
					}
					for _, c := range a.large {
						pa.large[c] = true
					}
					if IBGP(&peer.Spec) {
						pa.pref = max(pa.pref, a.adv.Spec.LocalPref)
					}
					if a.weights && svc.LocalOnly {
						pa.weight[svc.Key+"/"+ip.String()] = svc.LocalReady
					} else {
						pa.weighted = false
					}
					pa.services[svc.Key] = true
				}
			}
		}
	}

	for i := range plan.Peers {
		byPrefix := acc[plan.Peers[i].Peer.Name]
		prefixes := slices.SortedFunc(maps.Keys(byPrefix), comparePrefix)
		for _, prefix := range prefixes {
			pa := byPrefix[prefix]
			p := Path{
				Prefix:           prefix,
				Communities:      slices.Sorted(maps.Keys(pa.std)),
				LargeCommunities: slices.SortedFunc(maps.Keys(pa.large), compareLarge),
				LocalPref:        pa.pref,
				Services:         slices.Sorted(maps.Keys(pa.services)),
			}
			if pa.weighted {
				var w int
				for _, n := range pa.weight {
					w += n
				}
				p.Weight = uint32(w)
			}
			plan.Peers[i].Paths = append(plan.Peers[i].Paths, p)
		}
	}
	return plan, errs
}

func parseAdvert(adv *v1alpha1.BGPAdvertisement, node Node, peers []*v1alpha1.BGPPeer) (advert, bool, error) {
	ok, err := adv.Spec.SelectsNode(node.Labels)
	if err != nil {
		return advert{}, false, fmt.Errorf("bgpadvertisement %s: nodeSelectors: %w", adv.Name, err)
	}
	if !ok {
		return advert{}, false, nil
	}
	a := advert{adv: adv, len4: 32, len6: 128, weights: adv.Spec.WeightedECMP}
	if a.services, err = v1alpha1.NewSelection(adv.Spec.ServiceSelectors); err != nil {
		return advert{}, false, fmt.Errorf("bgpadvertisement %s: serviceSelectors: %w", adv.Name, err)
	}
	if l := adv.Spec.AggregationLength; l != nil {
		if *l < 0 || *l > 32 {
			return advert{}, false, fmt.Errorf("bgpadvertisement %s: aggregationLength %d out of 0-32", adv.Name, *l)
		}
		a.len4 = int(*l)
	}
	if l := adv.Spec.AggregationLengthV6; l != nil {
		if *l < 0 || *l > 128 {
			return advert{}, false, fmt.Errorf("bgpadvertisement %s: aggregationLengthV6 %d out of 0-128", adv.Name, *l)
		}
		a.len6 = int(*l)
	}
	for _, c := range adv.Spec.Communities {
		std, lc, large, err := ParseCommunity(c)
		if err != nil {
			return advert{}, false, fmt.Errorf("bgpadvertisement %s: %w", adv.Name, err)
		}
		if large {
			a.large = append(a.large, lc)
		} else {
			a.std = append(a.std, std)
		}
	}
	for _, p := range peers {
		if len(adv.Spec.Peers) == 0 || slices.Contains(adv.Spec.Peers, p.Name) {
			a.peers = append(a.peers, p)
		}
	}
	return a, true, nil
}

// selectsAddress reports whether the advertisement's serviceSelectors
// cover ip: every Service holding it matches one of them (a Service that
// shares the address but does not match never widens the advertisement
// to it). Without serviceSelectors every address is covered.
func (a *advert) selectsAddress(ip netip.Addr, holders []*Service) bool {
	if len(a.adv.Spec.ServiceSelectors) == 0 {
		return true
	}
	if ok, seen := a.selects[ip]; seen {
		return ok
	}
	ok := len(holders) > 0
	for _, h := range holders {
		if !a.services.Matches(h.Labels) {
			ok = false
			break
		}
	}
	if a.selects == nil {
		a.selects = map[netip.Addr]bool{}
	}
	a.selects[ip] = ok
	return ok
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

func compareLarge(a, b LargeCommunity) int {
	return cmp.Or(cmp.Compare(a.GlobalAdmin, b.GlobalAdmin),
		cmp.Compare(a.LocalData1, b.LocalData1), cmp.Compare(a.LocalData2, b.LocalData2))
}

// ServiceFrom summarises a Service and its EndpointSlices for node. It
// returns false for Services that are not LoadBalancers or have no ingress
// IP yet.
func ServiceFrom(svc *corev1.Service, sls []*discoveryv1.EndpointSlice, node string) (Service, bool) {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return Service{}, false
	}
	s := Service{
		Key:       svc.Namespace + "/" + svc.Name,
		Labels:    svc.Labels,
		LocalOnly: svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal,
	}
	from := svc.Annotations[v1alpha1.AnnotationAllocatedFrom]
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(in.IP); err == nil {
			s.IPs = append(s.IPs, a.Unmap())
			s.Pools = append(s.Pools, v1alpha1.AllocatedFrom(from, a.Unmap()))
		}
	}
	if len(s.IPs) == 0 {
		return Service{}, false
	}
	// A dual-stack Service has one slice per family listing the same Pods:
	// count Pods, not addresses, so that weights do not double.
	ready := map[string]bool{}
	local := map[string]bool{}
	for _, sl := range sls {
		if _, ok := sl.Annotations[v1alpha1.AnnotationRejectWeight]; ok {
			s.Rejects = true
		}
		for _, ep := range sl.Endpoints {
			// A nil Ready means ready (discovery/v1 API contract).
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			if len(ep.Addresses) == 0 {
				continue
			}
			key := "addr/" + ep.Addresses[0]
			if ep.TargetRef != nil && ep.TargetRef.Name != "" {
				key = "ref/" + ep.TargetRef.Namespace + "/" + ep.TargetRef.Name
			}
			ready[key] = true
			if ep.NodeName != nil && *ep.NodeName == node {
				local[key] = true
			}
		}
	}
	s.Ready, s.LocalReady = len(ready), len(local)
	return s, true
}
