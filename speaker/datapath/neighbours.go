package datapath

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"github.com/zerohop/zerohop/bpf"
)

// configureNode gives Cluster mode this node's underlay addresses and
// accepts encapsulated packets from every other node's. Called with p.mu.
func (p *Programmer) configureNode(self *corev1.Node, nodes []corev1.Node) error {
	k := p.opts.Kernel
	var cfg bpf.NodeConfig
	cfg.PathMTU = p.opts.PathMTU
	for _, a := range NodeAddrs(self) {
		if a.Is4() && !cfg.Addr4.IsValid() {
			cfg.Addr4 = a
		} else if a.Is6() && !cfg.Addr6.IsValid() {
			cfg.Addr6 = a
		}
	}
	var errs []error
	if !p.nodeSet || p.node != cfg {
		if err := k.SetNode(cfg); err != nil {
			errs = append(errs, fmt.Errorf("datapath: node %s: %w", p.opts.NodeName, err))
		} else {
			p.node, p.nodeSet = cfg, true
		}
	}
	var peers []netip.Prefix
	for i := range nodes {
		if nodes[i].Name == p.opts.NodeName {
			continue
		}
		for _, a := range NodeAddrs(&nodes[i]) {
			peers = append(peers, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	slices.SortFunc(peers, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	peers = slices.Compact(peers)
	if !slices.Equal(peers, p.peers) {
		if err := k.SetPeers(peers); err != nil {
			errs = append(errs, fmt.Errorf("datapath: peers: %w", err))
		} else {
			p.peers = peers
		}
	}
	if p.opts.ManageNeighbours {
		// Every round, not only on change: routes to the nodes may move.
		want, werr := nodeNeighbours(peers)
		held, err := holdNeighbours(p.neigh, want)
		p.neigh = held
		if err = errors.Join(werr, err); err != nil {
			errs = append(errs, fmt.Errorf("datapath: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Cluster mode encapsulates in XDP, where bpf_fib_lookup finds the next
// hop's MAC only if the kernel already resolved it; XDP cannot ask the
// kernel to resolve, and passing an encapsulated packet to the stack does
// not help (its source is this node: a martian). Managed neighbour entries
// (Linux 5.16+) make the kernel resolve the other nodes' next hops and keep
// them reachable, as Cilium does for its nodes.

// neighbourKey is one managed entry: a next hop on an interface.
type neighbourKey struct {
	link int
	addr netip.Addr
}

// nodeNeighbours are the next hops towards the peer nodes. A node
// whose next hop is unknown is left out (and named in the error).
func nodeNeighbours(peers []netip.Prefix) (map[neighbourKey]bool, error) {
	want := map[neighbourKey]bool{}
	var errs []error
	for _, p := range peers {
		hop, link, err := nextHop(p.Addr())
		if err != nil {
			errs = append(errs, fmt.Errorf("next hop to node %s: %w", p.Addr(), err))
			continue
		}
		want[neighbourKey{link: link, addr: hop}] = true
	}
	return want, errors.Join(errs...)
}

// holdNeighbours keeps a managed neighbour entry for every key of want,
// removes the entries held that are no longer wanted, and returns the set
// now held. Called with p.mu.
func holdNeighbours(held map[neighbourKey]bool, want map[neighbourKey]bool) (map[neighbourKey]bool, error) {
	var errs []error
	for k := range want {
		if held[k] {
			continue
		}
		n := &netlink.Neigh{LinkIndex: k.link, IP: net.IP(k.addr.AsSlice()), State: netlink.NUD_NONE,
			FlagsExt: netlink.NTF_EXT_MANAGED, Family: family(k.addr)}
		if err := netlink.NeighSet(n); err != nil {
			errs = append(errs, fmt.Errorf("managed neighbour %s: %w", k.addr, err))
			delete(want, k)
		}
	}
	for k := range held {
		if want[k] {
			continue
		}
		n := &netlink.Neigh{LinkIndex: k.link, IP: net.IP(k.addr.AsSlice()), Family: family(k.addr)}
		if err := netlink.NeighDel(n); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("managed neighbour %s: %w", k.addr, err))
			want[k] = true // retry
		}
	}
	return want, errors.Join(errs...)
}

// nextHop is the address whose MAC a packet to dst is sent to, and the
// interface, from this namespace's routing table.
func nextHop(dst netip.Addr) (netip.Addr, int, error) {
	routes, err := netlink.RouteGet(net.IP(dst.AsSlice()))
	if err != nil {
		return netip.Addr{}, 0, err
	}
	if len(routes) == 0 {
		return netip.Addr{}, 0, errors.New("no route")
	}
	r := routes[0]
	hop := dst
	if gw, ok := netip.AddrFromSlice(r.Gw); ok && r.Gw != nil {
		hop = gw.Unmap()
	}
	return hop, r.LinkIndex, nil
}

func family(a netip.Addr) int {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}
