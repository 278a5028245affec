package observability_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/e2e/echo"
	"github.com/zerohop/zerohop/e2e/lab"
	"github.com/zerohop/zerohop/internal/kubescheme"
	"github.com/zerohop/zerohop/status"
)

const (
	systemNS     = "zerohop-system"
	svcName      = "obs"
	httpPort     = 80
	speakerPort  = 7474 // speakers' metrics, on each node namespace's loopback
	tcpRequests  = 120  // per VIP
	httpRequests = 40   // per VIP
	nodes        = 3
)

// TestStatusAndMetrics checks that status counts equal the
// echo servers' counts exactly, and every metrics endpoint parses.
func TestStatusAndMetrics(t *testing.T) {
	start := time.Now()
	// BFD: its metrics are part of what the dashboard shows, and it
	// makes the node cut below quick to see.
	l := lab.Up(t, lab.Options{Nodes: nodes, BFD: true})
	t.Logf("lab up in %s", time.Since(start).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ctrllog.SetLogger(logr.Discard())
	c, err := client.New(l.RESTConfig, client.Options{Scheme: kubescheme.New()})
	if err != nil {
		t.Fatal(err)
	}
	logDir := t.TempDir()
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		ents, _ := os.ReadDir(logDir)
		for _, e := range ents {
			b, _ := os.ReadFile(filepath.Join(logDir, e.Name()))
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			t.Logf("%s (tail):\n%s", e.Name(), b)
		}
	})

	setup(t, ctx, c)
	pods := map[string]int{"obs-1": 1, "obs-2": 2}
	for name, node := range pods {
		if _, err := l.AddPod(ctx, lab.PodSpec{Name: name, Node: node, Labels: map[string]string{"app": svcName}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.AddService(ctx, service()); err != nil {
		t.Fatal(err)
	}

	// Metrics as the chart serves them: HTTPS (self-signed), each scrape's
	// token reviewed by the API server.
	ctrlMetrics := freeLoopbackAddr(t)
	startProc(t, logDir, "controller.log", []string{zerohopBin, "controller", "--kubeconfig", l.APIServer().Kubeconfig,
		"--leader-election-namespace", systemNS, "--metrics-bind-address", ctrlMetrics, "--health-probe-bind-address", "0"})
	for i := 1; i <= nodes; i++ {
		cmd, err := l.StartSpeaker(zerohopBin, i, systemNS, filepath.Join(logDir, fmt.Sprintf("speaker-node%d.log", i)),
			[]string{"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", speakerPort)}, []string{"ZEROHOP_MEMBERLIST_KEY=zh-observability-key0"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { stop(cmd) })
	}

	vips := waitVIPs(t, ctx, c)
	refused := refusedService(t, ctx, c)
	for _, vip := range vips {
		waitRoute(t, ctx, vip, 1, 2)
	}
	waitSessions(t, ctx, c)
	t.Logf("VIPs %v routed via nodes 1 and 2, all sessions established, after %s", vips, time.Since(start).Round(time.Millisecond))

	// The lab checks each Pod's echo server when it starts: count from here.
	base := map[string]echo.Counts{}
	for name := range pods {
		base[name] = echoCounts(t, ctx, l, name)
	}

	// Traffic from the client: TCP echo and HTTP, through both VIPs.
	answered := map[string]map[string]int{} // pod -> proto -> answers
	for _, vip := range vips {
		for _, r := range []struct {
			proto string
			port  int
			n     int
		}{{"tcp", echo.DefaultTCPPort, tcpRequests}, {"http", httpPort, httpRequests}} {
			addr := net.JoinHostPort(vip.String(), fmt.Sprint(r.port))
			for i := range r.n {
				rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
				rep, err := l.Request(rctx, r.proto, addr)
				rcancel()
				if err != nil {
					t.Fatalf("request %d/%d %s %s: %v", i+1, r.n, r.proto, addr, err)
				}
				name := l.Workload(rep.Pod)
				if answered[name] == nil {
					answered[name] = map[string]int{}
				}
				answered[name][r.proto]++
			}
		}
	}
	t.Logf("answers per Pod: %v", answered)

	// What the Pods themselves counted during the traffic.
	served := map[string]echo.Counts{}
	for name := range pods {
		now := echoCounts(t, ctx, l, name)
		cnt := echo.Counts{TCP: now.TCP - base[name].TCP, UDP: now.UDP - base[name].UDP, HTTP: now.HTTP - base[name].HTTP}
		served[name] = cnt
		if int(cnt.TCP) != answered[name]["tcp"] || int(cnt.HTTP) != answered[name]["http"] {
			t.Fatalf("pod %s counted %+v, the client got %v from it", name, cnt, answered[name])
		}
		if cnt.TCP == 0 || cnt.HTTP == 0 {
			t.Fatalf("pod %s served %+v: want both Pods to take TCP and HTTP traffic (ECMP by ports)", name, cnt)
		}
	}

	t.Run("status", func(t *testing.T) {
		for i := 1; i <= nodes; i++ {
			r := runStatus(t, ctx, l, i)
			checkStatus(t, r, i, vips, served, pods, l.Workload)
		}
		// The table for people, as it looks on node 1.
		out, err := exec.CommandContext(ctx, lab.NetnsCommand(lab.NodeName(1))[0], append(lab.NetnsCommand(lab.NodeName(1))[1:],
			zerohopBin, "status", "--bpf-pin-root", lab.SpeakerPinRoot(1), "--kubeconfig", l.APIServer().Kubeconfig,
			"--node-name", lab.NodeName(1))...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "BGP SESSIONS") {
			t.Errorf("zerohop status on node 1: %v\n%s", err, out)
		}
		t.Logf("zerohop status on %s:\n%s", lab.NodeName(1), out)
		// --node: the API's view alone, no maps.
		r := runStatusAPIOnly(t, ctx, l, lab.NodeName(1))
		if r.Sources.Datapath != "" || r.Datapath != nil || !r.Sources.API {
			t.Errorf("--node: sources %+v, datapath %v; want the API alone", r.Sources, r.Datapath)
		}
		if len(r.Sessions) != 2 {
			t.Errorf("--node %s: sessions %+v, want that node's 2", lab.NodeName(1), r.Sessions)
		}
	})

	reader, stranger := metricsTokens(t, ctx, l)
	ctrlURL := "https://" + ctrlMetrics + "/metrics"
	speakerURL := fmt.Sprintf("https://127.0.0.1:%d/metrics", speakerPort)

	t.Run("metrics-auth", func(t *testing.T) {
		// The chart's own rule for scraping, rendered by helm: a token
		// of a ServiceAccount bound to it reads every endpoint, no token
		// or a token without it reads none.
		for i := 0; i <= nodes; i++ {
			who, url := "controller", ctrlURL
			var dial func(context.Context, string, string) (net.Conn, error) // the root namespace
			if i > 0 {
				who, url, dial = lab.NodeName(i), speakerURL, lab.DialerIn(lab.NodeName(i))
			}
			for _, tc := range []struct {
				name, token string
				want        int
			}{{"no token", "", http.StatusUnauthorized}, {"a token without the role", stranger, http.StatusForbidden},
				{"the metrics-reader role", reader, http.StatusOK}} {
				code, body := fetch(t, ctx, dial, url, tc.token)
				if code != tc.want {
					t.Errorf("%s, %s: HTTP %d, want %d", who, tc.name, code, tc.want)
				}
				if code != http.StatusOK && strings.Contains(body, "zerohop_") {
					t.Errorf("%s, %s: refused, but the body holds metrics", who, tc.name)
				}
			}
			// Plain HTTP is not served on the port at all.
			if code, _ := fetch(t, ctx, dial, strings.Replace(url, "https://", "http://", 1), reader); code != http.StatusBadRequest {
				t.Errorf("%s: plain HTTP answered %d, want 400 (the server speaks TLS only)", who, code)
			}
			t.Logf("%s: no token 401, no role 403, metrics-reader 200, plain HTTP 400", who)
		}
	})

	// Every endpoint's families and label names, for the dashboard check.
	seen := exported{}

	t.Run("metrics", func(t *testing.T) {
		ctrl := scrape(t, ctx, nil, ctrlURL, reader)
		seen.add(ctrl)
		for _, name := range []string{"zerohop_pool_addresses", "zerohop_pool_addresses_assigned",
			"zerohop_allocations_total", "zerohop_service_reconcile_seconds"} {
			need(t, "controller", ctrl, name)
		}
		assigned := sumWhere(ctrl["zerohop_pool_addresses_assigned"], map[string]string{"pool": "obs"})
		if assigned != 2 {
			t.Errorf("controller: zerohop_pool_addresses_assigned{pool=obs} sums to %v, want 2 (one per family)", assigned)
		}
		if got := sumWhere(ctrl["zerohop_allocations_total"], map[string]string{"pool": "obs"}); got != 2 {
			t.Errorf("controller: zerohop_allocations_total{pool=obs} = %v, want 2", got)
		}
		if got := sumWhere(ctrl["zerohop_refusals_total"], map[string]string{"reason": "IPNotInPool"}); got < 1 {
			t.Errorf("controller: zerohop_refusals_total{reason=IPNotInPool} = %v, want at least 1 (Service %s)", got, refused)
		}
		for _, vip := range vips {
			if got := sumWhere(ctrl["zerohop_vip_announcing_nodes"], map[string]string{"vip": vip.String(), "service": "default/" + svcName}); got != 2 {
				t.Errorf("controller: zerohop_vip_announcing_nodes{vip=%s} = %v, want 2 (nodes 1 and 2)", vip, got)
			}
		}
		for i := 1; i <= nodes; i++ {
			who := lab.NodeName(i)
			m := scrape(t, ctx, lab.DialerIn(who), speakerURL, reader)
			seen.add(m)
			for _, name := range []string{"zerohop_speaker_bgp_session_up", "zerohop_speaker_bgp_session_flaps_total",
				"zerohop_speaker_bgp_announced_prefixes", "zerohop_speaker_datapath_entries",
				"zerohop_speaker_datapath_update_seconds", "zerohop_speaker_l2_ownership_changes_total",
				"zerohop_speaker_l2_announcements_sent_total", "zerohop_xdp_packets_total", "zerohop_xdp_bytes_total",
				"zerohop_xdp_flows_total", "zerohop_xdp_drops_total", "zerohop_xdp_events_total"} {
				need(t, who, m, name)
			}
			for _, s := range m["zerohop_speaker_bgp_session_up"].GetMetric() {
				if s.GetGauge().GetValue() != 1 {
					t.Errorf("%s: %s = %v, want 1", who, labelString(s), s.GetGauge().GetValue())
				}
			}
			if n := len(m["zerohop_speaker_bgp_session_up"].GetMetric()); n != 2 {
				t.Errorf("%s: %d zerohop_speaker_bgp_session_up series, want 2", who, n)
			}
			// Every connection through a VIP is one flow on the node that
			// took it: the node's flows equal what its Pod served.
			var want uint64
			for name, node := range pods {
				if node == i {
					want = served[name].TCP + served[name].HTTP
				}
			}
			var flows float64
			for _, vip := range vips {
				flows += sumWhere(m["zerohop_xdp_flows_total"], map[string]string{"vip": vip.String()})
			}
			if uint64(flows) != want {
				t.Errorf("%s: zerohop_xdp_flows_total for %v = %v, its Pod served %d", who, vips, flows, want)
			}
			drops := sumWhere(m["zerohop_xdp_drops_total"], nil)
			if drops != 0 {
				t.Errorf("%s: zerohop_xdp_drops_total = %v, want 0", who, drops)
			}
			t.Logf("%s: zerohop_xdp_flows_total %v = Pod's %d; sessions up; %d families", who, flows, want, len(m))
		}
	})

	t.Run("dashboard-and-alerts", func(t *testing.T) {
		if len(seen) == 0 {
			t.Fatal("no scrape to check against (the metrics subtest failed)")
		}
		queries := dashboardQueries(t, dashboardFile)
		rules := ruleQueries(t, rulesFile)
		for what, expr := range rules {
			queries[what] = expr
		}
		for _, what := range slices.Sorted(maps.Keys(queries)) {
			if bad := seen.check(queries[what]); len(bad) > 0 {
				t.Errorf("%s names what zerohop does not export: %s\n  %s", what, strings.Join(bad, ", "), queries[what])
			}
		}
		t.Logf("%d dashboard queries and %d alert expressions checked against %d exported families", len(queries)-len(rules), len(rules), len(seen))
	})

	t.Run("conditions", func(t *testing.T) {
		nodeCutConditions(t, ctx, l, c, vips)
	})

	t.Run("events", func(t *testing.T) {
		// Nodes 1 and 2 announce the Service and each says so once.
		deadline := time.Now().Add(30 * time.Second)
		for {
			got := announcedNodes(t, ctx, l)
			if slices.Equal(got, []string{lab.NodeName(1), lab.NodeName(2)}) {
				t.Logf("Announced events from %v", got)
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("Announced events on default/%s from %v, want nodes 1 and 2", svcName, got)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
}

// echoCounts asks a Pod's echo server what it served, from the Pod's node
// directly (not through the VIP, so the question is not counted).
func echoCounts(t *testing.T, ctx context.Context, l *lab.Lab, name string) echo.Counts {
	t.Helper()
	p, ok := l.PodByName(name)
	if !ok {
		t.Fatalf("no pod %s", name)
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cnt, err := echo.FetchCounts(rctx, lab.DialerIn(lab.NodeName(p.Node)), net.JoinHostPort(p.IPv4, fmt.Sprint(echo.DefaultHTTPPort)))
	if err != nil {
		t.Fatalf("pod %s: %v", name, err)
	}
	return cnt
}

func setup(t *testing.T, ctx context.Context, c client.Client) {
	t.Helper()
	r4, r6 := lab.RouterNodeAddrs()
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: systemNS}},
		&v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: svcName},
			Spec: v1alpha1.IPAddressPoolSpec{Addresses: []v1alpha1.Address{"203.0.113.0/26", "2001:db8:113::/120"}, AvoidBuggyIPs: true}},
		&v1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: svcName},
			Spec: v1alpha1.BGPAdvertisementSpec{IPAddressPools: []string{svcName}}},
	}
	objs = append(objs, &v1alpha1.BFDProfile{ObjectMeta: metav1.ObjectMeta{Name: "fast"}})
	for name, addr := range map[string]netip.Addr{"router-v4": r4, "router-v6": r6} {
		objs = append(objs, &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.BGPPeerSpec{
			MyASN: lab.DefaultNodeASN, PeerASN: lab.DefaultRouterASN, PeerAddress: addr.String(), BFDProfile: "fast",
			HoldTime: &metav1.Duration{Duration: 9 * time.Second}, ConnectTime: &metav1.Duration{Duration: time.Second}}})
	}
	for _, o := range objs {
		if err := c.Create(ctx, o); err != nil {
			t.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
	}
	// The router spreads its ECMP by ports, so both nodes get traffic.
	for _, s := range []string{"net.ipv4.fib_multipath_hash_policy=1", "net.ipv6.fib_multipath_hash_policy=1"} {
		if out, err := exec.CommandContext(ctx, "ip", "netns", "exec", lab.RouterNS, "sysctl", "-qw", s).CombinedOutput(); err != nil {
			t.Fatalf("sysctl %s: %v: %s", s, err, out)
		}
	}
}

func service() *corev1.Service {
	dual := corev1.IPFamilyPolicyPreferDualStack
	class := v1alpha1.LoadBalancerClass
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: svcName},
		Spec: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeLoadBalancer,
			LoadBalancerClass:     &class,
			Selector:              map[string]string{"app": svcName},
			IPFamilyPolicy:        &dual,
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			Ports: []corev1.ServicePort{
				{Name: "tcp", Port: echo.DefaultTCPPort, TargetPort: intstr.FromInt32(echo.DefaultTCPPort), Protocol: corev1.ProtocolTCP},
				{Name: "http", Port: httpPort, TargetPort: intstr.FromInt32(echo.DefaultHTTPPort), Protocol: corev1.ProtocolTCP},
			},
		},
	}
}

// checkStatus compares node i's status report with what the Pods served.
// workload names a Pod's lab workload, the keys of pods and served.
func checkStatus(t *testing.T, r status.Report, i int, vips []netip.Addr, served map[string]echo.Counts, pods map[string]int, workload func(string) string) {
	t.Helper()
	who := lab.NodeName(i)
	if r.Sources.Datapath != lab.SpeakerPinRoot(i) || !r.Sources.API || r.Datapath == nil {
		t.Fatalf("%s: sources %+v: want the datapath and the API", who, r.Sources)
	}
	flows := map[string]map[uint16]uint64{} // workload -> service port -> flows
	for _, vip := range vips {
		v := findVIP(r, vip.String())
		if v == nil {
			t.Fatalf("%s: no VIP %s in %+v", who, vip, r.VIPs)
		}
		if v.Service != "default/"+svcName || v.Pool != svcName || v.Mode != "BGP" || v.TrafficPolicy != "Local" {
			t.Errorf("%s: VIP %s: service %q pool %q mode %q policy %q; want default/%s, %s, BGP, Local",
				who, vip, v.Service, v.Pool, v.Mode, v.TrafficPolicy, svcName, svcName)
		}
		var by []string
		for _, a := range v.AnnouncedBy {
			by = append(by, a.Node)
			if len(a.Peers) == 0 {
				t.Errorf("%s: VIP %s announced by %s to no peer", who, vip, a.Node)
			}
		}
		if !slices.Equal(by, []string{lab.NodeName(1), lab.NodeName(2)}) {
			t.Errorf("%s: VIP %s announced by %v, want nodes 1 and 2", who, vip, by)
		}
		if len(v.Ports) != 2 {
			t.Errorf("%s: VIP %s has ports %+v, want 80/tcp and 9000/tcp", who, vip, v.Ports)
		}
		for _, p := range v.Ports {
			if p.Drops != (status.Drops{}) {
				t.Errorf("%s: %s:%d drops %+v, want none", who, vip, p.Port, p.Drops)
			}
			if len(p.Backends) != 2 {
				t.Errorf("%s: %s:%d backends %+v, want both Pods listed", who, vip, p.Port, p.Backends)
			}
			for _, b := range p.Backends {
				if b.State != "ready" || b.Pod == "" {
					t.Errorf("%s: %s:%d backend %+v: want a ready Pod", who, vip, p.Port, b)
				}
				local := b.Node == who
				if b.InDatapath != local {
					t.Errorf("%s: %s:%d backend %s on %s: inDatapath %v (Local mode holds this node's Pods only)", who, vip, p.Port, b.Address, b.Node, b.InDatapath)
				}
				name := workload(b.Pod)
				if flows[name] == nil {
					flows[name] = map[uint16]uint64{}
				}
				flows[name][p.Port] += b.Flows
			}
		}
	}
	for name, node := range pods {
		var want echo.Counts
		if node == i {
			want = served[name]
		}
		gotTCP, gotHTTP := flows[name][echo.DefaultTCPPort], flows[name][httpPort]
		if gotTCP != want.TCP || gotHTTP != want.HTTP {
			t.Errorf("%s: status shows %s with %d TCP and %d HTTP flows; the Pod served %d and %d (this node's share)",
				who, name, gotTCP, gotHTTP, want.TCP, want.HTTP)
		} else if node == i {
			t.Logf("%s: %s flows tcp %d http %d == echo server's tcp %d http %d", who, name, gotTCP, gotHTTP, want.TCP, want.HTTP)
		}
	}
	if len(r.Sessions) != 2 {
		t.Errorf("%s: sessions %+v, want this node's 2", who, r.Sessions)
	}
	for _, s := range r.Sessions {
		if s.Node != who || s.State != "established" || s.Since == "" {
			t.Errorf("%s: session %+v: want established on this node", who, s)
		}
		if i != 3 && s.PrefixesSent == 0 {
			t.Errorf("%s: session %+v sends no prefixes", who, s)
		}
	}
}

func findVIP(r status.Report, addr string) *status.VIP {
	for i := range r.VIPs {
		if r.VIPs[i].Address == addr {
			return &r.VIPs[i]
		}
	}
	return nil
}

// runStatus runs `zerohop status -o json` inside node i's namespace, as on
// the node itself.
func runStatus(t *testing.T, ctx context.Context, l *lab.Lab, i int) status.Report {
	t.Helper()
	args := append(lab.NetnsCommand(lab.NodeName(i)), zerohopBin, "status", "-o", "json",
		"--bpf-pin-root", lab.SpeakerPinRoot(i), "--kubeconfig", l.APIServer().Kubeconfig, "--node-name", lab.NodeName(i))
	return statusJSON(t, ctx, args)
}

func runStatusAPIOnly(t *testing.T, ctx context.Context, l *lab.Lab, node string) status.Report {
	t.Helper()
	return statusJSON(t, ctx, []string{zerohopBin, "status", "-o", "json", "--kubeconfig", l.APIServer().Kubeconfig, "--node", node})
}

func statusJSON(t *testing.T, ctx context.Context, args []string) status.Report {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(cctx, args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var r status.Report
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("%s: output is not a status report: %v\n%s", strings.Join(args, " "), err, stdout.String())
	}
	return r
}

// waitVIPs waits for the controller to give the Service one IP per family.
func waitVIPs(t *testing.T, ctx context.Context, c client.Client) []netip.Addr {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var svc corev1.Service
		if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: svcName}, &svc); err != nil {
			t.Fatal(err)
		}
		var out []netip.Addr
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			if a, err := netip.ParseAddr(ing.IP); err == nil {
				out = append(out, a)
			}
		}
		if len(out) == 2 && out[0].Is4() != out[1].Is4() {
			slices.SortFunc(out, netip.Addr.Compare)
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("service default/%s: ingress %v after 60s, want one IPv4 and one IPv6", svcName, svc.Status.LoadBalancer.Ingress)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitSessions waits until every node's SpeakerStatus shows both of its
// sessions established (node 3, with nothing to announce, still peers).
func waitSessions(t *testing.T, ctx context.Context, c client.Client) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var list v1alpha1.SpeakerStatusList
		if err := c.List(ctx, &list); err != nil {
			t.Fatal(err)
		}
		up := 0
		var states []string
		for _, sp := range list.Items {
			for _, s := range sp.Status.Sessions {
				states = append(states, sp.Name+"/"+s.Peer+"="+s.State)
				if s.State == "established" {
					up++
				}
			}
		}
		if up == 2*nodes {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("BGP sessions after 60s: %v; want all %d established", states, 2*nodes)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitRoute waits until the router's selected route for vip has exactly
// the given nodes as next hops.
func waitRoute(t *testing.T, ctx context.Context, vip netip.Addr, nodes ...int) {
	t.Helper()
	lab.WaitBGPRoute(t, ctx, vip, 60*time.Second, nodes...)
}

// scrape fetches a metrics endpoint and parses it with the Prometheus text
// parser; dial (nil: the root namespace) picks the network namespace.
func scrape(t *testing.T, ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), url, token string) map[string]*dto.MetricFamily {
	t.Helper()
	tr := &http.Transport{DialContext: dial, DisableKeepAlives: true,
		// The endpoints' self-signed certificates, as the chart's default
		// ServiceMonitor accepts them; the token is what guards them.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // self-signed test endpoints
	defer tr.CloseIdleConnections()
	var (
		body []byte
		err  error
	)
	// The manager starts its metrics server with the rest: bounded retry.
	for range 50 {
		body, err = get(ctx, &http.Client{Transport: tr, Timeout: 5 * time.Second}, url, token)
		if err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("scrape %s: not Prometheus text format: %v", url, err)
	}
	return fams
}

func get(ctx context.Context, c *http.Client, url, token string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	var b bytes.Buffer
	_, err = b.ReadFrom(resp.Body)
	return b.Bytes(), err
}

// need fails unless the family exists, has HELP text and at least one
// series.
func need(t *testing.T, who string, fams map[string]*dto.MetricFamily, name string) {
	t.Helper()
	f, ok := fams[name]
	switch {
	case !ok:
		t.Errorf("%s: metric family %s missing", who, name)
	case strings.TrimSpace(f.GetHelp()) == "":
		t.Errorf("%s: %s has no HELP text", who, name)
	case len(f.GetMetric()) == 0:
		t.Errorf("%s: %s has no series", who, name)
	}
}

// sumWhere adds the values of f's series whose labels include want.
func sumWhere(f *dto.MetricFamily, want map[string]string) float64 {
	var sum float64
	for _, m := range f.GetMetric() {
		ok := true
		for k, v := range want {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == k && lp.GetValue() == v {
					found = true
				}
			}
			ok = ok && found
		}
		if !ok {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Untyped != nil:
			sum += m.GetUntyped().GetValue()
		}
	}
	return sum
}

func labelString(m *dto.Metric) string {
	var parts []string
	for _, lp := range m.GetLabel() {
		parts = append(parts, lp.GetName()+"="+lp.GetValue())
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// announcedNodes lists the nodes named by "Announced" Events on the
// Service, from both Event APIs.
func announcedNodes(t *testing.T, ctx context.Context, l *lab.Lab) []string {
	t.Helper()
	var notes []string
	evs, err := l.Kube.EventsV1().Events("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list events: %v", err)
	}
	for _, e := range evs.Items {
		if e.Regarding.Name == svcName && e.Reason == "Announced" {
			notes = append(notes, e.Note)
		}
	}
	core, err := l.Kube.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list events: %v", err)
	}
	for _, e := range core.Items {
		if e.InvolvedObject.Name == svcName && e.Reason == "Announced" {
			notes = append(notes, e.Message)
		}
	}
	var out []string
	for i := 1; i <= nodes; i++ {
		for _, n := range notes {
			if strings.Contains(n, "node "+lab.NodeName(i)+" ") && !slices.Contains(out, lab.NodeName(i)) {
				out = append(out, lab.NodeName(i))
			}
		}
	}
	return out
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().String()
}

// startProc runs a process in the root namespace in its own process group
// (a test's interrupt must not reach it before the cleanup stops it).
func startProc(t *testing.T, logDir, logName string, argv []string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(logDir, logName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", argv[1], err)
	}
	t.Cleanup(func() { stop(cmd) })
}

// stop ends a process this test started (SIGTERM, then SIGKILL after 10s).
func stop(cmd *exec.Cmd) { lab.StopCommand(cmd, syscall.SIGTERM) }
