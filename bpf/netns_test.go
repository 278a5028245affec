package bpf

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Lab for the end-to-end tests, all in namespaces named zh-*:
//
//	client ns  eth0 192.0.2.2 ── zh-up 192.0.2.1  node ns (XDP + tc on zh-up)
//	                                 zh-pa 100.64.1.1 ── eth0 100.64.1.2  pod A
//	                                 zh-pb 100.64.2.1 ── eth0 100.64.2.2  pod B
//	       zh-br 100.64.3.1 (bridge) ─ zh-pc ─────────── eth0 100.64.3.2  pod C
//	                                 zh-pd 100.64.4.1 ── eth0 100.64.4.2  pod D
//
// Each Pod is reached another way: A and C (behind a bridge, as with
// Flannel's cni0) by tc's bpf_redirect_peer (SetPodLinks), B by an XDP
// redirect (EnableRedirect, an XDP program on its far end), D through the
// node's routing (not a Pod link).

type labPod struct {
	name, hostIf string
	addr         netip.Addr
	gw           string
	bridge       bool // a port of labBridge, which holds gw
	how          string
}

var (
	labVIP    = netip.MustParseAddr("203.0.113.10")
	labClient = netip.MustParseAddr("192.0.2.2")
	labPods   = []labPod{
		{"pa", "zh-pa", netip.MustParseAddr("100.64.1.2"), "100.64.1.1", false, "peer"},
		{"pb", "zh-pb", netip.MustParseAddr("100.64.2.2"), "100.64.2.1", false, "xdp"},
		{"pc", "zh-pc", netip.MustParseAddr("100.64.3.2"), "100.64.3.1", true, "peer"},
		{"pd", "zh-pd", netip.MustParseAddr("100.64.4.2"), "100.64.4.1", false, "stack"},
	}
)

const (
	labPort    = 80
	labPodPort = 8080
	labUplink  = "zh-up"
	labBridge  = "zh-br"
)

type lab struct {
	suffix     string
	client     string
	node       string
	pods       map[string]string // pod name -> netns
	stopEchoes func()
}

func (l *lab) all() []string {
	out := []string{l.client, l.node}
	for _, p := range labPods {
		out = append(out, l.pods[p.name])
	}
	return out
}

func sh(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// inNS runs fn on a fresh OS thread switched into the named netns. The
// thread is never unlocked, so it dies with the goroutine and no other
// goroutine ever runs in the wrong namespace.
func inNS(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := setNS(ns); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

func setNS(ns string) error {
	fd, err := unix.Open("/var/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", ns, err)
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("setns %s: %w", ns, err)
	}
	return nil
}

func newLab(t *testing.T) *lab {
	t.Helper()
	requireRoot(t)
	s := netnsSuffix()
	l := &lab{suffix: s, client: "zh-cli-" + s, node: "zh-node-" + s, pods: map[string]string{}}
	for _, p := range labPods {
		l.pods[p.name] = "zh-" + p.name + "-" + s
	}
	t.Cleanup(func() {
		if l.stopEchoes != nil {
			l.stopEchoes()
		}
		for _, ns := range l.all() {
			_ = exec.Command("ip", "netns", "del", ns).Run()
		}
	})
	for _, ns := range l.all() {
		sh(t, "ip", "netns", "add", ns)
		sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	sh(t, "ip", "-n", l.node, "link", "add", labUplink, "type", "veth", "peer", "name", "eth0", "netns", l.client)
	sh(t, "ip", "-n", l.node, "addr", "add", "192.0.2.1/24", "dev", labUplink)
	sh(t, "ip", "-n", l.node, "link", "set", labUplink, "up")
	sh(t, "ip", "-n", l.client, "addr", "add", labClient.String()+"/24", "dev", "eth0")
	sh(t, "ip", "-n", l.client, "link", "set", "eth0", "up")
	sh(t, "ip", "-n", l.client, "route", "add", labVIP.String()+"/32", "via", "192.0.2.1")
	for _, p := range labPods {
		ns := l.pods[p.name]
		sh(t, "ip", "-n", l.node, "link", "add", p.hostIf, "type", "veth", "peer", "name", "eth0", "netns", ns)
		if p.bridge {
			sh(t, "ip", "-n", l.node, "link", "add", labBridge, "type", "bridge")
			sh(t, "ip", "-n", l.node, "addr", "add", p.gw+"/24", "dev", labBridge)
			sh(t, "ip", "-n", l.node, "link", "set", labBridge, "up")
			sh(t, "ip", "-n", l.node, "link", "set", p.hostIf, "master", labBridge)
		} else {
			sh(t, "ip", "-n", l.node, "addr", "add", p.gw+"/24", "dev", p.hostIf)
		}
		sh(t, "ip", "-n", l.node, "link", "set", p.hostIf, "up")
		sh(t, "ip", "-n", ns, "addr", "add", p.addr.String()+"/24", "dev", "eth0")
		sh(t, "ip", "-n", ns, "link", "set", "eth0", "up")
		sh(t, "ip", "-n", ns, "route", "add", "default", "via", p.gw)
	}
	if err := inNS(l.node, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/conf/all/forwarding", []byte("1"), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	// XDP sees frames before the kernel completes an offloaded checksum;
	// a real NIC delivers complete ones, a veth must be told to.
	if err := inNS(l.client, func() error { return disableTxChecksum("eth0") }); err != nil {
		t.Fatal(err)
	}
	// Pod B's veth accepts XDP frames once its far end runs XDP.
	var podLink link.Link
	if err := inNS(l.pods["pb"], func() error {
		ifc, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Type:         ebpf.XDP,
			License:      "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()},
		})
		if err != nil {
			return err
		}
		defer prog.Close()
		podLink, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifc.Index})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = podLink.Close() })
	l.startEchoes(t)
	// The node talks to every Pod once, so that its neighbours are
	// resolved: XDP delivers directly only to a known MAC.
	if err := inNS(l.node, func() error {
		for _, p := range labPods {
			c, err := net.DialTimeout("tcp", netip.AddrPortFrom(p.addr, labPodPort).String(), 3*time.Second)
			if err != nil {
				return fmt.Errorf("node to pod %s: %w", p.name, err)
			}
			_ = c.Close()
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return l
}

// podLinks are the lab's Pod links as the speaker would find them: A's
// veth, and C's port with C's MAC behind the bridge.
func podLinks() (PodLinks, error) {
	var pl PodLinks
	for _, p := range labPods {
		if p.how != "peer" {
			continue
		}
		ifc, err := net.InterfaceByName(p.hostIf)
		if err != nil {
			return pl, err
		}
		via := ifc
		if p.bridge {
			if via, err = net.InterfaceByName(labBridge); err != nil {
				return pl, err
			}
		}
		neigh, err := exec.Command("ip", "-j", "neigh", "show", p.addr.String(), "dev", via.Name).Output()
		if err != nil {
			return pl, fmt.Errorf("neighbour %s: %w", p.addr, err)
		}
		var ns []struct {
			LLAddr string `json:"lladdr"`
		}
		if err := json.Unmarshal(neigh, &ns); err != nil || len(ns) != 1 {
			return pl, fmt.Errorf("neighbour %s on %s: %q", p.addr, via.Name, neigh)
		}
		mac, err := net.ParseMAC(ns[0].LLAddr)
		if err != nil {
			return pl, err
		}
		pl.Peers = append(pl.Peers, PodLink{Ifindex: ifc.Index, HostMAC: via.HardwareAddr, PodMAC: mac})
		if p.bridge {
			pl.Bridged = append(pl.Bridged, BridgedPod{Bridge: via.Index, MAC: mac, Port: ifc.Index})
		}
	}
	return pl, nil
}

// disableTxChecksum is `ethtool -K ifname tx off` (ETHTOOL_STXCSUM).
func disableTxChecksum(ifname string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	val := struct{ cmd, data uint32 }{cmd: 0x17} // ETHTOOL_STXCSUM, off
	var ifr struct {
		name [unix.IFNAMSIZ]byte
		data unsafe.Pointer
		_    [16]byte
	}
	copy(ifr.name[:], ifname)
	ifr.data = unsafe.Pointer(&val)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return fmt.Errorf("ethtool tx off %s: %w", ifname, errno)
	}
	runtime.KeepAlive(&val)
	return nil
}

// startEchoes runs a TCP server in every pod that answers one line with
// "<pod> <client address it saw>".
func (l *lab) startEchoes(t *testing.T) {
	t.Helper()
	var lns []net.Listener
	var wg sync.WaitGroup
	for _, p := range labPods {
		var ln net.Listener
		if err := inNS(l.pods[p.name], func() error {
			var err error
			ln, err = net.Listen("tcp", netip.AddrPortFrom(p.addr, labPodPort).String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					_ = c.SetDeadline(time.Now().Add(5 * time.Second))
					if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
						return
					}
					fmt.Fprintf(c, "%s %s\n", p.name, c.RemoteAddr())
				}()
			}
		}()
	}
	l.stopEchoes = func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
		wg.Wait()
	}
}

// request makes one connection to the VIP from the client namespace's
// thread and returns the pod that answered. It checks that the pod saw the
// client's own address and port.
func request(d net.Dialer) (string, error) {
	c, err := d.Dial("tcp", netip.AddrPortFrom(labVIP, labPort).String())
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if got := c.RemoteAddr().String(); got != netip.AddrPortFrom(labVIP, labPort).String() {
		return "", fmt.Errorf("connected to %s, not the VIP", got)
	}
	if _, err := fmt.Fprintf(c, "hello\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read reply: %w", err)
	}
	f := strings.Fields(line)
	if len(f) != 2 {
		return "", fmt.Errorf("reply %q", line)
	}
	if f[1] != c.LocalAddr().String() {
		return "", fmt.Errorf("pod %s saw %s, client is %s", f[0], f[1], c.LocalAddr())
	}
	return f[0], nil
}

// forwarded reads Ip ForwDatagrams of a namespace.
func forwarded(t *testing.T, ns string) uint64 {
	t.Helper()
	var n uint64
	err := inNS(ns, func() error {
		b, err := os.ReadFile("/proc/thread-self/net/snmp") // /proc/net follows the main thread
		if err != nil {
			return err
		}
		lines := strings.Split(string(b), "\n")
		head := strings.Fields(lines[0])
		vals := strings.Fields(lines[1])
		for i, h := range head {
			if h == "ForwDatagrams" && i < len(vals) {
				_, err := fmt.Sscan(vals[i], &n)
				return err
			}
		}
		return errors.New("no ForwDatagrams in /proc/net/snmp")
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func labService() (ServiceKey, []Backend) {
	var bs []Backend
	for _, p := range labPods {
		bs = append(bs, Backend{Addr: p.addr, Port: labPodPort, Flags: BackendLocal})
	}
	return ServiceKey{Addr: labVIP, Port: labPort, Proto: TCP}, bs
}

// setupDatapath loads, attaches to the uplink and configures the service,
// all from inside the node namespace.
func setupDatapath(ns string, opts Options) (*Datapath, error) {
	var d *Datapath
	err := inNS(ns, func() error {
		var err error
		if d, err = Load(opts); err != nil {
			return err
		}
		k, bs := labService()
		for _, step := range []func() error{
			func() error { return d.Attach(labUplink) },
			func() error { return d.EnableRedirect(labPods[1].hostIf) },
			func() error {
				pl, err := podLinks()
				if err != nil {
					return err
				}
				return d.SetPodLinks(pl)
			},
			func() error { return d.UpsertService(k, bs, ServiceLocal) },
		} {
			if err := step(); err != nil {
				return errors.Join(err, d.Close())
			}
		}
		return nil
	})
	return d, err
}

// nftCounters adds a table to ns that counts, per Pod, the packets the
// node's netfilter sees addressed to it (prerouting and forward) and the
// Pod's packets it forwards, and returns a reader of the counts.
func nftCounters(t *testing.T, ns string) func() map[string]uint64 {
	t.Helper()
	var b strings.Builder
	b.WriteString("table inet zh_count {\n")
	for _, p := range labPods {
		fmt.Fprintf(&b, "  counter pre_%s {}\n  counter fw_%s {}\n  counter from_%s {}\n", p.name, p.name, p.name)
	}
	b.WriteString("  chain count_pre {\n    type filter hook prerouting priority -300; policy accept;\n")
	for _, p := range labPods {
		fmt.Fprintf(&b, "    ip daddr %s counter name pre_%s\n", p.addr, p.name)
	}
	b.WriteString("  }\n  chain count_fw {\n    type filter hook forward priority 0; policy accept;\n")
	for _, p := range labPods {
		fmt.Fprintf(&b, "    ip daddr %s counter name fw_%s\n    ip saddr %s counter name from_%s\n", p.addr, p.name, p.addr, p.name)
	}
	b.WriteString("  }\n}\n")
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	return func() map[string]uint64 {
		t.Helper()
		out, err := exec.Command("ip", "netns", "exec", ns, "nft", "-j", "list", "counters", "table", "inet", "zh_count").Output()
		if err != nil {
			t.Fatalf("nft list counters: %v", err)
		}
		var doc struct {
			Nftables []struct {
				Counter *struct {
					Name    string `json:"name"`
					Packets uint64 `json:"packets"`
				} `json:"counter"`
			} `json:"nftables"`
		}
		if err := json.Unmarshal(out, &doc); err != nil {
			t.Fatalf("nft counters %q: %v", out, err)
		}
		m := map[string]uint64{}
		for _, e := range doc.Nftables {
			if e.Counter != nil {
				m[e.Counter.Name] = e.Counter.Packets
			}
		}
		return m
	}
}

// TestNetnsEndToEnd runs connections through the real programs to four
// Pods, each delivered another way, and checks with the node's own
// counters that the Pods delivered directly never met its routing or
// netfilter.
func TestNetnsEndToEnd(t *testing.T) {
	l := newLab(t)
	root := testPinRoot(t)
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	d, err := setupDatapath(l.node, Options{PinRoot: root, MaglevSize: testMaglevM, MaxServices: 64, MaxBackends: 256, MaxFlows: 4096})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Remove(); err != nil {
			t.Error(err)
		}
	})
	nft := nftCounters(t, l.node)

	fwdBefore := forwarded(t, l.node)
	const conns = 300
	perPod := map[string]uint64{}
	err = inNS(l.client, func() error {
		dialer := net.Dialer{Timeout: 3 * time.Second}
		for i := range conns {
			pod, err := request(dialer)
			if err != nil {
				return fmt.Errorf("connection %d: %w", i, err)
			}
			perPod[pod]++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range labPods {
		if perPod[p.name] == 0 {
			t.Errorf("pod %s got no connections: %v", p.name, perPod)
		}
	}
	k, _ := labService()
	st, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	s := st[k]
	if s.Flows != conns || s.Drops != 0 || s.CTMiss != 0 {
		t.Errorf("service counters %+v, want %d flows, no drops, no misses", s.Counters, conns)
	}
	var pkts uint64
	per := map[string]uint64{} // packets per delivery
	for _, p := range labPods {
		c := s.Backends[netip.AddrPortFrom(p.addr, labPodPort)]
		if c.Flows != perPod[p.name] {
			t.Errorf("backend %s: %d flows counted, pod saw %d connections", p.name, c.Flows, perPod[p.name])
		}
		// SYN, ACK, data, FIN/ACK at least; bounded above by retransmits.
		if c.Packets < 3*perPod[p.name] || c.Packets > 12*perPod[p.name] {
			t.Errorf("backend %s: %d packets for %d connections", p.name, c.Packets, perPod[p.name])
		}
		pkts += c.Packets
		per[p.how] += c.Packets
	}
	if pkts != s.Packets {
		t.Errorf("backend packets sum to %d, service counted %d", pkts, s.Packets)
	}
	dl, err := d.Delivery()
	if err != nil {
		t.Fatal(err)
	}
	if dl.Peer != per["peer"] || dl.PeerTC != dl.Peer || dl.Redirect != per["xdp"] || dl.Stack != per["stack"] {
		t.Errorf("delivery %+v; want peer %d (by tc as many), redirect %d, stack %d", dl, per["peer"], per["xdp"], per["stack"])
	}
	// The node's netfilter sees none of the packets to A, B and C, in
	// prerouting or forward, D's in both; nor A's and C's replies, which
	// tc on their links sends out of the uplink; B's and D's replies it
	// forwards. IP forwarding counts exactly D's packets and B's and D's
	// replies.
	cnt := nft()
	fwd := forwarded(t, l.node) - fwdBefore
	t.Logf("connections per pod %v; service %+v; delivery %+v; netfilter %v; kernel forwarded %d", perPod, s.Counters, dl, cnt, fwd)
	var stackReplies uint64
	for _, p := range labPods {
		pre, fw, from := cnt["pre_"+p.name], cnt["fw_"+p.name], cnt["from_"+p.name]
		switch {
		case p.how == "stack" && (pre != per["stack"] || fw != per["stack"]):
			t.Errorf("pod %s (by the stack): netfilter saw %d in prerouting, %d in forward; XDP passed %d", p.name, pre, fw, per["stack"])
		case p.how != "stack" && (pre != 0 || fw != 0):
			t.Errorf("pod %s (%s): netfilter saw %d packets in prerouting, %d in forward; want none", p.name, p.how, pre, fw)
		case p.how == "peer" && from != 0:
			t.Errorf("pod %s (%s): netfilter forwarded %d of its replies; want none", p.name, p.how, from)
		case p.how != "peer" && from < 3*perPod[p.name]:
			t.Errorf("pod %s (%s): netfilter forwarded %d replies for %d connections", p.name, p.how, from, perPod[p.name])
		}
		if p.how != "peer" {
			stackReplies += from
		}
	}
	if fwd != stackReplies+per["stack"] {
		t.Errorf("kernel forwarded %d packets; want pods B's and D's %d replies and D's %d", fwd, stackReplies, per["stack"])
	}
	if min := 3 * (perPod["pa"] + perPod["pc"]); dl.ReplyTC < min {
		t.Errorf("tc sent %d replies of pods A and C out of the uplink; want at least %d", dl.ReplyTC, min)
	}
}
