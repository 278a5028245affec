package l2

import (
	"net/netip"
	"testing"
)

func TestInterfaceFor(t *testing.T) {
	pp := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	ifaces := []Interface{
		{Name: "lo", Up: true, Loopback: true, Prefixes: pp("127.0.0.1/8", "::1/128", "192.0.2.200/32")},
		{Name: "eth0", Up: true, Prefixes: pp("192.0.2.5/24", "2001:db8::5/64", "fe80::1/64")},
		{Name: "eth1", Up: true, Prefixes: pp("192.0.2.130/25", "198.51.100.7/32")},
		{Name: "eth2", Up: false, Prefixes: pp("203.0.113.2/24")},
		{Name: "eth3", Up: true, Prefixes: pp("::ffff:100.64.0.1/106")},
	}
	tests := []struct {
		vip  string
		want string
		ok   bool
	}{
		{"192.0.2.10", "eth0", true},
		{"192.0.2.140", "eth1", true}, // the /25 is more specific than the /24
		{"2001:db8::10", "eth0", true},
		{"2001:db8:1::10", "", false},
		{"203.0.113.9", "", false}, // only on a down interface
		{"198.51.100.7", "", false},
		{"127.0.0.5", "", false}, // loopback never answers ARP
		{"100.64.0.9", "eth3", true},
		{"::ffff:192.0.2.10", "eth0", true},
	}
	for _, tc := range tests {
		t.Run(tc.vip, func(t *testing.T) {
			got, ok := InterfaceFor(netip.MustParseAddr(tc.vip), ifaces)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("InterfaceFor(%s) = %q, %t; want %q, %t", tc.vip, got, ok, tc.want, tc.ok)
			}
		})
	}
}
