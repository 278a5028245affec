package chaos_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cilium/ebpf"

	"github.com/zerohop/zerohop/bpf"
	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/e2e/lab"
)

const (
	// bgpNodes have a speaker and a Pod of web; node 4 is a spare
	// neighbor of the router for the garbage-and-flapping peer.
	bgpNodes = 3
	// The pool the spare-pool scenario deletes and recreates.
	sparePool = "spare"
	// conditionOutsidePool is controller.ConditionOutsidePool.
	conditionOutsidePool = "zerohop.io/IPOutsidePool"
)

func dur(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }

func spareSpec() v1alpha1.IPAddressPoolSpec {
	return v1alpha1.IPAddressPoolSpec{Addresses: []v1alpha1.Address{"203.0.113.64/28", "2001:db8:113::100/124"}}
}

// buildNext builds the "new release" for the rolling upgrade: the same
// source with another version stamped in, at another path.
func buildNext(dir string) (string, error) {
	bin := filepath.Join(dir, "zerohop-next")
	goBin := os.Getenv("GO")
	if goBin == "" {
		goBin = "go"
	}
	cmd := exec.Command(goBin, "build", "-o", bin, "-ldflags",
		"-X github.com/zerohop/zerohop/internal/version.Version=v0.0.0-chaos-next", "github.com/zerohop/zerohop/cmd/zerohop")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the next release: %w: %s", err, out)
	}
	return bin, nil
}

// routerPaths returns, per sending peer, whether the router marks its path
// for prefix stale (graceful restart in progress).
func routerPaths(ctx context.Context, vip netip.Addr) (map[string]bool, error) {
	fam := "ipv4"
	if vip.Is6() {
		fam = "ipv6"
	}
	out, err := lab.Vtysh(ctx, fmt.Sprintf("show bgp %s unicast %s json", fam, netip.PrefixFrom(vip, vip.BitLen())))
	if err != nil {
		return nil, err
	}
	var r struct {
		Paths []struct {
			Peer struct {
				PeerID string `json:"peerId"`
			} `json:"peer"`
			Stale bool `json:"stale"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("parse %s: %w", out, err)
	}
	m := map[string]bool{}
	for _, p := range r.Paths {
		m[p.Peer.PeerID] = p.Stale
	}
	return m, nil
}

// sessionCounts is, per neighbor address, how often the router's session
// was established and dropped.
func sessionCounts(ctx context.Context) (map[string][2]int, error) {
	out, err := lab.Vtysh(ctx, "show bgp neighbors json")
	if err != nil {
		return nil, err
	}
	var raw map[string]struct {
		Established int `json:"connectionsEstablished"`
		Dropped     int `json:"connectionsDropped"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		return nil, err
	}
	m := map[string][2]int{}
	for a, n := range raw {
		m[a] = [2]int{n.Established, n.Dropped}
	}
	return m, nil
}

// waitNodeFresh waits until both of node i's sessions are Established and
// the router holds a fresh (not stale) path from it for every vip.
func (e *env) waitNodeFresh(t *testing.T, i int, vips []netip.Addr, d time.Duration) {
	t.Helper()
	n4, n6 := lab.NodeAddrs(i)
	eventually(t, d, fmt.Sprintf("node%d's sessions up and paths fresh", i), func() (bool, string) {
		for _, a := range []netip.Addr{n4, n6} {
			if n, _ := neighbor(e.ctx, a); n.State != "Established" {
				return false, a.String() + " " + n.State
			}
		}
		for _, v := range vips {
			m, err := routerPaths(e.ctx, v)
			if err != nil {
				return false, err.Error()
			}
			from := n4.String()
			if v.Is6() {
				from = n6.String()
			}
			stale, ok := m[from]
			if !ok || stale {
				return false, fmt.Sprintf("%s from %s: present %v stale %v", v, from, ok, stale)
			}
		}
		return true, ""
	})
}

// TestChaosBGP runs the BGP-mode scenarios on one lab, in order: BFD is
// turned on only for the node failure, and bgpd's restart comes last.
func TestChaosBGP(t *testing.T) {
	suiteStart := time.Now()
	nextc := make(chan string, 1)
	nextDir := t.TempDir()
	go func() {
		bin, err := buildNext(nextDir)
		if err != nil {
			t.Log(err)
		}
		nextc <- bin
	}()
	// The lab's kube-controller-manager runs without leader election, so
	// through the 60 s API server outage below its node lifecycle
	// controller keeps counting the nodes' silent Leases and, when the API
	// server answers again, marks every node NotReady and its Pods not
	// ready (zerohop then drops their flows for a moment). A real one,
	// leader-elected, loses its Lease in the outage and restarts, which
	// forgives the silence. A grace period longer than the outage stands
	// in for that.
	l := lab.Up(t, lab.Options{Nodes: bgpNodes + 1, BFD: true, NodeMonitorGracePeriod: 2 * time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	e := newEnv(t, l, ctx, bgpNodes)

	r4, r6 := lab.RouterNodeAddrs()
	e.create(&v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "chaos"},
		Spec: v1alpha1.IPAddressPoolSpec{Addresses: []v1alpha1.Address{"203.0.113.0/26", "2001:db8:113::/120"}}})
	e.create(&v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: sparePool}, Spec: spareSpec()})
	for name, addr := range map[string]netip.Addr{"router-v4": r4, "router-v6": r6} {
		e.create(&v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.BGPPeerSpec{
			MyASN: lab.DefaultNodeASN, PeerASN: lab.DefaultRouterASN, PeerAddress: addr.String(),
			HoldTime: dur(9 * time.Second), ConnectTime: dur(time.Second), EnableGracefulRestart: true}})
	}
	e.create(&v1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "all"}})
	// Spread flows over the ECMP next hops by ports.
	for _, s := range []string{"net.ipv4.fib_multipath_hash_policy=1", "net.ipv6.fib_multipath_hash_policy=1"} {
		if out, err := exec.CommandContext(ctx, "ip", "netns", "exec", lab.RouterNS, "sysctl", "-qw", s).CombinedOutput(); err != nil {
			t.Fatalf("sysctl %s: %v: %s", s, err, out)
		}
	}
	for i := 1; i <= bgpNodes; i++ {
		if _, err := l.AddPod(ctx, lab.PodSpec{Name: fmt.Sprintf("web-%d", i), Node: i, Labels: map[string]string{"app": "web"}}); err != nil {
			t.Fatal(err)
		}
	}
	// Local: the router's ECMP spreads clients over the three nodes, and
	// each node's XDP program sends them to its own Pod.
	e.service("web", "web", true, nil)
	e.startControllers(2)
	for i := 1; i <= bgpNodes; i++ {
		e.startSpeaker(i, zerohopBin)
	}
	web := e.vips(t, "web", 2, 60*time.Second)
	for _, v := range web {
		e.waitRoute(t, v, 60*time.Second, 1, 2, 3)
	}
	for i := 1; i <= bgpNodes; i++ {
		e.waitNodeFresh(t, i, web, 30*time.Second)
	}
	webT := targets(web)
	t.Logf("lab ready in %s: web %v via nodes 1-3", ms(time.Since(suiteStart)), web)

	t.Run("speaker-restart", func(t *testing.T) {
		ld := startLoad(ctx, webT...)
		time.Sleep(2 * time.Second)
		t0 := time.Now()
		e.stopSpeaker(1, syscall.SIGTERM)
		stopped := time.Since(t0)
		e.startSpeaker(1, zerohopBin)
		e.waitNodeFresh(t, 1, web, 60*time.Second)
		back := time.Since(t0)
		time.Sleep(2 * time.Second)
		res := ld.stop()
		t.Log(res.summary())
		if len(res.failures) > 0 {
			t.Errorf("speaker restart: %d failures:\n%s", len(res.failures), res.firstFailures(10))
		}
		report(t, result{scenario: "speaker restart (SIGTERM, start again)", sent: res.sent, failed: len(res.failures),
			recover: fmt.Sprintf("sessions and fresh paths back %s after SIGTERM (exit took %s)", ms(back), ms(stopped)),
			user:    fmt.Sprintf("nothing: every request answered, slowest %s", ms(res.max))})
	})

	t.Run("rolling-upgrade", func(t *testing.T) {
		var next string
		select {
		case next = <-nextc:
		case <-time.After(3 * time.Minute):
		}
		if next == "" {
			t.Fatal("no build of the next release (see the log above)")
		}
		out, err := exec.Command(next, "version").Output()
		if err != nil || !strings.Contains(string(out), "v0.0.0-chaos-next") {
			t.Fatalf("next release reports %q (%v), want v0.0.0-chaos-next", out, err)
		}
		ld := startLoad(ctx, webT...)
		time.Sleep(2 * time.Second)
		t0 := time.Now()
		var per []string
		for i := 1; i <= bgpNodes; i++ {
			n0 := time.Now()
			e.stopSpeaker(i, syscall.SIGTERM)
			e.startSpeaker(i, next)
			e.waitNodeFresh(t, i, web, 60*time.Second)
			per = append(per, ms(time.Since(n0)))
			exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", e.speakerPID(i)))
			if err != nil || exe != next {
				// nsenter execs the speaker, so the PID is the speaker's.
				t.Errorf("node%d runs %q (%v), want %s", i, exe, err, next)
			}
			time.Sleep(time.Second)
		}
		total := time.Since(t0)
		time.Sleep(time.Second)
		res := ld.stop()
		t.Log(res.summary())
		if len(res.failures) > 0 {
			t.Errorf("rolling upgrade: %d failures:\n%s", len(res.failures), res.firstFailures(10))
		}
		report(t, result{scenario: "rolling upgrade (3 speakers to a new build, one at a time)", sent: res.sent, failed: len(res.failures),
			recover: fmt.Sprintf("each node back in %s; %s for all three", strings.Join(per, ", "), ms(total)),
			user:    fmt.Sprintf("nothing: every request answered, slowest %s", ms(res.max))})
	})

	t.Run("controller-leader-killed", func(t *testing.T) {
		var lead *supervised
		eventually(t, 30*time.Second, "a controller leading", func() (bool, string) {
			lead = e.leader()
			return lead != nil, ""
		})
		before := e.allIngress(t)
		leaseBefore, err := l.Kube.CoordinationV1().Leases(systemNS).Get(ctx, leaseName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		holder := *leaseBefore.Spec.HolderIdentity
		ld := startLoad(ctx, webT...)
		time.Sleep(2 * time.Second)
		t0 := time.Now()
		lead.kill()
		var newHolder string
		eventually(t, 60*time.Second, "another controller holding the Lease", func() (bool, string) {
			ls, err := l.Kube.CoordinationV1().Leases(systemNS).Get(ctx, leaseName, metav1.GetOptions{})
			if err != nil || ls.Spec.HolderIdentity == nil {
				return false, fmt.Sprint(err)
			}
			newHolder = *ls.Spec.HolderIdentity
			return newHolder != holder && newHolder != "", newHolder
		})
		takeover := time.Since(t0)
		// The new leader serves: a new Service gets addresses and routes.
		e.service("after-failover", "web", true, nil)
		fresh := e.vips(t, "after-failover", 2, 60*time.Second)
		for _, v := range fresh {
			e.waitRoute(t, v, 30*time.Second, 1, 2, 3)
		}
		served := time.Since(t0)
		res := ld.stop()
		after := e.allIngress(t)
		for name, ips := range before {
			if after[name] != ips {
				t.Errorf("Service %s: IPs %q before the failover, %q after", name, ips, after[name])
			}
		}
		t.Log(res.summary())
		if len(res.failures) > 0 {
			t.Errorf("controller failover: %d failures:\n%s", len(res.failures), res.firstFailures(10))
		}
		report(t, result{scenario: "controller leader SIGKILLed (2 replicas)", sent: res.sent, failed: len(res.failures),
			recover: fmt.Sprintf("standby took the Lease %s after the kill; a new Service had IPs and routes %s after", ms(takeover), ms(served)),
			user:    fmt.Sprintf("nothing on existing Services (IPs unchanged: %d Services compared); a Service created during the %s without a leader would wait for its IP", len(before), ms(takeover))})
	})

	t.Run("apiserver-stopped-60s", func(t *testing.T) {
		api, ok := l.Proc("kube-apiserver")
		if !ok || api.PID <= 1 {
			t.Fatal("no kube-apiserver among the lab's processes")
		}
		before := e.allIngress(t)
		restartsBefore := e.controllerRestarts()
		w := watchRIB(ctx, web...)
		ld := startLoad(ctx, webT...)
		time.Sleep(2 * time.Second)
		if err := syscall.Kill(api.PID, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		resumed := false
		resume := func() {
			if !resumed {
				_ = syscall.Kill(api.PID, syscall.SIGCONT)
				resumed = true
			}
		}
		defer resume()
		t0 := time.Now()
		alive := true
		for time.Since(t0) < 60*time.Second {
			time.Sleep(time.Second)
			for i := 1; i <= bgpNodes; i++ {
				alive = alive && e.speakerAlive(i)
			}
		}
		resume()
		t1 := time.Now()
		eventually(t, 60*time.Second, "the API server answering", func() (bool, string) {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			var list corev1.ServiceList
			err := e.c.List(cctx, &list, client.InNamespace("default"))
			return err == nil, fmt.Sprint(err)
		})
		e.service("after-outage", "web", true, nil)
		fresh := e.vips(t, "after-outage", 2, 90*time.Second)
		for _, v := range fresh {
			e.waitRoute(t, v, 30*time.Second, 1, 2, 3)
		}
		reconciled := time.Since(t1)
		time.Sleep(time.Second)
		res := ld.stop()
		samples, rerrs, changes := w.stop()
		after := e.allIngress(t)
		for name, ips := range before {
			if after[name] != ips {
				t.Errorf("Service %s: IPs %q before the outage, %q after", name, ips, after[name])
			}
		}
		if !alive {
			t.Error("a speaker exited while the API server was stopped")
		}
		if len(changes) > 0 {
			t.Errorf("the router's route for web changed during the outage:\n%s", strings.Join(changes, "\n"))
		}
		if samples == 0 {
			t.Error("no RIB samples")
		}
		t.Log(res.summary())
		t.Logf("RIB sampled %d times (every 200ms, %d vtysh errors): %d changes", samples, rerrs, len(changes))
		if len(res.failures) > 0 {
			t.Errorf("API server outage: %d failures:\n%s", len(res.failures), res.firstFailures(10))
		}
		restarts := e.controllerRestarts() - restartsBefore
		t.Logf("controller restarts during the outage (the kubelet's job in a cluster; here a supervisor's): %d", restarts)
		report(t, result{scenario: "API server stopped (SIGSTOP) for 60 s", sent: res.sent, failed: len(res.failures),
			recover: fmt.Sprintf("a Service created after SIGCONT had IPs and routes %s later; %d RIB samples, 0 route changes wanted, %d seen; controller restarts %d", ms(reconciled), samples, len(changes), restarts),
			user:    "nothing on existing Services; new Services and changes wait for the API server"})
	})

	t.Run("pool-deleted-and-recreated", func(t *testing.T) {
		e.service("tmp", "web", true, map[string]string{"zerohop.io/address-pool": sparePool})
		tmp := e.vips(t, "tmp", 2, 30*time.Second)
		for _, v := range tmp {
			if !netip.MustParsePrefix("203.0.113.64/28").Contains(v) && !netip.MustParsePrefix("2001:db8:113::100/124").Contains(v) {
				t.Fatalf("tmp got %s, outside pool %s", v, sparePool)
			}
			e.waitRoute(t, v, 30*time.Second, 1, 2, 3)
		}
		tmpIPs := fmt.Sprint(tmp)
		fw := watchFIB(ctx, web...)
		ld := startLoad(ctx, webT...)
		probe := startLoad(ctx, targets(tmp)...)
		time.Sleep(2 * time.Second)
		t.Logf("%s deleting pool %s", time.Now().Format("15:04:05.000"), sparePool)
		var pool v1alpha1.IPAddressPool
		if err := e.c.Get(ctx, client.ObjectKey{Name: sparePool}, &pool); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		if err := e.c.Delete(ctx, &pool); err != nil {
			t.Fatal(err)
		}
		condition := func() (bool, string) {
			var svc corev1.Service
			if err := e.c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "tmp"}, &svc); err != nil {
				return false, err.Error()
			}
			c := meta.FindStatusCondition(svc.Status.Conditions, conditionOutsidePool)
			if c == nil {
				return false, "no condition"
			}
			return c.Status == metav1.ConditionTrue, string(c.Status) + " " + c.Reason
		}
		eventually(t, 20*time.Second, "tmp reported outside every pool", condition)
		_, why := condition()
		// What the speakers do with an IP in no pool: not zerohop's, so
		// not announced (docs/speaker.md).
		withdrawn := true
		for _, v := range tmp {
			func() {
				deadline := time.Now().Add(10 * time.Second)
				for time.Now().Before(deadline) {
					if h, err := lab.BGPNextHops(ctx, v); err == nil && h == "" {
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
				withdrawn = false
			}()
		}
		gone := time.Since(t0)
		if got := fmt.Sprint(e.ingress("tmp")); got != tmpIPs {
			t.Errorf("tmp's IPs moved while its pool was gone: %s, had %s", got, tmpIPs)
		}
		// Nobody else may take the address while its pool is gone, even
		// when asking for it by name.
		t.Logf("%s creating squatter", time.Now().Format("15:04:05.000"))
		e.service("squatter", "web", true, map[string]string{"zerohop.io/loadBalancerIPs": tmp[0].String()})
		time.Sleep(3 * time.Second)
		for _, v := range e.ingress("squatter") {
			if v == tmp[0] {
				t.Errorf("squatter got %s, still held by tmp", v)
			}
		}
		t1 := time.Now()
		t.Logf("%s recreating pool %s", t1.Format("15:04:05.000"), sparePool)
		e.create(&v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: sparePool}, Spec: spareSpec()})
		eventually(t, 20*time.Second, "tmp's condition cleared", func() (bool, string) {
			ok, s := condition()
			return !ok, s
		})
		for _, v := range tmp {
			e.waitRoute(t, v, 30*time.Second, 1, 2, 3)
		}
		back := time.Since(t1)
		time.Sleep(time.Second)
		res := ld.stop()
		pres := probe.stop()
		fibChanges := fw.stop()
		if got := fmt.Sprint(e.ingress("tmp")); got != tmpIPs {
			t.Errorf("tmp's IPs after the pool came back: %s, had %s", got, tmpIPs)
		}
		t.Log("web: " + res.summary())
		t.Log("tmp: " + pres.summary())
		// web, a Service of another pool with the same Pods, must not
		// notice: no failed request, no change of its routes.
		if len(res.failures) > 0 || len(fibChanges) > 0 {
			t.Errorf("web (another pool, same Pods) saw %d failures and %d FIB changes around the pool's delete/recreate:\n%s\n%s",
				len(res.failures), len(fibChanges), res.firstFailures(10), strings.Join(fibChanges, "\n"))
		}
		t.Logf("tmp kept %s; condition %s; routes withdrawn %v (%s after the delete); back %s after the recreate",
			tmpIPs, why, withdrawn, ms(gone), ms(back))
		// Measured 0.1 s each way (the condition and the route polled
		// every 100 ms and 10 ms): the bounds leave a 2-core machine room.
		if !withdrawn {
			t.Errorf("tmp's routes still announced 10s after its pool was deleted")
		} else if gone > 3*time.Second {
			t.Errorf("tmp's routes withdrawn %s after its pool was deleted, want within 3s", ms(gone))
		}
		if back > 3*time.Second {
			t.Errorf("tmp's routes back %s after its pool was recreated, want within 3s", ms(back))
		}
		user := fmt.Sprintf("tmp keeps its IPs %s (Warning IPOutsidePool, condition %s) but is unreachable while its pool is gone: %d of its %d requests failed over %s",
			tmpIPs, conditionOutsidePool, len(pres.failures), pres.sent, ms(pres.window()))
		if !withdrawn {
			user = fmt.Sprintf("tmp keeps its IPs %s and stays announced; %d of its %d requests failed", tmpIPs, len(pres.failures), pres.sent)
		}
		report(t, result{scenario: "pool holding an allocation deleted, recreated", sent: res.sent + pres.sent, failed: len(res.failures) + len(pres.failures),
			recover: fmt.Sprintf("tmp's routes withdrawn %s after the pool was deleted, back %s after it was recreated; web (other pool, same Pods): %d of %d failed", ms(gone), ms(back), len(res.failures), res.sent),
			user:    user})
	})

	t.Run("hostile-flood", func(t *testing.T) {
		maxFlows := make([]uint32, bgpNodes+1)
		flowsBefore := make([]int, bgpNodes+1)
		for i := 1; i <= bgpNodes; i++ {
			m, err := ebpf.LoadPinnedMap(filepath.Join(lab.SpeakerPinRoot(i), "conntrack"), &ebpf.LoadPinOptions{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			maxFlows[i] = m.MaxEntries()
			_ = m.Close()
			snap, err := bpf.Inspect(lab.SpeakerPinRoot(i))
			if err != nil {
				t.Fatal(err)
			}
			flowsBefore[i] = snap.Flows
		}
		bgpBefore, err := sessionCounts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ld := startLoad(ctx, webT...)
		time.Sleep(2 * time.Second)
		base0 := time.Now()
		time.Sleep(8 * time.Second)
		flood0 := time.Now()
		const packets, rate = 20000, 2000
		st, err := newFlood(14, web).run(packets, rate)
		if err != nil {
			t.Fatal(err)
		}
		flood1 := time.Now()
		time.Sleep(2 * time.Second)
		res := ld.stop()
		before, during := res.servedRate(base0, flood0), res.servedRate(flood0, flood1)
		t.Logf("flood: %d packets sent in %s (%d send errors)", st.sent, ms(st.took), st.errs)
		t.Log(res.summary())
		var flows []string
		for i := 1; i <= bgpNodes; i++ {
			if !e.speakerAlive(i) {
				t.Errorf("node%d's speaker died under the flood", i)
			}
			snap, err := bpf.Inspect(lab.SpeakerPinRoot(i))
			if err != nil {
				t.Fatal(err)
			}
			if snap.Flows > int(maxFlows[i]) {
				t.Errorf("node%d: %d conntrack entries, LRU holds %d", i, snap.Flows, maxFlows[i])
			}
			flows = append(flows, fmt.Sprintf("node%d %d→%d of %d", i, flowsBefore[i], snap.Flows, maxFlows[i]))
		}
		for _, p := range l.Procs() {
			if strings.HasPrefix(p.Name, "frr-") && syscall.Kill(p.PID, 0) != nil {
				t.Errorf("%s (pid %d) is gone after the flood", p.Name, p.PID)
			}
		}
		bgpAfter, err := sessionCounts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= bgpNodes; i++ {
			n4, n6 := lab.NodeAddrs(i)
			for _, a := range []string{n4.String(), n6.String()} {
				if bgpAfter[a][1] != bgpBefore[a][1] {
					t.Errorf("session %s dropped during the flood (%v -> %v)", a, bgpBefore[a], bgpAfter[a])
				}
			}
		}
		t.Logf("conntrack entries (before→after of LRU size): %s", strings.Join(flows, ", "))
		t.Logf("served short requests: %.1f/s before the flood, %.1f/s during (offered %d/s)", before, during, shortRate)
		if len(res.failures) > 0 {
			t.Errorf("legitimate requests failed under the flood: %d:\n%s", len(res.failures), res.firstFailures(10))
		}
		if during < 0.9*before {
			t.Errorf("served %.1f/s under the flood, %.1f/s before", during, before)
		}
		report(t, result{scenario: fmt.Sprintf("flood: %d random/malformed packets and SYNs at %d/s to the VIPs", st.sent, rate), sent: res.sent, failed: len(res.failures),
			recover: fmt.Sprintf("nothing to recover: speakers, FRR and BGP sessions up; conntrack %s", strings.Join(flows, ", ")),
			user:    fmt.Sprintf("nothing: %.1f answered/s before, %.1f/s during the flood; slowest %s", before, during, ms(res.max))})
	})

	t.Run("bgp-garbage-and-flapping-peer", func(t *testing.T) {
		const spare = bgpNodes + 1
		s4, _ := lab.NodeAddrs(spare)
		before, err := sessionCounts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		w := watchRIB(ctx, web...)
		ld := startLoad(ctx, webT...)
		time.Sleep(time.Second)
		// Garbage on the router's BGP port from node 4's address, which
		// the router has as a neighbor.
		garbage := [][]byte{
			bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 1024),
			append(bytes.Repeat([]byte{0xff}, 16), 0, 19, 9),            // unknown message type
			append(bytes.Repeat([]byte{0xff}, 16), 0x10, 0, 1, 4, 0xfd), // OPEN claiming 4096 bytes
			append(bytes.Repeat([]byte{0xff}, 16), 0, 5, 4),             // length below the header
			append(bytes.Repeat([]byte{0x00}, 16), 0, 19, 4),            // bad marker
		}
		dial := lab.DialerIn(lab.NodeName(spare))
		accepted := 0
		for n := range 3 * len(garbage) {
			dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			c, err := dial(dctx, "tcp", netip.AddrPortFrom(r4, 179).String())
			cancel()
			if err != nil {
				continue
			}
			accepted++
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			_, _ = c.Write(garbage[n%len(garbage)])
			buf := make([]byte, 4096)
			for range 10 {
				if _, err := c.Read(buf); err != nil {
					break
				}
			}
			_ = c.Close()
		}
		// A peer on node 4 that comes up, announces, withdraws and goes,
		// three times.
		flapPrefix := netip.MustParsePrefix("203.0.113.240/32")
		ups := 0
		for range 3 {
			p, err := l.StartPeer(ctx, lab.PeerConfig{Node: spare})
			if err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(15 * time.Second)
			for time.Now().Before(deadline) {
				if n, _ := neighbor(ctx, s4); n.State == "Established" {
					ups++
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			for range 5 {
				if err := p.Announce(ctx, flapPrefix); err != nil {
					t.Error(err)
				}
				if err := p.Withdraw(ctx, flapPrefix); err != nil {
					t.Error(err)
				}
			}
			_ = p.Announce(ctx, flapPrefix)
			if err := p.Stop(); err != nil {
				t.Error(err)
			}
		}
		time.Sleep(2 * time.Second)
		res := ld.stop()
		samples, _, changes := w.stop()
		after, err := sessionCounts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ups == 0 {
			t.Error("the flapping peer never got Established: the flap did not happen")
		}
		for i := 1; i <= bgpNodes; i++ {
			n4, n6 := lab.NodeAddrs(i)
			for _, a := range []string{n4.String(), n6.String()} {
				if after[a] != before[a] {
					t.Errorf("session %s moved while node4 misbehaved: established/dropped %v -> %v", a, before[a], after[a])
				}
			}
		}
		if len(changes) > 0 {
			t.Errorf("the route for web changed:\n%s", strings.Join(changes, "\n"))
		}
		t.Log(res.summary())
		if len(res.failures) > 0 {
			t.Errorf("%d failures:\n%s", len(res.failures), res.firstFailures(10))
		}
		report(t, result{scenario: "BGP garbage (15 connections) and a peer flapping 3 times on node4", sent: res.sent, failed: len(res.failures),
			recover: fmt.Sprintf("nothing to recover: other sessions never dropped, web's route unchanged over %d samples; flapping peer Established %d/3", samples, ups),
			user:    "nothing"})
		t.Logf("garbage connections accepted by the router: %d of %d", accepted, 3*len(garbage))
	})

	t.Run("config-mistakes", func(t *testing.T) { configMistakes(ctx, t, e, web) })

	t.Run("config-fuzz", func(t *testing.T) {
		seed := uint64(time.Now().UnixNano())
		if s := os.Getenv("ZH_FUZZ_SEED"); s != "" {
			if _, err := fmt.Sscan(s, &seed); err != nil {
				t.Fatalf("ZH_FUZZ_SEED %q: %v", s, err)
			}
		}
		configFuzz(ctx, t, e, web, 300, seed)
	})

	// Turning BFD on is an edit of both BGPPeers, made under load: a
	// configuration change that must not cost a request.
	t.Run("bgppeer-edit-bfd-on", func(t *testing.T) {
		// The lab router's timers (100 ms x 3), on zerohop's side too.
		iv, mult := uint32(lab.BFDInterval.Milliseconds()), uint32(lab.BFDDetectMult)
		e.create(&v1alpha1.BFDProfile{ObjectMeta: metav1.ObjectMeta{Name: "fast"},
			Spec: v1alpha1.BFDProfileSpec{ReceiveInterval: &iv, TransmitInterval: &iv, DetectMultiplier: &mult}})
		fw := watchFIB(ctx, web...)
		ld := startLoad(ctx, webT...)
		time.Sleep(2 * time.Second)
		t0 := time.Now()
		for _, name := range []string{"router-v4", "router-v6"} {
			var p v1alpha1.BGPPeer
			if err := e.c.Get(ctx, client.ObjectKey{Name: name}, &p); err != nil {
				t.Fatal(err)
			}
			p.Spec.BFDProfile = "fast"
			if err := e.c.Update(ctx, &p); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, 30*time.Second, "BFD up on every node's sessions", func() (bool, string) {
			for i := 1; i <= bgpNodes; i++ {
				n4, n6 := lab.NodeAddrs(i)
				for _, a := range []netip.Addr{n4, n6} {
					if n, _ := neighbor(ctx, a); n.BFDStatus != "Up" || n.State != "Established" {
						return false, a.String() + " " + n.State + " BFD " + n.BFDStatus
					}
				}
			}
			return true, ""
		})
		for _, v := range web {
			want := lab.NodeNextHops(v, 1, 2, 3)
			eventually(t, 30*time.Second, fmt.Sprintf("router's FIB route %s via %s", v, want), func() (bool, string) {
				h, err := kernelHops(ctx, v)
				return err == nil && h == want, fmt.Sprint(h, err)
			})
		}
		settled := time.Since(t0)
		// BFD moves from slow start to the profile's 100ms after Up; keep
		// watching through that.
		time.Sleep(5 * time.Second)
		res := ld.stop()
		changes := fw.stop()
		t.Log(res.summary())
		t.Logf("router's FIB for web while BFD was turned on:\n%s", strings.Join(changes, "\n"))
		noRoute := 0
		for _, c := range changes {
			if strings.HasSuffix(c, "-> no route") {
				noRoute++
			}
		}
		if len(res.failures) > 0 || len(changes) > 0 {
			t.Errorf("adding a bfdProfile to the BGPPeers: %d failed requests, %d changes of web's routes (%d to no route at all):\n%s",
				len(res.failures), len(changes), noRoute, res.firstFailures(10))
		}
		report(t, result{scenario: "BGPPeers edited under load (bfdProfile added to both)", sent: res.sent, failed: len(res.failures),
			recover: fmt.Sprintf("BFD up and every route via 3 nodes %s after the edit; %d route changes in the %s watched (%d with no route)", ms(settled), len(changes), ms(settled+5*time.Second), noRoute),
			user:    fmt.Sprintf("%d failed requests, slowest answer %s", len(res.failures), ms(res.max))})
	})

	t.Run("node-failure-bfd", func(t *testing.T) {
		n2v4, n2v6 := lab.NodeAddrs(2)
		// routerBFD reports, from the router's bfdd, whether both of
		// node2's sessions are Up and how many of them the router still
		// hears at the slow-start interval (RFC 5880: 1 s until Up).
		routerBFD := func() (up, slow int, desc string) {
			out, err := lab.Vtysh(ctx, "show bfd peers json")
			if err != nil {
				return 0, 0, err.Error()
			}
			var peers []map[string]any
			if err := json.Unmarshal(out, &peers); err != nil {
				return 0, 0, err.Error()
			}
			var ds []string
			for _, p := range peers {
				if p["peer"] != n2v4.String() && p["peer"] != n2v6.String() {
					continue
				}
				tx, _ := p["remote-transmit-interval"].(float64)
				if p["status"] == "up" {
					up++
					if tx > float64(lab.BFDInterval.Milliseconds()) {
						slow++
					}
				}
				ds = append(ds, fmt.Sprintf("%v %v (node2's tx %vms)", p["peer"], p["status"], tx))
			}
			return up, slow, strings.Join(ds, ", ")
		}
		// Ready to cut: every node's sessions Established with BFD Up,
		// web's routes via the three nodes. Node2's BFD timers may still be
		// at slow start: the cut does not wait for the profile's rate.
		ready := func() (slow int) {
			eventually(t, 30*time.Second, "every node's sessions Established with BFD Up", func() (bool, string) {
				for i := 1; i <= bgpNodes; i++ {
					n4, n6 := lab.NodeAddrs(i)
					for _, a := range []netip.Addr{n4, n6} {
						if n, _ := neighbor(ctx, a); n.BFDStatus != "Up" || n.State != "Established" {
							return false, a.String() + " " + n.State + " BFD " + n.BFDStatus
						}
					}
				}
				up, s, desc := routerBFD()
				slow = s
				return up == 2, desc
			})
			return slow
		}
		link := func(state string) {
			if out, err := exec.CommandContext(ctx, "ip", "-n", lab.NodeName(2), "link", "set", lab.UplinkIf, state).CombinedOutput(); err != nil {
				t.Fatalf("link %s: %v: %s", state, err, out)
			}
		}
		fib, err := lab.WatchRouterFIB()
		if err != nil {
			t.Fatal(err)
		}
		defer fib.Close()
		routes := func(nodes ...int) map[netip.Prefix]string {
			m := map[netip.Prefix]string{}
			for _, v := range web {
				m[netip.PrefixFrom(v, v.BitLen())] = lab.NodeNextHops(v, nodes...)
			}
			return m
		}
		// Detection is 3 x 100 ms after node2's last packet; the rest is
		// bfdd -> bgpd -> zebra -> kernel, timed to the route message.
		const cuts, bound = 20, 500 * time.Millisecond
		var took []time.Duration
		var downs, ups []time.Time
		slowCuts := 0
		ld := startLoad(ctx, webT...)
		time.Sleep(2 * time.Second)
		fw := watchFIB(ctx, web...)
		sessBefore, err := sessionCounts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for cut := 1; cut <= cuts; cut++ {
			if _, err := fib.WaitNextHops(ctx, routes(1, 2, 3), 60*time.Second); err != nil {
				t.Fatalf("before cut %d: %v", cut, err)
			}
			if ready() > 0 {
				slowCuts++
			}
			link("down")
			t0 := time.Now()
			seen, werr := fib.WaitNextHops(ctx, routes(1, 3), 10*time.Second)
			// Hold the node down a moment (new connections meet the
			// shrunken ECMP), then bring it back.
			time.Sleep(time.Second)
			downs = append(downs, t0)
			ups = append(ups, time.Now())
			link("up")
			restoreRoutes(t, ctx, 2, l.Nodes())
			if werr != nil {
				t.Fatalf("cut %d: node2 still a next hop: %v", cut, werr)
			}
			var worst time.Duration
			var per []string
			for _, v := range web {
				d := seen[netip.PrefixFrom(v, v.BitLen())].Sub(t0)
				worst = max(worst, d)
				per = append(per, fmt.Sprintf("%s %s", v, ms(d)))
			}
			took = append(took, worst)
			t.Logf("cut %d: node2's paths left the router's FIB: %s", cut, strings.Join(per, ", "))
			if worst > bound {
				t.Errorf("cut %d: failover %s, want within %s", cut, ms(worst), bound)
			}
		}
		if _, err := fib.WaitNextHops(ctx, routes(1, 2, 3), 60*time.Second); err != nil {
			t.Error(err)
		}
		ready()
		res := ld.stop()
		t.Logf("router's FIB for web during the cuts:\n%s", strings.Join(fw.stop(), "\n"))
		sessAfter, err := sessionCounts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, i := range []int{1, 3} {
			n4, n6 := lab.NodeAddrs(i)
			for _, a := range []string{n4.String(), n6.String()} {
				if sessAfter[a][1] != sessBefore[a][1] {
					t.Errorf("node%d's session %s dropped while node2 was cut off (established/dropped %v -> %v)", i, a, sessBefore[a], sessAfter[a])
				}
			}
		}
		t.Log(res.summary())
		// While node2 is down: new connections must not fail; long-lived
		// ones on node2's Pod are lost with it; long-lived ones on the
		// other nodes are lost too when the router's ECMP (hash-threshold,
		// not resilient) moves them to a node without their flow.
		var whileDown, onReturn, lostOnDead, rehashed int
		for _, f := range res.failures {
			down := false
			for k := range downs {
				if !f.at.Before(downs[k]) && f.at.Before(ups[k]) {
					down = true
				}
			}
			switch {
			case down && f.kind == "long-probe" && l.Workload(f.pod) == "web-2":
				lostOnDead++
			case down && f.kind == "long-probe":
				rehashed++
			case down:
				whileDown++
			default:
				onReturn++
			}
		}
		if len(res.failures) > 0 {
			t.Logf("failures:\n%s", res.firstFailures(15))
		}
		var each []string
		for _, d := range took {
			each = append(each, strconv.FormatInt(d.Milliseconds(), 10))
		}
		sorted := slices.Clone(took)
		slices.Sort(sorted)
		median, worst := sorted[len(sorted)/2], sorted[len(sorted)-1]
		t.Logf("BFD failover over %d cuts (slower family, to the kernel route message; %d cuts while the router still heard node2's slow-start interval): max %s, median %s, min %s; every cut in ms: %s",
			cuts, slowCuts, ms(worst), ms(median), ms(sorted[0]), strings.Join(each, " "))
		if whileDown > 0 {
			t.Errorf("%d new connections failed while node2 was down", whileDown)
		}
		report(t, result{scenario: fmt.Sprintf("node2's uplink cut %d times (BGP + BFD %s x %d)", cuts, lab.BFDInterval, lab.BFDDetectMult), sent: res.sent, failed: len(res.failures),
			recover: fmt.Sprintf("router's FIB dropped node2 after at most %s (median %s, min %s; bound %s each)", ms(worst), ms(median), ms(sorted[0]), bound),
			user: fmt.Sprintf("new connections to node2 wait for a SYN retransmit (slowest answer %s), %d failed; long-lived connections reset: %d on node2's Pod, %d on the other nodes when the router's ECMP rehashed, %d when node2 came back (Local mode: a node has no other node's flows)",
				ms(res.max), whileDown, lostOnDead, rehashed, onReturn)})
	})

	t.Run("frr-restart", func(t *testing.T) {
		bgpd, ok := l.Proc("frr-bgpd")
		if !ok || bgpd.PID <= 1 {
			t.Fatal("no frr-bgpd among the lab's processes")
		}
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", bgpd.PID))
		if err != nil {
			t.Fatal(err)
		}
		argv := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		// The same daemon, with the read-only wait of a restart under
		// running speakers (lab.RestartConfig).
		if i := slices.Index(argv, "-f"); i >= 0 && i+1 < len(argv) {
			if argv[i+1], err = lab.RestartConfig(argv[i+1]); err != nil {
				t.Fatal(err)
			}
		} else {
			t.Fatalf("frr-bgpd's command line names no -f config: %q", argv)
		}
		// The router runs BGP graceful restart with its forwarding state
		// preserved: zebra keeps bgpd's routes in the kernel while bgpd
		// is away, and the speakers, as helpers, send their paths again
		// to the new bgpd.
		if err := lab.RegisterBGPGracefulRestart(ctx, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		fw := watchFIB(ctx, web...)
		ld := startLoad(ctx, webT...)
		time.Sleep(2 * time.Second)
		t0 := time.Now()
		if err := syscall.Kill(bgpd.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for range 250 {
			if syscall.Kill(bgpd.PID, 0) != nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		// The same daemon, in the router's namespace; this test stops it.
		cmd := exec.Command("ip", append([]string{"netns", "exec", lab.RouterNS}, argv...)...)
		logf, err := os.Create(filepath.Join(e.logDir, "bgpd-restarted.log"))
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		_ = logf.Close()
		t.Cleanup(func() { lab.StopCommand(cmd, syscall.SIGTERM) })
		restarted := time.Since(t0)
		for _, v := range web {
			e.waitRoute(t, v, 60*time.Second, 1, 2, 3)
		}
		back := time.Since(t0)
		for i := 1; i <= bgpNodes; i++ {
			e.waitNodeFresh(t, i, web, 30*time.Second)
		}
		fresh := time.Since(t0)
		time.Sleep(2 * time.Second)
		res := ld.stop()
		changes := fw.stop()
		t.Log(res.summary())
		t.Logf("router's FIB for web across bgpd's restart (sampled every 20ms):\n%s", strings.Join(changes, "\n"))
		long := res.count(func(f failure) bool { return f.kind != "short" })
		// Zebra keeps bgpd's routes and the restarted bgpd installs them
		// whole, so the kernel routes never change: no connection, new or
		// long-lived, may fail.
		if len(res.failures) > 0 || len(changes) > 0 {
			t.Errorf("bgpd restart: %d failed requests (%d on long-lived connections), %d changes of web's kernel routes:\n%s",
				len(res.failures), long, len(changes), res.firstFailures(10))
		}
		report(t, result{scenario: "router's bgpd SIGKILLed and started again (graceful restart, zebra keeps the routes)", sent: res.sent, failed: len(res.failures),
			recover: fmt.Sprintf("bgpd restarted after %s; both routes (3 next hops) in its RIB %s and every path fresh %s after the kill; %d changes of the kernel routes", ms(restarted), ms(back), ms(fresh), len(changes)),
			user:    fmt.Sprintf("%d failed requests (%d on long-lived connections), slowest answer %s", len(res.failures), long, ms(res.max))})
	})

	t.Logf("TestChaosBGP took %s", ms(time.Since(suiteStart)))
}
