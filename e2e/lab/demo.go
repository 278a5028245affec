package lab

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"

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
		}),
		obj("BGPPeer", "router-v4", map[string]any{
			"myASN": int64(DefaultNodeASN), "peerASN": int64(DefaultRouterASN), "peerAddress": r4.String(),
		}),
		obj("BGPPeer", "router-v6", map[string]any{
			"myASN": int64(DefaultNodeASN), "peerASN": int64(DefaultRouterASN), "peerAddress": r6.String(),
		}),
		obj("BGPAdvertisement", "demo", map[string]any{"ipAddressPools": []any{"demo-pool"}}),
	}
}

func demoService() *corev1.Service {
	dual := corev1.IPFamilyPolicyPreferDualStack
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: "demo"},
		Spec: corev1.ServiceSpec{
			Type:           corev1.ServiceTypeLoadBalancer,
			Selector:       map[string]string{"app": "echo"},
			IPFamilyPolicy: &dual,
			// Local: the container-native path, router → node → Pod.
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			Ports: []corev1.ServicePort{
				{Name: "tcp", Port: echo.DefaultTCPPort, TargetPort: intstr.FromInt32(echo.DefaultTCPPort), Protocol: corev1.ProtocolTCP},
				{Name: "udp", Port: echo.DefaultUDPPort, TargetPort: intstr.FromInt32(echo.DefaultUDPPort), Protocol: corev1.ProtocolUDP},
				{Name: "http", Port: 80, TargetPort: intstr.FromInt32(echo.DefaultHTTPPort), Protocol: corev1.ProtocolTCP},
			},
		},
	}
}

// Demo applies the demo (a pool, BGP peers, an advertisement, a Service with
// Pods on two nodes), waits for what can happen, and reports only what it
// observed: the VIP, the router's route for it, and requests from the
// client showing which Pod answered and the client address it saw.
func (l *Lab) Demo(ctx context.Context, w io.Writer) error {
	if l.Kube == nil {
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
	p("  created Service demo/echo (LoadBalancer, externalTrafficPolicy Local)")
	var pods []Pod
	for i, node := range []int{1, 2} {
		name := fmt.Sprintf("echo-%d", i+1)
		pod, ok := l.PodByName(name)
		if !ok {
			if pod, err = l.AddPod(ctx, PodSpec{Name: name, Namespace: "demo", Node: node, Labels: map[string]string{"app": "echo"}}); err != nil {
				return err
			}
		}
		pods = append(pods, pod)
		p("  Pod demo/%s on %s: %s, %s (echo on tcp/%d, udp/%d, http/%d)", pod.Name, NodeName(pod.Node), pod.IPv4, pod.IPv6,
			echo.DefaultTCPPort, echo.DefaultUDPPort, echo.DefaultHTTPPort)
	}
	p("  EndpointSlices for demo/echo written with both Pods ready")

	p("\n== VIP")
	// Bounded wait for a controller to assign the address.
	var vips []string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && len(vips) == 0 {
		cur, err := l.Kube.CoreV1().Services("demo").Get(ctx, "echo", metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, ing := range cur.Status.LoadBalancer.Ingress {
			vips = append(vips, ing.IP)
		}
		if len(vips) == 0 {
			time.Sleep(250 * time.Millisecond)
		}
	}
	if len(vips) == 0 {
		p("  NONE: demo/echo has no LoadBalancer IP after 10s. The lab does not run a zerohop")
		p("  controller yet, so nothing assigns one from demo-pool.")
	} else {
		p("  demo/echo: %s", strings.Join(vips, ", "))
	}

	p("\n== router (FRR in %s)", RouterNS)
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
	p("  BGP neighbors: %d configured, %d established", len(ns), established)
	if established == 0 {
		p("  (no speaker runs on the nodes yet, so no session comes up)")
	}
	served := false
	for _, v := range vips {
		a, err := netip.ParseAddr(v)
		if err != nil {
			continue
		}
		r, err := KernelRouteFor(ctx, netip.PrefixFrom(a, a.BitLen()))
		switch {
		case err != nil:
			p("  route for %s: %v", v, err)
		case r == nil:
			p("  route for %s: NONE (nothing announces it)", v)
		default:
			p("  route for %s: proto %s, next hops %s", v, r.Protocol, strings.Join(r.NextHops, ", "))
			served = true
		}
	}
	if len(vips) == 0 {
		p("  route for the VIP: none to look up (no VIP assigned)")
	}

	p("\n== requests from %s", ClientNS)
	if served {
		for _, v := range vips {
			a := netip.MustParseAddr(v)
			for _, proto := range []string{"tcp", "udp", "http", "tcp", "http", "tcp"} {
				port := uint16(echo.DefaultTCPPort)
				if proto == "http" {
					port = 80
				}
				l.demoRequest(ctx, p, proto, netip.AddrPortFrom(a, port).String())
			}
		}
	} else {
		p("  The VIP is NOT served: no speaker exists yet to announce it or steer it to Pods.")
		p("  To show the lab's plumbing, the client asks each Pod directly, by routing")
		p("  (client → router → node → Pod):")
		for _, pod := range pods {
			for _, tgt := range []struct {
				proto string
				ip    string
				port  uint16
			}{
				{"tcp", pod.IPv4, echo.DefaultTCPPort}, {"udp", pod.IPv4, echo.DefaultUDPPort},
				{"http", pod.IPv4, echo.DefaultHTTPPort}, {"tcp", pod.IPv6, echo.DefaultTCPPort},
			} {
				l.demoRequest(ctx, p, tgt.proto, netip.AddrPortFrom(netip.MustParseAddr(tgt.ip), tgt.port).String())
			}
		}
	}
	c4, c6 := ClientAddrs()
	p("  (the client is %s / %s; a Pod seeing that address means the source was preserved)", c4, c6)

	p("\n== poke it")
	p("  ip netns exec %s curl -s http://%s:%d/", ClientNS, pods[0].IPv4, echo.DefaultHTTPPort)
	p("  vtysh -N %s -c 'show bgp summary'", frrPathspace)
	p("  ip netns exec %s ip route", RouterNS)
	if info := l.APIServer(); info != nil {
		p("  kubectl --kubeconfig %s get nodes,pods,endpointslices -A", info.Kubeconfig)
	}
	p("  bin/zerohop lab status    (logs in %s)", l.logDir())
	p("  make lab-down             ends the lab")
	return nil
}

func (l *Lab) demoRequest(ctx context.Context, p func(string, ...any), proto, addr string) {
	rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	rep, err := l.Request(rctx, proto, addr)
	if err != nil {
		p("  %-4s %-24s FAILED: %v", proto, addr, err)
		return
	}
	p("  %-4s %-24s answered by %-8s which saw client %s", proto, addr, rep.Pod, rep.Client)
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
		p("  proc  %-20s pid %-7d in %-14s %s", pr.Name, pr.PID, where, mark)
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
	for _, pod := range st.Pods {
		p("  pod   %s/%s on %s: %s %s ready=%v terminating=%v", pod.Namespace, pod.Name, NodeName(pod.Node), pod.IPv4, pod.IPv6, pod.Ready, pod.Terminating)
	}
	if st.APIServer != nil {
		p("  api   %s (kubeconfig %s)", st.APIServer.URL, st.APIServer.Kubeconfig)
	}
	return nil
}
