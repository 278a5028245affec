package datapath

import (
	"bytes"
	"errors"
	"fmt"
	"iter"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/zerohop/zerohop/bpf"
)

// Pod links: the interfaces through which this node's Pods are reached,
// found in the kernel's own tables, so that XDP can hand balanced packets
// straight to a Pod (bpf.PodLinks) whatever the CNI:
//
//   - a Pod's host side is a veth (or netkit) whose other end is in
//     another network namespace: the kernel says so (IFLA_LINK_NETNSID);
//   - routed (Calico style): a host route sends the Pod's address to
//     that veth; the Pod's MAC is the neighbour entry on it;
//   - bridged (Flannel style): the veth is a port of a bridge (cni0) that
//     routes the Pod range; the bridge's forwarding database says which
//     port each Pod MAC is behind.
//
// The uplinks are never Pod links. Nothing is configured per CNI, and
// nothing inside a Pod's namespace is touched.

// podView is what the Pod links are computed from.
type podView struct {
	links []linkInfo
	fdb   []fdbEntry  // learned entries of bridge ports
	neigh []neighInfo // resolved neighbours
}

type linkInfo struct {
	index  int
	name   string
	kind   string // "veth", "netkit", "bridge", ...
	peerNS bool   // its other end is in another network namespace
	up     bool
	master int // the bridge it is a port of, 0 if none
	mac    net.HardwareAddr
}

type fdbEntry struct {
	port int
	mac  net.HardwareAddr
}

type neighInfo struct {
	link int
	addr netip.Addr
	mac  net.HardwareAddr
}

// podLinks computes the Pod links from a view of the node's tables;
// uplinks (by name) are left out.
func podLinks(v podView, uplinks map[string]bool) bpf.PodLinks {
	byIndex := map[int]linkInfo{}
	for _, l := range v.links {
		byIndex[l.index] = l
	}
	podMACs := map[int][]net.HardwareAddr{} // port or routed veth -> Pod MACs
	for _, e := range v.fdb {
		if l, ok := byIndex[e.port]; ok && !bytes.Equal(e.mac, l.mac) {
			podMACs[e.port] = appendMAC(podMACs[e.port], e.mac)
		}
	}
	for _, n := range v.neigh {
		if l, ok := byIndex[n.link]; ok && l.master == 0 {
			podMACs[n.link] = appendMAC(podMACs[n.link], n.mac)
		}
	}
	var out bpf.PodLinks
	for _, l := range v.links {
		if (l.kind != "veth" && l.kind != "netkit") || !l.peerNS || !l.up || uplinks[l.name] || len(l.mac) != 6 {
			continue
		}
		link := bpf.PodLink{Ifindex: l.index, HostMAC: l.mac}
		if macs := podMACs[l.index]; len(macs) == 1 {
			link.PodMAC = macs[0]
		}
		if br, ok := byIndex[l.master]; ok && l.master != 0 {
			if br.kind != "bridge" || len(br.mac) != 6 {
				continue // a port of something else (a bond, an OVS port): leave it to the stack
			}
			link.HostMAC = br.mac
			for _, m := range podMACs[l.index] {
				out.Bridged = append(out.Bridged, bpf.BridgedPod{Bridge: br.index, MAC: m, Port: l.index})
			}
		}
		out.Peers = append(out.Peers, link)
	}
	return out
}

func appendMAC(macs []net.HardwareAddr, m net.HardwareAddr) []net.HardwareAddr {
	if len(m) != 6 || slices.ContainsFunc(macs, func(x net.HardwareAddr) bool { return bytes.Equal(x, m) }) {
		return macs
	}
	return append(macs, m)
}

// podNeighbours are the managed neighbour entries local backends need:
// XDP delivers to a Pod directly only once the kernel has resolved its MAC
// (bpf_fib_lookup answers "no neighbour" otherwise), and a managed entry
// makes the kernel resolve it at once and keep it. route gives the
// interface the node routes an address out of; only addresses routed to a
// Pod link, or to a bridge with Pod links, get an entry.
func podNeighbours(links bpf.PodLinks, addrs iter.Seq[netip.Addr], route func(netip.Addr) (int, bool)) map[neighbourKey]bool {
	via := map[int]bool{}
	for _, l := range links.Peers {
		via[l.Ifindex] = true
	}
	for _, b := range links.Bridged {
		via[b.Bridge] = true
	}
	want := map[neighbourKey]bool{}
	for a := range addrs {
		if link, ok := route(a); ok && via[link] {
			want[neighbourKey{link: link, addr: a}] = true
		}
	}
	return want
}

// readPodView reads links, learned bridge FDB entries and resolved
// neighbours from this network namespace.
func readPodView() (podView, error) {
	var v podView
	links, err := netlink.LinkList()
	if err != nil {
		return v, fmt.Errorf("list links: %w", err)
	}
	bridges := false
	for _, l := range links {
		a := l.Attrs()
		li := linkInfo{index: a.Index, name: a.Name, kind: l.Type(), peerNS: a.NetNsID >= 0,
			up: a.Flags&net.FlagUp != 0, master: a.MasterIndex, mac: a.HardwareAddr}
		bridges = bridges || li.kind == "bridge"
		v.links = append(v.links, li)
	}
	if bridges {
		fdb, err := netlink.NeighList(0, unix.AF_BRIDGE)
		if err != nil {
			return v, fmt.Errorf("list bridge forwarding entries: %w", err)
		}
		for _, e := range fdb {
			// Learned entries only: permanent ones are the ports' own.
			if e.State&netlink.NUD_PERMANENT != 0 || e.Flags&netlink.NTF_SELF != 0 {
				continue
			}
			v.fdb = append(v.fdb, fdbEntry{port: e.LinkIndex, mac: e.HardwareAddr})
		}
	}
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		ns, err := netlink.NeighList(0, fam)
		if err != nil {
			return v, fmt.Errorf("list neighbours: %w", err)
		}
		for _, n := range ns {
			a, ok := netip.AddrFromSlice(n.IP)
			if !ok || n.State&nudValid == 0 || len(n.HardwareAddr) != 6 {
				continue
			}
			v.neigh = append(v.neigh, neighInfo{link: n.LinkIndex, addr: a.Unmap(), mac: n.HardwareAddr})
		}
	}
	return v, nil
}

// nudValid are the states in which the kernel (and bpf_fib_lookup) use a
// neighbour's MAC.
const nudValid = netlink.NUD_PERMANENT | netlink.NUD_NOARP | netlink.NUD_REACHABLE | netlink.NUD_PROBE |
	netlink.NUD_STALE | netlink.NUD_DELAY

// routeTable is the main routing table's destinations and interfaces,
// longest prefix first: enough to tell which interface an address goes
// out of (Pod routes live in the main table).
type routeTable []routeInfo

type routeInfo struct {
	dst  netip.Prefix
	link int
}

func readRoutes() (routeTable, error) {
	var rt routeTable
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		rs, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range rs {
			link := r.LinkIndex
			if link == 0 && len(r.MultiPath) > 0 {
				link = r.MultiPath[0].LinkIndex
			}
			var dst netip.Prefix
			if r.Dst == nil {
				dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
				if fam == unix.AF_INET6 {
					dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
				}
			} else {
				a, ok := netip.AddrFromSlice(r.Dst.IP)
				ones, _ := r.Dst.Mask.Size()
				if !ok {
					continue
				}
				dst = netip.PrefixFrom(a.Unmap(), ones)
			}
			rt = append(rt, routeInfo{dst: dst.Masked(), link: link})
		}
	}
	slices.SortStableFunc(rt, func(a, b routeInfo) int { return b.dst.Bits() - a.dst.Bits() })
	return rt, nil
}

// lookup is the interface of the longest prefix holding a.
func (rt routeTable) lookup(a netip.Addr) (int, bool) {
	for _, r := range rt {
		if r.dst.Addr().Is4() == a.Is4() && r.dst.Contains(a) {
			return r.link, r.link != 0
		}
	}
	return 0, false
}

// syncPodLinks gives the datapath this node's Pod links and keeps managed
// neighbour entries for the local backends behind them. Called with p.mu.
func (p *Programmer) syncPodLinks() error {
	if !p.opts.DirectToPods {
		return nil
	}
	v, err := readPodView()
	if err != nil {
		return fmt.Errorf("datapath: pod links: %w", err)
	}
	uplinks := map[string]bool{}
	for name := range p.attached {
		uplinks[name] = true
	}
	for _, name := range p.opts.Uplinks {
		uplinks[name] = true
	}
	links := podLinks(v, uplinks)
	var errs []error
	changed := p.podLinks == nil || !equalPodLinks(*p.podLinks, links)
	if changed {
		if err := p.opts.Kernel.SetPodLinks(links); err != nil {
			errs = append(errs, fmt.Errorf("datapath: pod links: %w", err))
		} else {
			p.opts.Log.V(1).Info("pod links", "links", len(links.Peers), "bridged", len(links.Bridged))
			p.podLinks = &links
		}
	}
	// Routes are read again only when the Pod links or the entries
	// changed: a node with many Services has many backends to look up,
	// the same ones every time.
	if p.opts.ManageNeighbours && (changed || p.gen != p.podNeighGen) {
		rt, err := readRoutes()
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("datapath: pod neighbours: %w", err))...)
		}
		held, err := holdNeighbours(p.podNeigh, podNeighbours(links, p.localBackends(), rt.lookup))
		p.podNeigh = held
		if err != nil {
			errs = append(errs, fmt.Errorf("datapath: pod %w", err))
		} else {
			p.podNeighGen = p.gen
		}
	}
	return errors.Join(errs...)
}

// localBackends yields the addresses of the local backends programmed
// now (an address once per entry that has it). Called with p.mu.
func (p *Programmer) localBackends() iter.Seq[netip.Addr] {
	return func(yield func(netip.Addr) bool) {
		for _, e := range p.current {
			for _, b := range e.Backends {
				if b.Flags&bpf.BackendLocal != 0 && !yield(b.Addr) {
					return
				}
			}
		}
	}
}

func equalPodLinks(a, b bpf.PodLinks) bool {
	return slices.EqualFunc(a.Peers, b.Peers, func(x, y bpf.PodLink) bool {
		return x.Ifindex == y.Ifindex && bytes.Equal(x.HostMAC, y.HostMAC) && bytes.Equal(x.PodMAC, y.PodMAC)
	}) && slices.EqualFunc(a.Bridged, b.Bridged, func(x, y bpf.BridgedPod) bool {
		return x.Bridge == y.Bridge && x.Port == y.Port && bytes.Equal(x.MAC, y.MAC)
	})
}
