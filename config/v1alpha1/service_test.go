package v1alpha1

import (
	"net/netip"
	"testing"
)

func TestAllocatedFrom(t *testing.T) {
	v4, v6 := netip.MustParseAddr("203.0.113.5"), netip.MustParseAddr("2001:db8:113::5")
	tests := []struct {
		name   string
		ips    []netip.Addr
		pools  []string
		want   string
		lookup map[netip.Addr]string
	}{
		{"one pool", []netip.Addr{v4, v6}, []string{"demo", "demo"}, "demo", map[netip.Addr]string{v4: "demo", v6: "demo"}},
		{"two pools", []netip.Addr{v4, v6}, []string{"a", "b"}, "203.0.113.5=a,2001:db8:113::5=b", map[netip.Addr]string{v4: "a", v6: "b"}},
		{"one outside", []netip.Addr{v4, v6}, []string{"a", ""}, "203.0.113.5=a", map[netip.Addr]string{v4: "a", v6: ""}},
		{"none", []netip.Addr{v4}, []string{""}, "", map[netip.Addr]string{v4: ""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := FormatAllocatedFrom(tc.ips, tc.pools)
			if got != tc.want {
				t.Fatalf("Format = %q, want %q", got, tc.want)
			}
			for ip, want := range tc.lookup {
				if p := AllocatedFrom(got, ip); p != want {
					t.Errorf("AllocatedFrom(%q, %s) = %q, want %q", got, ip, p, want)
				}
			}
		})
	}
}
