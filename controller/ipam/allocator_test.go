package ipam

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func mustPool(t testing.TB, name string, auto bool, prio int, ranges ...string) PoolSpec {
	t.Helper()
	p := PoolSpec{Name: name, AutoAssign: auto, Priority: prio}
	for _, s := range ranges {
		r, err := ParseRange(s)
		if err != nil {
			t.Fatal(err)
		}
		p.Ranges = append(p.Ranges, r)
	}
	return p
}

func ips(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func v4(svc string) Request { return Request{Service: svc, Families: []Family{IPv4}} }

func hasReason(res Result, r Reason) bool {
	for _, n := range res.Notes {
		if n.Reason == r {
			return true
		}
	}
	return false
}

// step is one call in a scenario; want is the IP list Ensure must return.
type step struct {
	req        Request
	release    string
	want       []string
	wantReason Reason
	satisfied  *bool
}

func TestAllocatorScenarios(t *testing.T) {
	no := false
	http := []Port{{80, "TCP"}}
	https := []Port{{443, "TCP"}}
	shared := func(svc, key string, ports []Port) Request {
		r := v4(svc)
		r.Sharing = Sharing{Key: key, Ports: ports}
		return r
	}
	tests := []struct {
		name  string
		pools []PoolSpec
		steps []step
	}{
		{
			name:  "first free in order",
			pools: []PoolSpec{mustPool(t, "a", true, 0, "192.0.2.1-192.0.2.3")},
			steps: []step{
				{req: v4("ns/a"), want: []string{"192.0.2.1"}},
				{req: v4("ns/b"), want: []string{"192.0.2.2"}},
				{req: v4("ns/a"), want: []string{"192.0.2.1"}}, // stable
			},
		},
		{
			name:  "exhaustion then release",
			pools: []PoolSpec{mustPool(t, "a", true, 0, "192.0.2.1/32")},
			steps: []step{
				{req: v4("ns/a"), want: []string{"192.0.2.1"}},
				{req: v4("ns/b"), want: nil, wantReason: ReasonPoolExhausted, satisfied: &no},
				{release: "ns/a"},
				{req: v4("ns/b"), want: []string{"192.0.2.1"}},
			},
		},
		{
			name: "priority and autoAssign",
			pools: []PoolSpec{
				mustPool(t, "manual", false, 1, "192.0.2.0/30"),
				mustPool(t, "low", true, 0, "198.51.100.0/30"),
				mustPool(t, "high", true, 5, "203.0.113.0/30"),
			},
			steps: []step{
				{req: v4("ns/a"), want: []string{"203.0.113.0"}},
				{req: Request{Service: "ns/b", Families: []Family{IPv4}, Pool: "manual"}, want: []string{"192.0.2.0"}},
			},
		},
		{
			name: "selectors filter",
			pools: []PoolSpec{
				mustPool(t, "a", true, 1, "192.0.2.0/30"),
				mustPool(t, "b", true, 2, "198.51.100.0/30"),
			},
			steps: []step{
				{req: Request{Service: "ns/a", Families: []Family{IPv4}, Allowed: func(p string) bool { return p == "b" }}, want: []string{"198.51.100.0"}},
				{req: Request{Service: "ns/b", Families: []Family{IPv4}, Allowed: func(string) bool { return false }}, wantReason: ReasonNoPool},
			},
		},
		{
			name:  "requested IP, conflict and move",
			pools: []PoolSpec{mustPool(t, "a", true, 0, "192.0.2.0/24")},
			steps: []step{
				{req: Request{Service: "ns/a", Families: []Family{IPv4}, RequestedIPs: ips("192.0.2.50")}, want: []string{"192.0.2.50"}},
				{req: Request{Service: "ns/b", Families: []Family{IPv4}, RequestedIPs: ips("192.0.2.50")}, wantReason: ReasonIPInUse},
				{req: Request{Service: "ns/c", Families: []Family{IPv4}, RequestedIPs: ips("198.51.100.1")}, wantReason: ReasonIPNotInPool},
				{req: Request{Service: "ns/a", Families: []Family{IPv4}, RequestedIPs: ips("192.0.2.60")}, want: []string{"192.0.2.60"}},
				{req: Request{Service: "ns/b", Families: []Family{IPv4}, RequestedIPs: ips("192.0.2.50")}, want: []string{"192.0.2.50"}},
				// a move that cannot be satisfied keeps the old IP
				{req: Request{Service: "ns/a", Families: []Family{IPv4}, RequestedIPs: ips("192.0.2.50")}, want: []string{"192.0.2.60"}, wantReason: ReasonKeptOldIP},
			},
		},
		{
			name:  "avoid buggy",
			pools: []PoolSpec{{Name: "a", AutoAssign: true, AvoidBuggyIPs: true, Ranges: []Range{{netip.MustParseAddr("192.0.2.254"), netip.MustParseAddr("192.0.3.1")}}}},
			steps: []step{
				{req: v4("ns/a"), want: []string{"192.0.2.254"}},
				{req: v4("ns/b"), want: []string{"192.0.3.1"}},
				{req: v4("ns/c"), wantReason: ReasonPoolExhausted},
				{req: Request{Service: "ns/d", Families: []Family{IPv4}, RequestedIPs: ips("192.0.3.0")}, wantReason: ReasonIPNotInPool},
			},
		},
		{
			name:  "sharing allowed and refused",
			pools: []PoolSpec{mustPool(t, "a", true, 0, "192.0.2.0/30")},
			steps: []step{
				{req: shared("ns/a", "k", http), want: []string{"192.0.2.0"}},
				{req: shared("ns/b", "k", https), want: []string{"192.0.2.0"}},
				// port collision: a fresh IP, with a note saying why
				{req: shared("ns/c", "k", http), want: []string{"192.0.2.1"}, wantReason: ReasonSharingRefused},
				{req: shared("ns/d", "other", []Port{{53, "UDP"}}), want: []string{"192.0.2.2"}},
			},
		},
		{
			name:  "sharing with requested IP and traffic policy",
			pools: []PoolSpec{mustPool(t, "a", true, 0, "192.0.2.0/30")},
			steps: []step{
				{req: Request{Service: "ns/a", Families: []Family{IPv4}, RequestedIPs: ips("192.0.2.3"), Sharing: Sharing{Key: "k", Ports: http, Local: true, Selector: "app=x"}}, want: []string{"192.0.2.3"}},
				{req: Request{Service: "ns/b", Families: []Family{IPv4}, RequestedIPs: ips("192.0.2.3"), Sharing: Sharing{Key: "k", Ports: https, Local: true, Selector: "app=y"}}, wantReason: ReasonIPInUse},
				{req: Request{Service: "ns/c", Families: []Family{IPv4}, RequestedIPs: ips("192.0.2.3"), Sharing: Sharing{Key: "k", Ports: https}}, wantReason: ReasonIPInUse},
				{req: Request{Service: "ns/d", Families: []Family{IPv4}, RequestedIPs: ips("192.0.2.3"), Sharing: Sharing{Key: "k", Ports: https, Local: true, Selector: "app=x"}}, want: []string{"192.0.2.3"}},
			},
		},
		{
			name:  "sharing broken by a port change releases only the changed Service",
			pools: []PoolSpec{mustPool(t, "a", true, 0, "192.0.2.0/30")},
			steps: []step{
				{req: shared("ns/a", "k", http), want: []string{"192.0.2.0"}},
				{req: shared("ns/b", "k", https), want: []string{"192.0.2.0"}},
				{req: shared("ns/b", "k", append(slices.Clone(https), http...)), want: []string{"192.0.2.1"}, wantReason: ReasonSharingBroken},
				{req: shared("ns/a", "k", http), want: []string{"192.0.2.0"}},
			},
		},
		{
			name: "dual stack prefer and require with v6 exhausted",
			pools: []PoolSpec{
				mustPool(t, "a", true, 0, "192.0.2.0/30", "2001:db8::1/128"),
			},
			steps: []step{
				{req: Request{Service: "ns/a", Families: []Family{IPv6, IPv4}}, want: []string{"2001:db8::1", "192.0.2.0"}},
				{req: Request{Service: "ns/b", Families: []Family{IPv4, IPv6}}, want: []string{"192.0.2.1"}, wantReason: ReasonPoolExhausted, satisfied: &no},
				{req: Request{Service: "ns/c", Families: []Family{IPv4, IPv6}, RequireAll: true}, want: nil, wantReason: ReasonRequireDualFail, satisfied: &no},
				{release: "ns/a"},
				{req: Request{Service: "ns/c", Families: []Family{IPv4, IPv6}, RequireAll: true}, want: []string{"192.0.2.2", "2001:db8::1"}},
			},
		},
		{
			name: "family dropped releases that family only",
			pools: []PoolSpec{
				mustPool(t, "a", true, 0, "192.0.2.0/30", "2001:db8::/126"),
			},
			steps: []step{
				{req: Request{Service: "ns/a", Families: []Family{IPv4, IPv6}}, want: []string{"192.0.2.0", "2001:db8::"}},
				{req: Request{Service: "ns/a", Families: []Family{IPv4}}, want: []string{"192.0.2.0"}},
			},
		},
		{
			name: "pool annotation moves between pools, unknown pool refused",
			pools: []PoolSpec{
				mustPool(t, "a", true, 0, "192.0.2.0/30"),
				mustPool(t, "b", true, 0, "198.51.100.0/30"),
			},
			steps: []step{
				{req: v4("ns/a"), want: []string{"192.0.2.0"}},
				{req: Request{Service: "ns/a", Families: []Family{IPv4}, Pool: "b"}, want: []string{"198.51.100.0"}},
				{req: Request{Service: "ns/b", Families: []Family{IPv4}, Pool: "nope"}, wantReason: ReasonNoPool},
			},
		},
		{
			name:  "requested family not wanted",
			pools: []PoolSpec{mustPool(t, "a", true, 0, "192.0.2.0/30", "2001:db8::/126")},
			steps: []step{
				{req: Request{Service: "ns/a", Families: []Family{IPv4}, RequestedIPs: ips("2001:db8::1")}, want: []string{"192.0.2.0"}, wantReason: ReasonInvalidRequest},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := New()
			a.SetPools(tc.pools)
			for i, s := range tc.steps {
				if s.release != "" {
					a.Release(s.release)
					continue
				}
				res := a.Ensure(s.req)
				var got []string
				for _, ip := range res.IPs {
					got = append(got, ip.String())
				}
				if !slices.Equal(got, s.want) {
					t.Fatalf("step %d (%s): IPs %v, want %v; notes %+v", i, s.req.Service, got, s.want, res.Notes)
				}
				if s.wantReason != "" && !hasReason(res, s.wantReason) {
					t.Fatalf("step %d (%s): notes %+v lack %s", i, s.req.Service, res.Notes, s.wantReason)
				}
				if s.satisfied != nil && res.Satisfied != *s.satisfied {
					t.Fatalf("step %d: satisfied=%v", i, res.Satisfied)
				}
				checkInvariants(t, a)
			}
		})
	}
}

func TestPoolEditKeepsIPs(t *testing.T) {
	a := New()
	a.SetPools([]PoolSpec{mustPool(t, "a", true, 0, "192.0.2.0/30")})
	r := a.Ensure(v4("ns/a"))
	if len(r.IPs) != 1 || r.IPs[0].String() != "192.0.2.0" {
		t.Fatalf("got %v", r.IPs)
	}
	a.SetPools([]PoolSpec{mustPool(t, "a", true, 0, "198.51.100.0/30")})
	r = a.Ensure(v4("ns/a"))
	if len(r.IPs) != 1 || r.IPs[0].String() != "192.0.2.0" || len(r.Outside) != 1 {
		t.Fatalf("after shrink: %+v", r)
	}
	// With a pool annotation too, the IP outside every pool stays.
	r = a.Ensure(Request{Service: "ns/a", Families: []Family{IPv4}, Pool: "a"})
	if r.IPs[0].String() != "192.0.2.0" {
		t.Fatalf("pool annotation moved an orphaned IP: %+v", r)
	}
	// An explicit request moves it.
	r = a.Ensure(Request{Service: "ns/a", Families: []Family{IPv4}, RequestedIPs: ips("198.51.100.2")})
	if r.IPs[0].String() != "198.51.100.2" || len(r.Released) != 1 {
		t.Fatalf("explicit move: %+v", r)
	}
	st, _ := a.Stats("a")
	if st.Assigned[IPv4] != 1 || st.Available[IPv4] != 3 {
		t.Fatalf("stats %+v", st)
	}
}

func TestOverlapsAndCounts(t *testing.T) {
	a := New()
	a.SetPools([]PoolSpec{
		mustPool(t, "a", true, 1, "192.0.2.0/29"),
		mustPool(t, "b", true, 2, "192.0.2.4/30", "2001:db8::/120"),
		mustPool(t, "c", true, 3, "198.51.100.0/30"),
	})
	ov := a.Overlaps()
	if !slices.Equal(ov["a"], []string{"b"}) || !slices.Equal(ov["b"], []string{"a"}) || ov["c"] != nil {
		t.Fatalf("overlaps %v", ov)
	}
	// Fill a: 8 addresses; the shared part must never be handed out twice
	// when b allocates too.
	seen := map[netip.Addr]string{}
	for i := range 8 {
		req := Request{Service: "ns/a" + string(rune('0'+i)), Families: []Family{IPv4}, Pool: "a"}
		if i%2 == 1 {
			req.Pool = "b"
		}
		r := a.Ensure(req)
		for _, ip := range r.IPs {
			if prev, dup := seen[ip]; dup {
				t.Fatalf("%s given to %s and %s", ip, prev, req.Service)
			}
			seen[ip] = req.Service
		}
	}
	if len(seen) != 8 {
		t.Fatalf("expected 8 allocations (4 of b's draws overflow into none), got %d", len(seen))
	}
	sa, _ := a.Stats("a")
	sb, _ := a.Stats("b")
	if sa.Assigned[IPv4] != 8 || sa.Available[IPv4] != 0 || sb.Assigned[IPv4] != 4 || sb.Available[IPv4] != 0 {
		t.Fatalf("stats a=%+v b=%+v", sa, sb)
	}
	if sb.Available[IPv6] != 256 {
		t.Fatalf("v6 available %d", sb.Available[IPv6])
	}
}

func TestRestore(t *testing.T) {
	a := New()
	a.SetPools([]PoolSpec{mustPool(t, "a", true, 0, "192.0.2.0/30")})
	if err := a.Restore("ns/old", ips("192.0.2.1"), Sharing{}); err != nil {
		t.Fatal(err)
	}
	// Outside every pool still restores: what is assigned stays assigned.
	if err := a.Restore("ns/orphan", ips("203.0.113.9"), Sharing{}); err != nil {
		t.Fatal(err)
	}
	err := a.Restore("ns/young", ips("192.0.2.1"), Sharing{})
	if err == nil || !strings.Contains(err.Error(), "ns/old") {
		t.Fatalf("conflicting restore: %v", err)
	}
	if r := a.Ensure(v4("ns/new")); r.IPs[0].String() != "192.0.2.0" {
		t.Fatalf("new got %v", r.IPs)
	}
	if r := a.Ensure(v4("ns/new2")); r.IPs[0].String() != "192.0.2.2" {
		t.Fatalf("new2 got %v (restored IP reused?)", r.IPs)
	}
	if r := a.Ensure(v4("ns/orphan")); r.IPs[0].String() != "203.0.113.9" || len(r.Outside) != 1 {
		t.Fatalf("orphan %+v", r)
	}
}

// checkInvariants verifies the indexes agree with each other: every held IP
// is recorded on both sides, non-sharing holders are alone, and counts
// match a recount.
func checkInvariants(t testing.TB, a *Allocator) {
	t.Helper()
	for svc, st := range a.svcs {
		fams := map[Family]bool{}
		for _, ip := range st.ips {
			if fams[FamilyOf(ip)] {
				t.Fatalf("%s holds two %s addresses: %v", svc, FamilyOf(ip), st.ips)
			}
			fams[FamilyOf(ip)] = true
			e := a.ips[ip]
			if e == nil || e.holders[svc] == nil {
				t.Fatalf("%s holds %s but the IP index disagrees", svc, ip)
			}
		}
	}
	for ip, e := range a.ips {
		if len(e.holders) == 0 {
			t.Fatalf("%s has no holders", ip)
		}
		for svc, h := range e.holders {
			st := a.svcs[svc]
			if st == nil || !slices.Contains(st.ips, ip) {
				t.Fatalf("%s lists holder %s that does not hold it", ip, svc)
			}
			for other, o := range e.holders {
				if other != svc && canShare(h.sharing, o.sharing) != nil {
					t.Fatalf("%s shared by incompatible %s and %s", ip, svc, other)
				}
			}
		}
	}
	for name, p := range a.pools {
		for _, f := range []Family{IPv4, IPv6} {
			var all, used int64
			for ip := range a.ips {
				if FamilyOf(ip) == f && p.contains(ip) {
					all++
					if p.usableIP(ip) {
						used++
					}
				}
			}
			if all != p.assignedAll[f] || used != p.assignedUsed[f] {
				t.Fatalf("pool %s %s counts %d/%d, recount %d/%d", name, f, p.assignedAll[f], p.assignedUsed[f], all, used)
			}
			if p.available(f).Sign() < 0 {
				t.Fatalf("pool %s %s negative available", name, f)
			}
		}
	}
}
