package bpf

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// TestPodLinks runs the real programs on frames to two local Pods, one
// behind a routed veth and one behind a bridge port, in a namespace whose
// FIB resolves both: XDP rewrites and marks each frame for its Pod link
// (the next hop's own link, or the bridge port the Pod's MAC is behind),
// on every path an established packet takes; tc ingress turns a marked
// frame into the router's frame to the Pod and redirects it to the peer;
// a frame that arrives marked is dropped; without the links the rewritten
// packet is passed to the stack as it came.
func TestPodLinks(t *testing.T) {
	requireRoot(t)
	ns, ifindex := benchNetnsT(t)
	routed, bridged := netip.MustParseAddr("203.0.113.11"), netip.MustParseAddr("192.0.2.77")
	podMAC := map[netip.Addr]net.HardwareAddr{routed: {2, 0, 0, 0, 0, 0x11}, bridged: {2, 0, 0, 0, 0, 0x13}}
	for _, args := range [][]string{
		{"ip", "-n", ns, "neigh", "add", routed.String(), "lladdr", podMAC[routed].String(), "dev", "zh-b1", "nud", "permanent"},
		{"ip", "-n", ns, "link", "add", "zh-bbr", "type", "bridge"},
		{"ip", "-n", ns, "link", "add", "zh-bp0", "type", "veth", "peer", "name", "zh-bp1"},
		{"ip", "-n", ns, "link", "set", "zh-bp0", "master", "zh-bbr"},
		{"ip", "-n", ns, "link", "set", "zh-bp0", "up"},
		{"ip", "-n", ns, "link", "set", "zh-bp1", "up"},
		{"ip", "-n", ns, "link", "set", "zh-bbr", "up"},
		{"ip", "-n", ns, "addr", "add", "192.0.2.65/26", "dev", "zh-bbr"},
		{"ip", "-n", ns, "neigh", "add", bridged.String(), "lladdr", podMAC[bridged].String(), "dev", "zh-bbr", "nud", "permanent"},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	d := loadTest(t, Options{})
	kRouted, kBridged := ServiceKey{vip4, 80, TCP}, ServiceKey{vip4, 81, TCP}
	mustUpsert(t, d, kRouted, []Backend{local(routed, 8080)})
	mustUpsert(t, d, kBridged, []Backend{local(bridged, 8080)})
	ifs := map[string]*net.Interface{}
	links := func() PodLinks {
		return PodLinks{
			Peers: []PodLink{
				{Ifindex: ifs["zh-b1"].Index, HostMAC: ifs["zh-b1"].HardwareAddr, PodMAC: podMAC[routed]},
				{Ifindex: ifs["zh-bp0"].Index, HostMAC: ifs["zh-bbr"].HardwareAddr, PodMAC: podMAC[bridged]},
			},
			Bridged: []BridgedPod{{Bridge: ifs["zh-bbr"].Index, MAC: podMAC[bridged], Port: ifs["zh-bp0"].Index}},
		}
	}
	if err := inNS(ns, func() error {
		for _, n := range []string{"zh-b1", "zh-bbr", "zh-bp0"} {
			ifc, err := net.InterfaceByName(n)
			if err != nil {
				return err
			}
			ifs[n] = ifc
		}
		return d.SetPodLinks(links())
	}); err != nil {
		t.Fatal(err)
	}
	// Each Pod link carries zh_tc_pod on its tc ingress, pinned.
	replyPin := func(link string) string {
		return filepath.Join(d.opts.PinRoot, fmt.Sprintf("link_tc_pod%d", ifs[link].Index))
	}
	for _, n := range []string{"zh-b1", "zh-bp0"} {
		l, err := link.LoadPinnedLink(replyPin(n), nil)
		if err != nil {
			t.Fatalf("%s: no reply link pinned: %v", n, err)
		}
		info, err := l.Info()
		if err != nil || info.TCX() == nil || int(info.TCX().Ifindex) != ifs[n].Index {
			t.Fatalf("%s: reply link %+v (%v): want tcx on the interface", n, info, err)
		}
		_ = l.Close()
	}
	slotOf := func(link string) uint32 {
		t.Helper()
		var pl zhPodLink
		if err := d.objs.PodLinks.Lookup(uint32(ifs[link].Index), &pl); err != nil || pl.How != podPeer {
			t.Fatalf("pod link %s: %+v, %v", link, pl, err)
		}
		return pl.Slot
	}

	run := func(p *ebpf.Program, in []byte) (uint32, []byte) {
		t.Helper()
		opts := ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+512)}
		if p == d.objs.ZhXdp {
			opts.Context = struct{ data, dataEnd, dataMeta, ingressIfindex, rxQueue, egressIfindex uint32 }{
				dataEnd: uint32(len(in)), ingressIfindex: ifindex}
		}
		var ret uint32
		if err := inNS(ns, func() error {
			var err error
			ret, err = p.Run(&opts)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return ret, opts.DataOut[:len(in)]
	}
	const xdpDrop, xdpPass, tcRedirect, tcxNext = 1, 2, 7, 0xffffffff
	// marked: rewritten to be, TTL down by one, the destination MAC as
	// it came, the source the mark with link's slot.
	marked := func(step string, p pkt, be netip.Addr, link string) []byte {
		t.Helper()
		in := p.bytes()
		ret, out := run(d.objs.ZhXdp, in)
		q := parseFrame(out)
		if ret != xdpPass || !q.ok || q.dst != be || q.dport != 8080 {
			t.Fatalf("%s: ret %d, %+v: want XDP_PASS to %v:8080", step, ret, q, be)
		}
		if ipOK, l4OK := checksumsOK(out, q); !ipOK || !l4OK {
			t.Fatalf("%s: checksums ip %v l4 %v", step, ipOK, l4OK)
		}
		slot := slotOf(link)
		mark := []byte{0x0a, 0x7a, 0x68, 0xd1, byte(slot >> 8), byte(slot)}
		if !bytes.Equal(out[0:6], in[0:6]) || !bytes.Equal(out[6:12], mark) || out[14+8] != 63 {
			t.Fatalf("%s: dst %x src %x ttl %d: want %x, mark %x, 63", step, out[0:6], out[6:12], out[14+8], in[0:6], mark)
		}
		return out
	}
	syn := func(dport uint16) pkt {
		return pkt{src: client4, dst: vip4, sport: 41000, dport: dport, proto: TCP, tcpFlags: tcpSYN}
	}
	data := func(dport uint16) pkt {
		return pkt{src: client4, dst: vip4, sport: 41000, dport: dport, proto: TCP, payload: []byte("to the pod")}
	}
	marked("routed syn", syn(80), routed, "zh-b1")
	// zh_lb, zh_fast and the flow cache: all mark alike.
	for range 4 {
		marked("routed established", data(80), routed, "zh-b1")
	}
	marked("bridged syn", syn(81), bridged, "zh-bp0")
	out := marked("bridged established", data(81), bridged, "zh-bp0")

	// tc ingress: the router's frame to the Pod, redirected. A test run's
	// skb comes in on loopback, whose MAC is all zero: a frame to another
	// MAC is not for this host and goes on untouched.
	tcIn := append([]byte{}, out...)
	copy(tcIn[0:6], make([]byte, 6))
	ret, tcOut := run(d.objs.ZhTcIngress, tcIn)
	if ret != tcRedirect || !bytes.Equal(tcOut[0:6], podMAC[bridged]) || !bytes.Equal(tcOut[6:12], ifs["zh-bbr"].HardwareAddr) ||
		!bytes.Equal(tcOut[12:], tcIn[12:]) {
		t.Fatalf("tc ingress: ret %d, MACs %x %x: want a redirect with %v from %v, the rest as it was", ret, tcOut[0:6], tcOut[6:12],
			podMAC[bridged], ifs["zh-bbr"].HardwareAddr)
	}
	if ret, tcOut := run(d.objs.ZhTcIngress, out); ret != tcxNext || !bytes.Equal(tcOut, out) {
		t.Fatalf("tc ingress, frame for another host: ret %d, changed %v: want it to go on untouched", ret, !bytes.Equal(tcOut, out))
	}
	if ret, tcOut := run(d.objs.ZhTcIngress, data(80).bytes()); ret != tcxNext || !bytes.Equal(tcOut, data(80).bytes()) {
		t.Fatalf("tc ingress, unmarked frame: ret %d: want it to go on untouched", ret)
	}

	// Whoever sends a frame with the mark gets it dropped.
	spoof := data(80).bytes()
	copy(spoof[6:12], out[6:12])
	if ret, _ := run(d.objs.ZhXdp, spoof); ret != xdpDrop {
		t.Fatalf("marked frame from the wire: ret %d, want XDP_DROP", ret)
	}
	dl, err := d.Delivery()
	if err != nil {
		t.Fatal(err)
	}
	if want := (Delivery{Peer: 7, PeerTC: 1, Spoofed: 1}); dl != want {
		t.Fatalf("delivery %+v, want %+v", dl, want)
	}

	// No Pod links: rewritten and passed to the stack with the frame's
	// own MACs and TTL, at once, cached flows too.
	if err := d.SetPodLinks(PodLinks{}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		p  pkt
		be netip.Addr
	}{{data(80), routed}, {data(81), bridged}} {
		in := c.p.bytes()
		ret, out := run(d.objs.ZhXdp, in)
		if q := parseFrame(out); ret != xdpPass || q.dst != c.be || !bytes.Equal(out[:12], in[:12]) || out[14+8] != 64 {
			t.Fatalf("no pod links: ret %d, %+v, ttl %d: want XDP_PASS to %v with the frame's MACs and TTL", ret, q, out[14+8], c.be)
		}
	}
	if dl, err = d.Delivery(); err != nil || dl.Stack != 2 {
		t.Fatalf("delivery %+v (%v): want 2 passed to the stack", dl, err)
	}
	for _, m := range []*ebpf.Map{d.objs.PodLinks, d.objs.PodFdb} {
		if n, err := countEntries(m); err != nil || n != 0 {
			t.Fatalf("%s: %d entries left (%v)", m, n, err)
		}
	}
	for _, n := range []string{"zh-b1", "zh-bp0"} {
		if _, err := os.Stat(replyPin(n)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s: reply link still pinned (%v)", n, err)
		}
	}
	if err := d.SetPodLinks(PodLinks{Peers: []PodLink{{Ifindex: 1, HostMAC: net.HardwareAddr{1, 2, 3}}}}); err == nil {
		t.Fatal("a 3-byte MAC was taken")
	}
	if err := d.SetPodLinks(PodLinks{Bridged: links().Bridged}); err == nil {
		t.Fatal("a bridged Pod behind a port that is no Pod link was taken")
	}
}
