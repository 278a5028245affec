package speaker

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

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

// manageNeighbours keeps a managed neighbour entry for the next hop
// towards every peer node, removes the entries of nodes that are gone, and
// returns the set now held. Called with the dp state lock.
func manageNeighbours(held map[neighbourKey]bool, peers []netip.Prefix) (map[neighbourKey]bool, error) {
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
