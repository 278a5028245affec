package cluster_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/zerohop/zerohop/e2e/lab"
)

// TestNodeFailure kills a node's kubelet stand-in and, later, shuts a node
// down, and times each step of the reaction: the node lifecycle controller
// marks the Node NotReady and its Pods not ready, the EndpointSlice
// controller takes the endpoint out, and zerohop's speakers withdraw the
// node's route for a Local Service. A real cluster does the same with
// kube-controller-manager's grace period (here lab.NodeMonitorGracePeriod).
func TestNodeFailure(t *testing.T) {
	e := upEnv(t, lab.KubeProxyNone, 4*time.Minute)
	web2 := e.pod("web-2", "web", 2)
	e.pod("web-1", "web", 1)
	const vip = "203.0.113.10"
	if err := e.l.AddLBService(e.ctx, "web", "web", true, vip); err != nil {
		t.Fatal(err)
	}
	e.startSpeakers()
	addr := netip.MustParseAddr(vip)
	lab.WaitBGPRoute(t, e.ctx, addr, 30*time.Second, 1, 2)

	nodeReady := func() corev1.ConditionStatus {
		n, err := e.l.Kube.CoreV1().Nodes().Get(e.ctx, lab.NodeName(2), metav1.GetOptions{})
		if err != nil {
			return corev1.ConditionStatus(err.Error())
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status
			}
		}
		return ""
	}
	// endpointReady is web-2's ready condition in the Service's slices
	// ("gone" when it has no endpoint there).
	endpointReady := func() string {
		list, err := e.l.Kube.DiscoveryV1().EndpointSlices("default").List(e.ctx, metav1.ListOptions{
			LabelSelector: discoveryv1.LabelServiceName + "=web"})
		if err != nil {
			return err.Error()
		}
		for _, s := range list.Items {
			for _, ep := range s.Endpoints {
				if ep.TargetRef != nil && ep.TargetRef.Name == web2.Name {
					return fmt.Sprint(ep.Conditions.Ready != nil && *ep.Conditions.Ready)
				}
			}
		}
		return "gone"
	}
	// timeline waits for each step in turn and logs when it came.
	timeline := func(t *testing.T, what string, t0 time.Time, steps []step) {
		t.Helper()
		line := what + ":"
		for _, s := range steps {
			eventually(t, s.within, s.name, s.done)
			line += fmt.Sprintf(" %s %s;", s.name, time.Since(t0).Round(10*time.Millisecond))
		}
		t.Log(line)
	}
	routeVia := func(nodes ...int) func() (bool, string) {
		want := lab.NodeNextHops(addr, nodes...)
		return func() (bool, string) {
			got, err := lab.BGPNextHops(e.ctx, addr)
			if err != nil {
				return false, err.Error()
			}
			return got == want, got
		}
	}

	t.Run("kubelet killed", func(t *testing.T) {
		t0 := time.Now()
		if err := e.l.KillKubelet(2); err != nil {
			t.Fatal(err)
		}
		bound := lab.NodeMonitorGracePeriod + 10*time.Second
		timeline(t, fmt.Sprintf("kubelet on %s killed (node-monitor-grace-period %s)", lab.NodeName(2), lab.NodeMonitorGracePeriod), t0, []step{
			{"Node NotReady", bound, func() (bool, string) { s := nodeReady(); return s != corev1.ConditionTrue, string(s) }},
			{"endpoint not ready", 10 * time.Second, func() (bool, string) { s := endpointReady(); return s == "false", s }},
			{"route withdrawn", 10 * time.Second, routeVia(1)},
		})
		if took := time.Since(t0); took < lab.NodeMonitorGracePeriod-2*time.Second {
			t.Errorf("reaction after %s, before the grace period (%s) could have run out", took, lab.NodeMonitorGracePeriod)
		}
		// Its Pod kept running all along, as under a dead kubelet.
		rep, err := e.l.Request(e.ctx, "tcp", netip.AddrPortFrom(netip.MustParseAddr(web2.IPv4), 9000).String())
		if err != nil || rep.Pod != web2.Name {
			t.Errorf("web-2 while its kubelet is dead: %+v, %v; want it still running", rep, err)
		}

		t0 = time.Now()
		if err := e.l.StartKubelet(2); err != nil {
			t.Fatal(err)
		}
		timeline(t, "kubelet started again", t0, []step{
			{"Node Ready", 20 * time.Second, func() (bool, string) { s := nodeReady(); return s == corev1.ConditionTrue, string(s) }},
			{"endpoint ready", 10 * time.Second, func() (bool, string) { s := endpointReady(); return s == "true", s }},
			{"route back", 20 * time.Second, routeVia(1, 2)},
		})
	})

	t.Run("node shutdown", func(t *testing.T) {
		t0 := time.Now()
		done := make(chan error, 1)
		go func() { done <- e.l.ShutdownNode(e.ctx, 2) }()
		// web-2 drains through its preStop sleep, cut short by the
		// shutdown's grace period, and serves until then.
		timeline(t, fmt.Sprintf("graceful shutdown of %s (Pods' grace capped at 10s)", lab.NodeName(2)), t0, []step{
			{"Node NotReady", 5 * time.Second, func() (bool, string) { s := nodeReady(); return s != corev1.ConditionTrue, string(s) }},
			{"endpoint gone", 20 * time.Second, func() (bool, string) { s := endpointReady(); return s == "gone" || s == "false", s }},
			{"route withdrawn", 10 * time.Second, routeVia(1)},
		})
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		p, err := e.l.Kube.CoreV1().Pods("default").Get(e.ctx, web2.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if p.Status.Phase != corev1.PodFailed || p.Status.Reason != "Terminated" {
			t.Errorf("web-2 after node shutdown: phase %s reason %q, want Failed, Terminated", p.Status.Phase, p.Status.Reason)
		}
		disrupted := false
		for _, c := range p.Status.Conditions {
			disrupted = disrupted || (c.Type == corev1.DisruptionTarget && c.Status == corev1.ConditionTrue)
		}
		if !disrupted {
			t.Errorf("web-2 after node shutdown has no DisruptionTarget condition: %+v", p.Status.Conditions)
		}
		if _, err := e.l.Request(e.ctx, "tcp", netip.AddrPortFrom(addr, 9000).String()); err != nil {
			t.Errorf("the VIP after node 2's shutdown: %v", err)
		}
	})
}

// step is one stage of a reaction, waited for within its bound.
type step struct {
	name   string
	within time.Duration
	done   func() (bool, string)
}
