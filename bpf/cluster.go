package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// NodeConfig is this node's part in Cluster mode.
type NodeConfig struct {
	// Addr4 and Addr6 are this node's underlay addresses: encapsulated
	// packets from a peer addressed to one of them are taken apart here,
	// and other nodes encapsulate towards them (Backend.Node). Either may
	// be unset, which disables that family.
	Addr4, Addr6 netip.Addr
	// Source4 and Source6 are the ranges this node encapsulates from. The
	// host bits are taken from the flow hash, so each flow has its own
	// outer source and the receiving NIC's RSS spreads flows over its
	// queues; the other nodes must list the range as a peer. An IPv6 range
	// varies at most the last 32 bits. Default: the node's address alone.
	Source4, Source6 netip.Prefix
	// PathMTU is the MTU between nodes. SYNs of flows this node
	// encapsulates, and SYN-ACKs of flows that arrived encapsulated, get
	// their MSS lowered to PathMTU-60 (IPv4) or PathMTU-100 (IPv6) so that
	// encapsulated segments fit. 0: no clamping (a jumbo underlay).
	PathMTU int
}

// Events are node-wide datapath counters, summed over all CPUs.
type Events struct {
	Encap        uint64 // packets encapsulated to a remote backend's node
	EncapFail    uint64 // frames that could not be grown: dropped
	Decap        uint64 // encapsulated packets from a peer taken apart
	DecapRefused uint64 // protocol 4/41 to this node from an unknown source: passed untouched
	DecapNoLocal uint64 // decapsulated, but the flow's backend is not on this node: dropped
	MSSClamped   uint64 // SYN / SYN-ACK MSS lowered to fit the path MTU
	FragFirst    uint64 // first fragments of VIP flows recorded
	FragHit      uint64 // later fragments that followed their first fragment
	FragMiss     uint64 // later fragments with no record: passed untouched
	ICMPRelay    uint64 // frag-needed / packet-too-big delivered to the flow's backend
	ICMPNoFlow   uint64 // such errors for no known service: passed untouched
	EchoReply    uint64 // echo requests to a VIP answered
}

// SetNode configures Cluster mode on this node.
func (d *Datapath) SetNode(c NodeConfig) error {
	if c.PathMTU != 0 && (c.PathMTU < 1280 || c.PathMTU > 65535) {
		return fmt.Errorf("node: path MTU %d out of range [1280, 65535]", c.PathMTU)
	}
	var v zhNodeCfg
	v.Mtu = uint32(c.PathMTU)
	if c.Addr4.IsValid() {
		if !c.Addr4.Is4() {
			return fmt.Errorf("node: %s is not an IPv4 address", c.Addr4)
		}
		src := c.Source4
		if !src.IsValid() {
			src = netip.PrefixFrom(c.Addr4, 32)
		}
		if !src.Addr().Is4() {
			return fmt.Errorf("node: source range %s is not IPv4", src)
		}
		v.Addr4 = addrWords(c.Addr4)[0]
		v.Src4 = addrWords(src.Masked().Addr())[0]
		v.Src4Mask = hostMask(src.Bits())
	}
	if c.Addr6.IsValid() {
		if !c.Addr6.Is6() || c.Addr6.Is4In6() {
			return fmt.Errorf("node: %s is not an IPv6 address", c.Addr6)
		}
		src := c.Source6
		if !src.IsValid() {
			src = netip.PrefixFrom(c.Addr6, 128)
		}
		if !src.Addr().Is6() {
			return fmt.Errorf("node: source range %s is not IPv6", src)
		}
		v.Addr6 = addrWords(c.Addr6)
		v.Src6 = addrWords(src.Masked().Addr())
		v.Src6Mask = hostMask(max(src.Bits()-96, 0))
	}
	if err := d.objs.Node.Put(uint32(0), v); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	return nil
}

// hostMask is the in-memory (network order) mask of the host bits of a
// 32-bit word whose first bits are network bits.
func hostMask(bits int) uint32 {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(uint64(1)<<(32-bits)-1))
	return binary.NativeEndian.Uint32(b[:])
}

// SetPeers replaces the set of outer source ranges (the other nodes'
// Source4/Source6, or their addresses) that this node accepts
// encapsulated packets from. Anything else with protocol 4 or 41 is
// passed to the kernel untouched.
func (d *Datapath) SetPeers(prefixes []netip.Prefix) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	want := map[zhPeerKey]bool{}
	for _, p := range prefixes {
		if !p.IsValid() || p.Addr().Is4In6() {
			return fmt.Errorf("peers: invalid prefix %s", p)
		}
		want[peerKey(p)] = true
	}
	var stale []zhPeerKey
	var k zhPeerKey
	var v uint32
	it := d.objs.Peers.Iterate()
	for it.Next(&k, &v) {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("peers: %w", err)
	}
	for k := range want {
		if err := d.objs.Peers.Put(k, uint32(1)); err != nil {
			return fmt.Errorf("peers: add %s: %w", prefixOf(k), err)
		}
	}
	for _, k := range stale {
		if err := d.objs.Peers.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("peers: remove %s: %w", prefixOf(k), err)
		}
	}
	return nil
}

func peerKey(p netip.Prefix) zhPeerKey {
	p = p.Masked()
	return zhPeerKey{Prefixlen: uint32(32 + p.Bits()), Family: uint32(family(p.Addr())), Addr: addrWords(p.Addr())}
}

func prefixOf(k zhPeerKey) netip.Prefix {
	return netip.PrefixFrom(wordsAddr(k.Addr, uint8(k.Family)), int(k.Prefixlen)-32)
}

// Events returns the node-wide counters.
func (d *Datapath) Events() (Events, error) {
	return readEvents(d.objs.Events)
}

func readEvents(m *ebpf.Map) (Events, error) {
	var per []zhEventCounts
	if err := m.Lookup(uint32(0), &per); err != nil {
		return Events{}, fmt.Errorf("events: %w", err)
	}
	var e Events
	for _, p := range per {
		e.Encap += p.Encap
		e.EncapFail += p.EncapFail
		e.Decap += p.Decap
		e.DecapRefused += p.DecapRefused
		e.DecapNoLocal += p.DecapNoLocal
		e.MSSClamped += p.MssClamped
		e.FragFirst += p.FragFirst
		e.FragHit += p.FragHit
		e.FragMiss += p.FragMiss
		e.ICMPRelay += p.IcmpRelay
		e.ICMPNoFlow += p.IcmpNoFlow
		e.EchoReply += p.EchoReply
	}
	return e, nil
}

func vipKey(a netip.Addr) zhVipKey {
	return zhVipKey{Addr: addrWords(a), Family: uint32(family(a))}
}
