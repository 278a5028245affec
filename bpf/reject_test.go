package bpf

import (
	"bytes"
	"encoding/binary"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// TestXDPRejectReset: a service whose table is all reject share answers
// every TCP segment of a new flow with a reset, checked field by field and
// with checksums summed from scratch over the output frame; UDP, resets
// and later fragments are dropped; each is counted once.
func TestXDPRejectReset(t *testing.T) {
	d := loadTest(t, Options{})
	keys := []ServiceKey{{vip4, 80, TCP}, {vip6, 80, TCP}, {vip4, 53, UDP}, {vip6, 53, UDP}}
	for _, k := range keys {
		if err := d.Upsert(k, ServiceConfig{Flags: ServiceCluster, RejectWeight: 1}); err != nil {
			t.Fatal(err)
		}
	}
	const (
		theirSeq = 0x01020304 // packet_test.go's TCP sequence number
		theirAck = 0x0a0b0c0d // and acknowledgment number
	)
	data := []byte("GET / HTTP/1.0\r\n\r\n")
	opts := []byte{2, 4, 5, 0xb4, 1, 1, 4, 2} // MSS, NOP, NOP, SACK permitted
	cases := []struct {
		name     string
		in       pkt
		seq, ack uint32
		flags    uint8
	}{
		{"v4 syn", pkt{src: client4, dst: vip4, sport: 40000, dport: 80, proto: TCP, tcpFlags: tcpSYN}, 0, theirSeq + 1, tcpRST | tcpACK},
		{"v6 syn", pkt{src: client6, dst: vip6, sport: 40000, dport: 80, proto: TCP, tcpFlags: tcpSYN}, 0, theirSeq + 1, tcpRST | tcpACK},
		{"v4 syn ip and tcp options", pkt{src: client4, dst: vip4, sport: 40001, dport: 80, proto: TCP, tcpFlags: tcpSYN,
			ipOptions: []byte{1, 1, 1, 0}, tcpOptions: opts}, 0, theirSeq + 1, tcpRST | tcpACK},
		{"v6 syn hop-by-hop", pkt{src: client6, dst: vip6, sport: 40001, dport: 80, proto: TCP, tcpFlags: tcpSYN,
			tcpOptions: opts, ext: []ext6{hopByHop(8)}}, 0, theirSeq + 1, tcpRST | tcpACK},
		{"v4 vlan syn padded", pkt{vlan: 7, src: client4, dst: vip4, sport: 40002, dport: 80, proto: TCP, tcpFlags: tcpSYN, ethPadding: 6},
			0, theirSeq + 1, tcpRST | tcpACK},
		{"v6 vlan syn", pkt{vlan: 4000, src: client6, dst: vip6, sport: 40002, dport: 80, proto: TCP, tcpFlags: tcpSYN}, 0, theirSeq + 1, tcpRST | tcpACK},
		{"v4 syn with data", pkt{src: client4, dst: vip4, sport: 40003, dport: 80, proto: TCP, tcpFlags: tcpSYN, payload: data},
			0, theirSeq + 1 + uint32(len(data)), tcpRST | tcpACK},
		{"v4 ack with data", pkt{src: client4, dst: vip4, sport: 40004, dport: 80, proto: TCP, tcpFlags: tcpACK | tcpPSH, payload: data},
			theirAck, 0, tcpRST},
		{"v6 fin ack", pkt{src: client6, dst: vip6, sport: 40004, dport: 80, proto: TCP, tcpFlags: tcpFIN | tcpACK}, theirAck, 0, tcpRST},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in.bytes()
			ret, out := runProg(t, d.objs.ZhXdp, in)
			if ret != xdpTX {
				t.Fatalf("verdict %d, want XDP_TX", ret)
			}
			checkReset(t, in, out, tc.in, tc.seq, tc.ack, tc.flags)
		})
	}
	drops := []struct {
		name string
		in   pkt
	}{
		{"v4 udp", pkt{src: client4, dst: vip4, sport: 40000, dport: 53, proto: UDP, payload: data}},
		{"v6 udp", pkt{src: client6, dst: vip6, sport: 40000, dport: 53, proto: UDP, payload: data}},
		{"v4 rst", pkt{src: client4, dst: vip4, sport: 40005, dport: 80, proto: TCP, tcpFlags: tcpRST}},
		{"v6 rst ack", pkt{src: client6, dst: vip6, sport: 40005, dport: 80, proto: TCP, tcpFlags: tcpRST | tcpACK}},
	}
	for _, tc := range drops {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in.bytes()
			if ret, out := runProg(t, d.objs.ZhXdp, in); ret != xdpDrop || !bytes.Equal(in, out) {
				t.Fatalf("verdict %d, changed %v; want XDP_DROP untouched", ret, !bytes.Equal(in, out))
			}
		})
	}
	st, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	want := map[ServiceKey]uint64{keys[0]: 5 + 1, keys[1]: 4 + 1, keys[2]: 1, keys[3]: 1}
	for k, n := range want {
		c := st[k].Counters
		if c.Rejects != n || c.Drops != 0 || c.Flows != 0 || c.Packets != 0 {
			t.Errorf("%s: counters %+v, want %d rejects and nothing else", k, c, n)
		}
	}
}

const (
	tcpFIN = 0x01
	tcpRST = 0x04
)

// checkReset parses out as the reset answering the frame in (built from
// p): MACs and the VLAN tag turned around, VIP to client, ports swapped, a
// bare 20-byte TCP header with seq, ack and flags, no bytes after it, and
// both checksums right.
func checkReset(t *testing.T, in, out []byte, p pkt, seq, ack uint32, flags uint8) {
	t.Helper()
	q := parseFrame(out)
	if !q.ok {
		t.Fatalf("output does not parse: %x", out)
	}
	if !bytes.Equal(out[0:6], in[6:12]) || !bytes.Equal(out[6:12], in[0:6]) || !bytes.Equal(out[12:q.l3], in[12:q.l3]) {
		t.Errorf("link header %x, want %x's MACs swapped and its tag kept", out[:q.l3], in[:q.l3])
	}
	if q.src != p.dst || q.dst != p.src || q.sport != p.dport || q.dport != p.sport || q.proto != TCP {
		t.Errorf("reset %s:%d -> %s:%d/%s, want %s:%d -> %s:%d/tcp", q.src, q.sport, q.dst, q.dport, q.proto, p.dst, p.dport, p.src, p.sport)
	}
	ipHdr := 20
	if p.src.Is6() {
		ipHdr = 40
	}
	if q.l4 != q.l3+ipHdr || q.l3len != ipHdr+20 || len(out) != q.l3+q.l3len {
		t.Errorf("frame of %d bytes, IP header %d, IP length %d; want %d, %d, %d", len(out), q.l4-q.l3, q.l3len, q.l3+ipHdr+20, ipHdr, ipHdr+20)
	}
	tcp := out[q.l4:]
	if got := binary.BigEndian.Uint32(tcp[4:]); got != seq {
		t.Errorf("seq %#x, want %#x", got, seq)
	}
	if got := binary.BigEndian.Uint32(tcp[8:]); got != ack {
		t.Errorf("ack %#x, want %#x", got, ack)
	}
	if tcp[12] != 5<<4 || tcp[13] != flags {
		t.Errorf("data offset byte %#x, flags %#x; want 0x50, %#x", tcp[12], tcp[13], flags)
	}
	if p.src.Is4() {
		ip := out[q.l3:]
		if ip[0] != 0x45 || ip[8] == 0 || binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 {
			t.Errorf("IPv4 header %x: want version 4, 5 words, a TTL, no fragment", ip[:20])
		}
	} else if out[q.l3]>>4 != 6 || out[q.l3+6] != byte(TCP) || out[q.l3+7] == 0 {
		t.Errorf("IPv6 header %x: want version 6, next header TCP, a hop limit", out[q.l3:q.l3+40])
	}
	if ipOK, l4OK := checksumsOK(out, q); !ipOK || !l4OK {
		t.Errorf("checksums: IP ok %v, TCP ok %v", ipOK, l4OK)
	}
}

// maglevSlots reads the active Maglev table of a service: backend id ->
// slots.
func maglevSlots(t *testing.T, d *Datapath, k ServiceKey) map[uint32]int {
	t.Helper()
	d.mu.Lock()
	s := d.services[k]
	d.mu.Unlock()
	chunk, chunks := maglevChunks(d.opts.MaglevSize)
	out := map[uint32]int{}
	for c := range chunks {
		v := make([]uint32, chunk)
		if err := d.objs.Maglev.Lookup(zhMaglevKey{Table: s.id*2 + s.active, Chunk: c}, v); err != nil {
			t.Fatalf("table of %s chunk %d: %v", k, c, err)
		}
		for i := range min(chunk, d.opts.MaglevSize-c*chunk) {
			out[v[i]]++
		}
	}
	return out
}

// TestMaglevRejectShare: the reject share takes its weight's part of the
// table's slots, to within one slot, whatever the backends' weights; a
// weight of 0 leaves no reject slot; no backend's id is ever the reject
// slot's.
func TestMaglevRejectShare(t *testing.T) {
	d := loadTest(t, Options{MaglevSize: DefaultMaglevSize})
	k := ServiceKey{vip4, 80, TCP}
	b := func(addr netip.Addr, w uint32) Backend {
		return Backend{Addr: addr, Port: 8080, Flags: BackendLocal, Weight: w}
	}
	cases := []struct {
		name   string
		bs     []Backend
		reject uint32
	}{
		{"one unweighted backend, equal reject", []Backend{b(podA4, 0)}, 1},
		{"three backends, a fifth rejected", []Backend{b(podA4, 1<<28), b(podB4, 1<<28), b(podC4, 1<<28)}, 1 << 28 / 4 * 3},
		{"gateway scale, 20% rejected", []Backend{b(podA4, 429496729), b(podB4, 429496729)}, 214748364},
		{"tiny reject share", []Backend{b(podA4, 1000), b(podB4, 3000)}, 1},
		{"reject only", nil, 1 << 30},
		{"no reject", []Backend{b(podA4, 5), b(podB4, 7)}, 0},
	}
	m := float64(DefaultMaglevSize)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := d.Upsert(k, ServiceConfig{Flags: ServiceLocal, Backends: tc.bs, RejectWeight: tc.reject}); err != nil {
				t.Fatal(err)
			}
			sum := float64(tc.reject)
			for _, be := range tc.bs {
				sum += float64(max(be.Weight, 1))
			}
			slots := maglevSlots(t, d, k)
			want := m * float64(tc.reject) / sum
			if got := slots[rejectSlot]; math.Abs(float64(got)-want) > 1 {
				t.Errorf("reject share %d slots of %d, want %.1f (+-1)", got, DefaultMaglevSize, want)
			}
			total := 0
			for _, n := range slots {
				total += n
			}
			if total != DefaultMaglevSize || len(slots) != len(tc.bs)+min(int(tc.reject), 1) {
				t.Errorf("table of %d slots over %d ids, want %d over %d", total, len(slots), DefaultMaglevSize, len(tc.bs)+min(int(tc.reject), 1))
			}
		})
	}
}

// TestXDPRejectShareNewFlowsOnly: a reject share added to a service with
// established flows leaves every one of them on its backend, and takes
// its weight's share of new flows: 3000 SYNs from distinct ports, each
// rejected with probability 1/4 (by a table exact to a slot), so the
// count's standard deviation is sqrt(3000 * 1/4 * 3/4) = 23.7, and 6
// points (180 flows, 7.6 deviations) is a bound a correct table never
// misses while one off by a backend's share (25 points) always does.
func TestXDPRejectShareNewFlowsOnly(t *testing.T) {
	d := loadTest(t, Options{MaglevSize: DefaultMaglevSize})
	k := ServiceKey{vip6, 443, TCP}
	podB6 := netip.MustParseAddr("2001:db8:64:2::2")
	podC6 := netip.MustParseAddr("2001:db8:64:3::2")
	bs := []Backend{local(podA6, 8443), local(podB6, 8443), local(podC6, 8443)}
	if err := d.Upsert(k, ServiceConfig{Flags: ServiceLocal, Backends: bs}); err != nil {
		t.Fatal(err)
	}
	const established = 300
	was := map[uint16]netip.Addr{}
	for i := range established {
		sp := uint16(10000 + i)
		was[sp] = backendOf(t, d, pkt{src: client6, dst: vip6, sport: sp, dport: 443, proto: TCP, tcpFlags: tcpSYN})
	}
	// Reject weight equal to one backend's: a quarter of the slots.
	if err := d.Upsert(k, ServiceConfig{Flags: ServiceLocal, Backends: bs, RejectWeight: 1}); err != nil {
		t.Fatal(err)
	}
	for sp, be := range was {
		if got := backendOf(t, d, pkt{src: client6, dst: vip6, sport: sp, dport: 443, proto: TCP, payload: []byte("x")}); got != be {
			t.Fatalf("established flow %d moved from %s to %s", sp, be, got)
		}
	}
	const flows = 3000
	rejected := 0
	for i := range flows {
		p := pkt{src: client6, dst: vip6, sport: uint16(20000 + i), dport: 443, proto: TCP, tcpFlags: tcpSYN}
		in := p.bytes()
		switch ret, out := runProg(t, d.objs.ZhXdp, in); ret {
		case xdpTX:
			checkReset(t, in, out, p, 0, 0x01020304+1, tcpRST|tcpACK)
			rejected++
		case xdpPass:
		default:
			t.Fatalf("flow %d: verdict %d", i, ret)
		}
	}
	share := float64(rejected) / flows
	if math.Abs(share-0.25) > 0.06 {
		t.Errorf("%d of %d new flows rejected (%.1f%%), want 25%% +- 6 points", rejected, flows, 100*share)
	}
	st, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if c := st[k].Counters; c.Rejects != uint64(rejected) || c.Flows != uint64(established+flows-rejected) || c.Drops != 0 {
		t.Errorf("counters %+v, want %d rejects, %d flows, no drops", c, rejected, established+flows-rejected)
	}
	t.Logf("%d of %d new flows rejected (%.2f%%)", rejected, flows, 100*share)
}

// TestInspectRejects: Inspect reads each service's rejected flows, and a
// datapath pinned before the rejects map existed reads as none rejected.
func TestInspectRejects(t *testing.T) {
	root := testPinRoot(t)
	d := loadTest(t, Options{PinRoot: root})
	k := ServiceKey{vip4, 80, TCP}
	if err := d.Upsert(k, ServiceConfig{Flags: ServiceCluster, RejectWeight: 1}); err != nil {
		t.Fatal(err)
	}
	for sport := range uint16(3) {
		if ret, _ := runProg(t, d.objs.ZhXdp, pkt{src: client4, dst: vip4, sport: 100 + sport, dport: 80, proto: TCP, tcpFlags: tcpSYN}.bytes()); ret != xdpTX {
			t.Fatalf("verdict %d, want XDP_TX", ret)
		}
	}
	rejected := func() uint64 {
		t.Helper()
		snap, err := Inspect(root)
		if err != nil {
			t.Fatal(err)
		}
		if len(snap.Services) != 1 {
			t.Fatalf("services %+v", snap.Services)
		}
		return snap.Services[0].Counters.Rejects
	}
	if n := rejected(); n != 3 {
		t.Errorf("Inspect: %d rejected, want 3", n)
	}
	if err := os.Remove(filepath.Join(root, zhMapRejects)); err != nil {
		t.Fatal(err)
	}
	if n := rejected(); n != 0 {
		t.Errorf("Inspect without the rejects map: %d rejected, want 0", n)
	}
}
