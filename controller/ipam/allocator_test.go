package ipam

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
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

func restricted(p PoolSpec) PoolSpec {
	p.Restricted = true
	return p
}

func TestPoolOrder(t *testing.T) {
	for _, tc := range []struct {
		name  string
		pools []PoolSpec
		want  []string
	}{
		{"by priority, none last, ties by name", []PoolSpec{
			{Name: "c", Priority: 0}, {Name: "b", Priority: 2}, {Name: "a", Priority: 0}, {Name: "d", Priority: 1},
		}, []string{"d", "b", "a", "c"}},
		{"restricted first even without priority", []PoolSpec{
			{Name: "a", Priority: 0}, {Name: "b", Restricted: true}, {Name: "c", Restricted: true, Priority: 7},
		}, []string{"c", "b", "a"}},
		{"priority does not lift an unrestricted pool over a restricted one", []PoolSpec{
			{Name: "open", Priority: 1}, {Name: "team", Restricted: true, Priority: 50},
		}, []string{"team", "open"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := New()
			a.SetPools(tc.pools)
			if got := a.Order(); !slices.Equal(got, tc.want) {
				t.Errorf("order %v, want %v", got, tc.want)
			}
		})
	}
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
			// MetalLB's order: pools with a serviceAllocation that admit
			// the Service come before pools open to every Service, whatever
			// their names; priority orders within each group.
			name: "restricted pools before unrestricted ones",
			pools: []PoolSpec{
				mustPool(t, "a-open", true, 0, "192.0.2.0/31"),
				restricted(mustPool(t, "z-team", true, 0, "198.51.100.0/31")),
				restricted(mustPool(t, "m-team-first", true, 3, "203.0.113.0/31")),
			},
			steps: []step{
				{req: v4("ns/a"), want: []string{"203.0.113.0"}},
				{req: v4("ns/b"), want: []string{"203.0.113.1"}},
				{req: v4("ns/c"), want: []string{"198.51.100.0"}},
				{req: Request{Service: "ns/d", Families: []Family{IPv4}, Allowed: func(p string) bool { return p == "a-open" }}, want: []string{"192.0.2.0"}},
				{req: v4("ns/e"), want: []string{"198.51.100.1"}},
				{req: v4("ns/f"), want: []string{"192.0.2.1"}},
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

func TestConflictsAndCounts(t *testing.T) {
	a := New()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	older := mustPool(t, "b-older", true, 2, "192.0.2.0/29")
	older.Since = t0
	younger := mustPool(t, "a-younger", true, 1, "192.0.2.4/30", "2001:db8::/120")
	younger.Since = t0.Add(time.Hour)
	other := mustPool(t, "c", true, 3, "198.51.100.0/30")
	other.Since = t0.Add(2 * time.Hour)
	a.SetPools([]PoolSpec{older, younger, other})
	want := map[string][]Conflict{"a-younger": {{Range: mustRange("192.0.2.4/30"), With: "b-older"}}}
	if got := a.Conflicts(); !reflect.DeepEqual(got, want) {
		t.Fatalf("conflicts %+v, want %+v", got, want)
	}
	// The younger pool, tried first by priority, has no IPv4 address of
	// its own: every IPv4 allocation comes from the older pool, which
	// keeps its addresses.
	for i := range 8 {
		r := a.Ensure(Request{Service: fmt.Sprintf("ns/s%d", i), Families: []Family{IPv4}})
		if len(r.IPs) != 1 || len(r.Allocated) != 1 || r.Allocated[0].Pool != "b-older" || r.Pools[0] != "b-older" {
			t.Fatalf("allocation %d: %+v", i, r)
		}
	}
	r := a.Ensure(Request{Service: "ns/y", Families: []Family{IPv4}, Pool: "a-younger"})
	if len(r.IPs) != 0 || !hasReason(r, ReasonNoPool) {
		t.Fatalf("younger pool handed out an older pool's address: %+v", r)
	}
	sa, _ := a.Stats("b-older")
	sb, _ := a.Stats("a-younger")
	if sa.Assigned[IPv4] != 8 || sa.Available[IPv4] != 0 || sb.Assigned[IPv4] != 0 || sb.Available[IPv4] != 0 || sb.Available[IPv6] != 256 {
		t.Fatalf("stats older=%+v younger=%+v", sa, sb)
	}
	// Deleting the older pool hands its addresses, still held, to the
	// pool that declares them.
	a.SetPools([]PoolSpec{younger, other})
	if p := a.PoolOf(netip.MustParseAddr("192.0.2.5")); p != "a-younger" {
		t.Fatalf("192.0.2.5 after the older pool went: pool %q", p)
	}
	if p := a.PoolOf(netip.MustParseAddr("192.0.2.1")); p != "" {
		t.Fatalf("192.0.2.1 after the older pool went: pool %q, want none", p)
	}
	if sb, _ = a.Stats("a-younger"); sb.Assigned[IPv4] != 4 || sb.Available[IPv4] != 0 {
		t.Fatalf("younger after the older went: %+v", sb)
	}
}

func TestCountsMergeOverlappingRanges(t *testing.T) {
	tests := []struct {
		name   string
		buggy  bool
		ranges []string
		want   int64
	}{
		{"cidr and its half", false, []string{"203.0.113.0/24", "203.0.113.128/25"}, 256},
		{"avoid buggy", true, []string{"203.0.113.0/24", "203.0.113.128/25"}, 254},
		{"adjacent ranges", false, []string{"192.0.2.0-192.0.2.9", "192.0.2.10-192.0.2.19", "192.0.2.5-192.0.2.15"}, 20},
		{"same twice", false, []string{"192.0.2.0/30", "192.0.2.0/30"}, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := New()
			p := mustPool(t, "p", true, 0, tc.ranges...)
			p.AvoidBuggyIPs = tc.buggy
			a.SetPools([]PoolSpec{p})
			st, _ := a.Stats("p")
			if st.Available[IPv4] != tc.want {
				t.Fatalf("available %d, want %d", st.Available[IPv4], tc.want)
			}
			if c := a.Conflicts(); len(c) != 0 {
				t.Fatalf("a pool conflicts with itself: %v", c)
			}
		})
	}
}

// TestRestoreKeepsRecordedPool: an address recorded as allocated from a
// pool stays with it, even where an older pool declares it too (the
// younger pool had it before the older one was widened, say); a record
// naming a pool that no longer declares it gives way to one that does.
func TestRestoreKeepsRecordedPool(t *testing.T) {
	a := New()
	older := mustPool(t, "older", true, 0, "192.0.2.0/24")
	younger := mustPool(t, "younger", true, 0, "192.0.2.128/25")
	younger.Since = older.Since.Add(time.Minute)
	a.SetPools([]PoolSpec{older, younger})
	tests := []struct {
		svc, ip, recorded, want string
	}{
		{"ns/a", "192.0.2.130", "younger", "younger"},
		{"ns/b", "192.0.2.131", "", "older"},
		{"ns/c", "192.0.2.132", "deleted", "older"},
		{"ns/d", "192.0.2.5", "younger", "older"},
		{"ns/e", "198.51.100.1", "older", ""},
	}
	for _, tc := range tests {
		if err := a.Restore(tc.svc, ips(tc.ip), []string{tc.recorded}, Sharing{}); err != nil {
			t.Fatal(err)
		}
		r := a.Ensure(v4(tc.svc))
		if len(r.Pools) != 1 || r.Pools[0] != tc.want {
			t.Errorf("%s %s recorded %q: pool %v, want %q", tc.svc, tc.ip, tc.recorded, r.Pools, tc.want)
		}
	}
	so, _ := a.Stats("older")
	sy, _ := a.Stats("younger")
	if so.Assigned[IPv4] != 3 || sy.Assigned[IPv4] != 1 || so.Available[IPv4] != 256-4 || sy.Available[IPv4] != 0 {
		t.Fatalf("older %+v younger %+v", so, sy)
	}
}

func TestRestore(t *testing.T) {
	a := New()
	a.SetPools([]PoolSpec{mustPool(t, "a", true, 0, "192.0.2.0/30")})
	if err := a.Restore("ns/old", ips("192.0.2.1"), nil, Sharing{}); err != nil {
		t.Fatal(err)
	}
	// Outside every pool still restores: what is assigned stays assigned.
	if err := a.Restore("ns/orphan", ips("203.0.113.9"), []string{"gone"}, Sharing{}); err != nil {
		t.Fatal(err)
	}
	err := a.Restore("ns/young", ips("192.0.2.1"), nil, Sharing{})
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
			var assigned, taken int64
			for ip, e := range a.ips {
				if FamilyOf(ip) != f {
					continue
				}
				if e.pool == name {
					assigned++
					if !p.declares(ip) {
						t.Fatalf("%s recorded for pool %s, which does not declare it", ip, name)
					}
				}
				if p.allocates(ip) {
					taken++
				}
			}
			if assigned != p.assigned[f] || taken != p.taken[f] {
				t.Fatalf("pool %s %s counts assigned %d taken %d, recount %d/%d", name, f, p.assigned[f], p.taken[f], assigned, taken)
			}
			if p.available(f).Sign() < 0 {
				t.Fatalf("pool %s %s negative available", name, f)
			}
		}
	}
}
