package lab

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// BGPNextHops is the router's selected BGP route to vip: its next hops,
// sorted and joined by ",", or "" when there is none.
func BGPNextHops(ctx context.Context, vip netip.Addr) (string, error) {
	prefix := netip.PrefixFrom(vip, vip.BitLen())
	rs, err := RIB(ctx, prefix)
	if err != nil {
		return "", err
	}
	for _, r := range rs {
		if r.Protocol == "bgp" && r.Selected && r.Prefix == prefix.String() {
			hops := slices.Clone(r.NextHops)
			slices.Sort(hops)
			return strings.Join(hops, ","), nil
		}
	}
	return "", nil
}

// NodeNextHops is what BGPNextHops returns for a route to an address of
// vip's family via these nodes.
func NodeNextHops(vip netip.Addr, nodes ...int) string {
	var hops []string
	for _, n := range nodes {
		a4, a6 := NodeAddrs(n)
		if vip.Is4() {
			hops = append(hops, a4.String())
		} else {
			hops = append(hops, a6.String())
		}
	}
	slices.Sort(hops)
	return strings.Join(hops, ",")
}

// WaitBGPRoute fails t unless the router's selected BGP route to vip goes
// via exactly these nodes within d (no nodes: no route).
func WaitBGPRoute(t testing.TB, ctx context.Context, vip netip.Addr, d time.Duration, nodes ...int) {
	t.Helper()
	want := NodeNextHops(vip, nodes...)
	Eventually(t, d, fmt.Sprintf("router's route to %s via %q", vip, want), func() (bool, string) {
		got, err := BGPNextHops(ctx, vip)
		if err != nil {
			return false, err.Error()
		}
		return got == want, fmt.Sprintf("%q", got)
	})
}
