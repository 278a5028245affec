package bpf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Two-node lab for Cluster mode, all in namespaces named zh-*:
//
//	client 192.0.2.2 ── 192.0.2.1 router 198.51.100.1 ── 198.51.100.2  node A (XDP, tc)
//	                                     198.51.100.17 ── 198.51.100.18 node B (XDP, tc)
//	                                                        100.64.2.1 ── 100.64.2.2 pod
//
// The router sends the VIPs to node A; the only backend is the Pod on
// node B. A encapsulates, B decapsulates and the Pod's reply goes from B
// through the router to the client: it never crosses A. All links have
// MTU 1500 and the nodes are told the path MTU is 1500, so TCP only works
// if the MSS is clamped. The UDP VIP's route on the client has MTU 1400,
// so the client fragments large datagrams to a size that fits once
// encapsulated.
var (
	clVIPTCP  = netip.MustParseAddr("203.0.113.10")
	clVIPUDP  = netip.MustParseAddr("203.0.113.11")
	clNodeA   = netip.MustParseAddr("198.51.100.2")
	clNodeB   = netip.MustParseAddr("198.51.100.18")
	clSourceA = netip.MustParsePrefix("198.51.100.8/30")
	clPod     = netip.MustParseAddr("100.64.2.2")
)

type clusterLab struct {
	client, router, a, b, pod string
}

func newClusterLab(t *testing.T) *clusterLab {
	t.Helper()
	requireRoot(t)
	s := netnsSuffix()
	l := &clusterLab{client: "zh-ccli-" + s, router: "zh-crt-" + s, a: "zh-cna-" + s, b: "zh-cnb-" + s, pod: "zh-cpod-" + s}
	all := []string{l.client, l.router, l.a, l.b, l.pod}
	t.Cleanup(func() {
		for _, ns := range all {
			_ = exec.Command("ip", "netns", "del", ns).Run()
		}
	})
	for _, ns := range all {
		sh(t, "ip", "netns", "add", ns)
		sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	veth := func(ns1, if1, addr1, ns2, if2, addr2 string) {
		sh(t, "ip", "-n", ns1, "link", "add", if1, "type", "veth", "peer", "name", if2, "netns", ns2)
		sh(t, "ip", "-n", ns1, "addr", "add", addr1, "dev", if1)
		sh(t, "ip", "-n", ns2, "addr", "add", addr2, "dev", if2)
		sh(t, "ip", "-n", ns1, "link", "set", if1, "up")
		sh(t, "ip", "-n", ns2, "link", "set", if2, "up")
	}
	veth(l.client, "eth0", "192.0.2.2/24", l.router, "zh-r0", "192.0.2.1/24")
	veth(l.router, "zh-ra", "198.51.100.1/28", l.a, "zh-up", "198.51.100.2/28")
	veth(l.router, "zh-rb", "198.51.100.17/28", l.b, "zh-up", "198.51.100.18/28")
	veth(l.b, "zh-pb", "100.64.2.1/24", l.pod, "eth0", "100.64.2.2/24")
	sh(t, "ip", "-n", l.client, "route", "add", "default", "via", "192.0.2.1")
	sh(t, "ip", "-n", l.client, "route", "add", clVIPUDP.String()+"/32", "via", "192.0.2.1", "mtu", "1400")
	sh(t, "ip", "-n", l.router, "route", "add", "203.0.113.0/24", "via", clNodeA.String())
	sh(t, "ip", "-n", l.a, "route", "add", "default", "via", "198.51.100.1")
	sh(t, "ip", "-n", l.b, "route", "add", "default", "via", "198.51.100.17")
	sh(t, "ip", "-n", l.pod, "route", "add", "default", "via", "100.64.2.1")
	for _, ns := range []string{l.router, l.a, l.b} {
		if err := inNS(ns, func() error {
			for _, f := range []string{"net/ipv4/conf/all/forwarding", "net/ipv4/conf/all/rp_filter", "net/ipv4/conf/default/rp_filter"} {
				v := "0"
				if strings.HasSuffix(f, "forwarding") {
					v = "1"
				}
				if err := os.WriteFile("/proc/sys/"+f, []byte(v), 0o644); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := inNS(l.client, func() error { return disableTxChecksum("eth0") }); err != nil {
		t.Fatal(err)
	}
	// A veth delivers XDP_TX frames only when its peer runs XDP.
	var rl link.Link
	if err := inNS(l.router, func() error {
		ifc, err := net.InterfaceByName("zh-ra")
		if err != nil {
			return err
		}
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Type: ebpf.XDP, License: "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()},
		})
		if err != nil {
			return err
		}
		defer prog.Close()
		rl, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifc.Index})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rl.Close() })
	return l
}

// clusterNode loads and attaches a datapath in a node namespace.
func clusterNode(t *testing.T, ns string, node NodeConfig, peers []netip.Prefix, fl BackendFlags) *Datapath {
	t.Helper()
	root := testPinRoot(t)
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	var d *Datapath
	err := inNS(ns, func() error {
		var err error
		d, err = Load(Options{PinRoot: root, MaglevSize: testMaglevM, MaxServices: 64, MaxBackends: 256, MaxFlows: 4096})
		if err != nil {
			return err
		}
		be := Backend{Addr: clPod, Node: clNodeB, Flags: fl}
		tcpBE, udpBE := be, be
		tcpBE.Port, udpBE.Port = 8080, 9000
		return errors.Join(
			d.SetNode(node),
			d.SetPeers(peers),
			d.UpsertService(ServiceKey{clVIPTCP, 80, TCP}, []Backend{tcpBE}, ServiceCluster),
			d.UpsertService(ServiceKey{clVIPUDP, 9000, UDP}, []Backend{udpBE}, ServiceCluster),
			d.Attach("zh-up"),
		)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Remove(); err != nil {
			t.Error(err)
		}
	})
	return d
}

// replyCounter counts IPv4 frames from a VIP or the Pod that arrive on
// an interface (an AF_PACKET socket: it sees what the kernel receives,
// which is where a reply routed through the node would show up).
func replyCounter(t *testing.T, ns, ifname string) (stop func() (replies, frames uint64)) {
	t.Helper()
	var fd int
	if err := inNS(ns, func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_ALL))
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto); err != nil {
			return err
		}
		tv := unix.Timeval{Usec: 100_000}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifc.Index})
	}); err != nil {
		t.Fatal(err)
	}
	var replies, frames atomic.Uint64
	var done atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		deadline := time.Now().Add(2 * time.Minute)
		for !done.Load() && time.Now().Before(deadline) {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil || n < 34 {
				continue
			}
			frames.Add(1)
			if binary.BigEndian.Uint16(buf[12:]) != 0x0800 {
				continue
			}
			src := netip.AddrFrom4([4]byte(buf[26:30]))
			if src == clVIPTCP || src == clVIPUDP || src == clPod {
				replies.Add(1)
			}
		}
	}()
	return func() (uint64, uint64) {
		done.Store(true)
		wg.Wait()
		_ = unix.Close(fd)
		return replies.Load(), frames.Load()
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// podServers runs, in the Pod, a TCP server that answers a line with
// "<client address> <line length>" and a UDP server that reports each
// datagram's source and length on a channel.
func podServers(t *testing.T, ns string) <-chan string {
	t.Helper()
	var ln net.Listener
	var pc net.PacketConn
	if err := inNS(ns, func() error {
		var err error
		if ln, err = net.Listen("tcp", netip.AddrPortFrom(clPod, 8080).String()); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp", netip.AddrPortFrom(clPod, 9000).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	dgrams := make(chan string, 16)
	var wg sync.WaitGroup
	wg.Add(2)
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
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					return
				}
				fmt.Fprintf(c, "%s %d\n", c.RemoteAddr(), len(line))
			}()
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			select {
			case dgrams <- fmt.Sprintf("%s %d", from, n):
			default:
			}
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		_ = pc.Close()
		wg.Wait()
	})
	return dgrams
}

// TestNetnsClusterDSR: client -> node A -> (IP-in-IP) -> node B -> Pod,
// and the reply straight from B to the client.
func TestNetnsClusterDSR(t *testing.T) {
	l := newClusterLab(t)
	a := clusterNode(t, l.a, NodeConfig{Addr4: clNodeA, Source4: clSourceA, PathMTU: 1500}, []netip.Prefix{netip.PrefixFrom(clNodeB, 32)}, BackendRemote)
	b := clusterNode(t, l.b, NodeConfig{Addr4: clNodeB, PathMTU: 1500}, []netip.Prefix{clSourceA, netip.PrefixFrom(clNodeA, 32)}, BackendLocal)
	dgrams := podServers(t, l.pod)
	stop := replyCounter(t, l.a, "zh-up")

	const conns = 200
	big := strings.Repeat("x", 3000) // several full-size segments: needs the clamped MSS
	err := inNS(l.client, func() error {
		dialer := net.Dialer{Timeout: 3 * time.Second}
		for i := range conns {
			line := "hello"
			if i%10 == 0 {
				line = big
			}
			if err := clusterRequest(dialer, line); err != nil {
				return fmt.Errorf("connection %d: %w", i, err)
			}
		}
		// A datagram larger than the path MTU, fragmented by the client.
		c, err := net.Dial("udp", netip.AddrPortFrom(clVIPUDP, 9000).String())
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(make([]byte, 4000))
		if err != nil {
			return err
		}
		select {
		case got := <-dgrams:
			if want := fmt.Sprintf("%s %d", c.LocalAddr(), 4000); got != want {
				return fmt.Errorf("pod got datagram %q, want %q", got, want)
			}
		case <-time.After(3 * time.Second):
			return errors.New("fragmented datagram never reached the pod whole")
		}
		return nil
	})
	replies, frames := stop()
	if err != nil {
		t.Fatal(err)
	}
	ea, err := a.Events()
	if err != nil {
		t.Fatal(err)
	}
	eb, err := b.Events()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("node A events %+v; node B events %+v; frames seen by A's stack %d", ea, eb, frames)
	if replies != 0 {
		t.Errorf("%d reply packets crossed node A; want direct return from B", replies)
	}
	// SYN, ACK, data, FIN, ACK at least; three fragments.
	if ea.Encap < 4*conns+3 || eb.Decap < 4*conns+3 {
		t.Errorf("A encapsulated %d, B decapsulated %d packets; want at least %d", ea.Encap, eb.Decap, 4*conns+3)
	}
	if ea.FragFirst != 1 || ea.FragHit < 2 || eb.FragFirst != 1 || eb.FragHit < 2 {
		t.Errorf("fragments: A %d first/%d followed, B %d/%d", ea.FragFirst, ea.FragHit, eb.FragFirst, eb.FragHit)
	}
	if eb.MSSClamped < conns || eb.DecapRefused != 0 {
		t.Errorf("B clamped %d SYN-ACKs (want >= %d), refused %d", eb.MSSClamped, conns, eb.DecapRefused)
	}
}

// clusterRequest sends one line through the VIP and checks that the Pod
// saw the client's own address and the whole line.
func clusterRequest(d net.Dialer, line string) error {
	c, err := d.Dial("tcp", netip.AddrPortFrom(clVIPTCP, 80).String())
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\n", line); err != nil {
		return err
	}
	reply, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read reply: %w", err)
	}
	if want := fmt.Sprintf("%s %d\n", c.LocalAddr(), len(line)+1); reply != want {
		return fmt.Errorf("pod answered %q, want %q", reply, want)
	}
	return nil
}
