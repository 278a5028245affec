package bpf

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
)

const (
	xdpDrop     = 1
	xdpPass     = 2
	tcxNext     = 0xffffffff
	testMaglevM = 251
)

var (
	vip4    = netip.MustParseAddr("203.0.113.10")
	vip6    = netip.MustParseAddr("2001:db8:100::10")
	client4 = netip.MustParseAddr("198.51.100.7")
	client6 = netip.MustParseAddr("2001:db8:c::7")
	podA4   = netip.MustParseAddr("100.64.1.2")
	podB4   = netip.MustParseAddr("100.64.2.2")
	podC4   = netip.MustParseAddr("100.64.3.2")
	podA6   = netip.MustParseAddr("2001:db8:64:1::2")
)

// requireRoot fails (never skips): CI runs these as root.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("BPF tests need root (CAP_BPF, CAP_NET_ADMIN); run them as root, e.g. sudo make test-bpf")
	}
}

func testPinRoot(t testing.TB) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return filepath.Join("/sys/fs/bpf", "zh-test-"+hex.EncodeToString(b[:]))
}

func loadTest(t testing.TB, opts Options) *Datapath {
	t.Helper()
	requireRoot(t)
	if opts.PinRoot == "" {
		opts.PinRoot = testPinRoot(t)
	}
	if opts.MaglevSize == 0 {
		opts.MaglevSize = testMaglevM
	}
	if opts.MaxServices == 0 {
		opts.MaxServices, opts.MaxBackends, opts.MaxFlows = 64, 256, 4096
	}
	d, err := Load(opts)
	if err != nil {
		_ = os.RemoveAll(opts.PinRoot)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Remove(); err != nil {
			t.Error(err)
		}
	})
	return d
}

func runProg(t testing.TB, p *ebpf.Program, in []byte) (uint32, []byte) {
	t.Helper()
	opts := ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+512)}
	ret, err := p.Run(&opts)
	if err != nil {
		t.Fatalf("run %s: %v", p, err)
	}
	return ret, opts.DataOut
}

func mustUpsert(t testing.TB, d *Datapath, k ServiceKey, bs []Backend) {
	t.Helper()
	if err := d.UpsertService(k, bs, ServiceLocal); err != nil {
		t.Fatal(err)
	}
}

func local(addr netip.Addr, port uint16) Backend {
	return Backend{Addr: addr, Port: port, Flags: BackendLocal}
}

// TestXDPVIPHit: one packet per case, compared byte for byte with a packet
// built from scratch for the Pod's address and port.
func TestXDPVIPHit(t *testing.T) {
	d := loadTest(t, Options{})
	svcs := []struct {
		k  ServiceKey
		be Backend
	}{
		{ServiceKey{vip4, 80, TCP}, local(podA4, 8080)},
		{ServiceKey{vip4, 53, UDP}, local(podA4, 5353)},
		{ServiceKey{vip6, 443, TCP}, local(podA6, 8443)},
		{ServiceKey{vip6, 53, UDP}, local(podA6, 5353)},
	}
	for _, s := range svcs {
		mustUpsert(t, d, s.k, []Backend{s.be})
	}
	payload := []byte("hello zerohop\n")
	cases := []struct {
		name string
		in   pkt
		be   Backend
	}{
		{"v4 tcp syn", pkt{src: client4, dst: vip4, sport: 40000, dport: 80, proto: TCP, tcpFlags: tcpSYN}, svcs[0].be},
		{"v4 tcp data", pkt{src: client4, dst: vip4, sport: 40001, dport: 80, proto: TCP, tcpFlags: tcpACK | tcpPSH, payload: payload}, svcs[0].be},
		{"v4 tcp ip options", pkt{src: client4, dst: vip4, sport: 40002, dport: 80, proto: TCP, tcpFlags: tcpSYN, ipOptions: []byte{1, 1, 1, 0}}, svcs[0].be},
		{"v4 tcp eth padding", pkt{src: client4, dst: vip4, sport: 40003, dport: 80, proto: TCP, tcpFlags: tcpSYN, ethPadding: 6}, svcs[0].be},
		{"v4 udp", pkt{src: client4, dst: vip4, sport: 40000, dport: 53, proto: UDP, payload: payload}, svcs[1].be},
		{"v4 udp odd payload", pkt{src: client4, dst: vip4, sport: 40004, dport: 53, proto: UDP, payload: payload[:5]}, svcs[1].be},
		{"v4 udp zero checksum", pkt{src: client4, dst: vip4, sport: 40001, dport: 53, proto: UDP, payload: payload, udpNoCsum: true}, svcs[1].be},
		{"v6 tcp", pkt{src: client6, dst: vip6, sport: 40000, dport: 443, proto: TCP, tcpFlags: tcpSYN}, svcs[2].be},
		{"v6 tcp data", pkt{src: client6, dst: vip6, sport: 40001, dport: 443, proto: TCP, payload: payload}, svcs[2].be},
		{"v6 udp", pkt{src: client6, dst: vip6, sport: 40000, dport: 53, proto: UDP, payload: payload}, svcs[3].be},
		{"v4 vlan tcp", pkt{vlan: 100, src: client4, dst: vip4, sport: 40005, dport: 80, proto: TCP, tcpFlags: tcpSYN}, svcs[0].be},
		{"v6 vlan udp", pkt{vlan: 4000, src: client6, dst: vip6, sport: 40005, dport: 53, proto: UDP, payload: payload}, svcs[3].be},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in.bytes()
			want := tc.in
			want.dst, want.dport = tc.be.Addr, tc.be.Port
			ret, out := runProg(t, d.objs.ZhXdp, in)
			if ret != xdpPass {
				t.Fatalf("verdict %d, want XDP_PASS after rewrite", ret)
			}
			if !bytes.Equal(out, want.bytes()) {
				t.Fatalf("output differs\n got %x\nwant %x", out, want.bytes())
			}
			p := parseFrame(out)
			if ipOK, l4OK := checksumsOK(out, p); !p.ok || !ipOK || !l4OK {
				t.Fatalf("output checksums: parsed %v ip %v l4 %v", p.ok, ipOK, l4OK)
			}
			if tc.in.udpNoCsum && out[p.l4+6] != 0 || tc.in.udpNoCsum && out[p.l4+7] != 0 {
				t.Fatal("UDP zero checksum was filled in")
			}
		})
	}
	st, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	c := st[svcs[0].k]
	if c.Packets != 5 || c.Flows != 5 || c.CTMiss != 1 || c.Backends[svcs[0].be.AddrPort()].Packets != 5 {
		t.Fatalf("v4 tcp service counters %+v, want 5 packets, 5 flows, 1 non-SYN miss, all on the backend", c)
	}
}

// TestXDPNotVIP: everything that is not exactly (VIP, port, proto) of a
// service passes untouched.
func TestXDPNotVIP(t *testing.T) {
	d := loadTest(t, Options{})
	mustUpsert(t, d, ServiceKey{vip4, 80, TCP}, []Backend{local(podA4, 8080)})
	mustUpsert(t, d, ServiceKey{vip6, 80, TCP}, []Backend{local(podA6, 8080)})
	other4 := netip.MustParseAddr("203.0.113.11")
	arp := append(append(append([]byte{}, macDst...), macSrc...), 0x08, 0x06)
	arp = append(arp, make([]byte, 28)...)
	icmp := pkt{src: client4, dst: vip4, proto: TCP}.bytes()
	icmp[14+9] = 1 // protocol ICMP; header checksum is irrelevant to the program
	cases := map[string][]byte{
		"other address":        pkt{src: client4, dst: other4, sport: 1, dport: 80, proto: TCP}.bytes(),
		"other port":           pkt{src: client4, dst: vip4, sport: 1, dport: 81, proto: TCP}.bytes(),
		"other protocol":       pkt{src: client4, dst: vip4, sport: 1, dport: 80, proto: UDP}.bytes(),
		"v6 other address":     pkt{src: client6, dst: client6, sport: 1, dport: 80, proto: TCP}.bytes(),
		"v4 address in v6":     pkt{src: client6, dst: netip.AddrFrom16(vip4.As16()), sport: 1, dport: 80, proto: TCP}.bytes(),
		"arp":                  arp,
		"icmp to vip":          icmp,
		"reply from vip":       pkt{src: vip4, dst: client4, sport: 80, dport: 1, proto: TCP}.bytes(),
		"vlan other":           pkt{vlan: 7, src: client4, dst: other4, sport: 1, dport: 80, proto: TCP}.bytes(),
		"v6 other port":        pkt{src: client6, dst: vip6, sport: 1, dport: 443, proto: TCP}.bytes(),
		"minimum eth frame":    make([]byte, 14),
		"vip filter collision": pkt{src: client4, dst: filterTwin(t, vip4), sport: 1, dport: 80, proto: TCP}.bytes(),
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			ret, out := runProg(t, d.objs.ZhXdp, in)
			if ret != xdpPass || !bytes.Equal(in, out) {
				t.Fatalf("verdict %d, changed %v; want XDP_PASS untouched", ret, !bytes.Equal(in, out))
			}
		})
	}
}

// filterTwin finds another address with the same VIP filter bit.
func filterTwin(t *testing.T, a netip.Addr) netip.Addr {
	for b := a.Next(); b.Is4(); b = b.Next() {
		if filterBit(b) == filterBit(a) {
			return b
		}
	}
	t.Fatal("no filter twin")
	return netip.Addr{}
}

func TestVIPFilter(t *testing.T) {
	d := loadTest(t, Options{})
	k80, k443 := ServiceKey{vip6, 80, TCP}, ServiceKey{vip6, 443, TCP}
	mustUpsert(t, d, k80, []Backend{local(podA6, 80)})
	mustUpsert(t, d, k443, []Backend{local(podA6, 443)})
	bit := filterBit(vip6)
	word := func() uint64 {
		var w uint64
		if err := d.objs.VipFilter.Lookup(bit/64, &w); err != nil {
			t.Fatal(err)
		}
		return w & (1 << (bit % 64))
	}
	if word() == 0 {
		t.Fatal("filter bit not set for a VIP")
	}
	if err := d.DeleteService(k80); err != nil {
		t.Fatal(err)
	}
	if word() == 0 {
		t.Fatal("filter bit cleared while the VIP still has a service")
	}
	in := pkt{src: client6, dst: vip6, sport: 1, dport: 443, proto: TCP, tcpFlags: tcpSYN}.bytes()
	if _, out := runProg(t, d.objs.ZhXdp, in); bytes.Equal(in, out) {
		t.Fatal("remaining service not served")
	}
	if err := d.DeleteService(k443); err != nil {
		t.Fatal(err)
	}
	if word() != 0 {
		t.Fatal("filter bit left set after the last service of the VIP")
	}
	if ret, out := runProg(t, d.objs.ZhXdp, in); ret != xdpPass || !bytes.Equal(in, out) {
		t.Fatal("deleted service still rewritten")
	}
}

// backendOf sends one packet and returns the Pod address it was sent to.
func backendOf(t *testing.T, d *Datapath, p pkt) netip.Addr {
	t.Helper()
	ret, out := runProg(t, d.objs.ZhXdp, p.bytes())
	if ret != xdpPass {
		t.Fatalf("verdict %d for %v:%d", ret, p.src, p.sport)
	}
	q := parseFrame(out)
	if !q.ok {
		t.Fatal("output does not parse")
	}
	return q.dst
}

func TestXDPConntrackSticky(t *testing.T) {
	d := loadTest(t, Options{MaglevSize: DefaultMaglevSize}) // 17 chunks per table
	k := ServiceKey{vip4, 80, TCP}
	mustUpsert(t, d, k, []Backend{local(podA4, 8080), local(podB4, 8080)})
	const flows = 300
	first := map[uint16]netip.Addr{}
	for i := range flows {
		sp := uint16(10000 + i)
		first[sp] = backendOf(t, d, pkt{src: client4, dst: vip4, sport: sp, dport: 80, proto: TCP, tcpFlags: tcpSYN})
	}
	mustUpsert(t, d, k, []Backend{local(podA4, 8080), local(podB4, 8080), local(podC4, 8080)})
	for sp, was := range first {
		if now := backendOf(t, d, pkt{src: client4, dst: vip4, sport: sp, dport: 80, proto: TCP}); now != was {
			t.Fatalf("flow %d moved from %s to %s after a backend was added", sp, was, now)
		}
	}
	spread := map[netip.Addr]int{}
	for i := range flows {
		spread[backendOf(t, d, pkt{src: client4, dst: vip4, sport: uint16(20000 + i), dport: 80, proto: TCP, tcpFlags: tcpSYN})]++
	}
	for _, pod := range []netip.Addr{podA4, podB4, podC4} {
		if spread[pod] < flows/3/2 {
			t.Errorf("new flows: %s got %d of %d (%v)", pod, spread[pod], flows, spread)
		}
	}
	// Established flows seen again after the change are no conntrack
	// misses, and every slot of every chunk named a live backend.
	st, _ := d.Stats()
	if st[k].CTMiss != 0 || st[k].Drops != 0 {
		t.Errorf("non-SYN conntrack misses %d, drops %d, want 0", st[k].CTMiss, st[k].Drops)
	}
	// Removing a backend re-balances its flows (no terminating grace).
	mustUpsert(t, d, k, []Backend{local(podA4, 8080), local(podB4, 8080)})
	for sp := range first {
		if now := backendOf(t, d, pkt{src: client4, dst: vip4, sport: sp, dport: 80, proto: TCP}); now == podC4 {
			t.Fatalf("flow %d still sent to removed backend", sp)
		}
	}
}

func TestXDPTerminatingBackend(t *testing.T) {
	d := loadTest(t, Options{MaglevSize: 2003}) // chunks of 1000, 1000, 3
	k := ServiceKey{vip6, 80, TCP}
	a := local(podA6, 8080)
	b := local(netip.MustParseAddr("2001:db8:64:2::2"), 8080)
	mustUpsert(t, d, k, []Backend{a, b})
	onA := map[uint16]bool{}
	for i := range 200 {
		sp := uint16(30000 + i)
		if backendOf(t, d, pkt{src: client6, dst: vip6, sport: sp, dport: 80, proto: TCP, tcpFlags: tcpSYN}) == a.Addr {
			onA[sp] = true
		}
	}
	if len(onA) == 0 || len(onA) == 200 {
		t.Fatalf("%d of 200 flows on A: cannot test", len(onA))
	}
	a.Flags |= BackendTerminating
	mustUpsert(t, d, k, []Backend{a, b})
	for sp := range onA {
		if got := backendOf(t, d, pkt{src: client6, dst: vip6, sport: sp, dport: 80, proto: TCP}); got != a.Addr {
			t.Fatalf("established flow %d moved off the terminating backend to %s", sp, got)
		}
	}
	for i := range 200 {
		if got := backendOf(t, d, pkt{src: client6, dst: vip6, sport: uint16(40000 + i), dport: 80, proto: TCP, tcpFlags: tcpSYN}); got == a.Addr {
			t.Fatalf("new flow %d sent to the terminating backend", i)
		}
	}
}

func TestXDPNoBackends(t *testing.T) {
	d := loadTest(t, Options{})
	cases := []struct {
		name string
		k    ServiceKey
		bs   []Backend
		in   pkt
	}{
		{"none", ServiceKey{vip4, 80, TCP}, nil, pkt{src: client4, dst: vip4, sport: 1, dport: 80, proto: TCP, tcpFlags: tcpSYN}},
		{"all terminating", ServiceKey{vip6, 53, UDP}, []Backend{{Addr: podA6, Port: 53, Flags: BackendLocal | BackendTerminating}},
			pkt{src: client6, dst: vip6, sport: 1, dport: 53, proto: UDP}},
		{"only remote in local mode", ServiceKey{vip4, 53, UDP}, []Backend{{Addr: podA4, Port: 53, Flags: BackendRemote}},
			pkt{src: client4, dst: vip4, sport: 1, dport: 53, proto: UDP}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mustUpsert(t, d, tc.k, tc.bs)
			in := tc.in.bytes()
			ret, out := runProg(t, d.objs.ZhXdp, in)
			if ret != xdpDrop || !bytes.Equal(in, out) {
				t.Fatalf("verdict %d, changed %v; want XDP_DROP untouched", ret, !bytes.Equal(in, out))
			}
			st, err := d.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if c := st[tc.k]; c.Drops != 1 || c.Packets != 0 {
				t.Fatalf("counters %+v, want 1 drop", c.Counters)
			}
		})
	}
}

// TestTCReplyRewrite: a hit records the flow; the Pod's reply leaves the
// node with the VIP as source.
func TestTCReplyRewrite(t *testing.T) {
	d := loadTest(t, Options{})
	svcs := []struct {
		k  ServiceKey
		be Backend
	}{
		{ServiceKey{vip4, 80, TCP}, local(podA4, 8080)},
		{ServiceKey{vip4, 53, UDP}, local(podA4, 5353)},
		{ServiceKey{vip6, 443, TCP}, local(podA6, 8443)},
		{ServiceKey{vip6, 53, UDP}, local(podA6, 5353)},
	}
	for _, s := range svcs {
		mustUpsert(t, d, s.k, []Backend{s.be})
	}
	cases := []struct {
		name    string
		svc     int
		client  netip.Addr
		noCsum  bool
		vlan    uint16
		payload string
	}{
		{"v4 tcp", 0, client4, false, 0, "reply"},
		{"v4 udp", 1, client4, false, 0, "reply"},
		{"v4 udp zero checksum", 1, client4, true, 0, "reply"},
		{"v6 tcp", 2, client6, false, 0, "reply!"},
		{"v6 udp", 3, client6, false, 0, "r"},
		{"v4 tcp vlan", 0, client4, false, 42, "reply"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := svcs[tc.svc]
			sp := uint16(50000 + i)
			backendOf(t, d, pkt{src: tc.client, dst: s.k.Addr, sport: sp, dport: s.k.Port, proto: s.k.Proto, tcpFlags: tcpSYN})
			reply := pkt{vlan: tc.vlan, src: s.be.Addr, dst: tc.client, sport: s.be.Port, dport: sp, proto: s.k.Proto,
				tcpFlags: tcpSYN | tcpACK, payload: []byte(tc.payload), udpNoCsum: tc.noCsum}
			want := reply
			want.src, want.sport = s.k.Addr, s.k.Port
			ret, out := runProg(t, d.objs.ZhTcEgress, reply.bytes())
			if ret != tcxNext {
				t.Fatalf("verdict %d, want TCX_NEXT", int32(ret))
			}
			if !bytes.Equal(out, want.bytes()) {
				t.Fatalf("reply not rewritten to the VIP\n got %x\nwant %x", out, want.bytes())
			}
			// A reply to a port the client never used is not ours.
			other := reply
			other.dport = sp + 1000
			in := other.bytes()
			if _, out := runProg(t, d.objs.ZhTcEgress, in); !bytes.Equal(in, out) {
				t.Fatal("unrelated Pod traffic was rewritten")
			}
		})
	}
}

// TestTruncatedAndMalformed cuts full VIP packets at every length and
// corrupts header fields; nothing may be rewritten, nothing may crash.
func TestTruncatedAndMalformed(t *testing.T) {
	d := loadTest(t, Options{})
	mustUpsert(t, d, ServiceKey{vip4, 80, TCP}, []Backend{local(podA4, 8080)})
	mustUpsert(t, d, ServiceKey{vip4, 53, UDP}, []Backend{local(podA4, 53)})
	mustUpsert(t, d, ServiceKey{vip6, 80, TCP}, []Backend{local(podA6, 8080)})
	mustUpsert(t, d, ServiceKey{vip6, 53, UDP}, []Backend{local(podA6, 53)})
	full := map[string]pkt{
		"v4 tcp":  {src: client4, dst: vip4, sport: 7, dport: 80, proto: TCP, tcpFlags: tcpSYN},
		"v4 udp":  {src: client4, dst: vip4, sport: 7, dport: 53, proto: UDP},
		"v6 tcp":  {src: client6, dst: vip6, sport: 7, dport: 80, proto: TCP, tcpFlags: tcpSYN},
		"v6 udp":  {src: client6, dst: vip6, sport: 7, dport: 53, proto: UDP},
		"vlan v4": {vlan: 3, src: client4, dst: vip4, sport: 7, dport: 80, proto: TCP, tcpFlags: tcpSYN},
	}
	for name, p := range full {
		t.Run("truncated "+name, func(t *testing.T) {
			whole := p.bytes()
			for n := 0; n < len(whole); n++ {
				in := whole[:n]
				opts := ebpf.RunOptions{Data: in, DataOut: make([]byte, n+512)}
				ret, err := d.objs.ZhXdp.Run(&opts)
				if n < 14 {
					// The kernel refuses to run on less than an Ethernet header.
					if err == nil {
						t.Fatalf("len %d: kernel ran the program on a runt", n)
					}
					continue
				}
				if err != nil {
					t.Fatalf("len %d: %v", n, err)
				}
				if ret != xdpPass || !bytes.Equal(in, opts.DataOut) {
					t.Fatalf("len %d: verdict %d, changed %v", n, ret, !bytes.Equal(in, opts.DataOut))
				}
				// The reply direction parses the same way.
				opts = ebpf.RunOptions{Data: in, DataOut: make([]byte, n+512)}
				// The kernel refuses skbs too short for the IP header
				// their ethertype announces; those cannot reach tc.
				_, err = d.objs.ZhTcEgress.Run(&opts)
				if err == nil && !bytes.Equal(in, opts.DataOut) {
					t.Fatalf("tc len %d: truncated packet rewritten", n)
				}
			}
		})
	}
	v4 := full["v4 tcp"].bytes()
	v4udp := full["v4 udp"].bytes()
	v6 := full["v6 tcp"].bytes()
	mut := func(b []byte, f func([]byte)) []byte {
		c := bytes.Clone(b)
		f(c)
		return c
	}
	malformed := map[string][]byte{
		"ip version 5":          mut(v4, func(b []byte) { b[14] = 0x55 }),
		"ihl 4":                 mut(v4, func(b []byte) { b[14] = 0x44 }),
		"ihl beyond packet":     mut(v4, func(b []byte) { b[14] = 0x4f }),
		"tot_len < ihl":         mut(v4, func(b []byte) { b[16], b[17] = 0, 19 }),
		"tot_len > frame":       mut(v4, func(b []byte) { b[16], b[17] = 0, 41 }),
		"tot_len cuts tcp":      mut(v4, func(b []byte) { b[16], b[17] = 0, 39 }),
		"fragment, no first":    mut(v4, func(b []byte) { b[20], b[21] = 0, 1 }),
		"tcp doff 4":            mut(v4, func(b []byte) { b[34+12] = 4 << 4 }),
		"tcp doff beyond":       mut(v4, func(b []byte) { b[34+12] = 6 << 4 }),
		"udp len 7":             mut(v4udp, func(b []byte) { b[34+4], b[34+5] = 0, 7 }),
		"udp len > ip":          mut(v4udp, func(b []byte) { b[34+4], b[34+5] = 0, 9 }),
		"v6 version 4":          mut(v6, func(b []byte) { b[14] = 0x40 }),
		"v6 payload 0":          mut(v6, func(b []byte) { b[18], b[19] = 0, 0 }),
		"v6 payload > frame":    mut(v6, func(b []byte) { b[19]++ }),
		"v6 extension header":   mut(v6, func(b []byte) { b[20] = 0 }),
		"v6 fragment header":    mut(v6, func(b []byte) { b[20] = 44 }),
		"vlan tag cut":          v4[:16],
		"ethertype ipv4 no hdr": v4[:14],
	}
	for name, in := range malformed {
		t.Run(name, func(t *testing.T) {
			ret, out := runProg(t, d.objs.ZhXdp, in)
			if ret != xdpPass || !bytes.Equal(in, out) {
				t.Fatalf("verdict %d, changed %v; want XDP_PASS untouched", ret, !bytes.Equal(in, out))
			}
		})
	}
}

func TestUpsertValidation(t *testing.T) {
	d := loadTest(t, Options{})
	bad := []struct {
		name string
		k    ServiceKey
		bs   []Backend
	}{
		{"no address", ServiceKey{Port: 80, Proto: TCP}, nil},
		{"icmp", ServiceKey{vip4, 0, Proto(1)}, nil},
		{"family mismatch", ServiceKey{vip4, 80, TCP}, []Backend{local(podA6, 80)}},
		{"duplicate", ServiceKey{vip4, 80, TCP}, []Backend{local(podA4, 80), local(podA4, 80)}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if err := d.UpsertService(tc.k, tc.bs, ServiceLocal); err == nil {
				t.Fatal("want error")
			}
		})
	}
	// Ids are recycled: many upserts and deletes never run out.
	for i := range 3 * 64 {
		k := ServiceKey{vip4, uint16(1000 + i), TCP}
		mustUpsert(t, d, k, []Backend{local(podA4, uint16(i+1)), local(podB4, 1)})
		if err := d.DeleteService(k); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(d.Services()); n != 0 {
		t.Fatalf("%d services left", n)
	}
	if n := len(d.beIDs.used); n != 0 {
		t.Fatalf("%d backend ids leaked", n)
	}
}

func ExampleDatapath() {
	d, err := Load(Options{PinRoot: "/sys/fs/bpf/zerohop"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close() // pinned objects keep forwarding
	_ = d.Attach("eth0")
	_ = d.UpsertService(
		ServiceKey{Addr: netip.MustParseAddr("203.0.113.10"), Port: 80, Proto: TCP},
		[]Backend{{Addr: netip.MustParseAddr("100.64.1.2"), Port: 8080, Flags: BackendLocal}},
		ServiceLocal)
}
