package lab

import (
	"net/netip"
	"testing"
)

func TestAddressPlan(t *testing.T) {
	n4, n6 := NodeAddrs(3)
	p4, p6 := PodAddrs(2, 1)
	c4, c6 := PodCIDRs(2)
	tests := []struct {
		name string
		got  netip.Addr
		want string
	}{
		{"node3 v4", n4, "198.51.100.13"},
		{"node3 v6", n6, "2001:db8:100::13"},
		{"pod v4", p4, "100.64.2.2"},
		{"pod v6", p6, "2001:db8:64:2::2"},
		{"mgmt node1", NodeMgmtAddr(1), "169.254.100.11"},
		{"node50 v6", func() netip.Addr { _, a := NodeAddrs(50); return a }(), "2001:db8:100::60"},
	}
	for _, tc := range tests {
		if tc.got.String() != tc.want {
			t.Errorf("%s = %s, want %s", tc.name, tc.got, tc.want)
		}
	}
	if c4.String() != "100.64.2.0/24" || c6.String() != "2001:db8:64:2::/64" {
		t.Errorf("PodCIDRs(2) = %s %s", c4, c6)
	}
}

// Every lab address must sit in a documentation range, the pod range, or
// link-local, so the lab can never shadow a real network.
func TestAddressesStayInAllowedRanges(t *testing.T) {
	allowed := []netip.Prefix{
		netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.0/24"),
		netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8::/32"),
		netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("169.254.0.0/16"),
	}
	var all []netip.Addr
	for i := 1; i <= MaxNodes; i++ {
		a, b := NodeAddrs(i)
		c, d := PodAddrs(i, 200)
		all = append(all, a, b, c, d, NodeMgmtAddr(i))
	}
	a, b := ClientAddrs()
	c, d := RouterClientAddrs()
	all = append(all, a, b, c, d, MgmtHost)
	for _, ad := range all {
		ok := false
		for _, p := range allowed {
			ok = ok || p.Contains(ad)
		}
		if !ok {
			t.Errorf("address %s is outside the allowed ranges", ad)
		}
	}
}
