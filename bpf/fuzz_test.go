package bpf

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// FuzzXDP feeds random frames to the XDP program. Whatever comes in, the
// program must either leave the frame untouched or emit a well-formed frame
// that differs only in destination address, destination port and checksums,
// addressed to a backend, with checksums that verify whenever the input's
// did. Frames the tests' own parser rejects must never be rewritten.
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
	}{
		{ServiceKey{vip4, 80, TCP}, local(podA4, 8080)},
		{ServiceKey{vip4, 53, UDP}, local(podB4, 5353)},
		{ServiceKey{vip6, 80, TCP}, local(podA6, 8080)},
		{ServiceKey{vip6, 53, UDP}, local(podA6, 5353)},
	} {
		if err := d.UpsertService(s.k, []Backend{s.be}, ServiceLocal); err != nil {
			f.Fatal(err)
		}
		backends[s.be.AddrPort()] = true
	}
	if err := d.UpsertService(ServiceKey{vip4, 81, TCP}, nil, ServiceLocal); err != nil {
		f.Fatal(err)
	}
	for _, p := range []pkt{
		{src: client4, dst: vip4, sport: 1, dport: 80, proto: TCP, tcpFlags: tcpSYN},
		{src: client4, dst: vip4, sport: 1, dport: 81, proto: TCP, tcpFlags: tcpSYN},
		{src: client4, dst: vip4, sport: 2, dport: 53, proto: UDP, payload: []byte("abc")},
		{src: client4, dst: vip4, sport: 2, dport: 53, proto: UDP, udpNoCsum: true},
		{src: client6, dst: vip6, sport: 3, dport: 80, proto: TCP, payload: []byte("x")},
		{src: client6, dst: vip6, sport: 3, dport: 53, proto: UDP},
		{vlan: 9, src: client4, dst: vip4, sport: 4, dport: 80, proto: TCP, ipOptions: []byte{1, 1, 1, 1}},
	} {
		f.Add(p.bytes())
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 14 || len(in) > 1500 {
			return // the kernel refuses runts; MTU-sized is enough
		}
		ret, out := runProg(t, d.objs.ZhXdp, in)
		if ret != xdpPass && ret != xdpDrop {
			t.Fatalf("verdict %d", ret)
		}
		if bytes.Equal(in, out) {
			return
		}
		if ret != xdpPass {
			t.Fatal("dropped frame was modified")
		}
		pi, po := parseFrame(in), parseFrame(out)
		if !pi.ok {
			t.Fatalf("malformed frame rewritten\n in %x\nout %x", in, out)
		}
		if !po.ok || len(out) != len(in) {
			t.Fatalf("rewrite produced a malformed frame\n in %x\nout %x", in, out)
		}
		if !backends[netip.AddrPortFrom(po.dst, po.dport)] {
			t.Fatalf("rewritten to %s:%d, not a backend", po.dst, po.dport)
		}
		// Only destination address, destination port and checksums move.
		allowed := map[int]bool{}
		mark := func(off, n int) {
			for i := off; i < off+n; i++ {
				allowed[i] = true
			}
		}
		if pi.src.Is4() {
			mark(pi.l3+16, 4)
			mark(pi.l3+10, 2)
		} else {
			mark(pi.l3+24, 16)
		}
		mark(pi.l4+2, 2)
		if pi.proto == TCP {
			mark(pi.l4+16, 2)
		} else {
			mark(pi.l4+6, 2)
		}
		for i := range in {
			if in[i] != out[i] && !allowed[i] {
				t.Fatalf("byte %d changed\n in %x\nout %x", i, in, out)
			}
		}
		inIP, inL4 := checksumsOK(in, pi)
		outIP, outL4 := checksumsOK(out, po)
		if inIP && !outIP || inL4 && !outL4 {
			t.Fatalf("checksums broken by rewrite (ip %v->%v, l4 %v->%v)", inIP, outIP, inL4, outL4)
		}
		if pi.proto == UDP && pi.src.Is4() && binary.BigEndian.Uint16(in[pi.l4+6:]) == 0 &&
			binary.BigEndian.Uint16(out[po.l4+6:]) != 0 {
			t.Fatal("UDP zero checksum was filled in")
		}
	})
}
