package bpf

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
)

// mapLen counts the entries of a map (not a per-CPU one) by iterating it.
func mapLen(t testing.TB, m *ebpf.Map) int {
	t.Helper()
	var n int
	k, v := make([]byte, m.KeySize()), make([]byte, m.ValueSize())
	it := m.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatalf("iterate %s: %v", m, err)
	}
	return n
}

func mustUpsertCfg(t testing.TB, d *Datapath, k ServiceKey, cfg ServiceConfig) {
	t.Helper()
	if err := d.Upsert(k, cfg); err != nil {
		t.Fatal(err)
	}
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// expectHit runs in through XDP and wants the Local-mode rewrite to be.
func expectHit(t *testing.T, d *Datapath, in pkt, be Backend) {
	t.Helper()
	want := in
	want.dst, want.dport = be.Addr, be.Port
	ret, out := runProg(t, d.objs.ZhXdp, in.bytes())
	if ret != xdpPass || !bytes.Equal(out, want.bytes()) {
		t.Fatalf("%s:%d -> %s:%d: verdict %d, rewritten to the backend %v; want XDP_PASS and the rewrite",
			in.src, in.sport, in.dst, in.dport, ret, bytes.Equal(out, want.bytes()))
	}
}

func expectDrop(t *testing.T, d *Datapath, in pkt) {
	t.Helper()
	ret, _ := runProg(t, d.objs.ZhXdp, in.bytes())
	if ret != xdpDrop {
		t.Fatalf("%s:%d -> %s:%d: verdict %d, want XDP_DROP", in.src, in.sport, in.dst, in.dport, ret)
	}
}

func svcCounters(t testing.TB, d *Datapath, k ServiceKey) Counters {
	t.Helper()
	st, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return st[k].Counters
}

// TestSourceRanges: loadBalancerSourceRanges, byte for byte through
// PROG_TEST_RUN, per family.
func TestSourceRanges(t *testing.T) {
	cases := []struct {
		name             string
		vip, pod         netip.Addr
		in, in2, out     netip.Addr // in, in2 admitted by ranges; out not
		ranges, replaced []netip.Prefix
		in2Only          netip.Addr // admitted only by replaced
	}{
		{
			name: "v4", vip: vip4, pod: podA4,
			in: client4, in2: netip.MustParseAddr("192.0.2.200"), out: netip.MustParseAddr("192.0.2.7"),
			ranges:   prefixes("198.51.100.0/24", "192.0.2.128/25"),
			replaced: prefixes("198.51.100.0/25", "203.0.113.64/26"),
			in2Only:  netip.MustParseAddr("203.0.113.70"),
		},
		{
			name: "v6", vip: vip6, pod: podA6,
			in: client6, in2: netip.MustParseAddr("2001:db8:d::1"), out: netip.MustParseAddr("2001:db8:e::1"),
			ranges:   prefixes("2001:db8:c::/48", "2001:db8:d::/64"),
			replaced: prefixes("2001:db8:c::/56", "2001:db8:f::/48"),
			in2Only:  netip.MustParseAddr("2001:db8:f::9"),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := loadTest(t, Options{})
			k := ServiceKey{tc.vip, 80, TCP}
			be := local(tc.pod, 8080)
			// A second, unrestricted service on the same VIP: the ranges
			// of one service never apply to another.
			open := ServiceKey{tc.vip, 81, TCP}
			mustUpsert(t, d, open, []Backend{be})
			mustUpsertCfg(t, d, k, ServiceConfig{Backends: []Backend{be}, Flags: ServiceLocal | ServiceSourceRanges, SourceRanges: tc.ranges})
			if n := mapLen(t, d.objs.SrcRanges); n != len(tc.ranges) {
				t.Fatalf("%d source range entries, want %d", n, len(tc.ranges))
			}

			syn := func(src netip.Addr, sport uint16) pkt {
				return pkt{src: src, dst: tc.vip, sport: sport, dport: 80, proto: TCP, tcpFlags: tcpSYN}
			}
			data := func(src netip.Addr, sport uint16) pkt {
				return pkt{src: src, dst: tc.vip, sport: sport, dport: 80, proto: TCP, payload: []byte("x")}
			}
			expectHit(t, d, syn(tc.in, 1000), be)
			expectHit(t, d, data(tc.in, 1000), be)
			expectHit(t, d, syn(tc.in2, 1000), be)
			flows := mapLen(t, d.objs.Conntrack)
			expectDrop(t, d, syn(tc.out, 1000))
			expectDrop(t, d, data(tc.out, 1001))
			if n := mapLen(t, d.objs.Conntrack); n != flows {
				t.Fatalf("refused packets created flows: %d conntrack entries, want %d", n, flows)
			}
			// The open service on the same VIP admits the refused source.
			expectHit(t, d, pkt{src: tc.out, dst: tc.vip, sport: 1000, dport: 81, proto: TCP, tcpFlags: tcpSYN}, be)
			c := svcCounters(t, d, k)
			if c.Denied != 2 || c.Packets != 3 || c.Flows != 2 {
				t.Fatalf("counters %+v, want 2 denied, 3 packets, 2 flows", c)
			}
			if oc := svcCounters(t, d, open); oc.Denied != 0 || oc.Packets != 1 {
				t.Fatalf("open service counters %+v", oc)
			}

			// Replaced exactly: in (still inside) keeps its flow, in2
			// (only in the old ranges) is cut off although established,
			// in2Only is new.
			mustUpsertCfg(t, d, k, ServiceConfig{Backends: []Backend{be}, Flags: ServiceLocal | ServiceSourceRanges, SourceRanges: tc.replaced})
			if n := mapLen(t, d.objs.SrcRanges); n != len(tc.replaced) {
				t.Fatalf("after replace: %d source range entries, want %d", n, len(tc.replaced))
			}
			expectHit(t, d, data(tc.in, 1000), be)
			expectDrop(t, d, data(tc.in2, 1000))
			expectHit(t, d, syn(tc.in2Only, 1000), be)

			// Flag with no ranges: every source refused, flows included.
			mustUpsertCfg(t, d, k, ServiceConfig{Backends: []Backend{be}, Flags: ServiceLocal | ServiceSourceRanges})
			if n := mapLen(t, d.objs.SrcRanges); n != 0 {
				t.Fatalf("no ranges: %d entries left", n)
			}
			expectDrop(t, d, data(tc.in, 1000))
			expectDrop(t, d, syn(tc.in, 1002))

			// /0 admits everyone.
			all := netip.PrefixFrom(netip.IPv6Unspecified(), 0)
			if tc.vip.Is4() {
				all = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
			}
			mustUpsertCfg(t, d, k, ServiceConfig{Backends: []Backend{be}, Flags: ServiceLocal | ServiceSourceRanges, SourceRanges: []netip.Prefix{all}})
			expectHit(t, d, data(tc.in, 1000), be)
			expectHit(t, d, syn(tc.out, 1003), be)

			// Flag cleared: no check, no entries.
			mustUpsertCfg(t, d, k, ServiceConfig{Backends: []Backend{be}, Flags: ServiceLocal})
			if n := mapLen(t, d.objs.SrcRanges); n != 0 {
				t.Fatalf("flag cleared: %d entries left", n)
			}
			expectHit(t, d, data(tc.out, 1003), be)

			// Deleting the service removes its ranges.
			mustUpsertCfg(t, d, k, ServiceConfig{Backends: []Backend{be}, Flags: ServiceLocal | ServiceSourceRanges, SourceRanges: tc.ranges})
			if err := d.DeleteService(k); err != nil {
				t.Fatal(err)
			}
			if n := mapLen(t, d.objs.SrcRanges); n != 0 {
				t.Fatalf("service deleted: %d source range entries left", n)
			}
			expectHit(t, d, pkt{src: tc.out, dst: tc.vip, sport: 1004, dport: 81, proto: TCP, tcpFlags: tcpSYN}, be)
		})
	}
}

// TestSourceRangesRestore: a new Load on the same pins keeps enforcing the
// ranges, and knows them, so the next update replaces them exactly.
func TestSourceRangesRestore(t *testing.T) {
	root := testPinRoot(t)
	opts := Options{PinRoot: root, MaglevSize: testMaglevM, MaxServices: 64, MaxBackends: 256, MaxFlows: 4096}
	d := loadTest(t, opts)
	k := ServiceKey{vip4, 80, TCP}
	k6 := ServiceKey{vip6, 80, TCP}
	be, be6 := local(podA4, 8080), local(podA6, 8080)
	mustUpsertCfg(t, d, k, ServiceConfig{Backends: []Backend{be}, Flags: ServiceLocal | ServiceSourceRanges, SourceRanges: prefixes("198.51.100.0/24", "192.0.2.0/24")})
	mustUpsertCfg(t, d, k6, ServiceConfig{Backends: []Backend{be6}, Flags: ServiceLocal | ServiceSourceRanges, SourceRanges: prefixes("2001:db8:c::/48")})
	expectHit(t, d, pkt{src: client4, dst: vip4, sport: 1, dport: 80, proto: TCP, tcpFlags: tcpSYN}, be)

	// A second process takes over the pins (the first one's Remove at
	// cleanup removes them all).
	d, err := Load(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	want := map[netip.Prefix]bool{netip.MustParsePrefix("198.51.100.0/24"): true, netip.MustParsePrefix("192.0.2.0/24"): true}
	if got := d.services[k].ranges; len(got) != len(want) || !got[netip.MustParsePrefix("198.51.100.0/24")] || !got[netip.MustParsePrefix("192.0.2.0/24")] {
		t.Fatalf("restored ranges %v, want %v", got, want)
	}
	if got := d.services[k6].ranges; len(got) != 1 || !got[netip.MustParsePrefix("2001:db8:c::/48")] {
		t.Fatalf("restored v6 ranges %v", got)
	}
	expectHit(t, d, pkt{src: client4, dst: vip4, sport: 1, dport: 80, proto: TCP}, be)
	expectDrop(t, d, pkt{src: netip.MustParseAddr("203.0.113.99"), dst: vip4, sport: 1, dport: 80, proto: TCP, tcpFlags: tcpSYN})
	expectHit(t, d, pkt{src: client6, dst: vip6, sport: 1, dport: 80, proto: TCP, tcpFlags: tcpSYN}, be6)

	mustUpsertCfg(t, d, k, ServiceConfig{Backends: []Backend{be}, Flags: ServiceLocal | ServiceSourceRanges, SourceRanges: prefixes("192.0.2.0/24")})
	if n := mapLen(t, d.objs.SrcRanges); n != 2 {
		t.Fatalf("%d source range entries after the update, want 2 (one per service)", n)
	}
	expectDrop(t, d, pkt{src: client4, dst: vip4, sport: 1, dport: 80, proto: TCP})
}

func TestSourceRangesValidation(t *testing.T) {
	d := loadTest(t, Options{})
	k := ServiceKey{vip4, 80, TCP}
	be := []Backend{local(podA4, 8080)}
	bad := []struct {
		name string
		k    ServiceKey
		cfg  ServiceConfig
	}{
		{"v6 range on a v4 VIP", k, ServiceConfig{Backends: be, Flags: ServiceLocal | ServiceSourceRanges, SourceRanges: prefixes("2001:db8::/32")}},
		{"v4 range on a v6 VIP", ServiceKey{vip6, 80, TCP}, ServiceConfig{Backends: []Backend{local(podA6, 1)}, Flags: ServiceLocal | ServiceSourceRanges, SourceRanges: prefixes("192.0.2.0/24")}},
		{"mapped v4 range", k, ServiceConfig{Backends: be, Flags: ServiceLocal | ServiceSourceRanges, SourceRanges: prefixes("::ffff:192.0.2.0/120")}},
		{"invalid prefix", k, ServiceConfig{Backends: be, Flags: ServiceLocal | ServiceSourceRanges, SourceRanges: []netip.Prefix{{}}}},
		{"ranges without the flag", k, ServiceConfig{Backends: be, Flags: ServiceLocal, SourceRanges: prefixes("192.0.2.0/24")}},
		{"unknown service flag", k, ServiceConfig{Backends: be, Flags: ServiceLocal | 1<<9}},
		{"internal backend flag", k, ServiceConfig{Backends: []Backend{{Addr: podA4, Port: 1, Flags: BackendLocal | backendSvcSourceRanges}}, Flags: ServiceLocal}},
	}
	for _, tc := range bad {
		if err := d.Upsert(tc.k, tc.cfg); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	if n := mapLen(t, d.objs.SrcRanges); n != 0 || len(d.Services()) != 0 {
		t.Fatalf("refused upserts left %d ranges, %d services", n, len(d.Services()))
	}
}
