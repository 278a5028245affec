package bpf

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
)

const xdpTX = 3

// Addresses of the byte-level Cluster-mode tests. "A" encapsulates, "B"
// is the remote backend's node.
var (
	nodeA4    = netip.MustParseAddr("198.51.100.1")
	nodeB4    = netip.MustParseAddr("198.51.100.20")
	nodeA6    = netip.MustParseAddr("2001:db8:ff::1")
	nodeB6    = netip.MustParseAddr("2001:db8:ff::20")
	srcRange4 = netip.MustParsePrefix("198.51.100.64/26")
	srcRange6 = netip.MustParsePrefix("2001:db8:ff:1::/120")
	podB6     = netip.MustParseAddr("2001:db8:64:2::2")
	router4   = netip.MustParseAddr("192.0.2.254")
	router6   = netip.MustParseAddr("2001:db8:c::fe")
	nhMAC     = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x20}
)

// runNS is a namespace where bpf_fib_lookup answers as on a node: frames
// arrive on zh-c0, and node B (v4 and v6) is a known neighbour behind the
// same interface, so encapsulated frames go back out with XDP_TX. Pods
// have no route there: rewritten packets are passed to the kernel.
type runNS struct {
	name    string
	ifindex uint32
	mac     net.HardwareAddr
}

func newRunNS(t *testing.T) runNS {
	t.Helper()
	ns := runNS{name: "zh-ct-" + netnsSuffix()}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns.name).Run() })
	for _, args := range [][]string{
		{"ip", "netns", "add", ns.name},
		{"ip", "-n", ns.name, "link", "add", "zh-c0", "type", "veth", "peer", "name", "zh-c1"},
		{"ip", "-n", ns.name, "link", "set", "zh-c0", "up"},
		{"ip", "-n", ns.name, "link", "set", "zh-c1", "up"},
		{"ip", "-n", ns.name, "addr", "add", nodeA4.String() + "/24", "dev", "zh-c0"},
		{"ip", "-n", ns.name, "addr", "add", nodeA6.String() + "/64", "dev", "zh-c0", "nodad"},
		{"ip", "-n", ns.name, "neigh", "add", nodeB4.String(), "lladdr", nhMAC.String(), "dev", "zh-c0", "nud", "permanent"},
		{"ip", "-n", ns.name, "neigh", "add", nodeB6.String(), "lladdr", nhMAC.String(), "dev", "zh-c0", "nud", "permanent"},
	} {
		sh(t, args...)
	}
	if err := inNS(ns.name, func() error {
		ifc, err := net.InterfaceByName("zh-c0")
		if err != nil {
			return err
		}
		ns.ifindex, ns.mac = uint32(ifc.Index), ifc.HardwareAddr
		for _, f := range []string{"/proc/sys/net/ipv4/conf/all/forwarding", "/proc/sys/net/ipv6/conf/all/forwarding"} {
			if err := os.WriteFile(f, []byte("1"), 0o644); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return ns
}

// run is PROG_TEST_RUN with the frame arriving on zh-c0.
func (ns runNS) run(t testing.TB, p *ebpf.Program, in []byte) (uint32, []byte) {
	t.Helper()
	var ret uint32
	var out []byte
	err := inNS(ns.name, func() error {
		ctx := struct{ data, dataEnd, dataMeta, ingressIfindex, rxQueue, egressIfindex uint32 }{
			dataEnd: uint32(len(in)), ingressIfindex: ns.ifindex,
		}
		opts := ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+512), Context: ctx}
		var err error
		ret, err = p.Run(&opts)
		out = opts.DataOut
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return ret, out
}

func frame(et uint16, l3 []byte) []byte {
	b := append(append(append([]byte{}, macDst...), macSrc...), byte(et>>8), byte(et))
	return append(b, l3...)
}

func ip4hdr(src, dst netip.Addr, proto, ttl byte, id, frag uint16, payloadLen int) []byte {
	h := make([]byte, 20)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+payloadLen))
	binary.BigEndian.PutUint16(h[4:], id)
	binary.BigEndian.PutUint16(h[6:], frag)
	h[8], h[9] = ttl, proto
	s, d := src.As4(), dst.As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	binary.BigEndian.PutUint16(h[10:], checksum(h))
	return h
}

func ip6hdr(src, dst netip.Addr, nh, hop byte, payloadLen int) []byte {
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(payloadLen))
	h[6], h[7] = nh, hop
	s, d := src.As16(), dst.As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return h
}

func mssOpt(v uint16) []byte { return []byte{2, 4, byte(v >> 8), byte(v), 1, 1, 4, 2} }

// mssOddOpt puts the MSS value at an odd offset (after one NOP).
func mssOddOpt(v uint16) []byte { return []byte{1, 2, 4, byte(v >> 8), byte(v), 1, 1, 0} }

func upsertCluster(t testing.TB, d *Datapath, k ServiceKey, bs ...Backend) {
	t.Helper()
	if err := d.UpsertService(k, bs, ServiceCluster); err != nil {
		t.Fatal(err)
	}
}

func remote(addr netip.Addr, port uint16, node netip.Addr) Backend {
	return Backend{Addr: addr, Port: port, Node: node, Flags: BackendRemote}
}

func events(t testing.TB, d *Datapath) Events {
	t.Helper()
	e, err := d.Events()
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// checkEncap checks an encapsulated frame field by field and returns the
// outer source and the inner L3 packet.
func checkEncap(t *testing.T, ns runNS, out []byte, node netip.Addr, inner []byte, src netip.Prefix) netip.Addr {
	t.Helper()
	if !bytes.Equal(out[0:6], nhMAC) || !bytes.Equal(out[6:12], ns.mac) {
		t.Fatalf("MACs %x -> %x, want %s -> %s", out[6:12], out[0:6], ns.mac, nhMAC)
	}
	var osrc netip.Addr
	var got []byte
	if node.Is4() {
		o := out[14:34]
		if et := binary.BigEndian.Uint16(out[12:]); et != 0x0800 {
			t.Fatalf("ethertype %#x", et)
		}
		if fold(sum16(o)) != 0xffff {
			t.Fatalf("outer IPv4 header checksum wrong: %x", o)
		}
		osrc = netip.AddrFrom4([4]byte(o[12:16]))
		want := ip4hdr(osrc, node, 4, 64, binary.BigEndian.Uint16(inner[4:]), binary.BigEndian.Uint16(inner[6:])&0x4000, len(inner))
		want[1] = inner[1] // TOS copied
		binary.BigEndian.PutUint16(want[10:], 0)
		binary.BigEndian.PutUint16(want[10:], checksum(want))
		if !bytes.Equal(o, want) {
			t.Fatalf("outer header\n got %x\nwant %x", o, want)
		}
		got = out[34:]
	} else {
		o := out[14:54]
		osrc = netip.AddrFrom16([16]byte(o[8:24]))
		want := ip6hdr(osrc, node, 41, 64, len(inner))
		copy(want[1:4], o[1:4]) // flow label: the flow hash
		want[0] = 0x60 | inner[0]&0x0f
		want[1] = want[1]&0x0f | inner[1]&0xf0
		if !bytes.Equal(o, want) {
			t.Fatalf("outer header\n got %x\nwant %x", o, want)
		}
		got = out[54:]
	}
	if !src.Contains(osrc) {
		t.Fatalf("outer source %s outside %s", osrc, src)
	}
	if !bytes.Equal(got[:len(inner)], inner) {
		t.Fatalf("inner packet\n got %x\nwant %x", got[:len(inner)], inner)
	}
	return osrc
}

// TestEncapsulation: a Cluster-mode hit on a remote backend leaves as
// IP-in-IP to the backend's node, out the way it came (XDP_TX), with the
// inner packet as the client sent it except a SYN's clamped MSS.
func TestEncapsulation(t *testing.T) {
	d := loadTest(t, Options{})
	ns := newRunNS(t)
	if err := d.SetNode(NodeConfig{Addr4: nodeA4, Addr6: nodeA6, Source4: srcRange4, Source6: srcRange6, PathMTU: 1400}); err != nil {
		t.Fatal(err)
	}
	upsertCluster(t, d, ServiceKey{vip4, 80, TCP}, remote(podB4, 8080, nodeB4))
	upsertCluster(t, d, ServiceKey{vip4, 53, UDP}, remote(podB4, 5353, nodeB4))
	upsertCluster(t, d, ServiceKey{vip6, 80, TCP}, remote(podB6, 8080, nodeB6))
	cases := []struct {
		name    string
		in, out pkt
		clamped bool
	}{
		{"v4 syn mss clamped", pkt{src: client4, dst: vip4, sport: 1000, dport: 80, proto: TCP, tcpFlags: tcpSYN, tcpOptions: mssOpt(1460)},
			pkt{src: client4, dst: vip4, sport: 1000, dport: 80, proto: TCP, tcpFlags: tcpSYN, tcpOptions: mssOpt(1340)}, true},
		{"v4 syn mss at odd offset", pkt{src: client4, dst: vip4, sport: 1001, dport: 80, proto: TCP, tcpFlags: tcpSYN, tcpOptions: mssOddOpt(1460)},
			pkt{src: client4, dst: vip4, sport: 1001, dport: 80, proto: TCP, tcpFlags: tcpSYN, tcpOptions: mssOddOpt(1340)}, true},
		{"v4 syn small mss kept", pkt{src: client4, dst: vip4, sport: 1002, dport: 80, proto: TCP, tcpFlags: tcpSYN, tcpOptions: mssOpt(1200)},
			pkt{src: client4, dst: vip4, sport: 1002, dport: 80, proto: TCP, tcpFlags: tcpSYN, tcpOptions: mssOpt(1200)}, false},
		{"v4 established", pkt{src: client4, dst: vip4, sport: 1000, dport: 80, proto: TCP, payload: []byte("GET /\n")},
			pkt{src: client4, dst: vip4, sport: 1000, dport: 80, proto: TCP, payload: []byte("GET /\n")}, false},
		{"v4 udp", pkt{src: client4, dst: vip4, sport: 1000, dport: 53, proto: UDP, payload: []byte("q")},
			pkt{src: client4, dst: vip4, sport: 1000, dport: 53, proto: UDP, payload: []byte("q")}, false},
		{"v6 syn mss clamped", pkt{src: client6, dst: vip6, sport: 1000, dport: 80, proto: TCP, tcpFlags: tcpSYN, tcpOptions: mssOpt(1440)},
			pkt{src: client6, dst: vip6, sport: 1000, dport: 80, proto: TCP, tcpFlags: tcpSYN, tcpOptions: mssOpt(1300)}, true},
		{"v6 established", pkt{src: client6, dst: vip6, sport: 1000, dport: 80, proto: TCP, payload: []byte("x")},
			pkt{src: client6, dst: vip6, sport: 1000, dport: 80, proto: TCP, payload: []byte("x")}, false},
	}
	clamped := uint64(0)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ret, out := ns.run(t, d.objs.ZhXdp, tc.in.bytes())
			if ret != xdpTX {
				t.Fatalf("verdict %d, want XDP_TX", ret)
			}
			node, src := nodeB4, srcRange4
			if tc.in.src.Is6() {
				node, src = nodeB6, srcRange6
			}
			inner := tc.out.bytes()[14:]
			checkEncap(t, ns, out, node, inner, src)
			p := parseFrame(frame(binary.BigEndian.Uint16(tc.in.bytes()[12:]), out[len(out)-len(inner):]))
			if ipOK, l4OK := checksumsOK(out[len(out)-len(inner)-14:], p); !p.ok || !ipOK || !l4OK {
				t.Fatalf("inner checksums: ip %v l4 %v", ipOK, l4OK)
			}
		})
		if tc.clamped {
			clamped++
		}
	}
	// The outer source is a function of the flow: stable for a flow,
	// spread over the range across flows (the receiver's RSS hashes it).
	for _, fam := range []struct {
		client, vip, node netip.Addr
		src               netip.Prefix
	}{{client4, vip4, nodeB4, srcRange4}, {client6, vip6, nodeB6, srcRange6}} {
		seen := map[netip.Addr]bool{}
		for i := range 64 {
			p := pkt{src: fam.client, dst: fam.vip, sport: uint16(2000 + i), dport: 80, proto: TCP, tcpFlags: tcpSYN}
			_, out1 := ns.run(t, d.objs.ZhXdp, p.bytes())
			_, out2 := ns.run(t, d.objs.ZhXdp, p.bytes())
			s1 := checkEncap(t, ns, out1, fam.node, p.bytes()[14:], fam.src)
			if s2 := checkEncap(t, ns, out2, fam.node, p.bytes()[14:], fam.src); s1 != s2 {
				t.Fatalf("flow %d: outer source changed from %s to %s", i, s1, s2)
			}
			seen[s1] = true
		}
		if len(seen) < 16 {
			t.Errorf("%s: 64 flows used only %d outer sources", fam.src, len(seen))
		}
	}
	e := events(t, d)
	if e.MSSClamped != clamped || e.Encap != uint64(len(cases)+4*64) {
		t.Errorf("events %+v: want %d clamped, %d encapsulated", e, clamped, len(cases)+4*64)
	}
}

// outerFrame wraps an L3 packet in IP-in-IP from src to dst.
func outerFrame(src, dst netip.Addr, inner []byte) []byte {
	if src.Is4() {
		return frame(0x0800, append(ip4hdr(src, dst, 4, 64, 7, 0x4000, len(inner)), inner...))
	}
	return frame(0x86dd, append(ip6hdr(src, dst, 41, 64, len(inner)), inner...))
}

// TestDecapsulation: node B takes apart encapsulation from a known peer
// addressed to itself, rewrites the inner packet to the local Pod and
// records the flow so that the reply leaves with the VIP as source (and
// the SYN-ACK's MSS clamped); anything else with protocol 4/41 passes.
func TestDecapsulation(t *testing.T) {
	d := loadTest(t, Options{})
	ns := newRunNS(t)
	if err := d.SetNode(NodeConfig{Addr4: nodeB4, Addr6: nodeB6, PathMTU: 1400}); err != nil {
		t.Fatal(err)
	}
	if err := d.SetPeers([]netip.Prefix{srcRange4, srcRange6, netip.MustParsePrefix("192.0.2.0/24")}); err != nil {
		t.Fatal(err)
	}
	// Replacing the peer set drops what is no longer listed.
	if err := d.SetPeers([]netip.Prefix{srcRange4, srcRange6}); err != nil {
		t.Fatal(err)
	}
	upsertCluster(t, d, ServiceKey{vip4, 80, TCP}, local(podA4, 8080))
	upsertCluster(t, d, ServiceKey{vip6, 80, TCP}, local(podA6, 8080))
	upsertCluster(t, d, ServiceKey{vip4, 81, TCP}, remote(podB4, 8080, nodeA4))
	peer4, peer6 := netip.MustParseAddr("198.51.100.77"), netip.MustParseAddr("2001:db8:ff:1::9")

	syn4 := pkt{src: client4, dst: vip4, sport: 3000, dport: 80, proto: TCP, tcpFlags: tcpSYN, tcpOptions: mssOpt(1460)}
	syn6 := pkt{src: client6, dst: vip6, sport: 3000, dport: 80, proto: TCP, tcpFlags: tcpSYN, tcpOptions: mssOpt(1460)}
	for _, tc := range []struct {
		name    string
		in, out pkt
		peer    netip.Addr
		node    netip.Addr
	}{
		{"v4", syn4, pkt{src: client4, dst: podA4, sport: 3000, dport: 8080, proto: TCP, tcpFlags: tcpSYN, tcpOptions: mssOpt(1460)}, peer4, nodeB4},
		{"v6", syn6, pkt{src: client6, dst: podA6, sport: 3000, dport: 8080, proto: TCP, tcpFlags: tcpSYN, tcpOptions: mssOpt(1460)}, peer6, nodeB6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := outerFrame(tc.peer, tc.node, tc.in.bytes()[14:])
			ret, out := ns.run(t, d.objs.ZhXdp, in)
			if ret != xdpPass || !bytes.Equal(out, tc.out.bytes()) {
				t.Fatalf("verdict %d\n got %x\nwant %x", ret, out, tc.out.bytes())
			}
			// The Pod's SYN-ACK leaves as the VIP's, MSS clamped for the
			// client's encapsulated direction.
			reply := pkt{src: tc.out.dst, dst: tc.in.src, sport: 8080, dport: 3000, proto: TCP, tcpFlags: tcpSYN | tcpACK, tcpOptions: mssOpt(1460)}
			mss := uint16(1340)
			if tc.in.src.Is6() {
				mss = 1300
			}
			want := pkt{src: tc.in.dst, dst: tc.in.src, sport: 80, dport: 3000, proto: TCP, tcpFlags: tcpSYN | tcpACK, tcpOptions: mssOpt(mss)}
			if _, got := runProg(t, d.objs.ZhTcEgress, reply.bytes()); !bytes.Equal(got, want.bytes()) {
				t.Fatalf("reply\n got %x\nwant %x", got, want.bytes())
			}
		})
	}
	refused := map[string][]byte{
		"v4 unknown source":    outerFrame(netip.MustParseAddr("203.0.113.99"), nodeB4, syn4.bytes()[14:]),
		"v6 unknown source":    outerFrame(netip.MustParseAddr("2001:db8:ee::1"), nodeB6, syn6.bytes()[14:]),
		"v4 removed peer":      outerFrame(netip.MustParseAddr("192.0.2.5"), nodeB4, syn4.bytes()[14:]),
		"v4 other destination": outerFrame(peer4, netip.MustParseAddr("198.51.100.21"), syn4.bytes()[14:]),
		"v6 other destination": outerFrame(peer6, netip.MustParseAddr("2001:db8:ff::21"), syn6.bytes()[14:]),
		"v4 inner not IPv4":    outerFrame(peer4, nodeB4, syn6.bytes()[14:]),
		"v6 inner not IPv6":    frame(0x86dd, append(ip6hdr(peer6, nodeB6, 41, 64, 60), syn4.bytes()[14:]...)),
		"v4 fragmented outer":  frame(0x0800, append(ip4hdr(peer4, nodeB4, 4, 64, 7, 0x2000, 60), syn4.bytes()[14:]...)),
		"v4 truncated inner":   outerFrame(peer4, nodeB4, []byte{0x45}),
	}
	for name, in := range refused {
		t.Run(name, func(t *testing.T) {
			if ret, out := ns.run(t, d.objs.ZhXdp, in); ret != xdpPass || !bytes.Equal(out, in) {
				t.Fatalf("verdict %d, changed %v; want XDP_PASS untouched", ret, !bytes.Equal(out, in))
			}
		})
	}
	// The backend Maglev picks is not on this node: never sent on again.
	in := outerFrame(peer4, nodeB4, pkt{src: client4, dst: vip4, sport: 3000, dport: 81, proto: TCP, tcpFlags: tcpSYN}.bytes()[14:])
	if ret, _ := ns.run(t, d.objs.ZhXdp, in); ret != xdpDrop {
		t.Fatalf("decapsulated flow to a remote backend: verdict %d, want XDP_DROP", ret)
	}
	e := events(t, d)
	if e.Decap != 3 || e.DecapRefused != 3 || e.DecapNoLocal != 1 || e.MSSClamped != 2 {
		t.Fatalf("events %+v: want 3 decapsulated, 3 refused (unknown sources), 1 not local, 2 clamped", e)
	}
}

func TestClusterValidation(t *testing.T) {
	d := loadTest(t, Options{})
	bad := []struct {
		name string
		k    ServiceKey
		bs   []Backend
	}{
		{"remote without node", ServiceKey{vip4, 80, TCP}, []Backend{{Addr: podB4, Port: 80, Flags: BackendRemote}}},
		{"v6 node for a v4 VIP", ServiceKey{vip4, 80, TCP}, []Backend{remote(podB4, 80, nodeB6)}},
		{"local and remote", ServiceKey{vip6, 80, TCP}, []Backend{{Addr: podB6, Port: 80, Node: nodeB6, Flags: BackendRemote | BackendLocal}}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if err := d.UpsertService(tc.k, tc.bs, ServiceCluster); err == nil {
				t.Fatal("want error")
			}
		})
	}
	for name, c := range map[string]NodeConfig{
		"mtu too small":     {Addr4: nodeA4, PathMTU: 576},
		"v6 as v4":          {Addr4: nodeA6},
		"v4 range for v6":   {Addr6: nodeA6, Source6: srcRange4},
		"v6 range for v4":   {Addr4: nodeA4, Source4: srcRange6},
		"v4-mapped v6 node": {Addr6: netip.AddrFrom16(nodeA4.As16())},
	} {
		if err := d.SetNode(c); err == nil {
			t.Errorf("SetNode %s: want error", name)
		}
	}
	if err := d.SetPeers([]netip.Prefix{{}}); err == nil {
		t.Error("SetPeers with an invalid prefix: want error")
	}
}

// TestDecapsulationTakesALocalBackend: when the sender's Maglev choice and
// this node's differ (the speakers apply an endpoint change at different
// moments), a decapsulated new flow goes to a backend on this node — a
// ready one, else one still in place (not ready yet or terminating) —
// instead of being dropped, and its conntrack entry keeps it there.
func TestDecapsulationTakesALocalBackend(t *testing.T) {
	d := loadTest(t, Options{})
	ns := newRunNS(t)
	if err := d.SetNode(NodeConfig{Addr4: nodeB4, Addr6: nodeB6, PathMTU: 1400}); err != nil {
		t.Fatal(err)
	}
	if err := d.SetPeers([]netip.Prefix{srcRange4, srcRange6}); err != nil {
		t.Fatal(err)
	}
	standby := local(podA4, 8080)
	standby.Flags |= BackendTerminating
	peer4 := netip.MustParseAddr("198.51.100.77")
	base := 5000
	for _, tc := range []struct {
		name     string
		backends []Backend
		want     []netip.Addr // the local Pods the flows may reach
	}{
		{"only a remote backend is ready here", []Backend{remote(podB4, 8080, nodeA4), standby}, []netip.Addr{podA4}},
		{"ready local backends next to a remote one", []Backend{remote(podB4, 8080, nodeA4), local(podA4, 8080), local(podC4, 8080)}, []netip.Addr{podA4, podC4}},
		{"a ready local backend wins over a standby", []Backend{remote(podB4, 8080, nodeA4), standby, local(podC4, 8080)}, []netip.Addr{podC4}},
	} {
		base += 100 // new flows: conntrack keeps the earlier cases' ones
		t.Run(tc.name, func(t *testing.T) {
			upsertCluster(t, d, ServiceKey{vip4, 82, TCP}, tc.backends...)
			seen := map[netip.Addr]int{}
			for i := range 64 {
				syn := pkt{src: client4, dst: vip4, sport: uint16(base + i), dport: 82, proto: TCP, tcpFlags: tcpSYN}
				in := outerFrame(peer4, nodeB4, syn.bytes()[14:])
				var first netip.Addr
				// The SYN and its retransmit: the same Pod both times.
				for try := range 2 {
					ret, out := ns.run(t, d.objs.ZhXdp, in)
					if ret != xdpPass || len(out) < 34 {
						t.Fatalf("flow %d try %d: verdict %d, want XDP_PASS to a local Pod", i, try, ret)
					}
					dst := netip.AddrFrom4([4]byte(out[30:34]))
					if !slices.Contains(tc.want, dst) {
						t.Fatalf("flow %d try %d: sent to %s, want one of %v", i, try, dst, tc.want)
					}
					if try == 0 {
						first = dst
					} else if dst != first {
						t.Fatalf("flow %d: retransmit went to %s, the SYN to %s", i, dst, first)
					}
				}
				seen[first]++
			}
			if len(seen) != len(tc.want) {
				t.Errorf("64 flows reached %v, want every one of %v", seen, tc.want)
			}
		})
	}
	if e := events(t, d); e.DecapNoLocal != 0 {
		t.Errorf("events %+v: want no decapsulated flow dropped", e)
	}
	// With no backend of the service on this node there is nothing to
	// take it: dropped and counted, as before.
	upsertCluster(t, d, ServiceKey{vip4, 82, TCP}, remote(podB4, 8080, nodeA4))
	in := outerFrame(peer4, nodeB4, pkt{src: client4, dst: vip4, sport: 6000, dport: 82, proto: TCP, tcpFlags: tcpSYN}.bytes()[14:])
	if ret, _ := ns.run(t, d.objs.ZhXdp, in); ret != xdpDrop {
		t.Fatalf("no local backend: verdict %d, want XDP_DROP", ret)
	}
	if e := events(t, d); e.DecapNoLocal != 1 {
		t.Errorf("events %+v: want the one flow with no local backend counted", e)
	}
}
