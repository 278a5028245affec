package bpf

import (
	"bytes"
	"net"
	"net/netip"
	"os/exec"
	"testing"

	"github.com/cilium/ebpf"
)

// TestFlowCache follows one established IPv4 flow through the paths an
// established packet can take (zh_lb resolving the next hop, zh_fast
// filling flow_cache, the cache hit in zh_xdp itself) in a namespace
// whose FIB resolves the backends, and checks that a cached flow still
// obeys every change the loader makes: a removed backend re-chooses, a
// source range excludes, a redirect port removed passes.
func TestFlowCache(t *testing.T) {
	requireRoot(t)
	ns, ifindex := benchNetnsT(t)
	be1, be2 := netip.MustParseAddr("203.0.113.11"), netip.MustParseAddr("203.0.113.12")
	mac := map[netip.Addr]net.HardwareAddr{
		be1: {2, 0, 0, 0, 0, 0x11},
		be2: {2, 0, 0, 0, 0, 0x12},
	}
	for a, m := range mac {
		if out, err := exec.Command("ip", "-n", ns, "neigh", "add", a.String(), "lladdr", m.String(), "dev", "zh-b1", "nud", "permanent").CombinedOutput(); err != nil {
			t.Fatalf("neighbour %v: %v\n%s", a, err, out)
		}
	}
	d := loadTest(t, Options{})
	k := ServiceKey{vip4, 80, TCP}
	mustUpsert(t, d, k, []Backend{local(be1, 8080)})
	var b1 *net.Interface
	if err := inNS(ns, func() error {
		var err error
		if b1, err = net.InterfaceByName("zh-b1"); err != nil {
			return err
		}
		return d.EnableRedirect("zh-b1")
	}); err != nil {
		t.Fatal(err)
	}

	run := func(p pkt) (uint32, []byte) {
		t.Helper()
		in := p.bytes()
		ctx := struct{ data, dataEnd, dataMeta, ingressIfindex, rxQueue, egressIfindex uint32 }{dataEnd: uint32(len(in)), ingressIfindex: ifindex}
		opts := ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+512), Context: ctx}
		var ret uint32
		if err := inNS(ns, func() error {
			var err error
			ret, err = d.objs.ZhXdp.Run(&opts)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return ret, opts.DataOut
	}
	const xdpDrop, xdpPass, xdpRedirect = 1, 2, 4
	syn := pkt{src: client4, dst: vip4, sport: 41000, dport: 80, proto: TCP, tcpFlags: tcpSYN}
	data := pkt{src: client4, dst: vip4, sport: 41000, dport: 80, proto: TCP, payload: []byte("cached")}
	// redirected: rewritten to be, TTL down by one, MACs of the next hop.
	redirected := func(step string, be netip.Addr) {
		t.Helper()
		ret, out := run(data)
		p := parseFrame(out)
		if ret != xdpRedirect || !p.ok || p.dst != be || p.dport != 8080 {
			t.Fatalf("%s: ret %d, %+v: want a redirect to %v:8080", step, ret, p, be)
		}
		if ipOK, l4OK := checksumsOK(out, p); !ipOK || !l4OK {
			t.Fatalf("%s: checksums ip %v l4 %v", step, ipOK, l4OK)
		}
		if !bytes.Equal(out[0:6], mac[be]) || !bytes.Equal(out[6:12], b1.HardwareAddr) || out[14+8] != 63 {
			t.Fatalf("%s: dst %x src %x ttl %d: want %v, %v, 63", step, out[0:6], out[6:12], out[14+8], mac[be], b1.HardwareAddr)
		}
	}

	if ret, out := run(syn); ret != xdpRedirect || parseFrame(out).dst != be1 {
		t.Fatalf("syn: ret %d, dst %v", ret, parseFrame(out).dst)
	}
	// zh_lb (next hop resolved, cached in conntrack), zh_fast (fills the
	// cache), then the cache itself, several times.
	for i := range 5 {
		redirected("established "+string(rune('0'+i)), be1)
	}
	if n := cachedSlots(t, d); n != 1 {
		t.Fatalf("%d flow_cache slots in use, want 1", n)
	}
	st, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if c := st[k]; c.Packets != 6 || c.Flows != 1 {
		t.Fatalf("counters %+v: want 6 packets, 1 flow", c)
	}

	// The backend replaced: the cached flow must not reach be1 again.
	mustUpsert(t, d, k, []Backend{local(be2, 8080)})
	for i := range 3 {
		redirected("after replace "+string(rune('0'+i)), be2)
	}

	// A source range that leaves the client out cuts the cached flow off.
	if err := d.Upsert(k, ServiceConfig{Backends: []Backend{local(be2, 8080)}, Flags: ServiceLocal | ServiceSourceRanges,
		SourceRanges: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}); err != nil {
		t.Fatal(err)
	}
	if ret, _ := run(data); ret != xdpDrop {
		t.Fatalf("refused source: ret %d, want XDP_DROP", ret)
	}
	mustUpsert(t, d, k, []Backend{local(be2, 8080)})
	redirected("ranges lifted", be2)

	// Redirect disabled: rewritten, passed to the kernel with our MACs.
	if err := inNS(ns, func() error { return d.DisableRedirect("zh-b1") }); err != nil {
		t.Fatal(err)
	}
	in := data.bytes()
	ret, out := run(data)
	if p := parseFrame(out); ret != xdpPass || p.dst != be2 || !bytes.Equal(out[:12], in[:12]) || out[14+8] != 64 {
		t.Fatalf("no redirect port: ret %d, %+v, ttl %d: want XDP_PASS to %v, frame's own MACs and TTL", ret, p, out[14+8], be2)
	}
}

// cachedSlots counts the flow_cache slots any CPU holds a flow in.
func cachedSlots(t *testing.T, d *Datapath) int {
	t.Helper()
	var n int
	for i := uint32(0); i < d.objs.FlowCache.MaxEntries(); i++ {
		var per []zhFlowCacheEntry
		if err := d.objs.FlowCache.Lookup(i, &per); err != nil {
			t.Fatal(err)
		}
		for _, e := range per {
			if e.Proto != 0 {
				n++
				break
			}
		}
	}
	return n
}
