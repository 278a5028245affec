package datapath_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zerohop/zerohop/bpf"
	"github.com/zerohop/zerohop/e2e/echo"
	"github.com/zerohop/zerohop/e2e/lab"
)

// TestDirectToPods checks what the speaker ships by default: a packet
// balanced to a Pod on the node enters the Pod without the node's IP
// routing and netfilter, for both Pod network styles, behind NIC-like
// ingress (the lab's router and switch forward in XDP). Two Local
// Services, each with Pods on two nodes: one on nodes whose Pods have
// routed veths (Calico style), one on nodes whose Pods hang off a cni0
// bridge (Flannel style). Every request is answered, and each node's own
// counters show the balanced flows never met its routing or netfilter,
// in either direction: an nftables table counts what reaches prerouting
// and forward to the Pods and what is forwarded from them (nothing), IP
// forwarding counts nothing, and the datapath counts every balanced
// packet as sent into its Pod by tc (none through the stack) and the
// replies as sent out of the uplink by tc on the Pods' links.
func TestDirectToPods(t *testing.T) {
	const nodes = 4
	e := upEnvWith(t, lab.Options{Nodes: nodes, BridgePods: []int{3, 4}}, 4*time.Minute)
	l := e.l
	if l.Ingress() != lab.IngressXDP {
		t.Fatalf("lab ingress %q: this test is about NIC-like ingress", l.Ingress())
	}
	e.bgpSetup()

	styles := []struct {
		name       string
		vip4, vip6 string
		nodes      [2]int
	}{
		{"routed", "203.0.113.30", "2001:db8:113::30", [2]int{1, 2}},
		{"bridged", "203.0.113.31", "2001:db8:113::31", [2]int{3, 4}},
	}
	podNode := map[string]int{}
	for _, s := range styles {
		for _, n := range s.nodes {
			name := fmt.Sprintf("%s-%d", s.name, n)
			e.pod(name, s.name, n)
			podNode[name] = n
		}
		e.service(svcSpec{name: s.name, local: true, ips: []string{s.vip4, s.vip6}})
	}
	for i := 1; i <= nodes; i++ {
		e.startSpeaker(i)
	}
	for _, s := range styles {
		e.waitRoute(s.vip4, s.nodes[:]...)
		e.waitRoute(s.vip6, s.nodes[:]...)
	}
	var before [nodes + 1]nodeCounters
	for i := 1; i <= nodes; i++ {
		var pods []lab.Pod
		for _, p := range l.Pods() {
			if p.Node == i {
				pods = append(pods, p)
			}
		}
		addCounters(t, i, pods)
		before[i] = readNodeCounters(t, i)
	}
	routerBefore, err := lab.ReadForwarderCounts(lab.RouterCounts)
	if err != nil {
		t.Fatal(err)
	}

	const n = 200
	var requests uint64
	for _, s := range styles {
		for _, vip := range []string{s.vip4, s.vip6} {
			per := e.requests(t, "tcp", hostPort(vip, echo.DefaultTCPPort), n)
			for _, node := range s.nodes {
				if pod := fmt.Sprintf("%s-%d", s.name, node); per[pod] == 0 {
					t.Errorf("%s: no answer from %s: %v", vip, pod, per)
				}
			}
			udp := e.requests(t, "udp", hostPort(vip, echo.DefaultUDPPort), 20)
			requests += n + 20
			t.Logf("%s (%s Pods): %d/%d TCP and 20/20 UDP answered, client address preserved: %v %v", vip, s.name, n, n, per, udp)
		}
	}

	routerAfter, err := lab.ReadForwarderCounts(lab.RouterCounts)
	if err != nil {
		t.Fatal(err)
	}
	if fw := routerAfter.Forwarded - routerBefore.Forwarded; fw < 4*requests {
		t.Errorf("the router forwarded %d frames in XDP for %d requests: ingress was not NIC-like", fw, requests)
	}
	for i := 1; i <= nodes; i++ {
		b, a := before[i], readNodeCounters(t, i)
		d := a.minus(b)
		xdp := a.balanced - b.balanced // packets the node's XDP balanced to its Pods
		t.Logf("node %d: balanced %d packets; delivery %+v; netfilter %v; forwarded v4 %d, v6 %d", i, xdp, d.delivery, d.nft, d.fwd4, d.fwd6)
		if xdp == 0 {
			t.Errorf("node %d balanced nothing", i)
			continue
		}
		if d.delivery.Peer != xdp || d.delivery.PeerTC != xdp || d.delivery.Stack != 0 || d.delivery.Redirect != 0 {
			t.Errorf("node %d: delivery %+v for %d balanced packets: want all sent into the Pods by tc, none through the stack", i, d.delivery, xdp)
		}
		// SYN-ACK, greeting and FIN at least for each connection.
		if d.delivery.ReplyTC < xdp/2 {
			t.Errorf("node %d: tc sent %d replies out of the uplink for %d balanced packets", i, d.delivery.ReplyTC, xdp)
		}
		for _, k := range []string{"pre4", "pre6", "to4", "to6", "from4", "from6"} {
			if d.nft[k] != 0 {
				t.Errorf("node %d: netfilter counted %d packets of its Pods' flows (%s); want none", i, d.nft[k], k)
			}
		}
		if d.fwd4 != 0 || d.fwd6 != 0 {
			t.Errorf("node %d: IP forwarding counted %d (v4) and %d (v6) packets; want none", i, d.fwd4, d.fwd6)
		}
	}
	// The counters count: a client's request to a Pod's own address
	// (no VIP) is routed and filtered by the node as usual.
	before1 := readNodeCounters(t, 1)
	if _, err := e.l.Request(e.ctx, "tcp", net.JoinHostPort(podAddr(t, l, "routed-1"), fmt.Sprint(echo.DefaultTCPPort))); err != nil {
		t.Fatal(err)
	}
	if d := readNodeCounters(t, 1).minus(before1); d.nft["to4"] == 0 || d.nft["from4"] == 0 || d.fwd4 == 0 {
		t.Errorf("node 1: a request to a Pod's own address: netfilter %v, forwarded %d; want both directions counted", d.nft, d.fwd4)
	}
	t.Logf("router: %d frames forwarded in XDP, %d passed to its kernel", routerAfter.Forwarded-routerBefore.Forwarded, routerAfter.Passed-routerBefore.Passed)
}

// nodeCounters are a node's own counts of what it did with packets.
type nodeCounters struct {
	fwd4, fwd6 uint64            // Ip ForwDatagrams, Ip6 OutForwDatagrams
	nft        map[string]uint64 // addCounters' counters
	delivery   bpf.Delivery
	balanced   uint64 // packets XDP balanced for the echo ports of every Service
}

func (a nodeCounters) minus(b nodeCounters) nodeCounters {
	d := nodeCounters{fwd4: a.fwd4 - b.fwd4, fwd6: a.fwd6 - b.fwd6, nft: map[string]uint64{}}
	for k, v := range a.nft {
		d.nft[k] = v - b.nft[k]
	}
	d.delivery = bpf.Delivery{Peer: a.delivery.Peer - b.delivery.Peer, PeerTC: a.delivery.PeerTC - b.delivery.PeerTC,
		Redirect: a.delivery.Redirect - b.delivery.Redirect, Stack: a.delivery.Stack - b.delivery.Stack,
		ReplyTC: a.delivery.ReplyTC - b.delivery.ReplyTC}
	return d
}

// addCounters puts an nftables table into node i that counts packets to
// its Pods in prerouting and forward (before any other hook: priority
// -400) and the Pods' packets it forwards, per family.
func addCounters(t *testing.T, i int, pods []lab.Pod) {
	t.Helper()
	var v4, v6 []string
	for _, p := range pods {
		v4, v6 = append(v4, p.IPv4), append(v6, p.IPv6)
	}
	set4, set6 := "{ "+strings.Join(v4, ", ")+" }", "{ "+strings.Join(v6, ", ")+" }"
	script := fmt.Sprintf(`table inet zh_e2e_count {
  counter pre4 {}
  counter pre6 {}
  counter to4 {}
  counter to6 {}
  counter from4 {}
  counter from6 {}
  chain count_pre {
    type filter hook prerouting priority -400; policy accept;
    ip daddr %[1]s counter name pre4
    ip6 daddr %[2]s counter name pre6
  }
  chain count_forward {
    type filter hook forward priority -400; policy accept;
    ip daddr %[1]s counter name to4
    ip6 daddr %[2]s counter name to6
    ip saddr %[1]s counter name from4
    ip6 saddr %[2]s counter name from6
  }
}
`, set4, set6)
	cmd := exec.Command("ip", "netns", "exec", lab.NodeName(i), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("node %d: nft: %v: %s", i, err, out)
	}
}

func readNodeCounters(t *testing.T, i int) nodeCounters {
	t.Helper()
	var c nodeCounters
	err := lab.InNetns(lab.NodeName(i), func() error {
		var err error
		if c.fwd4, err = snmp("/proc/thread-self/net/snmp", "Ip:", "ForwDatagrams"); err != nil {
			return err
		}
		c.fwd6, err = snmp("/proc/thread-self/net/snmp6", "", "Ip6OutForwDatagrams")
		return err
	})
	if err != nil {
		t.Fatalf("node %d: %v", i, err)
	}
	out, err := exec.Command("ip", "netns", "exec", lab.NodeName(i), "nft", "-j", "list", "counters", "table", "inet", "zh_e2e_count").Output()
	if err != nil {
		t.Fatalf("node %d: nft list counters: %v", i, err)
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
		t.Fatalf("node %d: nft counters %q: %v", i, out, err)
	}
	c.nft = map[string]uint64{}
	for _, x := range doc.Nftables {
		if x.Counter != nil {
			c.nft[x.Counter.Name] = x.Counter.Packets
		}
	}
	snap, err := bpf.Inspect(lab.SpeakerPinRoot(i))
	if err != nil {
		t.Fatalf("node %d: %v", i, err)
	}
	c.delivery = snap.Delivery
	for _, s := range snap.Services {
		if s.Key.Port == echo.DefaultTCPPort || s.Key.Port == echo.DefaultUDPPort {
			c.balanced += s.Counters.Packets
		}
	}
	return c
}

// snmp reads one counter from /proc/net/snmp (the row of prefix, a
// header line then a value line) or snmp6 (name value lines, prefix "").
func snmp(path, prefix, name string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	lines := strings.Split(string(b), "\n")
	for i, line := range lines {
		f := strings.Fields(line)
		if prefix == "" {
			if len(f) == 2 && f[0] == name {
				return strconv.ParseUint(f[1], 10, 64)
			}
			continue
		}
		if len(f) == 0 || f[0] != prefix || i+1 >= len(lines) {
			continue
		}
		vals := strings.Fields(lines[i+1])
		for j, h := range f {
			if h == name && j < len(vals) {
				return strconv.ParseUint(vals[j], 10, 64)
			}
		}
	}
	return 0, errors.New(path + ": no " + name)
}

// podAddr is the IPv4 address of a workload's Pod.
func podAddr(t *testing.T, l *lab.Lab, workload string) string {
	t.Helper()
	for _, p := range l.Pods() {
		if p.Workload == workload {
			return p.IPv4
		}
	}
	t.Fatalf("no Pod of workload %s", workload)
	return ""
}
