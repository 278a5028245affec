package gate_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/controller"
	"github.com/zerohop/zerohop/e2e/echo"
	"github.com/zerohop/zerohop/e2e/lab"
	"github.com/zerohop/zerohop/speaker"
)

const (
	speakerNS = "zerohop-system"
	replicas  = 3
	// loadEvery spaces the client's new connections (50 a second).
	loadEvery  = 20 * time.Millisecond
	reqTimeout = 2 * time.Second
)

type env struct {
	t   *testing.T
	ctx context.Context
	l   *lab.Lab
	c   client.Client
}

// TestReadinessGate: one lab, one Service per Deployment (gated and not),
// scenarios in the order that leaves nodes for the next one; the node
// shutdown comes last, as its node stays down.
func TestReadinessGate(t *testing.T) {
	l := lab.Up(t, lab.Options{Nodes: 3, KubeProxy: lab.KubeProxyNone})
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	ctrllog.SetLogger(logr.Discard())
	c, err := client.New(l.RESTConfig, client.Options{Scheme: speaker.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ctx: ctx, l: l, c: c}
	sp := l.Speakers(t, zerohopBin, speakerNS, nil, nil)
	l.Controller(t, zerohopBin)
	r4, _ := lab.RouterNodeAddrs()
	e.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: speakerNS}})
	e.create(&v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "lab"},
		Spec: v1alpha1.IPAddressPoolSpec{Addresses: []v1alpha1.Address{"203.0.113.0/26"}}})
	e.create(&v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "router-v4"}, Spec: v1alpha1.BGPPeerSpec{
		MyASN: lab.DefaultNodeASN, PeerASN: lab.DefaultRouterASN, PeerAddress: r4.String(),
		HoldTime: &metav1.Duration{Duration: 9 * time.Second}, ConnectTime: &metav1.Duration{Duration: time.Second}}})
	e.create(&v1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "lab"},
		Spec: v1alpha1.BGPAdvertisementSpec{IPAddressPools: []string{"lab"}}})
	for i := 1; i <= l.Nodes(); i++ {
		sp.Start(i)
	}
	timer := startGateTimer(ctx, t, l)

	const gatedVIP, plainVIP = "203.0.113.20", "203.0.113.21"
	e.deploy("gated", true)
	e.deploy("plain", false)
	for name, vip := range map[string]string{"gated": gatedVIP, "plain": plainVIP} {
		if err := l.AddLBService(ctx, name, name, false, vip); err != nil {
			t.Fatal(err)
		}
	}
	e.waitRolled("gated")
	e.waitRolled("plain")
	lab.WaitBGPRoute(t, ctx, netip.MustParseAddr(gatedVIP), 60*time.Second, 1, 2, 3)
	gatedDst := netip.AddrPortFrom(netip.MustParseAddr(gatedVIP), echo.DefaultTCPPort).String()
	plainDst := netip.AddrPortFrom(netip.MustParseAddr(plainVIP), echo.DefaultTCPPort).String()

	t.Run("rolling update without the gate", func(t *testing.T) {
		e := e.with(t)
		ld := startLoad(ctx, plainDst)
		e.restart("plain")
		ld.stopAfter(time.Second).report(t, "rolling update, 3 replicas, maxSurge 1, maxUnavailable 0, no gate", false)
	})
	t.Run("rolling update with the gate", func(t *testing.T) {
		e := e.with(t)
		ld := startLoad(ctx, gatedDst)
		e.restart("gated")
		ld.stopAfter(time.Second).report(t, "rolling update, 3 replicas, maxSurge 1, maxUnavailable 0, gated", true)
	})
	t.Run("node drain", func(t *testing.T) {
		e := e.with(t)
		node := e.nodeOf("gated")
		ld := startLoad(ctx, gatedDst)
		e.drain(node)
		e.waitRolled("gated")
		ld.stopAfter(time.Second).report(t, fmt.Sprintf("drain of %s (cordon, then evictions one at a time)", lab.NodeName(node)), true)
		e.uncordon(node)
	})
	t.Run("scale 3 to 0 to 3", func(t *testing.T) {
		e := e.with(t)
		e.scale("gated", 0)
		e.waitNoPods("gated")
		e.scale("gated", replicas)
		e.waitRolled("gated")
		// Ready means reachable: no request fails from then on.
		ld := startLoad(ctx, gatedDst)
		ld.stopAfter(2*time.Second).report(t, "requests right after scaling 0 to 3 is Ready", true)
	})
	t.Run("graceful node shutdown", func(t *testing.T) {
		e := e.with(t)
		node := e.nodeOf("gated")
		ld := startLoad(ctx, gatedDst)
		if err := l.ShutdownNode(ctx, node); err != nil {
			t.Fatal(err)
		}
		e.waitRolledAway("gated", node)
		ld.stopAfter(time.Second).report(t, fmt.Sprintf("graceful shutdown of %s", lab.NodeName(node)), true)
	})
	timer.report(t)
}

// with is e for a subtest: its failures end the subtest.
func (e *env) with(t *testing.T) *env {
	c := *e
	c.t = t
	return &c
}

func (e *env) create(obj client.Object) {
	e.t.Helper()
	if err := e.c.Create(e.ctx, obj); err != nil {
		e.t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
}

// deploy creates a Deployment of the echo server, three replicas rolled
// one at a time. Its Pods drain for two seconds (preStop) and stop
// within ten.
func (e *env) deploy(name string, gated bool) {
	e.t.Helper()
	sel := map[string]string{"app": name}
	lbls := map[string]string{"app": name}
	var gates []corev1.PodReadinessGate
	if gated {
		lbls[controller.LabelReadinessGate] = "true"
		gates = []corev1.PodReadinessGate{{ConditionType: controller.ConditionLoadBalancerReady}}
	}
	ctr := lab.EchoContainer()
	ctr.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 2}}}
	one := intstr.FromInt32(1)
	zero := intstr.FromInt32(0)
	e.create(&appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(replicas)),
			Selector: &metav1.LabelSelector{MatchLabels: sel},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: &one, MaxUnavailable: &zero}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: lbls},
				Spec: corev1.PodSpec{
					AutomountServiceAccountToken:  ptr.To(false),
					TerminationGracePeriodSeconds: ptr.To(int64(10)),
					ReadinessGates:                gates,
					Containers:                    []corev1.Container{ctr},
				},
			},
		},
	})
}

func (e *env) deployment(name string) *appsv1.Deployment {
	e.t.Helper()
	d, err := e.l.Kube.AppsV1().Deployments("default").Get(e.ctx, name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

func (e *env) pods(name string) []corev1.Pod {
	e.t.Helper()
	list, err := e.l.Kube.CoreV1().Pods("default").List(e.ctx, metav1.ListOptions{LabelSelector: "app=" + name})
	if err != nil {
		e.t.Fatal(err)
	}
	return list.Items
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitRolled waits until the Deployment's rollout is done: every replica
// updated and Ready, no old one left running.
func (e *env) waitRolled(name string) {
	e.t.Helper()
	e.waitRolledAway(name, 0)
}

// waitRolledAway is waitRolled, with no Ready Pod on node away (0: any).
func (e *env) waitRolledAway(name string, away int) {
	e.t.Helper()
	lab.Eventually(e.t, 120*time.Second, "deployment "+name+" rolled out", func() (bool, string) {
		d := e.deployment(name)
		st := d.Status
		rolled := st.ObservedGeneration >= d.Generation && st.UpdatedReplicas == *d.Spec.Replicas && st.ReadyReplicas == *d.Spec.Replicas &&
			st.Replicas == *d.Spec.Replicas
		ready := 0
		var gates []string
		for _, p := range e.pods(name) {
			if p.DeletionTimestamp == nil && podReady(&p) && (away == 0 || p.Spec.NodeName != lab.NodeName(away)) {
				ready++
			}
			for _, c := range p.Status.Conditions {
				if c.Type == controller.ConditionLoadBalancerReady {
					gates = append(gates, fmt.Sprintf("%s: %s %s %s", p.Name, c.Status, c.Reason, c.Message))
				}
			}
		}
		return rolled && ready == int(*d.Spec.Replicas), fmt.Sprintf("replicas %d updated %d ready %d; %d Ready Pods; gates: %s",
			st.Replicas, st.UpdatedReplicas, st.ReadyReplicas, ready, strings.Join(gates, "; "))
	})
}

func (e *env) waitNoPods(name string) {
	e.t.Helper()
	lab.Eventually(e.t, 60*time.Second, "no Pods of "+name, func() (bool, string) {
		n := len(e.pods(name))
		return n == 0, fmt.Sprintf("%d Pods", n)
	})
}

func (e *env) patchDeployment(name string, patch map[string]any) {
	e.t.Helper()
	b, err := json.Marshal(patch)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.l.Kube.AppsV1().Deployments("default").Patch(e.ctx, name, types.StrategicMergePatchType, b, metav1.PatchOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// restart rolls every Pod of the Deployment, as kubectl rollout restart,
// and waits for the rollout to end.
func (e *env) restart(name string) {
	e.t.Helper()
	e.patchDeployment(name, map[string]any{"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{
		"annotations": map[string]string{"zerohop.io/restarted-at": time.Now().Format(time.RFC3339Nano)}}}}})
	e.waitRolled(name)
}

func (e *env) scale(name string, n int) {
	e.t.Helper()
	e.patchDeployment(name, map[string]any{"spec": map[string]any{"replicas": n}})
}

// nodeOf is the node (1-based) of the Deployment's first Ready Pod.
func (e *env) nodeOf(name string) int {
	e.t.Helper()
	for _, p := range e.pods(name) {
		if p.DeletionTimestamp == nil && podReady(&p) {
			i, err := strconv.Atoi(strings.TrimPrefix(p.Spec.NodeName, "zh-node"))
			if err == nil {
				return i
			}
		}
	}
	e.t.Fatalf("no Ready Pod of %s", name)
	return 0
}

// drain is kubectl drain: cordon, then evict the Pods on the node by the
// eviction API. The gated Deployment's are evicted one at a time, each
// once the previous one's replacement is Ready, as a PodDisruptionBudget
// of maxUnavailable 1 would allow (the lab runs no disruption
// controller); the other Deployment, not under load, all at once.
func (e *env) drain(node int) {
	e.t.Helper()
	e.cordon(node, true)
	for _, name := range []string{"plain", "gated"} {
		for _, p := range e.pods(name) {
			if p.Spec.NodeName != lab.NodeName(node) || p.DeletionTimestamp != nil {
				continue
			}
			err := e.l.Kube.PolicyV1().Evictions("default").Evict(e.ctx, &policyv1.Eviction{
				ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: p.Name}})
			if err != nil && !apierrors.IsNotFound(err) {
				e.t.Fatalf("evict %s: %v", p.Name, err)
			}
			if name == "gated" {
				e.waitRolled(name)
			}
		}
	}
}

func (e *env) uncordon(node int) { e.cordon(node, false) }

func (e *env) cordon(node int, on bool) {
	e.t.Helper()
	b, _ := json.Marshal(map[string]any{"spec": map[string]any{"unschedulable": on}})
	if _, err := e.l.Kube.CoreV1().Nodes().Patch(e.ctx, lab.NodeName(node), types.StrategicMergePatchType, b, metav1.PatchOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// load opens a new TCP connection to the VIP every loadEvery and counts
// those that get no answer from a Pod.
type load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	start  time.Time

	mu     sync.Mutex
	sent   int
	failed []string
	took   time.Duration
}

func startLoad(ctx context.Context, dst string) *load {
	ctx, cancel := context.WithCancel(ctx)
	ld := &load{cancel: cancel, start: time.Now()}
	dial := lab.DialerIn(lab.ClientNS)
	ld.wg.Add(1)
	go func() {
		defer ld.wg.Done()
		tick := time.NewTicker(loadEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			ld.mu.Lock()
			ld.sent++
			ld.mu.Unlock()
			ld.wg.Add(1)
			go func(t0 time.Time) {
				defer ld.wg.Done()
				rctx, cancel := context.WithTimeout(context.Background(), reqTimeout)
				rep, err := echo.Request(rctx, dial, "tcp", dst)
				cancel()
				if err == nil && rep.Pod == "" {
					err = fmt.Errorf("empty answer")
				}
				if err != nil {
					ld.mu.Lock()
					ld.failed = append(ld.failed, fmt.Sprintf("%s: %v", t0.Format("15:04:05.000"), err))
					ld.mu.Unlock()
				}
			}(time.Now())
		}
	}()
	return ld
}

// stopAfter lets the load run for d more, then stops it and waits for
// the requests under way.
func (ld *load) stopAfter(d time.Duration) *load {
	time.Sleep(d)
	ld.cancel()
	ld.wg.Wait()
	ld.took = time.Since(ld.start)
	return ld
}

func (ld *load) report(t *testing.T, what string, wantZero bool) {
	t.Helper()
	t.Logf("%s: %d of %d requests failed over %s", what, len(ld.failed), ld.sent, ld.took.Round(100*time.Millisecond))
	for i, f := range ld.failed {
		if i == 5 {
			t.Logf("  ... %d more", len(ld.failed)-5)
			break
		}
		t.Logf("  %s", f)
	}
	if ld.sent < 50 {
		t.Errorf("only %d requests sent", ld.sent)
	}
	if wantZero && len(ld.failed) > 0 {
		t.Errorf("%s: %d requests lost, want 0", what, len(ld.failed))
	}
}

// gateTimer watches the gated Pods and notes, for each, when its
// containers turned ready and when its gate turned True, as this process
// saw them: the same watch sees both, so the difference is the gate's
// delay (plus at most the watch's own jitter).
type gateTimer struct {
	mu      sync.Mutex
	ready   map[types.UID]time.Time
	gated   map[types.UID]time.Time
	counted map[types.UID]bool
	early   int // gate True before the containers were ready
	delays  []time.Duration
}

func startGateTimer(ctx context.Context, t *testing.T, l *lab.Lab) *gateTimer {
	g := &gateTimer{ready: map[types.UID]time.Time{}, gated: map[types.UID]time.Time{}, counted: map[types.UID]bool{}}
	go func() {
		for ctx.Err() == nil {
			w, err := l.Kube.CoreV1().Pods("default").Watch(ctx, metav1.ListOptions{LabelSelector: controller.LabelReadinessGate})
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			for ev := range w.ResultChan() {
				p, ok := ev.Object.(*corev1.Pod)
				if ok {
					g.note(p, time.Now())
				}
			}
		}
	}()
	return g
}

func (g *gateTimer) note(p *corev1.Pod, now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case corev1.ContainersReady:
			if _, ok := g.ready[p.UID]; !ok {
				g.ready[p.UID] = now
			}
		case controller.ConditionLoadBalancerReady:
			if _, done := g.gated[p.UID]; !done {
				g.gated[p.UID] = now
			}
		}
	}
	// Counted once both are seen; a gate that opened before the
	// containers were ready kept nothing waiting.
	r, ok1 := g.ready[p.UID]
	gt, ok2 := g.gated[p.UID]
	if ok1 && ok2 && !g.counted[p.UID] {
		g.counted[p.UID] = true
		if gt.Before(r) {
			g.early++
		}
		g.delays = append(g.delays, max(0, gt.Sub(r)))
	}
}

func (g *gateTimer) report(t *testing.T) {
	g.mu.Lock()
	d := slices.Clone(g.delays)
	early := g.early
	g.mu.Unlock()
	slices.Sort(d)
	if len(d) < 5 {
		t.Fatalf("gate delay measured on %d Pods only", len(d))
	}
	q := func(p float64) time.Duration { return d[min(len(d)-1, int(p*float64(len(d))))] }
	t.Logf("containers ready to gate True, %d Pods (%d gated True before ready, counted 0; shared CPU, noisy): median %s, p99 %s, max %s",
		len(d), early, q(0.5).Round(time.Millisecond), q(0.99).Round(time.Millisecond), d[len(d)-1].Round(time.Millisecond))
	if q(0.99) >= time.Second {
		t.Errorf("gate p99 %s, goal < 1s", q(0.99))
	}
}
