package bpf

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// extChains are the IPv6 extension header chains the datapath steps over,
// each kind alone and the longest it takes.
var extChains = []struct {
	name string
	ext  []ext6
}{
	{"hop-by-hop", []ext6{hopByHop(8)}},
	{"destination options", []ext6{dstOpts(16)}},
	{"routing, no segments left", []ext6{srh(0, vip6, client6)}},
	{"four headers", []ext6{hopByHop(8), dstOpts(8), srh(0, vip6), dstOpts(24)}},
	{"hop-by-hop, atomic fragment", []ext6{hopByHop(16), frag6Hdr(0, false, 0x5151)}},
}

// TestIPv6ExtensionHeaders: a VIP packet with extension headers is
// balanced like one without: destination address and port rewritten, the
// TCP/UDP checksum updated (its pseudo-header holds the destination of
// the fixed header, the final one), the headers forwarded as they came,
// byte for byte. The flow's next packet finds it, and the Pod's reply,
// with or without extension headers of its own, leaves as the VIP's.
func TestIPv6ExtensionHeaders(t *testing.T) {
	d := loadTest(t, Options{})
	svcs := []struct {
		k  ServiceKey
		be Backend
	}{
		{ServiceKey{vip6, 443, TCP}, local(podA6, 8443)},
		{ServiceKey{vip6, 53, UDP}, local(podA6, 5353)},
	}
	for _, s := range svcs {
		mustUpsert(t, d, s.k, []Backend{s.be})
	}
	for i, c := range extChains {
		for _, s := range svcs {
			t.Run(c.name+" "+s.k.Proto.String(), func(t *testing.T) {
				sport := uint16(41000 + i)
				in := pkt{src: client6, dst: vip6, sport: sport, dport: s.k.Port, proto: s.k.Proto, tcpFlags: tcpSYN,
					payload: []byte("hello"), ext: c.ext}
				next := in
				next.tcpFlags, next.payload = tcpACK|tcpPSH, []byte("next packet of the flow")
				for _, p := range []pkt{in, next} {
					want := p
					want.dst, want.dport = s.be.Addr, s.be.Port
					ret, out := runProg(t, d.objs.ZhXdp, p.bytes())
					if ret != xdpPass || !bytes.Equal(out, want.bytes()) {
						t.Fatalf("verdict %d\n got %x\nwant %x", ret, out, want.bytes())
					}
					q := parseFrame(out)
					if ipOK, l4OK := checksumsOK(out, q); !q.ok || !ipOK || !l4OK {
						t.Fatalf("output: parsed %v, checksums ip %v l4 %v", q.ok, ipOK, l4OK)
					}
				}
				for _, ext := range [][]ext6{nil, {dstOpts(8)}} {
					reply := pkt{src: s.be.Addr, dst: client6, sport: s.be.Port, dport: sport, proto: s.k.Proto,
						tcpFlags: tcpSYN | tcpACK, payload: []byte("reply"), ext: ext}
					want := reply
					want.src, want.sport = vip6, s.k.Port
					if ret, out := runProg(t, d.objs.ZhTcEgress, reply.bytes()); ret != tcxNext || !bytes.Equal(out, want.bytes()) {
						t.Fatalf("reply with %d extension headers: verdict %d\n got %x\nwant %x", len(ext), int32(ret), out, want.bytes())
					}
				}
			})
		}
	}
	st, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range svcs {
		c := st[s.k]
		n := uint64(len(extChains))
		if c.Flows != n || c.Packets != 2*n || c.CTMiss != 0 || c.Backends[s.be.AddrPort()].Packets != 2*n {
			t.Errorf("%v: counters %+v, want %d flows, %d packets, all on the backend", s.k, c.Counters, n, 2*n)
		}
	}
}

// TestIPv6ExtensionHeadersPassed: what the datapath does not step over
// passes untouched, in both directions (docs/datapath.md): a routing
// header with segments left (the checksum covers a destination that is
// not in the header yet), hop-by-hop options after another header, more
// than four headers, a header past the payload or the frame, what follows
// a fragment header if not TCP/UDP, ICMPv6 after extension headers, and
// IP-in-IP whose outer header has them.
func TestIPv6ExtensionHeadersPassed(t *testing.T) {
	d := loadTest(t, Options{})
	mustUpsert(t, d, ServiceKey{vip6, 443, TCP}, []Backend{local(podA6, 8443)})
	if err := d.SetNode(NodeConfig{Addr6: nodeA6}); err != nil {
		t.Fatal(err)
	}
	if err := d.SetPeers([]netip.Prefix{srcRange6}); err != nil {
		t.Fatal(err)
	}
	syn := func(ext ...ext6) pkt {
		return pkt{src: client6, dst: vip6, sport: 42000, dport: 443, proto: TCP, tcpFlags: tcpSYN, ext: ext}
	}
	tooLong := syn(dstOpts(8)).bytes()
	tooLong[14+41] = 20 // the header's length runs past the payload
	cut := syn(hopByHop(16)).bytes()[:14+40+12]
	echo := withExt(echoFrame(client6, vip6, 128, 64, false)[14:], dstOpts(8))
	inner := l3Of(syn())
	outer := withExt(append(ip6hdr(netip.MustParseAddr("2001:db8:ff:1::9"), nodeA6, 41, 64, len(inner)), inner...), dstOpts(8))
	cases := map[string][]byte{
		"routing, segments left":           syn(srh(1, podA6, vip6)).bytes(),
		"hop-by-hop second":                syn(dstOpts(8), hopByHop(8)).bytes(),
		"five headers":                     syn(hopByHop(8), dstOpts(8), dstOpts(8), dstOpts(8), dstOpts(8)).bytes(),
		"header past the payload":          tooLong,
		"header cut by the frame":          cut,
		"options after a fragment header":  syn(frag6Hdr(0, true, 3), dstOpts(8)).bytes(),
		"echo request after options":       frame(0x86dd, echo),
		"IP-in-IP after options from peer": frame(0x86dd, outer),
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			if ret, out := runProg(t, d.objs.ZhXdp, in); ret != xdpPass || !bytes.Equal(out, in) {
				t.Fatalf("verdict %d, changed %v; want XDP_PASS untouched", ret, !bytes.Equal(out, in))
			}
		})
	}
	if e := events(t, d); e.EchoReply != 0 || e.Decap != 0 {
		t.Errorf("events %+v: nothing answered or decapsulated", e)
	}
	// The flow exists; its reply with segments left is still not ours.
	backendOf(t, d, syn())
	reply := pkt{src: podA6, dst: client6, sport: 8443, dport: 42000, proto: TCP, tcpFlags: tcpSYN | tcpACK,
		ext: []ext6{srh(1, netip.MustParseAddr("2001:db8:c::1"), client6)}}
	in := reply.bytes()
	if _, out := runProg(t, d.objs.ZhTcEgress, in); !bytes.Equal(out, in) {
		t.Fatal("reply with a routing header with segments left was rewritten")
	}
	reply.ext = nil
	if _, out := runProg(t, d.objs.ZhTcEgress, reply.bytes()); bytes.Equal(out, reply.bytes()) {
		t.Fatal("the same reply without it was not rewritten")
	}
}

// TestIPv6ExtensionHeaderFragments: fragments whose fragment header comes
// after a hop-by-hop header follow their first fragment to its backend,
// exactly as the fragments of the rewritten datagram.
func TestIPv6ExtensionHeaderFragments(t *testing.T) {
	d := loadTest(t, Options{})
	mustUpsert(t, d, ServiceKey{vip6, 53, UDP}, []Backend{local(podA6, 5353)})
	payload := make([]byte, 150)
	for i := range payload {
		payload[i] = byte(i)
	}
	in := fragment6(l3Of(pkt{src: client6, dst: vip6, sport: 4000, dport: 53, proto: UDP, payload: payload}), 0x6161, 64)
	want := fragment6(l3Of(pkt{src: client6, dst: podA6, sport: 4000, dport: 5353, proto: UDP, payload: payload}), 0x6161, 64)
	if len(in) != 3 {
		t.Fatalf("%d fragments, want first, middle, last", len(in))
	}
	for i := range in {
		f, w := frame(0x86dd, withExt(in[i], hopByHop(8))), frame(0x86dd, withExt(want[i], hopByHop(8)))
		if ret, out := runProg(t, d.objs.ZhXdp, f); ret != xdpPass || !bytes.Equal(out, w) {
			t.Fatalf("fragment %d: verdict %d\n got %x\nwant %x", i, ret, out, w)
		}
	}
	if e := events(t, d); e.FragFirst != 1 || e.FragHit != 2 || e.FragMiss != 0 {
		t.Fatalf("events %+v: want 1 first fragment, 2 followers", e)
	}
}

// TestIPv6ExtensionHeadersCluster: a remote backend's packet with
// extension headers is encapsulated as it came but for the SYN's MSS
// (found after the headers); a peer's encapsulated packet whose inner
// header has them is taken apart and rewritten like any.
func TestIPv6ExtensionHeadersCluster(t *testing.T) {
	d := loadTest(t, Options{})
	ns := newRunNS(t)
	if err := d.SetNode(NodeConfig{Addr6: nodeA6, Source6: srcRange6, PathMTU: 1400}); err != nil {
		t.Fatal(err)
	}
	if err := d.SetPeers([]netip.Prefix{srcRange6}); err != nil {
		t.Fatal(err)
	}
	upsertCluster(t, d, ServiceKey{vip6, 80, TCP}, remote(podB6, 8080, nodeB6))
	upsertCluster(t, d, ServiceKey{vip6, 81, TCP}, local(podA6, 8081))
	ext := []ext6{hopByHop(8), dstOpts(16)}

	in := pkt{src: client6, dst: vip6, sport: 5000, dport: 80, proto: TCP, tcpFlags: tcpSYN, tcpOptions: mssOpt(1440), ext: ext}
	clamped := in
	clamped.tcpOptions = mssOpt(1300)
	ret, out := ns.run(t, d.objs.ZhXdp, in.bytes())
	if ret != xdpTX {
		t.Fatalf("verdict %d, want XDP_TX", ret)
	}
	inner := clamped.bytes()[14:]
	checkEncap(t, ns, out, nodeB6, inner, srcRange6)
	o := frame(0x86dd, out[len(out)-len(inner):])
	if p := parseFrame(o); !p.ok {
		t.Fatal("inner packet does not parse")
	} else if _, l4OK := checksumsOK(o, p); !l4OK {
		t.Fatal("inner TCP checksum wrong after the MSS clamp")
	}

	syn := pkt{src: client6, dst: vip6, sport: 5001, dport: 81, proto: TCP, tcpFlags: tcpSYN, ext: ext}
	want := syn
	want.dst, want.dport = podA6, 8081
	f := outerFrame(netip.MustParseAddr("2001:db8:ff:1::9"), nodeA6, syn.bytes()[14:])
	if ret, out := ns.run(t, d.objs.ZhXdp, f); ret != xdpPass || !bytes.Equal(out, want.bytes()) {
		t.Fatalf("decapsulated: verdict %d\n got %x\nwant %x", ret, out, want.bytes())
	}
	if e := events(t, d); e.Encap != 1 || e.MSSClamped != 1 || e.Decap != 1 {
		t.Fatalf("events %+v: want 1 encapsulated (clamped), 1 decapsulated", e)
	}
}

// TestWalk6: the tests' own reading of extension headers agrees with the
// definition (it is what parseFrame and FuzzXDP judge the program by).
func TestWalk6(t *testing.T) {
	l3 := func(ext ...ext6) []byte {
		return l3Of(pkt{src: client6, dst: vip6, sport: 1, dport: 2, proto: UDP, ext: ext})
	}
	for _, tc := range []struct {
		name  string
		in    []byte
		ok    bool
		l4    int
		frag  int
		split bool
	}{
		{"none", l3(), true, 40, -1, false},
		{"hop-by-hop", l3(hopByHop(8)), true, 48, -1, false},
		{"four", l3(hopByHop(8), dstOpts(16), srh(0, vip6), dstOpts(8)), true, 40 + 8 + 16 + 24 + 8, -1, false},
		{"five", l3(dstOpts(8), dstOpts(8), dstOpts(8), dstOpts(8), dstOpts(8)), false, 0, 0, false},
		{"segments left", l3(srh(2, vip6, client6)), false, 0, 0, false},
		{"hop-by-hop second", l3(dstOpts(8), hopByHop(8)), false, 0, 0, false},
		{"first fragment", l3(hopByHop(8), frag6Hdr(0, true, 1)), true, 56, 48, true},
		{"later fragment", l3(frag6Hdr(64, false, 1)), true, 48, 40, true},
		{"atomic fragment", l3(frag6Hdr(0, false, 1)), true, 48, 40, false},
	} {
		c := walk6(tc.in)
		if c.ok != tc.ok || tc.ok && (c.l4 != tc.l4 || c.frag != tc.frag || c.fragmented(tc.in) != tc.split || c.upper != UDP) {
			t.Errorf("%s: %+v (fragmented %v), want ok %v l4 %d frag %d fragmented %v", tc.name, c, c.fragmented(tc.in), tc.ok, tc.l4, tc.frag, tc.split)
		}
	}
	if got := binary.BigEndian.Uint16(l3(dstOpts(16))[4:]); got != 8+16 {
		t.Errorf("payload length %d with a 16-byte header and 8 bytes of UDP", got)
	}
}
