package bpf

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// FuzzXDP feeds random frames to the XDP program. Whatever comes in, the
// program must either leave the frame untouched or emit one of the frames
// it is allowed to make, each checked for its own invariants:
//
//   - a rewrite (Local mode, or after decapsulation) that differs only in
//     destination address, port and checksums, addressed to a backend,
//     with checksums that verify whenever the input's did; for a later
//     fragment only the address and the IPv4 header checksum;
//   - an encapsulation: a well-formed outer header (checksum, lengths,
//     protocol, TTL, a source in the node's range, the backend's node as
//     destination) around the input's IP packet, which is unchanged but
//     for a SYN's MSS lowered to the clamp with its checksum still valid;
//   - a decapsulation, only of IP-in-IP from a peer to this node, whose
//     result is again one of the above for the inner packet;
//   - an ICMP relay that changes only the outer destination, the embedded
//     source address and port and their checksums, towards a backend;
//   - an echo reply: addresses and MACs swapped, ICMP type and TTL set.
//
// Frames the tests' own parsers reject are never rewritten.
func FuzzXDP(f *testing.F) {
	requireRoot(f)
	d, err := Load(Options{MaglevSize: testMaglevM, MaxServices: 16, MaxBackends: 64, MaxFlows: 1024, noPin: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = d.Close() })
	backends := map[netip.AddrPort]bool{}
	for _, s := range []struct {
		k  ServiceKey
		be Backend
		fl ServiceFlags
	}{
		{ServiceKey{vip4, 80, TCP}, local(podA4, 8080), ServiceLocal},
		{ServiceKey{vip4, 53, UDP}, local(podB4, 5353), ServiceLocal},
		{ServiceKey{vip6, 80, TCP}, local(podA6, 8080), ServiceLocal},
		{ServiceKey{vip6, 53, UDP}, local(podA6, 5353), ServiceLocal},
		{ServiceKey{vip4, 8000, TCP}, remote(podB4, 8000, nodeB4), ServiceCluster},
		{ServiceKey{vip6, 8000, TCP}, remote(podB6, 8000, nodeB6), ServiceCluster},
	} {
		if err := d.UpsertService(s.k, []Backend{s.be}, s.fl); err != nil {
			f.Fatal(err)
		}
		backends[s.be.AddrPort()] = true
	}
	if err := d.UpsertService(ServiceKey{vip4, 81, TCP}, nil, ServiceLocal); err != nil {
		f.Fatal(err)
	}
	// Source ranges and ClientIP affinity.
	for _, s := range []struct {
		k   ServiceKey
		cfg ServiceConfig
	}{
		{ServiceKey{vip4, 443, TCP}, ServiceConfig{Backends: []Backend{local(podA4, 8443), local(podB4, 8443)},
			Flags: ServiceLocal | ServiceSourceRanges | ServiceAffinity, SourceRanges: prefixes("198.51.100.0/25")}},
		{ServiceKey{vip6, 443, UDP}, ServiceConfig{Backends: []Backend{local(podA6, 8443)},
			Flags: ServiceLocal | ServiceSourceRanges, SourceRanges: prefixes("2001:db8:c::/48")}},
	} {
		if err := d.Upsert(s.k, s.cfg); err != nil {
			f.Fatal(err)
		}
		for _, b := range s.cfg.Backends {
			backends[b.AddrPort()] = true
		}
	}
	if err := d.SetNode(NodeConfig{Addr4: nodeA4, Addr6: nodeA6, Source4: srcRange4, Source6: srcRange6, PathMTU: 1400}); err != nil {
		f.Fatal(err)
	}
	if err := d.SetPeers([]netip.Prefix{srcRange4, srcRange6}); err != nil {
		f.Fatal(err)
	}
	peer4, peer6 := netip.MustParseAddr("198.51.100.70"), netip.MustParseAddr("2001:db8:ff:1::7")
	for _, p := range []pkt{
		{src: client4, dst: vip4, sport: 1, dport: 80, proto: TCP, tcpFlags: tcpSYN},
		{src: client4, dst: vip4, sport: 1, dport: 81, proto: TCP, tcpFlags: tcpSYN},
		{src: client4, dst: vip4, sport: 6, dport: 443, proto: TCP, tcpFlags: tcpSYN},
		{src: netip.MustParseAddr("198.51.100.200"), dst: vip4, sport: 6, dport: 443, proto: TCP, tcpFlags: tcpSYN},
		{src: client6, dst: vip6, sport: 6, dport: 443, proto: UDP, payload: []byte("q")},
		{src: netip.MustParseAddr("2001:db8:e::1"), dst: vip6, sport: 6, dport: 443, proto: UDP},
		{src: client4, dst: vip4, sport: 2, dport: 53, proto: UDP, payload: []byte("abc")},
		{src: client4, dst: vip4, sport: 2, dport: 53, proto: UDP, udpNoCsum: true},
		{src: client6, dst: vip6, sport: 3, dport: 80, proto: TCP, payload: []byte("x")},
		{src: client6, dst: vip6, sport: 3, dport: 53, proto: UDP},
		{vlan: 9, src: client4, dst: vip4, sport: 4, dport: 80, proto: TCP, ipOptions: []byte{1, 1, 1, 1}},
		{src: client4, dst: vip4, sport: 5, dport: 8000, proto: TCP, tcpFlags: tcpSYN, tcpOptions: mssOpt(1460)},
		{src: client6, dst: vip6, sport: 5, dport: 8000, proto: TCP, tcpFlags: tcpSYN, tcpOptions: mssOddOpt(1460)},
	} {
		f.Add(p.bytes())
	}
	syn4 := pkt{src: client4, dst: vip4, sport: 6, dport: 80, proto: TCP, tcpFlags: tcpSYN}
	syn6 := pkt{src: client6, dst: vip6, sport: 6, dport: 80, proto: TCP, tcpFlags: tcpSYN}
	f.Add(outerFrame(peer4, nodeA4, l3Of(syn4)))
	f.Add(outerFrame(peer6, nodeA6, l3Of(syn6)))
	udp := pkt{src: client4, dst: vip4, sport: 7, dport: 53, proto: UDP, payload: make([]byte, 100)}
	for _, fr := range fragment4(l3Of(udp), 77, 48) {
		f.Add(frame(0x0800, fr))
	}
	udp6 := pkt{src: client6, dst: vip6, sport: 7, dport: 53, proto: UDP, payload: make([]byte, 100)}
	for _, fr := range fragment6(l3Of(udp6), 77, 48) {
		f.Add(frame(0x86dd, fr))
	}
	for _, ext := range [][]ext6{
		{hopByHop(8)},
		{dstOpts(16), srh(0, vip6, client6)},
		{hopByHop(8), dstOpts(8), srh(0, vip6), dstOpts(8)},
		{srh(1, podA6, vip6)},
		{hopByHop(8), frag6Hdr(0, true, 9)},
	} {
		f.Add(pkt{src: client6, dst: vip6, sport: 8, dport: 80, proto: TCP, tcpFlags: tcpSYN, ext: ext}.bytes())
		f.Add(pkt{src: client6, dst: vip6, sport: 8, dport: 53, proto: UDP, payload: []byte("e"), ext: ext}.bytes())
	}
	f.Add(pkt{src: client6, dst: vip6, sport: 8, dport: 8000, proto: TCP, tcpFlags: tcpSYN, tcpOptions: mssOpt(1460),
		ext: []ext6{dstOpts(8)}}.bytes())
	f.Add(icmpFrame(router4, vip4, quote(pkt{src: vip4, dst: client4, sport: 80, dport: 1, proto: TCP})))
	f.Add(icmpFrame(router6, vip6, quote(pkt{src: vip6, dst: client6, sport: 80, dport: 1, proto: TCP})))
	f.Add(echoFrame(client4, vip4, 8, 64, false))
	f.Add(echoFrame(client6, vip6, 128, 64, false))

	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 14 || len(in) > 1500 {
			return // the kernel refuses runts; MTU-sized is enough
		}
		ret, out := runProg(t, d.objs.ZhXdp, in)
		if ret != xdpPass && ret != xdpDrop && ret != xdpTX {
			t.Fatalf("verdict %d", ret)
		}
		if bytes.Equal(in, out) {
			return
		}
		fz := fuzzCheck{t: t, backends: backends}
		if ret == xdpDrop {
			// Only a decapsulated frame whose flow belongs to another
			// node is dropped after a change: the decapsulation itself.
			off, et := l3At(in)
			if !fz.isDecap(in, off, et) {
				t.Fatal("dropped frame was modified")
			}
			hl := len(in) - len(out)
			if hl < 20 || !bytes.Equal(out, append(append([]byte{}, in[:off]...), in[off+hl:]...)) {
				t.Fatalf("dropped decapsulated frame is not the inner packet\n in %x\nout %x", in, out)
			}
			return
		}
		fz.output(ret, in, out, true)
	})
}

type fuzzCheck struct {
	t        *testing.T
	backends map[netip.AddrPort]bool
}

func (f fuzzCheck) fail(format string, in, out []byte, args ...any) {
	f.t.Helper()
	f.t.Fatalf(format+"\n in %x\nout %x", append(args, in, out)...)
}

// l3At returns the L3 offset and ethertype of a frame (one tag at most).
func l3At(b []byte) (int, uint16) {
	et := binary.BigEndian.Uint16(b[12:])
	if (et == 0x8100 || et == 0x88a8) && len(b) >= 18 {
		return 18, binary.BigEndian.Uint16(b[16:])
	}
	return 14, et
}

func (f fuzzCheck) output(ret uint32, in, out []byte, outer bool) {
	f.t.Helper()
	if bytes.Equal(in, out) {
		return
	}
	off, et := l3At(in)
	switch d := len(out) - len(in); {
	case outer && (d == 20 && et == 0x0800 || d == 40 && et == 0x86dd):
		f.encap(ret, in, out, off, et)
	case outer && d < 0 && f.isDecap(in, off, et):
		f.decap(ret, in, out, off, et)
	case d == 0:
		f.rewrite(ret, in, out, off, et)
	default:
		f.fail("output of unexpected length (%d -> %d)", in, out, len(in), len(out))
	}
}

func (f fuzzCheck) encap(ret uint32, in, out []byte, off int, et uint16) {
	f.t.Helper()
	// A VLAN-tagged frame is encapsulated inside its tag and passed to
	// the VLAN device (docs/datapath.md), never sent from XDP.
	if off != 14 && ret != xdpPass {
		f.fail("VLAN frame encapsulated and not passed", in, out)
	}
	if ret != xdpTX && !bytes.Equal(in[:off], out[:off]) {
		f.fail("L2 header changed on a passed frame", in, out)
	}
	var inner, outerHdr []byte
	if et == 0x0800 {
		outerHdr, inner = out[off:off+20], out[off+20:]
		tot := int(binary.BigEndian.Uint16(outerHdr[2:]))
		innerTot := int(binary.BigEndian.Uint16(in[off+2:]))
		if outerHdr[0] != 0x45 || fold(sum16(outerHdr)) != 0xffff || tot != innerTot+20 || outerHdr[8] != 64 || outerHdr[9] != 4 ||
			netip.AddrFrom4([4]byte(outerHdr[16:20])) != nodeB4 || !srcRange4.Contains(netip.AddrFrom4([4]byte(outerHdr[12:16]))) {
			f.fail("malformed outer IPv4 header", in, out)
		}
	} else {
		outerHdr, inner = out[off:off+40], out[off+40:]
		if outerHdr[0]>>4 != 6 || int(binary.BigEndian.Uint16(outerHdr[4:])) != 40+int(binary.BigEndian.Uint16(in[off+4:])) ||
			outerHdr[6] != 41 || outerHdr[7] != 64 ||
			netip.AddrFrom16([16]byte(outerHdr[24:40])) != nodeB6 || !srcRange6.Contains(netip.AddrFrom16([16]byte(outerHdr[8:24]))) {
			f.fail("malformed outer IPv6 header", in, out)
		}
	}
	orig := in[off:]
	if bytes.Equal(orig, inner) {
		return
	}
	// Only a SYN's MSS (lowered) and its TCP checksum may differ.
	p := parseFrame(in)
	if !p.ok || p.proto != TCP || in[p.l4+13]&tcpSYN == 0 {
		f.fail("inner packet changed", in, out)
	}
	changed := 0
	for i := range orig {
		if orig[i] != inner[i] {
			rel := i + off - p.l4
			if rel != 16 && rel != 17 && (rel < 22 || rel >= 60) {
				f.fail("inner byte %d changed", in, out, i)
			}
			changed++
		}
	}
	o := append(append([]byte{}, in[:off]...), inner...)
	q := parseFrame(o)
	if _, l4ok := checksumsOK(o, q); !l4ok {
		if _, was := checksumsOK(in, p); was {
			f.fail("MSS clamp broke the TCP checksum", in, out)
		}
	}
}

// isDecap: IP-in-IP from a peer to this node, which may be taken apart.
func (f fuzzCheck) isDecap(in []byte, off int, et uint16) bool {
	if et == 0x0800 && len(in) >= off+20 && in[off+9] == 4 {
		src, dst := netip.AddrFrom4([4]byte(in[off+12:off+16])), netip.AddrFrom4([4]byte(in[off+16:off+20]))
		return dst == nodeA4 && srcRange4.Contains(src)
	}
	if et == 0x86dd && len(in) >= off+40 && in[off+6] == 41 {
		src, dst := netip.AddrFrom16([16]byte(in[off+8:off+24])), netip.AddrFrom16([16]byte(in[off+24:off+40]))
		return dst == nodeA6 && srcRange6.Contains(src)
	}
	return false
}

func (f fuzzCheck) decap(ret uint32, in, out []byte, off int, et uint16) {
	f.t.Helper()
	var hl int
	if et == 0x0800 {
		hl = int(in[off]&0xf) * 4
		src, dst := netip.AddrFrom4([4]byte(in[off+12:off+16])), netip.AddrFrom4([4]byte(in[off+16:off+20]))
		if dst != nodeA4 || !srcRange4.Contains(src) {
			f.fail("decapsulated from %s to %s: not a peer to this node", in, out, src, dst)
		}
	} else {
		hl = 40
		src, dst := netip.AddrFrom16([16]byte(in[off+8:off+24])), netip.AddrFrom16([16]byte(in[off+24:off+40]))
		if dst != nodeA6 || !srcRange6.Contains(src) {
			f.fail("decapsulated from %s to %s: not a peer to this node", in, out, src, dst)
		}
	}
	if len(out) != len(in)-hl {
		f.fail("decapsulation removed %d bytes, outer header is %d", in, out, len(in)-len(out), hl)
	}
	inner := append(append([]byte{}, in[:off]...), in[off+hl:]...)
	f.output(ret, inner, out, false)
}

// rewrite: same length, changed. Which bytes may change depends on what
// the input is.
func (f fuzzCheck) rewrite(ret uint32, in, out []byte, off int, et uint16) {
	f.t.Helper()
	allowed := map[int]bool{}
	mark := func(at, n int) {
		for i := at; i < at+n; i++ {
			allowed[i] = true
		}
	}
	check := func() {
		for i := range in {
			if in[i] != out[i] && !allowed[i] {
				f.fail("byte %d changed", in, out, i)
			}
		}
	}
	v4 := et == 0x0800
	if len(in) < off+20 || !v4 && len(in) < off+40 {
		f.fail("short frame rewritten", in, out)
	}
	proto, l4 := in[off+6], off+40
	if v4 {
		proto, l4 = in[off+9], off+int(in[off]&0xf)*4
	}
	c := chain6{frag: -1}
	if !v4 {
		c = walk6(in[off:])
	}
	if c.ok { // past extension headers, a fragment header
		proto, l4 = byte(c.upper), off+c.l4
	}
	addrAt, alen := off+24, 16
	if v4 {
		addrAt, alen = off+16, 4
	}
	dstOut := netip.AddrFrom16([16]byte(padTo16(out[addrAt : addrAt+alen])))
	if v4 {
		dstOut = netip.AddrFrom4([4]byte(out[addrAt : addrAt+4]))
	}
	isBackendAddr := func(a netip.Addr) bool {
		for ap := range f.backends {
			if ap.Addr() == a {
				return true
			}
		}
		return false
	}
	later := v4 && binary.BigEndian.Uint16(in[off+6:])&0x1fff != 0 ||
		c.ok && c.frag >= 0 && binary.BigEndian.Uint16(in[off+c.frag+2:])&0xfff8 != 0
	switch {
	case (proto == 1 || proto == 58) && len(in) > l4 && (in[l4] == 8 || in[l4] == 128):
		// Echo reply.
		if ret != xdpTX {
			f.fail("echo answered without XDP_TX", in, out)
		}
		mark(0, 12)
		if v4 {
			mark(off+8, 1)
			mark(off+10, 10)
		} else {
			mark(off+7, 33)
		}
		mark(l4, 4)
		check()
		if !bytes.Equal(out[0:6], in[6:12]) || !bytes.Equal(out[6:12], in[0:6]) {
			f.fail("echo reply MACs not swapped", in, out)
		}
	case proto == 1 || proto == 58:
		// ICMP error relayed to the backend: outer destination, ICMP
		// checksum, embedded source, its header checksum and port.
		emb := l4 + 8
		mark(addrAt, alen)
		mark(l4+2, 2)
		if v4 {
			mark(off+10, 2)
			mark(emb+10, 2)
			mark(emb+12, 4)
			mark(emb+int(in[emb]&0xf)*4, 2)
		} else {
			mark(emb+8, 16)
			mark(emb+40, 2)
		}
		check()
		if !isBackendAddr(dstOut) {
			f.fail("ICMP error relayed to %s, not a backend", in, out, dstOut)
		}
	case later:
		mark(addrAt, alen)
		if v4 {
			mark(off+10, 2)
		}
		check()
		if !isBackendAddr(dstOut) {
			f.fail("fragment sent to %s, not a backend", in, out, dstOut)
		}
		if v4 && fold(sum16(out[off:off+int(in[off]&0xf)*4])) != 0xffff && fold(sum16(in[off:off+int(in[off]&0xf)*4])) == 0xffff {
			f.fail("fragment's header checksum broken", in, out)
		}
	default:
		mark(addrAt, alen)
		if v4 {
			mark(off+10, 2)
		}
		mark(l4+2, 2)
		if proto == 6 {
			mark(l4+16, 2)
		} else {
			mark(l4+6, 2)
		}
		check()
		if len(out) < l4+4 {
			f.fail("short frame rewritten", in, out)
		}
		dport := binary.BigEndian.Uint16(out[l4+2:])
		if !f.backends[netip.AddrPortFrom(dstOut, dport)] {
			f.fail("rewritten to %s:%d, not a backend", in, out, dstOut, dport)
		}
		// Whole, unfragmented packets: checksums must stay valid.
		pi, po := parseFrame(in), parseFrame(out)
		if !pi.ok {
			if v4 && binary.BigEndian.Uint16(in[off+6:])&0x2000 != 0 || !v4 && c.fragmented(in[off:]) {
				return // a first fragment: its L4 checksum covers data not here
			}
			f.fail("malformed frame rewritten", in, out)
		}
		if !po.ok {
			f.fail("rewrite produced a malformed frame", in, out)
		}
		inIP, inL4 := checksumsOK(in, pi)
		outIP, outL4 := checksumsOK(out, po)
		if inIP && !outIP || inL4 && !outL4 {
			f.fail("checksums broken by rewrite (ip %v->%v, l4 %v->%v)", in, out, inIP, outIP, inL4, outL4)
		}
		if pi.proto == UDP && pi.src.Is4() && binary.BigEndian.Uint16(in[pi.l4+6:]) == 0 &&
			binary.BigEndian.Uint16(out[po.l4+6:]) != 0 {
			f.fail("UDP zero checksum was filled in", in, out)
		}
	}
}

func padTo16(b []byte) []byte {
	var a [16]byte
	copy(a[:], b)
	return a[:]
}
