package bpf

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
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
//
// Pod A's veth takes XDP redirects (an XDP program on its far end); pod B's
// does not, so both the redirect and the pass-after-rewrite paths run.

var (
	labVIP    = netip.MustParseAddr("203.0.113.10")
	labClient = netip.MustParseAddr("192.0.2.2")
	labPods   = []struct {
		name, hostIf string
		addr         netip.Addr
		gw           string
	}{
		{"pa", "zh-pa", netip.MustParseAddr("100.64.1.2"), "100.64.1.1"},
		{"pb", "zh-pb", netip.MustParseAddr("100.64.2.2"), "100.64.2.1"},
	}
)

const (
	labPort    = 80
	labPodPort = 8080
	labUplink  = "zh-up"
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
	var b [3]byte
	_, _ = rand.Read(b[:])
	s := hex.EncodeToString(b[:])
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
		sh(t, "ip", "-n", l.node, "addr", "add", p.gw+"/24", "dev", p.hostIf)
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
	// Pod A's veth accepts XDP frames once its far end runs XDP.
	var podLink link.Link
	if err := inNS(l.pods["pa"], func() error {
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
	return l
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
			func() error { return d.EnableRedirect(labPods[0].hostIf) },
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

	fwdBefore := forwarded(t, l.node)
	const conns = 200
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
	}
	if pkts != s.Packets {
		t.Errorf("backend packets sum to %d, service counted %d", pkts, s.Packets)
	}
	// Pod A's packets are redirected in XDP and never reach the node's IP
	// forwarding; pod B's and all replies do.
	fwd := forwarded(t, l.node) - fwdBefore
	a := s.Backends[netip.AddrPortFrom(labPods[0].addr, labPodPort)].Packets
	t.Logf("connections per pod %v; service %+v; kernel forwarded %d", perPod, s.Counters, fwd)
	if fwd+a/2 > 2*s.Packets {
		t.Errorf("kernel forwarded %d packets of %d+replies: pod A's were not redirected", fwd, s.Packets)
	}
}
