package l2

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
)

// Interface is what choosing an announcing interface needs to know about
// one of the node's interfaces.
type Interface struct {
	Name     string
	Up       bool
	Loopback bool
	// Prefixes are the interface's addresses with their subnet lengths.
	Prefixes []netip.Prefix
}

// InterfaceFor returns the interface to answer on for vip when the
// L2Advertisement names none: the up, non-loopback interface holding an
// address on a subnet that contains vip, the most specific subnet winning
// (ties: the first in ifaces). ok is false when no subnet contains vip —
// an L2 VIP off every local subnet cannot be reached by ARP/NDP anyway.
func InterfaceFor(vip netip.Addr, ifaces []Interface) (name string, ok bool) {
	vip = vip.Unmap().WithZone("")
	best := -1
	for _, ifc := range ifaces {
		if !ifc.Up || ifc.Loopback {
			continue
		}
		for _, p := range ifc.Prefixes {
			p = unmapPrefix(p)
			// A host route (/32, /128) is an address, not a subnet a
			// neighbour could ARP from.
			if p.IsSingleIP() || !p.Contains(vip) {
				continue
			}
			if p.Bits() > best {
				best, name = p.Bits(), ifc.Name
			}
		}
	}
	return name, best >= 0
}

// Interfaces reads the interfaces of the calling thread's network
// namespace for InterfaceFor.
func Interfaces() ([]Interface, error) {
	ifis, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	out := make([]Interface, 0, len(ifis))
	for _, ifi := range ifis {
		addrs, err := ifi.Addrs()
		if err != nil {
			return nil, fmt.Errorf("interface %s addresses: %w", ifi.Name, err)
		}
		ifc := Interface{
			Name:     ifi.Name,
			Up:       isUp(ifi.Flags),
			Loopback: ifi.Flags&net.FlagLoopback != 0,
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			bits, _ := ipn.Mask.Size()
			if len(ipn.Mask) == net.IPv4len {
				// A 4-byte mask goes with an IPv4 address, whatever
				// length the IP slice has.
				ip = ip.Unmap()
			}
			ifc.Prefixes = append(ifc.Prefixes, unmapPrefix(netip.PrefixFrom(ip, bits)))
		}
		out = append(out, ifc)
	}
	return out, nil
}

// LinkUp says whether ifname is administratively up with carrier. A
// speaker whose announcing interface is down must stop announcing (and
// take itself out of the election, see member.Cluster.SetReady), since
// nothing it sends would arrive.
func LinkUp(ifname string) (bool, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return false, fmt.Errorf("interface %s: %w", ifname, err)
	}
	return isUp(ifi.Flags), nil
}

func isUp(f net.Flags) bool {
	return f&net.FlagUp != 0 && f&net.FlagRunning != 0
}

// unmapPrefix turns an IPv4-mapped IPv6 prefix (as net.IPNet may report
// an IPv4 address) into the IPv4 prefix it stands for.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	a, bits := p.Addr().WithZone(""), p.Bits()
	if a.Is4In6() && bits >= 96 {
		a, bits = a.Unmap(), bits-96
	}
	return netip.PrefixFrom(a, bits).Masked()
}

func equalMAC(a, b net.HardwareAddr) bool { return bytes.Equal(a, b) }
