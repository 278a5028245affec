package bpf

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// fragment4 splits an IPv4 packet's payload into chunk-byte pieces (the
// last may be shorter), each with a copy of the header: DF cleared, the
// given id, offset and MF set, header checksum recomputed.
func fragment4(l3 []byte, id uint16, chunk int) [][]byte {
	hl := int(l3[0]&0xf) * 4
	body := l3[hl:]
	var out [][]byte
	for off := 0; off < len(body); off += chunk {
		end := min(off+chunk, len(body))
		h := bytes.Clone(l3[:hl])
		binary.BigEndian.PutUint16(h[2:], uint16(hl+end-off))
		binary.BigEndian.PutUint16(h[4:], id)
		fo := uint16(off / 8)
		if end < len(body) {
			fo |= 0x2000
		}
		binary.BigEndian.PutUint16(h[6:], fo)
		binary.BigEndian.PutUint16(h[10:], 0)
		binary.BigEndian.PutUint16(h[10:], checksum(h))
		out = append(out, append(h, body[off:end]...))
	}
	return out
}

// fragment6 does the same for IPv6 with a fragment header.
func fragment6(l3 []byte, id uint32, chunk int) [][]byte {
	body := l3[40:]
	nh := l3[6]
	var out [][]byte
	for off := 0; off < len(body); off += chunk {
		end := min(off+chunk, len(body))
		h := bytes.Clone(l3[:40])
		h[6] = 44
		binary.BigEndian.PutUint16(h[4:], uint16(8+end-off))
		fh := make([]byte, 8)
		fh[0] = nh
		fo := uint16(off)
		if end < len(body) {
			fo |= 1
		}
		binary.BigEndian.PutUint16(fh[2:], fo)
		binary.BigEndian.PutUint32(fh[4:], id)
		out = append(out, append(append(h, fh...), body[off:end]...))
	}
	return out
}

func l3Of(p pkt) []byte { return p.bytes()[14:] }

func etherOf(a netip.Addr) uint16 {
	if a.Is4() {
		return 0x0800
	}
	return 0x86dd
}

// TestFragments: the first fragment of a VIP datagram is balanced and
// records its ports; the middle and last follow it to the same backend
// (destination rewritten, the L4 checksum only in the first); a later
// fragment with no first passes untouched and is counted. A remote
// backend's fragments are encapsulated as they are.
func TestFragments(t *testing.T) {
	d := loadTest(t, Options{})
	ns := newRunNS(t)
	if err := d.SetNode(NodeConfig{Addr4: nodeA4, Addr6: nodeA6}); err != nil {
		t.Fatal(err)
	}
	mustUpsert(t, d, ServiceKey{vip4, 53, UDP}, []Backend{local(podA4, 5353)})
	mustUpsert(t, d, ServiceKey{vip6, 53, UDP}, []Backend{local(podA6, 5353)})
	upsertCluster(t, d, ServiceKey{vip4, 54, UDP}, remote(podB4, 5354, nodeB4))
	payload := make([]byte, 150)
	for i := range payload {
		payload[i] = byte(i)
	}
	frags := func(p pkt, id uint32) [][]byte {
		if p.src.Is4() {
			return fragment4(l3Of(p), uint16(id), 64)
		}
		return fragment6(l3Of(p), id, 64)
	}
	for _, tc := range []struct {
		name    string
		in, out pkt
	}{
		{"v4", pkt{src: client4, dst: vip4, sport: 4000, dport: 53, proto: UDP, payload: payload},
			pkt{src: client4, dst: podA4, sport: 4000, dport: 5353, proto: UDP, payload: payload}},
		{"v6", pkt{src: client6, dst: vip6, sport: 4000, dport: 53, proto: UDP, payload: payload},
			pkt{src: client6, dst: podA6, sport: 4000, dport: 5353, proto: UDP, payload: payload}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			et := etherOf(tc.in.src)
			// Datagram 1: in order.
			in, want := frags(tc.in, 0x1111), frags(tc.out, 0x1111)
			if len(in) != 3 {
				t.Fatalf("%d fragments, want first, middle, last", len(in))
			}
			for i := range in {
				ret, out := runProg(t, d.objs.ZhXdp, frame(et, in[i]))
				if ret != xdpPass || !bytes.Equal(out, frame(et, want[i])) {
					t.Fatalf("fragment %d: verdict %d\n got %x\nwant %x", i, ret, out, frame(et, want[i]))
				}
			}
			// Datagram 2: the last fragment before the first.
			in, want = frags(tc.in, 0x2222), frags(tc.out, 0x2222)
			early := frame(et, in[2])
			if ret, out := runProg(t, d.objs.ZhXdp, early); ret != xdpPass || !bytes.Equal(out, early) {
				t.Fatal("a fragment with no first fragment was changed")
			}
			for _, i := range []int{0, 2, 1} {
				if _, out := runProg(t, d.objs.ZhXdp, frame(et, in[i])); !bytes.Equal(out, frame(et, want[i])) {
					t.Fatalf("datagram 2 fragment %d\n got %x\nwant %x", i, out, frame(et, want[i]))
				}
			}
		})
	}
	// A remote backend: every fragment encapsulated unchanged.
	for i, f := range frags(pkt{src: client4, dst: vip4, sport: 4000, dport: 54, proto: UDP, payload: payload}, 0x3333) {
		ret, out := ns.run(t, d.objs.ZhXdp, frame(0x0800, f))
		if ret != xdpTX {
			t.Fatalf("remote fragment %d: verdict %d", i, ret)
		}
		checkEncap(t, ns, out, nodeB4, f, netip.PrefixFrom(nodeA4, 32))
	}
	e := events(t, d)
	if e.FragFirst != 5 || e.FragHit != 10 || e.FragMiss != 2 {
		t.Fatalf("events %+v: want 5 first fragments, 10 followers, 2 without a first", e)
	}
}

// icmpFrame builds frag-needed (v4) / packet-too-big (v6) from a router
// to dst, quoting the start of the packet emb.
func icmpFrame(from, dst netip.Addr, emb []byte) []byte {
	if from.Is4() {
		m := append([]byte{3, 4, 0, 0, 0, 0, 0x05, 0x78}, emb...) // next-hop MTU 1400
		binary.BigEndian.PutUint16(m[2:], checksum(m))
		return frame(0x0800, append(ip4hdr(from, dst, 1, 64, 9, 0, len(m)), m...))
	}
	m := append([]byte{2, 0, 0, 0, 0, 0, 0x05, 0x00}, emb...) // MTU 1280
	binary.BigEndian.PutUint16(m[2:], checksum(pseudo(from, dst, 58, len(m)), m))
	return frame(0x86dd, append(ip6hdr(from, dst, 58, 64, len(m)), m...))
}

// quote is what an ICMP error carries of a packet: the IP header and
// the first 8 bytes (v4), or more (v6).
func quote(p pkt) []byte {
	b := l3Of(p)
	if p.src.Is4() {
		return b[:28]
	}
	return b[:48]
}

// TestICMPRelay: an error about a VIP flow's reply (VIP -> client) is
// handed to the flow's backend as if its own packet had caused it; for a
// remote backend it is encapsulated to its node. Errors about no service
// pass untouched.
func TestICMPRelay(t *testing.T) {
	d := loadTest(t, Options{})
	ns := newRunNS(t)
	if err := d.SetNode(NodeConfig{Addr4: nodeA4, Addr6: nodeA6}); err != nil {
		t.Fatal(err)
	}
	podC6 := netip.MustParseAddr("2001:db8:64:3::2")
	mustUpsert(t, d, ServiceKey{vip4, 80, TCP}, []Backend{local(podA4, 8080), local(podC4, 8080)})
	mustUpsert(t, d, ServiceKey{vip6, 80, TCP}, []Backend{local(podA6, 8080), local(podC6, 8080)})
	upsertCluster(t, d, ServiceKey{vip4, 81, TCP}, remote(podB4, 8081, nodeB4))
	for _, tc := range []struct {
		name           string
		client, vip    netip.Addr
		router         netip.Addr
		establishFirst bool
	}{
		{"v4 established flow", client4, vip4, router4, true},
		{"v4 no conntrack entry", client4, vip4, router4, false},
		{"v6 established flow", client6, vip6, router6, true},
		{"v6 no conntrack entry", client6, vip6, router6, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sport := uint16(5000)
			if !tc.establishFirst {
				sport = 5001
			}
			syn := pkt{src: tc.client, dst: tc.vip, sport: sport, dport: 80, proto: TCP, tcpFlags: tcpSYN}
			var pod netip.Addr
			if tc.establishFirst {
				pod = backendOf(t, d, syn)
			}
			reply := pkt{src: tc.vip, dst: tc.client, sport: 80, dport: sport, proto: TCP, tcpFlags: tcpSYN | tcpACK, payload: make([]byte, 1400)}
			in := icmpFrame(tc.router, tc.vip, quote(reply))
			ret, out := runProg(t, d.objs.ZhXdp, in)
			if ret != xdpPass {
				t.Fatalf("verdict %d", ret)
			}
			if !pod.IsValid() {
				// The relay must agree with the backend the flow gets.
				pod = backendOf(t, d, syn)
			}
			podReply := reply
			podReply.src, podReply.sport = pod, 8080
			want := icmpFrame(tc.router, pod, quote(podReply))
			if !bytes.Equal(out, want) {
				t.Fatalf("relayed error\n got %x\nwant %x", out, want)
			}
		})
	}
	// Remote backend: the error goes to its node, encapsulated.
	reply := pkt{src: vip4, dst: client4, sport: 81, dport: 5002, proto: TCP, tcpFlags: tcpACK, payload: make([]byte, 1400)}
	in := icmpFrame(router4, vip4, quote(reply))
	ret, out := ns.run(t, d.objs.ZhXdp, in)
	if ret != xdpTX {
		t.Fatalf("remote relay verdict %d", ret)
	}
	checkEncap(t, ns, out, nodeB4, in[14:], netip.PrefixFrom(nodeA4, 32))
	// About a port with no service, or quoting a packet that is not from
	// the VIP: untouched.
	other := reply
	other.sport = 82
	bad := reply
	bad.src = netip.MustParseAddr("203.0.113.77")
	for name, in := range map[string][]byte{
		"no service":         icmpFrame(router4, vip4, quote(other)),
		"quote not from vip": icmpFrame(router4, vip4, quote(bad)),
	} {
		if ret, out := runProg(t, d.objs.ZhXdp, in); ret != xdpPass || !bytes.Equal(in, out) {
			t.Fatalf("%s: verdict %d, changed %v", name, ret, !bytes.Equal(in, out))
		}
	}
	e := events(t, d)
	if e.ICMPRelay != 5 || e.ICMPNoFlow != 1 {
		t.Fatalf("events %+v: want 5 relayed, 1 without a flow", e)
	}
}

func echoFrame(src, dst netip.Addr, typ, ttl byte, swapMAC bool) []byte {
	m := append([]byte{typ, 0, 0, 0, 0x12, 0x34, 0, 1}, []byte("zerohop ping")...)
	var b []byte
	if src.Is4() {
		binary.BigEndian.PutUint16(m[2:], checksum(m))
		b = frame(0x0800, append(ip4hdr(src, dst, 1, ttl, 0x4242, 0x4000, len(m)), m...))
	} else {
		binary.BigEndian.PutUint16(m[2:], checksum(pseudo(src, dst, 58, len(m)), m))
		b = frame(0x86dd, append(ip6hdr(src, dst, 58, ttl, len(m)), m...))
	}
	if swapMAC {
		copy(b[0:6], macSrc)
		copy(b[6:12], macDst)
	}
	return b
}

// TestEchoReply: echo requests to a VIP are answered by the node itself.
func TestEchoReply(t *testing.T) {
	d := loadTest(t, Options{})
	mustUpsert(t, d, ServiceKey{vip4, 80, TCP}, []Backend{local(podA4, 8080)})
	mustUpsert(t, d, ServiceKey{vip6, 80, TCP}, []Backend{local(podA6, 8080)})
	for _, tc := range []struct {
		name        string
		client, vip netip.Addr
		req, rep    byte
	}{{"v4", client4, vip4, 8, 0}, {"v6", client6, vip6, 128, 129}} {
		t.Run(tc.name, func(t *testing.T) {
			ret, out := runProg(t, d.objs.ZhXdp, echoFrame(tc.client, tc.vip, tc.req, 57, false))
			want := echoFrame(tc.vip, tc.client, tc.rep, 64, true)
			if ret != xdpTX || !bytes.Equal(out, want) {
				t.Fatalf("verdict %d\n got %x\nwant %x", ret, out, want)
			}
		})
	}
	for name, in := range map[string][]byte{
		"not a vip":    echoFrame(client4, podA4, 8, 64, false),
		"filter twin":  echoFrame(client4, filterTwin(t, vip4), 8, 64, false),
		"echo reply":   echoFrame(client4, vip4, 0, 64, false),
		"v6 not a vip": echoFrame(client6, podA6, 128, 64, false),
	} {
		if ret, out := runProg(t, d.objs.ZhXdp, in); ret != xdpPass || !bytes.Equal(in, out) {
			t.Fatalf("%s: verdict %d, changed %v", name, ret, !bytes.Equal(in, out))
		}
	}
	// Deleting the last service of the VIP stops the answers.
	if err := d.DeleteService(ServiceKey{vip4, 80, TCP}); err != nil {
		t.Fatal(err)
	}
	in := echoFrame(client4, vip4, 8, 57, false)
	if ret, out := runProg(t, d.objs.ZhXdp, in); ret != xdpPass || !bytes.Equal(in, out) {
		t.Fatal("echo to a deleted VIP answered")
	}
	if e := events(t, d); e.EchoReply != 2 {
		t.Fatalf("%d echo replies counted, want 2", e.EchoReply)
	}
}
