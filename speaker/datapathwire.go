package speaker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/zerohop/zerohop/bpf"
	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/speaker/datapath"
)

// Datapath is the XDP datapath the speaker programs; *bpf.Datapath
// satisfies it. Without one the speaker only announces.
type Datapath interface {
	datapath.Applier
	// Services lists the keys the datapath holds (after a restart, those
	// a previous speaker programmed).
	Services() []bpf.ServiceKey
	// Attach puts the programs on an uplink; attaching twice is a no-op.
	Attach(ifname string) error
	// SetNode and SetPeers configure Cluster mode: this node's underlay
	// addresses and the nodes it accepts encapsulated packets from.
	SetNode(bpf.NodeConfig) error
	SetPeers(prefixes []netip.Prefix) error
}

// DefaultWithdrawGrace is how long a datapath entry outlives its
// announcement: routers that have not yet processed the withdrawal still
// send packets, which should be balanced rather than passed to the host.
const DefaultWithdrawGrace = time.Second

// dpState is what the speaker knows of its datapath.
type dpState struct {
	mu       sync.Mutex
	current  map[bpf.ServiceKey]datapath.Entry
	stale    map[bpf.ServiceKey]time.Time // unwanted keys, since when
	attached map[string]bool
	node     bpf.NodeConfig
	nodeSet  bool
	peers    []netip.Prefix
	neigh    map[neighbourKey]bool
	// manageNeigh is off in tests that run without a network namespace.
	manageNeigh bool
}

// programDatapath attaches to the uplinks, configures the node and writes
// every new or changed entry of desired; it deletes nothing (see
// retireDatapath). It returns the VIPs that must not be announced because
// one of their entries is not in place.
func (r *reconciler) programDatapath(ctx context.Context, self *corev1.Node, nodes []corev1.Node,
	l2advs []v1alpha1.L2Advertisement, desired map[bpf.ServiceKey]datapath.Entry) (blocked map[netip.Addr]bool, errs []error) {
	dp := r.opts.Datapath
	s := &r.dp
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current == nil {
		// A restarted speaker finds the previous one's entries: rewrite
		// what is wanted once, retire the rest.
		s.current = datapath.Observed(dp.Services())
		s.attached = map[string]bool{}
	}
	errs = append(errs, r.attachUplinks(l2advs)...)
	if err := s.configureNode(dp, r.opts.NodeName, self, nodes, r.opts.PathMTU); err != nil {
		errs = append(errs, err)
	}

	start := time.Now()
	ups, _ := datapath.Diff(s.current, desired)
	if err := datapath.Apply(ctx, dp, s.current, ups, nil); err != nil {
		errs = append(errs, fmt.Errorf("datapath: %w", err))
	}
	if len(ups) > 0 {
		datapathUpdateSeconds.Observe(time.Since(start).Seconds())
		datapathUpdates.Add(float64(len(ups)))
		r.log.V(1).Info("datapath updated", "upserts", len(ups), "took", time.Since(start))
	}
	datapathEntries.Set(float64(len(s.current)))

	blocked = map[netip.Addr]bool{}
	for k, want := range desired {
		if have, ok := s.current[k]; !ok || !have.Equal(want) {
			blocked[k.Addr] = true
		}
	}
	return blocked, errs
}

// retireDatapath deletes the entries no longer wanted once they have been
// unwanted for the grace period; the caller has already withdrawn their
// announcements. It returns when to look again, or 0.
func (r *reconciler) retireDatapath(ctx context.Context, desired map[bpf.ServiceKey]datapath.Entry) (time.Duration, error) {
	s := &r.dp
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current == nil {
		return 0, nil
	}
	_, unwanted := datapath.Diff(s.current, desired)
	now := time.Now()
	grace := r.opts.WithdrawGrace
	next := time.Duration(0)
	var due []bpf.ServiceKey
	stale := map[bpf.ServiceKey]time.Time{}
	for _, k := range unwanted {
		since, ok := s.stale[k]
		if !ok {
			since = now
		}
		stale[k] = since
		if wait := grace - now.Sub(since); wait > 0 {
			if next == 0 || wait < next {
				next = wait
			}
			continue
		}
		due = append(due, k)
	}
	s.stale = stale
	if len(due) == 0 {
		return next, nil
	}
	err := datapath.Apply(ctx, r.opts.Datapath, s.current, nil, due)
	for _, k := range due {
		if _, still := s.current[k]; !still {
			delete(s.stale, k)
		}
	}
	datapathEntries.Set(float64(len(s.current)))
	r.log.V(1).Info("datapath entries retired", "deleted", len(due))
	if err != nil {
		return time.Second, fmt.Errorf("datapath: %w", err)
	}
	return next, nil
}

// attachUplinks attaches to the configured uplinks, or by default to the
// interfaces of the default routes and those L2Advertisements name. An
// interface that does not exist on this node is skipped without error when
// it came from an L2Advertisement (those may name other nodes' NICs).
func (r *reconciler) attachUplinks(l2advs []v1alpha1.L2Advertisement) []error {
	s := &r.dp
	var errs []error
	want := map[string]bool{} // name -> required
	if len(r.opts.Uplinks) > 0 {
		for _, n := range r.opts.Uplinks {
			want[n] = true
		}
	} else {
		names, err := DefaultRouteInterfaces()
		if err != nil {
			errs = append(errs, fmt.Errorf("datapath: uplinks: %w", err))
		}
		for _, n := range names {
			want[n] = true
		}
		for _, a := range l2advs {
			for _, n := range a.Spec.Interfaces {
				if !want[n] {
					want[n] = false
				}
			}
		}
		if len(names) == 0 && err == nil && len(want) == 0 {
			errs = append(errs, errors.New("datapath: no default route and no --uplink: attached nowhere, VIP traffic is not balanced"))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		if s.attached[name] {
			continue
		}
		if _, err := net.InterfaceByName(name); err != nil && !want[name] {
			continue
		}
		if err := r.opts.Datapath.Attach(name); err != nil {
			errs = append(errs, fmt.Errorf("datapath: uplink %s: %w", name, err))
			continue
		}
		s.attached[name] = true
		r.log.Info("datapath attached", "interface", name)
	}
	return errs
}

// configureNode gives Cluster mode this node's underlay addresses and
// accepts encapsulated packets from every other node's. Called with s.mu.
func (s *dpState) configureNode(dp Datapath, self string, node *corev1.Node, nodes []corev1.Node, mtu int) error {
	var cfg bpf.NodeConfig
	cfg.PathMTU = mtu
	for _, a := range nodeAddrs(node) {
		if a.Is4() && !cfg.Addr4.IsValid() {
			cfg.Addr4 = a
		} else if a.Is6() && !cfg.Addr6.IsValid() {
			cfg.Addr6 = a
		}
	}
	var errs []error
	if !s.nodeSet || s.node != cfg {
		if err := dp.SetNode(cfg); err != nil {
			errs = append(errs, fmt.Errorf("datapath: node %s: %w", self, err))
		} else {
			s.node, s.nodeSet = cfg, true
		}
	}
	var peers []netip.Prefix
	for i := range nodes {
		if nodes[i].Name == self {
			continue
		}
		for _, a := range nodeAddrs(&nodes[i]) {
			peers = append(peers, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	slices.SortFunc(peers, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	peers = slices.Compact(peers)
	if !slices.Equal(peers, s.peers) {
		if err := dp.SetPeers(peers); err != nil {
			errs = append(errs, fmt.Errorf("datapath: peers: %w", err))
		} else {
			s.peers = peers
		}
	}
	if s.manageNeigh {
		// Every round, not only on change: routes to the nodes may move.
		held, err := manageNeighbours(s.neigh, peers)
		s.neigh = held
		if err != nil {
			errs = append(errs, fmt.Errorf("datapath: %w", err))
		}
	}
	return errors.Join(errs...)
}

// nodeAddrs are a node's InternalIPs: the underlay that Cluster mode
// encapsulates over.
func nodeAddrs(n *corev1.Node) []netip.Addr {
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

// announceable returns the Services with the blocked VIPs taken out of
// their status, so that neither BGP nor L2 announces an address whose
// datapath entries are not all in place. svcs is not modified.
func announceable(svcs []corev1.Service, blocked map[netip.Addr]bool) []corev1.Service {
	if len(blocked) == 0 {
		return svcs
	}
	out := make([]corev1.Service, len(svcs))
	for i := range svcs {
		out[i] = svcs[i]
		ing := svcs[i].Status.LoadBalancer.Ingress
		kept := make([]corev1.LoadBalancerIngress, 0, len(ing))
		for _, in := range ing {
			if ip, err := netip.ParseAddr(in.IP); err == nil && blocked[ip.Unmap()] {
				continue
			}
			kept = append(kept, in)
		}
		out[i].Status.LoadBalancer.Ingress = kept
	}
	return out
}

// translateInput adapts the reconcile's lists to datapath.Translate.
func translateInput(svcs []corev1.Service, sls []discoveryv1.EndpointSlice, nodes []corev1.Node) ([]*corev1.Service, []*discoveryv1.EndpointSlice, map[string][]netip.Addr) {
	sp := make([]*corev1.Service, len(svcs))
	for i := range svcs {
		sp[i] = &svcs[i]
	}
	lp := make([]*discoveryv1.EndpointSlice, len(sls))
	for i := range sls {
		lp[i] = &sls[i]
	}
	addrs := make(map[string][]netip.Addr, len(nodes))
	for i := range nodes {
		addrs[nodes[i].Name] = nodeAddrs(&nodes[i])
	}
	return sp, lp, addrs
}

// DefaultRouteInterfaces reads the interfaces of this network namespace's
// IPv4 and IPv6 default routes from /proc, which follows the namespace.
func DefaultRouteInterfaces() ([]string, error) {
	set := map[string]bool{}
	v4, err := os.Open("/proc/net/route")
	if err != nil {
		return nil, err
	}
	defer func() { _ = v4.Close() }()
	sc := bufio.NewScanner(v4)
	for sc.Scan() {
		// Iface Destination Gateway Flags RefCnt Use Metric Mask ...
		f := strings.Fields(sc.Text())
		if len(f) >= 8 && f[1] == "00000000" && f[7] == "00000000" {
			set[f[0]] = true
		}
	}
	if v6, err := os.Open("/proc/net/ipv6_route"); err == nil {
		defer func() { _ = v6.Close() }()
		sc := bufio.NewScanner(v6)
		for sc.Scan() {
			// dest destlen src srclen nexthop metric refcnt use flags iface
			f := strings.Fields(sc.Text())
			if len(f) >= 10 && f[0] == strings.Repeat("0", 32) && f[1] == "00" && f[9] != "lo" {
				set[f[9]] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(set)), nil
}
