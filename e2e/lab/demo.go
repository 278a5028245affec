package lab

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"

	"github.com/zerohop/zerohop/bpf"
	"github.com/zerohop/zerohop/e2e/echo"
)

// The demo's objects. They are applied as unstructured objects so the lab
// does not depend on the API's Go types, only on the CRDs being installed.
func demoObjects() []*unstructured.Unstructured {
	r4, r6 := RouterNodeAddrs()
	obj := func(kind, name string, spec map[string]any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "zerohop.io/v1alpha1", "kind": kind,
			"metadata": map[string]any{"name": name}, "spec": spec,
		}}
	}
	return []*unstructured.Unstructured{
		obj("IPAddressPool", "demo-pool", map[string]any{
			"addresses": []any{"203.0.113.0/24", "2001:db8:113::/120"},
			// The first VIP is then 203.0.113.1, not the .0 some clients refuse.
			"avoidBuggyIPs": true,
		}),
		// Short timers, so sessions come up (and retry) within the demo's wait.
		obj("BGPPeer", "router-v4", map[string]any{
			"myASN": int64(DefaultNodeASN), "peerASN": int64(DefaultRouterASN), "peerAddress": r4.String(),
			"holdTime": "9s", "connectTime": "1s",
		}),
		obj("BGPPeer", "router-v6", map[string]any{
			"myASN": int64(DefaultNodeASN), "peerASN": int64(DefaultRouterASN), "peerAddress": r6.String(),
			"holdTime": "9s", "connectTime": "1s",
		}),
		obj("BGPAdvertisement", "demo", map[string]any{"ipAddressPools": []any{"demo-pool"}}),
	}
}

// Where the demo's controller keeps its Lease and speakers look for Secrets.
const demoSystemNS = "zerohop-system"

// demoClass is the controller's loadBalancerClass (controller.Class; the
// lab does not import the controller).
const demoClass = "zerohop.io/lb"

// demoHTTPPort is the Service's HTTP port; the Pods listen on
// echo.DefaultHTTPPort, which the datapath translates to.
const demoHTTPPort = 80

func demoService() *corev1.Service {
	dual := corev1.IPFamilyPolicyPreferDualStack
	class := demoClass
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: "demo"},
		Spec: corev1.ServiceSpec{
			Type:              corev1.ServiceTypeLoadBalancer,
			LoadBalancerClass: &class,
			Selector:          map[string]string{"app": "echo"},
			IPFamilyPolicy:    &dual,
			// Local: the container-native path, router → node → Pod.
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			Ports: []corev1.ServicePort{
				{Name: "tcp", Port: echo.DefaultTCPPort, TargetPort: intstr.FromInt32(echo.DefaultTCPPort), Protocol: corev1.ProtocolTCP},
				{Name: "udp", Port: echo.DefaultUDPPort, TargetPort: intstr.FromInt32(echo.DefaultUDPPort), Protocol: corev1.ProtocolUDP},
				{Name: "http", Port: demoHTTPPort, TargetPort: intstr.FromInt32(echo.DefaultHTTPPort), Protocol: corev1.ProtocolTCP},
			},
		},
	}
}

// Demo applies the demo (a pool, BGP peers, an advertisement, a Service with
// Pods on two nodes), starts `zerohop controller` and one `zerohop speaker`
// per node, waits (bounded) for the VIP and the router's route, and reports
// only what it observed: the VIP, the router's route for it with its next
// hops, and requests from the client showing which Pod answered and the
// client address it saw.
//
// The controller and speakers are the `controller` and `speaker`
// subcommands of the zerohop binary at exe (`zerohop-lab up --demo` passes
// bin/zerohop). They are recorded in the state file, so Down stops them.
func (l *Lab) Demo(ctx context.Context, w io.Writer, exe string) error {
	if l.Kube == nil || l.APIServer() == nil {
		return fmt.Errorf("the demo needs the lab's API server")
	}
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("\n== demo: applying objects")
	dyn, err := dynamic.NewForConfig(l.RESTConfig)
	if err != nil {
		return err
	}
	for _, o := range demoObjects() {
		gvr := schema.GroupVersionResource{Group: "zerohop.io", Version: "v1alpha1", Resource: strings.ToLower(o.GetKind()) + "s"}
		_, err := dyn.Resource(gvr).Create(ctx, o, metav1.CreateOptions{})
		switch {
		case err == nil:
			p("  created %s/%s", o.GetKind(), o.GetName())
		case apierrors.IsAlreadyExists(err):
			p("  %s/%s exists", o.GetKind(), o.GetName())
		default:
			p("  NOT created %s/%s: %v", o.GetKind(), o.GetName(), err)
		}
	}
	svc := demoService()
	if err := l.AddService(ctx, svc); err != nil {
		return err
	}
	p("  created Service demo/echo (LoadBalancer, class %s, externalTrafficPolicy Local)", demoClass)
	if err := l.applyDemoDeployment(ctx, demoReplicas); err != nil {
		return err
	}
	p("  created Deployment demo/echo (%d replicas of %s)", demoReplicas, EchoImage)
	pods, err := l.waitDeploymentPods(ctx, "demo", "echo", demoReplicas, podWait)
	if err != nil {
		p("  Deployment demo/echo NOT ready: %v", err)
		return err
	}
	l.printDeployment(ctx, p, pods)

	p("\n== zerohop (%s)", exe)
	if err := ensureNamespace(ctx, l.Kube, demoSystemNS); err != nil {
		return err
	}
	t0 := time.Now()
	if err := l.startZerohop(ctx, exe, p); err != nil {
		return err
	}

	p("\n== VIP")
	const vipWait = 30 * time.Second
	vips, err := l.waitVIPs(ctx, "demo", "echo", vipWait)
	if err != nil {
		return err
	}
	if len(vips) == 0 {
		p("  NONE: demo/echo has no LoadBalancer IP after %s; see %s", vipWait,
			filepath.Join(l.logDir(), "zerohop-controller.log"))
	} else {
		var s []string
		for _, v := range vips {
			s = append(s, v.String())
		}
		p("  demo/echo: %s (assigned by zerohop controller from demo-pool, %s after zerohop started)",
			strings.Join(s, ", "), time.Since(t0).Round(10*time.Millisecond))
	}

	p("\n== router (FRR in %s)", RouterNS)
	const routeWait = 45 * time.Second
	announced := l.demoRoutes(ctx, p, vips, pods, routeWait, t0, "zerohop started")
	ns, err := Neighbors(ctx)
	if err != nil {
		p("  cannot read BGP neighbors: %v", err)
	}
	established := 0
	for _, n := range ns {
		if n.State == "Established" {
			established++
		}
	}
	p("  BGP neighbors: %d configured, %d established (a speaker per node, v4 and v6)", len(ns), established)

	p("\n== requests from %s to the VIP", ClientNS)
	if len(announced) == 0 {
		p("  The VIP is NOT announced: no requests to send.")
	} else {
		p("  client → router (ECMP over the announcing nodes) → node's XDP program on")
		p("  %s rewrites the VIP to a Pod chosen by Maglev → Pod; the reply's source is", UplinkIf)
		p("  rewritten back to the VIP by tc on the way out. No NodePort, no kube-proxy rule")
		p("  on the way, though kube-proxy (%s) runs on every node.", l.opts.KubeProxy)
	}
	for _, v := range vips {
		if !announced[v] {
			continue
		}
		reqs := []struct {
			proto string
			port  uint16
		}{{"tcp", echo.DefaultTCPPort}, {"tcp", echo.DefaultTCPPort}, {"tcp", echo.DefaultTCPPort},
			{"tcp", echo.DefaultTCPPort}, {"udp", echo.DefaultUDPPort}, {"http", demoHTTPPort}}
		for _, r := range reqs {
			l.demoRequest(ctx, p, r.proto, netip.AddrPortFrom(v, r.port).String(), "")
		}
	}
	if len(announced) > 0 {
		l.demoCounters(p)
		l.demoKubeProxyCounters(ctx, p, vips)
	}
	c4, c6 := ClientAddrs()
	p("  (the client is %s / %s; a Pod seeing that address means the source was preserved)", c4, c6)

	if len(announced) > 0 {
		l.demoScale(ctx, p, vips, routeWait)
	}

	p("\n== poke it")
	if len(pods) > 0 {
		p("  ip netns exec %s curl -s http://%s:%d/", ClientNS, pods[0].IPv4, echo.DefaultHTTPPort)
	}
	for _, v := range vips {
		if v.Is4() && announced[v] {
			p("  ip netns exec %s curl -s http://%s/    (the VIP, port %d → the Pods' %d)", ClientNS, v, demoHTTPPort, echo.DefaultHTTPPort)
		}
	}
	for _, v := range vips {
		fam := "ip"
		if v.Is6() {
			fam = "ipv6"
		}
		p("  vtysh -N %s -c 'show %s route %s'", frrPathspace, fam, v)
	}
	p("  vtysh -N %s -c 'show bgp summary'", frrPathspace)
	p("  ip netns exec %s ip route", RouterNS)
	if info := l.APIServer(); info != nil {
		p("  kubeconfig: %s", info.Kubeconfig)
		p("  kubectl --kubeconfig %s get svc,pods,endpointslices -A", info.Kubeconfig)
		p("  (it embeds an admin client certificate; any Kubernetes client works; without")
		p("  one, `bin/zerohop-lab status` shows the Services' VIPs, processes and BGP)")
	}
	p("  bin/zerohop-lab status    (logs, incl. zerohop-controller.log and")
	p("                            zerohop-speaker-zh-nodeN.log, in %s)", l.logDir())
	p("  make lab-down             ends the lab, the controller and the speakers")
	return nil
}

// startZerohop starts `zerohop controller` in the root namespace (it only
// needs the API server, on the management bridge) and `zerohop speaker` in
// every node's namespace, as the DaemonSet would run it on the node.
func (l *Lab) startZerohop(ctx context.Context, exe string, p func(string, ...any)) error {
	kc := l.APIServer().Kubeconfig
	procs := []spawnSpec{{
		name: "zerohop-controller",
		argv: []string{exe, "controller", "--kubeconfig", kc, "--leader-elect=true",
			"--leader-election-namespace", demoSystemNS, "--metrics-bind-address", "0", "--health-probe-bind-address", "0"},
	}}
	for i := 1; i <= l.opts.Nodes; i++ {
		procs = append(procs, spawnSpec{
			name: "zerohop-speaker-" + NodeName(i), ns: NodeName(i), netOnly: true,
			argv: []string{exe, "speaker", "--node-name", NodeName(i), "--namespace", demoSystemNS, "--kubeconfig", kc,
				"--metrics-bind-address", "0", "--health-probe-bind-address", "0", "--bpf-pin-root", SpeakerPinRoot(i)},
		})
	}
	for _, s := range procs {
		if err := ctx.Err(); err != nil {
			return err
		}
		s.logDir, s.detach = l.logDir(), l.opts.Detach
		pr, _, err := spawn(s)
		if pr.PID > 0 {
			// Recorded even when it died at once, so Down checks it.
			if aerr := l.addProc(pr); aerr != nil {
				return aerr
			}
		}
		if err != nil {
			return err
		}
		where := s.ns
		if where == "" {
			where = "the root namespace"
		}
		p("  started %s (pid %d) in %s", s.name, pr.PID, where)
	}
	return nil
}

// waitVIPs polls the Service's status.loadBalancer.ingress for at most d.
func (l *Lab) waitVIPs(ctx context.Context, ns, name string, d time.Duration) ([]netip.Addr, error) {
	deadline := time.Now().Add(d)
	for {
		cur, err := l.Kube.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("service %s/%s: %w", ns, name, err)
		}
		var vips []netip.Addr
		for _, ing := range cur.Status.LoadBalancer.Ingress {
			if a, err := netip.ParseAddr(ing.IP); err == nil {
				vips = append(vips, a)
			}
		}
		if len(vips) > 0 || time.Now().After(deadline) {
			return vips, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// waitRIBRoute polls the router's RIB for at most d until the BGP route for
// prefix has want active next hops, and returns the last BGP route seen
// (nil if none).
func waitRIBRoute(ctx context.Context, prefix netip.Prefix, want int, d time.Duration) (*RIBRoute, error) {
	deadline := time.Now().Add(d)
	for {
		rs, err := RIB(ctx, prefix)
		if err != nil {
			return nil, err
		}
		var got *RIBRoute
		for i := range rs {
			if rs[i].Protocol == "bgp" && rs[i].Prefix == prefix.String() && (got == nil || rs[i].Selected) {
				got = &rs[i]
			}
		}
		if (got != nil && len(got.NextHops) >= want) || time.Now().After(deadline) {
			return got, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func selectedWord(r *RIBRoute) string {
	switch {
	case r.Selected && r.Installed:
		return "(selected, installed)"
	case r.Selected:
		return "(selected, not installed)"
	}
	return "(not selected)"
}

// hopNode names the lab node that owns a next-hop address, if any.
func hopNode(hop string) string {
	a, err := netip.ParseAddr(hop)
	if err != nil {
		return ""
	}
	for i := 1; i <= MaxNodes; i++ {
		if n4, n6 := NodeAddrs(i); a == n4 || a == n6 {
			return " (" + NodeName(i) + ")"
		}
	}
	return ""
}

func (l *Lab) demoRequest(ctx context.Context, p func(string, ...any), proto, addr, note string) {
	rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	rep, err := l.Request(rctx, proto, addr)
	if err != nil {
		p("  %-4s %-24s FAILED%s: %v", proto, addr, note, err)
		return
	}
	p("  %-4s %-24s answered by %-8s which saw client %s%s", proto, addr, rep.Pod, rep.Client, note)
}

// PrintStatus writes the lab's state: hosts, processes, router neighbors,
// Pods and the API server.
func (l *Lab) PrintStatus(ctx context.Context, w io.Writer) error {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	l.mu.Lock()
	st := *l.st
	l.mu.Unlock()
	p("lab: %d nodes, state in %s", st.Nodes, l.opts.StateDir)
	for _, n := range st.Namespaces {
		mark := "ok"
		if !nsExists(n) {
			mark = "MISSING"
		}
		p("  netns %-20s %s", n, mark)
	}
	for _, pr := range st.Procs {
		mark := "running"
		if !pr.alive() {
			mark = "NOT RUNNING"
		}
		where := pr.NS
		if where == "" {
			where = "root"
		}
		p("  proc  %-26s pid %-7d in %-14s %s", pr.Name, pr.PID, where, mark)
	}
	if ns, err := Neighbors(ctx); err != nil {
		p("  router: %v", err)
	} else {
		for _, n := range ns {
			bfd := ""
			if n.BFDStatus != "" {
				bfd = ", BFD " + n.BFDStatus
			}
			p("  bgp   %-20s AS%d %s, %d+%d prefixes%s", n.Addr, n.RemoteAS, n.State, n.PrefixesIn4, n.PrefixesIn6, bfd)
		}
	}
	if l.Kube != nil {
		l.printPods(ctx, p)
	}
	if l.Kube != nil {
		for _, ref := range st.Services {
			svc, err := l.Kube.CoreV1().Services(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
			if err != nil {
				p("  svc   %s/%s: %v", ref.Namespace, ref.Name, err)
				continue
			}
			var ips []string
			for _, ing := range svc.Status.LoadBalancer.Ingress {
				ips = append(ips, ing.IP)
			}
			if len(ips) == 0 {
				ips = []string{"no LoadBalancer IP"}
			}
			p("  svc   %s/%s: %s", ref.Namespace, ref.Name, strings.Join(ips, ", "))
		}
	}
	if st.APIServer != nil {
		p("  api   %s (kubeconfig %s)", st.APIServer.URL, st.APIServer.Kubeconfig)
	}
	return nil
}

// demoCounters prints each node's XDP counters for the demo Service, read
// from the pinned maps as `zerohop status` does.
func (l *Lab) demoCounters(p func(string, ...any)) {
	p("  XDP counters per node (packets / new flows / drops), from the pinned maps:")
	for i := 1; i <= l.opts.Nodes; i++ {
		snap, err := bpf.Inspect(SpeakerPinRoot(i))
		if err != nil {
			p("    %s: %v", NodeName(i), err)
			continue
		}
		var parts []string
		for _, s := range snap.Services {
			if s.Counters.Packets == 0 && s.Counters.Drops == 0 {
				continue
			}
			parts = append(parts, fmt.Sprintf("%s %d/%d/%d", s.Key, s.Counters.Packets, s.Counters.Flows, s.Counters.Drops))
		}
		if len(parts) == 0 {
			parts = []string{"no VIP traffic"}
		}
		p("    %s: %s", NodeName(i), strings.Join(parts, ", "))
	}
}
