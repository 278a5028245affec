package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// FIBWatch follows the router's kernel FIB (what forwards the client's
// packets) through a netlink subscription. A failover measured with it is
// timed to the kernel's notification, not to a polling interval, and the
// wait spawns no process that would compete with FRR for the CPU.
type FIBWatch struct {
	ns     netns.NsHandle
	h      *netlink.Handle
	events chan netlink.RouteUpdate
	done   chan struct{}
}

// WatchRouterFIB subscribes to the router namespace's route changes. Close
// it when done.
func WatchRouterFIB() (*FIBWatch, error) {
	ns, err := netns.GetFromName(RouterNS)
	if err != nil {
		return nil, fmt.Errorf("netns %s: %w", RouterNS, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		_ = ns.Close()
		return nil, fmt.Errorf("netlink handle in %s: %w", RouterNS, err)
	}
	w := &FIBWatch{ns: ns, h: h, events: make(chan netlink.RouteUpdate, 4096), done: make(chan struct{})}
	if err := netlink.RouteSubscribeWithOptions(w.events, w.done, netlink.RouteSubscribeOptions{Namespace: &ns}); err != nil {
		h.Close()
		_ = ns.Close()
		return nil, fmt.Errorf("route subscription in %s: %w", RouterNS, err)
	}
	return w, nil
}

// Close ends the subscription.
func (w *FIBWatch) Close() {
	close(w.done)
	w.h.Close()
	_ = w.ns.Close()
}

// NextHops returns the gateways of the router's main-table route for
// exactly prefix, sorted and joined by ",", or "" when there is none.
func (w *FIBWatch) NextHops(prefix netip.Prefix) (string, error) {
	fam := netlink.FAMILY_V4
	if prefix.Addr().Is6() {
		fam = netlink.FAMILY_V6
	}
	dst := &net.IPNet{IP: prefix.Addr().AsSlice(), Mask: net.CIDRMask(prefix.Bits(), prefix.Addr().BitLen())}
	rs, err := w.h.RouteListFiltered(fam, &netlink.Route{Dst: dst, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		return "", fmt.Errorf("routes to %s in %s: %w", prefix, RouterNS, err)
	}
	var hops []string
	for _, r := range rs {
		if r.Gw != nil {
			hops = append(hops, r.Gw.String())
		}
		for _, nh := range r.MultiPath {
			if nh.Gw != nil {
				hops = append(hops, nh.Gw.String())
			}
		}
	}
	slices.Sort(hops)
	return strings.Join(hops, ","), nil
}

// WaitNextHops waits until the route to every prefix in want has exactly
// those next hops (NodeNextHops' form) and returns, per prefix, when that
// was first seen: the arrival of the route message that made it so. A
// fallback re-reads the routes every 20 ms in case a change came without
// a message of its own. On timeout the error names what was still wrong.
func (w *FIBWatch) WaitNextHops(ctx context.Context, want map[netip.Prefix]string, timeout time.Duration) (map[netip.Prefix]time.Time, error) {
	seen := map[netip.Prefix]time.Time{}
	last := map[netip.Prefix]string{}
	check := func(at time.Time) error {
		for p, hops := range want {
			if _, ok := seen[p]; ok {
				continue
			}
			got, err := w.NextHops(p)
			if err != nil {
				return err
			}
			last[p] = got
			if got == hops {
				seen[p] = at
			}
		}
		return nil
	}
	if err := check(time.Now()); err != nil {
		return seen, err
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for len(seen) < len(want) {
		select {
		case <-ctx.Done():
			return seen, ctx.Err()
		case <-deadline.C:
			var miss []string
			for p, hops := range want {
				if _, ok := seen[p]; !ok {
					miss = append(miss, fmt.Sprintf("%s via %q (have %q)", p, hops, last[p]))
				}
			}
			slices.Sort(miss)
			return seen, fmt.Errorf("router's kernel routes not as wanted after %s: %s", timeout, strings.Join(miss, "; "))
		case _, ok := <-w.events:
			if !ok {
				return seen, fmt.Errorf("route subscription in %s closed", RouterNS)
			}
			at := time.Now()
			// Drain a burst so one re-read covers it.
			for drained := false; !drained; {
				select {
				case <-w.events:
				default:
					drained = true
				}
			}
			if err := check(at); err != nil {
				return seen, err
			}
		case at := <-tick.C:
			if err := check(at); err != nil {
				return seen, err
			}
		}
	}
	return seen, nil
}
