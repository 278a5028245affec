package lab

import (
	"fmt"
	"net/netip"
)

// The addressing plan. Only documentation ranges, a pod range inside
// 100.64.0.0/10 and link-local for management are used, so nothing in the lab
// can collide with a real network the machine is attached to.
const (
	ClientNS = "zh-client"
	RouterNS = "zh-router"
	// SwitchNS holds the node segment's bridge so that no bridge lives in the
	// root namespace apart from the management one.
	SwitchNS   = "zh-switch"
	MgmtBridge = "zh-mgmt"
	// PodNSPrefix starts every Pod namespace name.
	PodNSPrefix = "zh-pod-"

	// Interface names inside the namespaces.
	UplinkIf = "eth0" // node and client uplink, Pod interface
	MgmtIf   = "mgmt" // node's management link
	// Router interfaces.
	RouterClientIf = "eth-client"
	RouterNodesIf  = "eth-nodes"
	switchBridge   = "br0"

	// podGateway4 is the Calico-style fake gateway every Pod routes through;
	// the node's side of the veth answers ARP for it by proxy ARP.
	podGateway4 = "169.254.1.1"
	// podGateway6 is put on the node's side of every Pod veth.
	podGateway6 = "fe80::1"
)

var (
	// MgmtPrefix is the management link; MgmtHost (root namespace) is where
	// the API server listens.
	MgmtPrefix = netip.MustParsePrefix("169.254.100.0/24")
	MgmtHost   = netip.MustParseAddr("169.254.100.1")

	ClientNet4 = netip.MustParsePrefix("192.0.2.0/24")
	ClientNet6 = netip.MustParsePrefix("2001:db8:2::/64")
	NodeNet4   = netip.MustParsePrefix("198.51.100.0/24")
	NodeNet6   = netip.MustParsePrefix("2001:db8:100::/64")
	// VIPRange4/6 are where demo and test pools take their addresses from.
	VIPRange4 = netip.MustParsePrefix("203.0.113.0/24")
	VIPRange6 = netip.MustParsePrefix("2001:db8:113::/64")
)

// MaxNodes bounds the node count so every address below stays in its range.
const MaxNodes = 50

// host returns the address whose last part reads like n in both families:
// 198.51.100.0/24 + 11 = 198.51.100.11 and 2001:db8:100::/64 + 11 =
// 2001:db8:100::11, which keeps the two families easy to match by eye.
func host(p netip.Prefix, n int) netip.Addr {
	if p.Addr().Is4() {
		a := p.Masked().Addr().As4()
		a[3] = byte(n)
		return netip.AddrFrom4(a)
	}
	a := p.Masked().Addr().As16()
	// Write n's decimal digits as hex digits so it reads the same.
	var v uint16
	for _, d := range fmt.Sprint(n) {
		v = v<<4 | uint16(d-'0')
	}
	a[14], a[15] = byte(v>>8), byte(v)
	return netip.AddrFrom16(a)
}

// RouterClientAddrs and the functions below are the fixed addresses.
func RouterClientAddrs() (netip.Addr, netip.Addr) { return host(ClientNet4, 1), host(ClientNet6, 1) }
func ClientAddrs() (netip.Addr, netip.Addr)       { return host(ClientNet4, 10), host(ClientNet6, 10) }
func RouterNodeAddrs() (netip.Addr, netip.Addr)   { return host(NodeNet4, 1), host(NodeNet6, 1) }

// NodeName is the namespace (and Kubernetes Node) name of node i, 1-based.
func NodeName(i int) string { return fmt.Sprintf("zh-node%d", i) }

// NodeAddrs are node i's uplink addresses on the node segment.
func NodeAddrs(i int) (netip.Addr, netip.Addr) { return host(NodeNet4, 10+i), host(NodeNet6, 10+i) }

// NodeMgmtAddr is node i's address on the management link.
func NodeMgmtAddr(i int) netip.Addr { return host(MgmtPrefix, 10+i) }

// PodCIDRs are node i's Pod ranges: 100.64.i.0/24 and 2001:db8:64:i::/64.
func PodCIDRs(i int) (netip.Prefix, netip.Prefix) {
	v4 := netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, byte(i), 0}), 24)
	v6 := netip.MustParsePrefix(fmt.Sprintf("2001:db8:64:%d::/64", i))
	return v4, v6
}

// PodAddrs is the j-th (1-based) Pod address on node i.
func PodAddrs(i, j int) (netip.Addr, netip.Addr) {
	p4, p6 := PodCIDRs(i)
	return host(p4, j+1), host(p6, j+1)
}

// bits4/bits6 render an address as a host prefix for ip(8).
func bits(a netip.Addr, n int) string { return netip.PrefixFrom(a, n).String() }
func full(a netip.Addr) string {
	if a.Is4() {
		return bits(a, 32)
	}
	return bits(a, 128)
}
