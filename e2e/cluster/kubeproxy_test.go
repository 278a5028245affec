package cluster_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/zerohop/zerohop/bpf"
	"github.com/zerohop/zerohop/e2e/echo"
	"github.com/zerohop/zerohop/e2e/lab"
)

// TestKubeProxyCoexistence runs kube-proxy on every node beside zerohop,
// in each of its modes, and sends traffic to a LoadBalancer IP along every
// path a cluster has: from outside (zerohop's datapath), from a Pod
// (kube-proxy, in-cluster), from a node, from a Pod of the Service itself
// (hairpin), and to the NodePort. For each it records who answered, the
// client address the Pod saw, the packets zerohop's XDP program counted
// for the VIP, and the packets addressed to the VIP that netfilter saw at
// all (a counting nftables table of the test's own at the first hooks,
// before kube-proxy's) and, in iptables mode, kube-proxy's own rule
// counters for the VIP. A path handled by both would be NATed twice; each
// must be handled by exactly one.
func TestKubeProxyCoexistence(t *testing.T) {
	var rows []row
	for _, mode := range []string{lab.KubeProxyIPTables, lab.KubeProxyNFTables} {
		t.Run(mode, func(t *testing.T) { rows = append(rows, coexistence(t, mode)...) })
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-10s %-12s %-6s %-7s %-22s %-24s %9s %13s %15s\n", "kube-proxy", "path", "family", "result", "answered by", "Pod saw client", "XDP pkts", "netfilter pkts", "kube-proxy pkts")
	for _, r := range rows {
		kp := "n/a"
		if r.kubeProxyPkts >= 0 {
			kp = strconv.Itoa(r.kubeProxyPkts)
		}
		fmt.Fprintf(&b, "%-10s %-12s %-6s %-7s %-22s %-24s %9d %13d %15s\n", r.mode, r.path, r.family, r.result, r.pod, r.saw, r.xdp, r.netfilter, kp)
	}
	t.Log(b.String())
}

// row is one line of the coexistence table.
type row struct {
	mode, path, family, result, pod, saw string
	xdp, netfilter, kubeProxyPkts        int // kubeProxyPkts -1: not measured
}

const requestsPerPath = 4

func coexistence(t *testing.T, mode string) []row {
	e := upEnv(t, mode, 4*time.Minute)
	web1 := e.pod("web-1", "web", 1)
	e.pod("web-2", "web", 2)
	client := e.pod("client-3", "client", 3)
	const vip4, vip6 = "203.0.113.10", "2001:db8:113::10"
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			// Local: the container-native path, and NodePorts that keep
			// the client's address.
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			Ports: []corev1.ServicePort{{Name: "tcp", Port: echo.DefaultTCPPort, Protocol: corev1.ProtocolTCP,
				TargetPort: intstr.FromInt32(echo.DefaultTCPPort)}},
		},
	}
	lab.LoadBalancerFor(svc, vip4, vip6)
	if err := e.l.AddService(e.ctx, svc); err != nil {
		t.Fatal(err)
	}
	if err := e.l.WaitIngress(e.ctx, "default", "web", vip4, vip6); err != nil {
		t.Fatal(err)
	}
	got, err := e.l.Kube.CoreV1().Services("default").Get(e.ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ing := range got.Status.LoadBalancer.Ingress {
		if ing.IPMode == nil || *ing.IPMode != corev1.LoadBalancerIPModeVIP {
			t.Errorf("ingress %s ipMode %v, want VIP (docs/lab.md says why)", ing.IP, ing.IPMode)
		}
	}
	nodePort := int(got.Spec.Ports[0].NodePort)
	e.startSpeakers()
	for _, v := range []string{vip4, vip6} {
		lab.WaitBGPRoute(t, e.ctx, netip.MustParseAddr(v), 30*time.Second, 1, 2)
	}
	for i := 1; i <= e.l.Nodes(); i++ {
		addProbe(t, e.ctx, i, vip4, vip6)
	}
	// kube-proxy has the Service once its rules name the VIP.
	for i := 1; i <= e.l.Nodes(); i++ {
		eventually(t, 30*time.Second, fmt.Sprintf("kube-proxy rules for %s on %s", vip4, lab.NodeName(i)), func() (bool, string) {
			out, err := rulesText(e.ctx, mode, i)
			return err == nil && strings.Contains(out, vip4), fmt.Sprint(err)
		})
	}

	c4, c6 := lab.ClientAddrs()
	n3v4, n3v6 := lab.NodeAddrs(3)
	n1v4, n1v6 := lab.NodeAddrs(1)
	type path struct {
		name, family string
		from         string // network namespace the request starts in
		to           string
		// wantSaw is the client address the Pod must see; "" when a
		// kube-proxy SNAT is expected and allowed (then any lab address).
		wantSaw string
		// viaXDP: zerohop's datapath handles it, netfilter must not see
		// the VIP; else kube-proxy handles it, XDP must not count it.
		viaXDP bool
	}
	hp := func(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }
	paths := []path{
		{"external", "IPv4", lab.ClientNS, hp(vip4, echo.DefaultTCPPort), c4.String(), true},
		{"external", "IPv6", lab.ClientNS, hp(vip6, echo.DefaultTCPPort), c6.String(), true},
		{"in-cluster", "IPv4", client.NetNS(), hp(vip4, echo.DefaultTCPPort), client.IPv4, false},
		{"in-cluster", "IPv6", client.NetNS(), hp(vip6, echo.DefaultTCPPort), client.IPv6, false},
		{"node", "IPv4", lab.NodeName(3), hp(vip4, echo.DefaultTCPPort), n3v4.String(), false},
		{"node", "IPv6", lab.NodeName(3), hp(vip6, echo.DefaultTCPPort), n3v6.String(), false},
		{"hairpin", "IPv4", web1.NetNS(), hp(vip4, echo.DefaultTCPPort), "", false},
		{"hairpin", "IPv6", web1.NetNS(), hp(vip6, echo.DefaultTCPPort), "", false},
		{"NodePort", "IPv4", lab.ClientNS, hp(n1v4.String(), nodePort), c4.String(), false},
		{"NodePort", "IPv6", lab.ClientNS, hp(n1v6.String(), nodePort), c6.String(), false},
	}
	var rows []row
	for _, p := range paths {
		r := row{mode: mode, path: p.name, family: p.family, result: "ok"}
		xdp0, nf0, kp0 := xdpPackets(t, e), probePackets(t, e), kubeProxyPackets(t, e, mode)
		var answered, saw []string
		for range requestsPerPath {
			ctx, cancel := context.WithTimeout(e.ctx, 3*time.Second)
			rep, err := echo.Request(ctx, lab.DialerIn(p.from), "tcp", p.to)
			cancel()
			if err != nil {
				r.result = "FAILED"
				t.Errorf("%s %s %s from %s to %s: %v", mode, p.name, p.family, p.from, p.to, err)
				break
			}
			answered = append(answered, e.l.Workload(rep.Pod))
			saw = append(saw, rep.ClientIP())
			if p.wantSaw != "" && rep.ClientIP() != p.wantSaw {
				r.result = "FAILED"
				t.Errorf("%s %s %s: the Pod saw client %s, want %s (NATed where it must not be)", mode, p.name, p.family, rep.ClientIP(), p.wantSaw)
			}
		}
		r.pod, r.saw = uniq(answered), uniq(saw)
		r.xdp = xdpPackets(t, e) - xdp0
		r.netfilter = probePackets(t, e) - nf0
		r.kubeProxyPkts = -1
		if kp0 >= 0 {
			r.kubeProxyPkts = kubeProxyPackets(t, e, mode) - kp0
		}
		if p.viaXDP {
			if r.xdp == 0 || r.netfilter != 0 || r.kubeProxyPkts > 0 {
				r.result = "FAILED"
				t.Errorf("%s %s %s: XDP %d packets, netfilter saw %d to the VIP, kube-proxy's rules %d; want XDP only",
					mode, p.name, p.family, r.xdp, r.netfilter, r.kubeProxyPkts)
			}
		} else if r.xdp != 0 {
			r.result = "FAILED"
			t.Errorf("%s %s %s: zerohop's XDP program counted %d packets of a path kube-proxy handles", mode, p.name, p.family, r.xdp)
		}
		if (p.name == "in-cluster" || p.name == "node" || p.name == "hairpin") && r.netfilter == 0 {
			r.result = "FAILED"
			t.Errorf("%s %s %s: netfilter never saw the VIP, so kube-proxy did not handle it", mode, p.name, p.family)
		}
		rows = append(rows, r)
	}
	return rows
}

func uniq(s []string) string {
	var out []string
	for _, v := range s {
		if !strings.Contains(","+strings.Join(out, ",")+",", ","+v+",") {
			out = append(out, v)
		}
	}
	return strings.Join(out, ",")
}

// xdpPackets sums, over every node, the packets zerohop's XDP program
// counted for the Service's VIPs, read from the pinned maps.
func xdpPackets(t *testing.T, e *env) int {
	t.Helper()
	n := 0
	for i := 1; i <= e.l.Nodes(); i++ {
		snap, err := bpf.Inspect(lab.SpeakerPinRoot(i))
		if err != nil {
			t.Fatalf("node %d datapath: %v", i, err)
		}
		for _, s := range snap.Services {
			n += int(s.Counters.Packets)
		}
	}
	return n
}

// probeTable counts, in a node's namespace, the packets addressed to the
// VIPs at the first prerouting and output hooks, before any NAT: a packet
// XDP already rewrote never shows here.
const probeTable = "zh-probe"

func addProbe(t *testing.T, ctx context.Context, node int, vip4, vip6 string) {
	t.Helper()
	rules := fmt.Sprintf(`table inet %[1]s {
	chain pre { type filter hook prerouting priority -400; ip daddr %[2]s counter; ip6 daddr %[3]s counter; }
	chain out { type filter hook output priority -400; ip daddr %[2]s counter; ip6 daddr %[3]s counter; }
}
`, probeTable, vip4, vip6)
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", lab.NodeName(node), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("probe table on %s: %v: %s", lab.NodeName(node), err, out)
	}
}

var packetsRE = regexp.MustCompile(`packets (\d+)`)

func probePackets(t *testing.T, e *env) int {
	t.Helper()
	n := 0
	for i := 1; i <= e.l.Nodes(); i++ {
		out, err := exec.CommandContext(e.ctx, "ip", "netns", "exec", lab.NodeName(i), "nft", "list", "table", "inet", probeTable).CombinedOutput()
		if err != nil {
			t.Fatalf("probe table on %s: %v: %s", lab.NodeName(i), err, out)
		}
		for _, m := range packetsRE.FindAllStringSubmatch(string(out), -1) {
			v, _ := strconv.Atoi(m[1])
			n += v
		}
	}
	return n
}

// rulesText is kube-proxy's ruleset on a node.
func rulesText(ctx context.Context, mode string, node int) (string, error) {
	var argv []string
	switch mode {
	case lab.KubeProxyIPTables:
		argv = []string{"sh", "-c", "iptables-save -c -t nat; ip6tables-save -c -t nat"}
	default:
		argv = []string{"sh", "-c", "nft list table ip kube-proxy; nft list table ip6 kube-proxy"}
	}
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", lab.NodeName(node)}, argv...)...).CombinedOutput()
	return string(out), err
}

// iptablesVIPRule matches kube-proxy's iptables rules that send a VIP's
// traffic to the Service, with their [packets:bytes] counters.
var iptablesVIPRule = regexp.MustCompile(`^\[(\d+):\d+\] -A KUBE-SERVICES -d (203\.0\.113\.|2001:db8:113::)\S+ `)

// kubeProxyPackets sums kube-proxy's own counters for the VIP rules over
// every node (iptables mode; nftables mode keeps no counters: -1).
func kubeProxyPackets(t *testing.T, e *env, mode string) int {
	t.Helper()
	if mode != lab.KubeProxyIPTables {
		return -1
	}
	n := 0
	for i := 1; i <= e.l.Nodes(); i++ {
		out, err := rulesText(e.ctx, mode, i)
		if err != nil {
			t.Fatalf("kube-proxy rules on %s: %v: %s", lab.NodeName(i), err, out)
		}
		for _, line := range strings.Split(out, "\n") {
			if m := iptablesVIPRule.FindStringSubmatch(line); m != nil {
				v, _ := strconv.Atoi(m[1])
				n += v
			}
		}
	}
	return n
}
