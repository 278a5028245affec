package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/zerohop/zerohop/e2e/echo"
)

func TestMain(m *testing.M) {
	HelperMain() // runs echo servers and BGP peers when re-exec'd as a helper
	os.Exit(m.Run())
}

// eventually polls cond every 100 ms until it returns nil or timeout ends.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s: %v", what, timeout, err)
}

// TestLab brings the whole lab up once and checks each part in subtests;
// one lab keeps `make test-lab` short.
func TestLab(t *testing.T) {
	var procs []Proc
	var stateDir string
	t.Cleanup(func() {
		// Runs after the lab's own cleanup (registered later, runs first).
		if left := Leftovers(stateDir, procs); len(left) > 0 {
			t.Errorf("left after teardown: %s", strings.Join(left, ", "))
		}
	})
	l := Up(t, Options{Nodes: 3, BFD: true, Log: testWriter{t}})
	stateDir = l.StateDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	t.Run("frr runs in the router namespace", func(t *testing.T) {
		var frr []Proc
		for _, p := range l.Procs() {
			if strings.HasPrefix(p.Name, "frr-") {
				frr = append(frr, p)
			}
		}
		if len(frr) != 3 {
			t.Fatalf("want zebra, bgpd, bfdd; got %+v", frr)
		}
		pids, err := netnsPIDs(RouterNS)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range frr {
			if !p.alive() || !slices.Contains(pids, p.PID) {
				t.Errorf("%s (pid %d) not running in %s (pids there: %v)", p.Name, p.PID, RouterNS, pids)
			}
		}
		ns, err := Neighbors(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(ns) != 2*l.Nodes() {
			t.Errorf("router has %d neighbors, want %d (v4+v6 per node): %+v", len(ns), 2*l.Nodes(), ns)
		}
		for _, n := range ns {
			// BFD was asked for: bgpd registered a session with bfdd
			// (down until something on the node answers BFD).
			if n.BFDStatus == "" {
				t.Errorf("neighbor %s has no BFD session", n.Addr)
			}
		}
	})

	var pods []Pod
	t.Run("pods answer the client by routing", func(t *testing.T) {
		for i, node := range []int{1, 2} {
			p, err := l.AddPod(ctx, PodSpec{Name: fmt.Sprintf("echo-%d", i+1), Namespace: "demo", Node: node,
				Labels: map[string]string{"app": "echo"}})
			if err != nil {
				t.Fatal(err)
			}
			pods = append(pods, p)
		}
		c4, c6 := ClientAddrs()
		tests := []struct {
			proto  string
			family string
			port   int
		}{
			{"tcp", "v4", echo.DefaultTCPPort}, {"udp", "v4", echo.DefaultUDPPort}, {"http", "v4", echo.DefaultHTTPPort},
			{"tcp", "v6", echo.DefaultTCPPort}, {"udp", "v6", echo.DefaultUDPPort}, {"http", "v6", echo.DefaultHTTPPort},
		}
		for _, p := range pods {
			for _, tc := range tests {
				ip, want := p.IPv4, c4.String()
				if tc.family == "v6" {
					ip, want = p.IPv6, c6.String()
				}
				addr := netip.AddrPortFrom(netip.MustParseAddr(ip), uint16(tc.port)).String()
				rep, err := l.Request(ctx, tc.proto, addr)
				if err != nil {
					t.Errorf("%s %s: %v", tc.proto, addr, err)
					continue
				}
				if rep.Pod != p.Name || rep.ClientIP() != want {
					t.Errorf("%s %s: answered %+v, want pod %s seeing client %s", tc.proto, addr, rep, p.Name, want)
				}
			}
		}
	})

	t.Run("kubernetes objects", func(t *testing.T) {
		nodes, err := l.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(nodes.Items) != l.Nodes() {
			t.Fatalf("%d Nodes, want %d", len(nodes.Items), l.Nodes())
		}
		for _, n := range nodes.Items {
			if len(n.Spec.PodCIDRs) != 2 || len(n.Status.Addresses) < 2 {
				t.Errorf("node %s: podCIDRs %v addresses %v", n.Name, n.Spec.PodCIDRs, n.Status.Addresses)
			}
		}
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: "demo"},
			Spec: corev1.ServiceSpec{
				Type:           corev1.ServiceTypeLoadBalancer,
				Selector:       map[string]string{"app": "echo"},
				IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicyPreferDualStack),
				Ports: []corev1.ServicePort{
					{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP},
				},
			},
		}
		if err := l.AddService(ctx, svc); err != nil {
			t.Fatal(err)
		}
		type ep struct {
			addr                        string
			ready, serving, terminating bool
		}
		slicesNow := func() (map[string]ep, error) {
			list, err := l.Kube.DiscoveryV1().EndpointSlices("demo").List(ctx, metav1.ListOptions{
				LabelSelector: discoveryv1.LabelServiceName + "=echo"})
			if err != nil {
				return nil, err
			}
			got := map[string]ep{}
			for _, s := range list.Items {
				if m := s.Labels[discoveryv1.LabelManagedBy]; m != "endpointslice-controller.k8s.io" {
					return nil, fmt.Errorf("slice %s managed by %q, want the EndpointSlice controller", s.Name, m)
				}
				for _, e := range s.Endpoints {
					got[e.TargetRef.Name+"/"+string(s.AddressType)] = ep{e.Addresses[0], *e.Conditions.Ready, *e.Conditions.Serving, *e.Conditions.Terminating}
				}
			}
			return got, nil
		}
		want := map[string]ep{
			pods[0].Name + "/IPv4": {pods[0].IPv4, true, true, false}, pods[0].Name + "/IPv6": {pods[0].IPv6, true, true, false},
			pods[1].Name + "/IPv4": {pods[1].IPv4, true, true, false}, pods[1].Name + "/IPv6": {pods[1].IPv6, true, true, false},
		}
		eventually(t, 10*time.Second, "EndpointSlices with both Pods ready", func() error {
			got, err := slicesNow()
			if err == nil && fmt.Sprint(got) != fmt.Sprint(want) {
				err = fmt.Errorf("endpoints = %v, want %v", got, want)
			}
			return err
		})
		for _, p := range pods {
			obj, err := l.Kube.CoreV1().Pods("demo").Get(ctx, p.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(obj.OwnerReferences) == 0 || obj.OwnerReferences[0].Kind != "ReplicaSet" {
				t.Errorf("pod %s owners %v, want its Deployment's ReplicaSet", p.Name, obj.OwnerReferences)
			}
			if podCondition(obj, corev1.PodScheduled) != corev1.ConditionTrue {
				t.Errorf("pod %s not scheduled by the scheduler: %v", p.Name, conditionSummary(obj))
			}
			if by := l.scheduledBy(ctx, p); by != "default-scheduler" {
				t.Errorf("pod %s scheduled by %q, want default-scheduler", p.Name, by)
			}
		}

		// The readiness gate: not ready, then ready again.
		if err := l.SetPodReady(ctx, "echo-1", false); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "echo-1 not ready in its slices", func() error {
			got, err := slicesNow()
			if e := got[pods[0].Name+"/IPv4"]; err == nil && (e.ready || e.serving) {
				err = fmt.Errorf("echo-1 = %+v", e)
			}
			return err
		})
		if err := l.SetPodReady(ctx, "echo-1", true); err != nil {
			t.Fatal(err)
		}

		if err := l.TerminatePod(ctx, "echo-2"); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "echo-2 terminating, serving", func() error {
			got, err := slicesNow()
			if e := got[pods[1].Name+"/IPv4"]; err == nil && (e.ready || !e.serving || !e.terminating) {
				err = fmt.Errorf("terminating echo-2 = %+v, want not ready, serving, terminating", e)
			}
			return err
		})
		// Draining: the preStop sleep keeps it answering.
		addr := netip.AddrPortFrom(netip.MustParseAddr(pods[1].IPv4), echo.DefaultTCPPort).String()
		if rep, err := l.Request(ctx, "tcp", addr); err != nil || rep.Pod != pods[1].Name {
			t.Errorf("terminating echo-2 at %s: %+v, %v; want it still answering", addr, rep, err)
		}
		if err := l.DeletePod(ctx, "echo-2"); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "echo-2 gone from the slices", func() error {
			got, err := slicesNow()
			if _, ok := got[pods[1].Name+"/IPv4"]; err == nil && (ok || len(got) != 2) {
				err = fmt.Errorf("after deleting echo-2, endpoints = %v", got)
			}
			return err
		})
		if nsExists(pods[1].NetNS()) {
			t.Error("echo-2's namespace still exists")
		}
	})

	t.Run("bgp peers give the router an ECMP route", func(t *testing.T) {
		vip := netip.MustParsePrefix("203.0.113.10/32")
		var peers []*Peer
		for _, node := range []int{1, 2} {
			p, err := l.StartPeer(ctx, PeerConfig{Node: node})
			if err != nil {
				t.Fatal(err)
			}
			peers = append(peers, p)
			if err := p.Announce(ctx, vip); err != nil {
				t.Fatal(err)
			}
		}
		n1, _ := NodeAddrs(1)
		n2, _ := NodeAddrs(2)
		eventually(t, 30*time.Second, "router kernel route with two next hops", func() error {
			r, err := KernelRouteFor(ctx, vip)
			if err != nil {
				return err
			}
			if r == nil {
				return fmt.Errorf("no route for %s", vip)
			}
			nh := slices.Clone(r.NextHops)
			slices.Sort(nh)
			if strings.Join(nh, ",") != n1.String()+","+n2.String() {
				return fmt.Errorf("next hops %v", r.NextHops)
			}
			return nil
		})
		rib, err := RIB(ctx, vip)
		if err != nil {
			t.Fatal(err)
		}
		if len(rib) == 0 || rib[0].Protocol != "bgp" || len(rib[0].NextHops) != 2 {
			t.Errorf("zebra RIB for %s = %+v, want one bgp route with two next hops", vip, rib)
		}
		ns, err := Neighbors(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range ns {
			if (n.Addr == n1.String() || n.Addr == n2.String()) && n.State != "Established" {
				t.Errorf("neighbor %s is %s", n.Addr, n.State)
			}
		}
		// Withdrawing from one node leaves a single path.
		if err := peers[1].Withdraw(ctx, vip); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "router route back to one next hop", func() error {
			r, err := KernelRouteFor(ctx, vip)
			if err != nil {
				return err
			}
			if r == nil || len(r.NextHops) != 1 || r.NextHops[0] != n1.String() {
				return fmt.Errorf("route %+v", r)
			}
			return nil
		})
		for _, p := range peers {
			if err := p.Stop(); err != nil {
				t.Error(err)
			}
		}
	})
	procs = l.Procs()
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// TestDownSweepsCrashLeftovers leaves what a crashed run would (a lab
// namespace with a process inside, a management link, no state file) and
// checks that Down removes all of it.
func TestDownSweepsCrashLeftovers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skipf("needs root for network namespaces; running as uid %d", os.Geteuid())
	}
	if found := existingLab(DefaultStateDir); len(found) > 0 {
		t.Fatalf("a lab is up (%v): run `make lab-down` before the lab tests", found)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const ns = PodNSPrefix + "crashed"
	if err := addNetns(ctx, ns, false); err != nil {
		t.Fatal(err)
	}
	if err := ipBatch(ctx, "", []string{vethCmd("zh-m-node9", "", "mgmt", ns)}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p, _, err := spawn(spawnSpec{name: "sleeper", ns: ns, argv: []string{"sleep", "60"}, logDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	// `ip netns exec` joins the namespace just after it starts.
	eventually(t, 10*time.Second, "sleeper inside "+ns, func() error {
		pids, err := netnsPIDs(ns)
		if err != nil {
			return err
		}
		if !slices.Contains(pids, p.PID) {
			return fmt.Errorf("pid %d not in %v", p.PID, pids)
		}
		return nil
	})
	stateDir := dir + "/state" // no state file: Down must find things by name
	if err := Down(ctx, stateDir); err != nil {
		t.Fatalf("Down: %v", err)
	}
	if left := Leftovers(stateDir, []Proc{p}); len(left) > 0 {
		t.Errorf("left after Down: %v", left)
	}
}

// TestKubelet checks the kubelet stand-in's Pod lifecycle on its own: a
// TCP readiness probe, a container restart after its process dies, and
// graceful termination (preStop sleep, SIGTERM, SIGKILL at the grace
// deadline).
func TestKubelet(t *testing.T) {
	l := Up(t, Options{Nodes: 1, Log: testWriter{t}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := ensureNamespace(ctx, l.Kube, "kl"); err != nil {
		t.Fatal(err)
	}
	c := EchoContainer()
	// The workloads' probe is HTTP; this one is TCP.
	c.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("tcp")}},
		PeriodSeconds: 1, FailureThreshold: 1}
	// A slow shutdown: it keeps serving 60 s after SIGTERM, so only the
	// SIGKILL at the 3 s grace deadline ends it.
	c.Args = append(c.Args, "-term-delay", "60s")
	c.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 1}}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "slow", Namespace: "kl"},
		Spec: corev1.PodSpec{NodeName: NodeName(1), AutomountServiceAccountToken: ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To(int64(3)), Containers: []corev1.Container{c}},
	}
	if _, err := l.Kube.CoreV1().Pods("kl").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	get := func() *corev1.Pod {
		p, err := l.Kube.CoreV1().Pods("kl").Get(ctx, "slow", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	eventually(t, 20*time.Second, "Ready by its TCP probe", func() error {
		if p := get(); podCondition(p, corev1.PodReady) != corev1.ConditionTrue {
			return fmt.Errorf("conditions %s", conditionSummary(p))
		}
		return nil
	})
	p := get()
	addr := netip.AddrPortFrom(netip.MustParseAddr(p.Status.PodIP), echo.DefaultTCPPort).String()
	ask := func() error {
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		defer rcancel()
		rep, err := echo.Request(rctx, DialerIn(NodeName(1)), "tcp", addr)
		if err == nil && rep.Pod != "slow" {
			err = fmt.Errorf("answered by %q", rep.Pod)
		}
		return err
	}

	t.Run("restart", func(t *testing.T) {
		var pid int
		if _, err := fmt.Sscanf(p.Status.ContainerStatuses[0].ContainerID, "zerohop-lab://%d", &pid); err != nil {
			t.Fatalf("container ID %q: %v", p.Status.ContainerStatuses[0].ContainerID, err)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "restarted and Ready again", func() error {
			p := get()
			cs := p.Status.ContainerStatuses[0]
			if cs.RestartCount != 1 || !cs.Ready || cs.LastTerminationState.Terminated == nil {
				return fmt.Errorf("status %+v", cs)
			}
			if code := cs.LastTerminationState.Terminated.ExitCode; code != 128+9 {
				return fmt.Errorf("last exit code %d, want 137 (SIGKILL)", code)
			}
			return nil
		})
		if err := ask(); err != nil {
			t.Fatalf("after the restart: %v", err)
		}
	})

	t.Run("graceful termination", func(t *testing.T) {
		t0 := time.Now()
		if err := l.Kube.CoreV1().Pods("kl").Delete(ctx, "slow", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		if err := ask(); err != nil {
			t.Errorf("during the preStop sleep: %v", err)
		}
		time.Sleep(time.Second)
		if err := ask(); err != nil {
			t.Errorf("after SIGTERM, within its slow shutdown: %v", err)
		}
		eventually(t, 20*time.Second, "Pod gone", func() error {
			_, err := l.Kube.CoreV1().Pods("kl").Get(ctx, "slow", metav1.GetOptions{})
			if err == nil {
				return errors.New("still there")
			}
			return nil
		})
		took := time.Since(t0)
		t.Logf("deleted with a 3 s grace period, 1 s preStop sleep and a process ignoring SIGTERM for 60 s: gone after %s", took.Round(10*time.Millisecond))
		if took < 3*time.Second || took > 6*time.Second {
			t.Errorf("gone after %s, want SIGKILL at the 3 s grace deadline", took)
		}
		if nsExists(PodNetNS("kl", "slow")) {
			t.Error("the Pod's namespace is still there")
		}
	})
}
