package chaos_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/zerohop/zerohop/e2e/echo"
	"github.com/zerohop/zerohop/e2e/lab"
	"github.com/zerohop/zerohop/speaker"
)

const (
	systemNS = "zerohop-system"
	lbClass  = "zerohop.io/lb"
	// leaseName is the controller's leader-election Lease.
	leaseName = "zerohop-controller"
)

// env is one lab with zerohop running in it: speakers on the nodes and,
// for BGP, two controllers with leader election.
type env struct {
	t      *testing.T
	ctx    context.Context
	l      *lab.Lab
	c      client.Client
	nodes  int // nodes with a speaker: 1..nodes
	logDir string
	// speakerArgs and speakerEnv are added to every speaker's command.
	speakerArgs, speakerEnv []string

	mu       sync.Mutex
	speakers map[int]*exec.Cmd
	ctrls    []*supervised
}

func newEnv(t *testing.T, l *lab.Lab, ctx context.Context, nodes int) *env {
	ctrllog.SetLogger(logr.Discard())
	c, err := client.New(l.RESTConfig, client.Options{Scheme: speaker.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ctx: ctx, l: l, c: c, nodes: nodes, logDir: t.TempDir(), speakers: map[int]*exec.Cmd{}}
	t.Cleanup(func() {
		for _, s := range e.ctrls {
			s.stop()
		}
		for i := 1; i <= nodes; i++ {
			e.stopSpeaker(i, syscall.SIGKILL)
		}
		if t.Failed() {
			for i := 1; i <= nodes; i++ {
				e.logTail(t, fmt.Sprintf("speaker-node%d.log", i))
			}
			for i := range e.ctrls {
				e.logTail(t, fmt.Sprintf("controller-%d.log", i))
			}
		}
	})
	e.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: systemNS}})
	return e
}

func (e *env) logTail(t *testing.T, name string) {
	b, _ := os.ReadFile(filepath.Join(e.logDir, name))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	t.Logf("%s (tail):\n%s", name, b)
}

func (e *env) create(obj client.Object) {
	e.t.Helper()
	if err := e.c.Create(e.ctx, obj); err != nil {
		e.t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
}

// startSpeaker runs bin's speaker on node i, as the DaemonSet would.
func (e *env) startSpeaker(i int, bin string) {
	e.t.Helper()
	cmd, err := e.l.StartSpeaker(bin, i, systemNS, filepath.Join(e.logDir, fmt.Sprintf("speaker-node%d.log", i)), e.speakerArgs, e.speakerEnv)
	if err != nil {
		e.t.Fatal(err)
	}
	e.mu.Lock()
	e.speakers[i] = cmd
	e.mu.Unlock()
}

// stopSpeaker signals node i's speaker (SIGTERM: a restart as Kubernetes
// does it; SIGKILL: a crash) and waits for it, killing it after 10s.
func (e *env) stopSpeaker(i int, sig syscall.Signal) {
	e.mu.Lock()
	cmd := e.speakers[i]
	delete(e.speakers, i)
	e.mu.Unlock()
	if cmd == nil {
		return
	}
	lab.StopCommand(cmd, sig)
}

// speakerAlive reports whether node i's speaker process still runs.
func (e *env) speakerAlive(i int) bool {
	e.mu.Lock()
	cmd := e.speakers[i]
	e.mu.Unlock()
	return cmd != nil && cmd.ProcessState == nil && cmd.Process.Signal(syscall.Signal(0)) == nil
}

func (e *env) speakerPID(i int) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	if cmd := e.speakers[i]; cmd != nil {
		return cmd.Process.Pid
	}
	return 0
}

// supervised is a process restarted when it exits, as the kubelet restarts
// a container: the controller exits when it loses its Lease.
type supervised struct {
	name    string
	argv    []string
	logPath string

	mu       sync.Mutex
	cmd      *exec.Cmd
	runStart int64 // log offset where the current run's output begins
	restarts int
	stopping bool
	done     chan struct{}
}

func (s *supervised) run() {
	defer close(s.done)
	// Bounded: a crash loop ends after 30 restarts.
	for n := 0; n <= 30; n++ {
		logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return
		}
		off, _ := logf.Seek(0, 2)
		cmd := exec.Command(s.argv[0], s.argv[1:]...)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		s.mu.Lock()
		if s.stopping {
			s.mu.Unlock()
			_ = logf.Close()
			return
		}
		err = cmd.Start()
		s.cmd, s.runStart = cmd, off
		if n > 0 {
			s.restarts++
		}
		s.mu.Unlock()
		_ = logf.Close()
		if err != nil {
			return
		}
		_ = cmd.Wait()
		s.mu.Lock()
		stopping := s.stopping
		s.mu.Unlock()
		if stopping {
			return
		}
		time.Sleep(time.Second) // the kubelet's first back-off step
	}
}

func (s *supervised) stop() {
	s.mu.Lock()
	s.stopping = true
	cmd := s.cmd
	s.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		if cmd != nil && cmd.Process != nil {
			_ = cmd.Process.Kill()
		}
		<-s.done
	}
}

// kill SIGKILLs the current run (the supervisor starts a new one).
func (s *supervised) kill() {
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Kill()
	}
}

// leading reports whether the current run has acquired the Lease, from
// client-go's leader-election log line.
func (s *supervised) leading() bool {
	s.mu.Lock()
	off := s.runStart
	s.mu.Unlock()
	b, err := os.ReadFile(s.logPath)
	if err != nil || int64(len(b)) < off {
		return false
	}
	return strings.Contains(strings.ToLower(string(b[off:])), "successfully acquired lease")
}

func (s *supervised) restartCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restarts
}

// startControllers runs n controllers with leader election, each
// supervised.
func (e *env) startControllers(n int) {
	for i := range n {
		s := &supervised{
			name: fmt.Sprintf("controller-%d", i),
			argv: []string{zerohopBin, "controller", "--kubeconfig", e.l.APIServer().Kubeconfig, "--leader-elect=true",
				"--leader-election-namespace", systemNS, "--metrics-bind-address", "0", "--health-probe-bind-address", "0"},
			logPath: filepath.Join(e.logDir, fmt.Sprintf("controller-%d.log", i)),
			done:    make(chan struct{}),
		}
		go s.run()
		e.ctrls = append(e.ctrls, s)
	}
}

// leader returns the controller whose current run holds the Lease.
func (e *env) leader() *supervised {
	for _, s := range e.ctrls {
		if s.leading() {
			return s
		}
	}
	return nil
}

func (e *env) controllerRestarts() int {
	n := 0
	for _, s := range e.ctrls {
		n += s.restartCount()
	}
	return n
}

// svcSpec is a LoadBalancer Service of class zerohop on the echo server's
// TCP port for Pods labelled app=sel, dual-stack when possible.
func (e *env) service(name, sel string, local bool, annotations map[string]string) {
	e.t.Helper()
	dual := corev1.IPFamilyPolicyPreferDualStack
	class := lbClass
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Annotations: annotations},
		Spec: corev1.ServiceSpec{
			Type:              corev1.ServiceTypeLoadBalancer,
			LoadBalancerClass: &class,
			IPFamilyPolicy:    &dual,
			Selector:          map[string]string{"app": sel},
			Ports: []corev1.ServicePort{{Name: "tcp", Port: echo.DefaultTCPPort, Protocol: corev1.ProtocolTCP,
				TargetPort: intstr.FromInt32(echo.DefaultTCPPort)}},
		},
	}
	if local {
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}
	if err := e.l.AddService(e.ctx, svc); err != nil {
		e.t.Fatal(err)
	}
}

// vips waits (bounded) until Service name has want ingress IPs and
// returns them, IPv4 first.
func (e *env) vips(t *testing.T, name string, want int, d time.Duration) []netip.Addr {
	t.Helper()
	var got []netip.Addr
	eventually(t, d, fmt.Sprintf("%d IPs on Service %s", want, name), func() (bool, string) {
		got = e.ingress(name)
		return len(got) == want, fmt.Sprint(got)
	})
	return got
}

// ingress returns a Service's ingress IPs (nil on error), IPv4 first.
func (e *env) ingress(name string) []netip.Addr {
	var svc corev1.Service
	ctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
	defer cancel()
	if err := e.c.Get(ctx, client.ObjectKey{Namespace: "default", Name: name}, &svc); err != nil {
		return nil
	}
	var out []netip.Addr
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(ing.IP); err == nil {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b netip.Addr) int {
		if a.Is4() != b.Is4() {
			if a.Is4() {
				return -1
			}
			return 1
		}
		return a.Compare(b)
	})
	return out
}

// allIngress maps every Service in default to its ingress IPs.
func (e *env) allIngress(t *testing.T) map[string]string {
	t.Helper()
	var list corev1.ServiceList
	if err := e.c.List(e.ctx, &list, client.InNamespace("default")); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, s := range list.Items {
		var ips []string
		for _, ing := range s.Status.LoadBalancer.Ingress {
			ips = append(ips, ing.IP)
		}
		out[s.Name] = strings.Join(ips, ",")
	}
	return out
}

func (e *env) waitRoute(t *testing.T, vip netip.Addr, d time.Duration, nodes ...int) {
	t.Helper()
	lab.WaitBGPRoute(t, e.ctx, vip, d, nodes...)
}

// ribWatch samples the router's routes for vips every 200ms and records
// every change of next hops.
type ribWatch struct {
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	samples int
	errs    int
	changes []string
}

func watchRIB(ctx context.Context, vips ...netip.Addr) *ribWatch {
	ctx, cancel := context.WithCancel(ctx)
	w := &ribWatch{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		last := map[netip.Addr]string{}
		for n := 0; n < 10000 && ctx.Err() == nil; n++ {
			for _, v := range vips {
				got, err := lab.BGPNextHops(ctx, v)
				w.mu.Lock()
				if err != nil {
					if ctx.Err() == nil {
						w.errs++
					}
				} else {
					w.samples++
					if prev, ok := last[v]; ok && prev != got {
						w.changes = append(w.changes, fmt.Sprintf("%s %s: %q -> %q", time.Now().Format("15:04:05.000"), v, prev, got))
					}
					last[v] = got
				}
				w.mu.Unlock()
			}
			sleepCtx(ctx, 200*time.Millisecond)
		}
	}()
	return w
}

func (w *ribWatch) stop() (samples, errs int, changes []string) {
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.samples, w.errs, slices.Clone(w.changes)
}

// neighbor returns the router's view of one BGP neighbor.
func neighbor(ctx context.Context, addr netip.Addr) (lab.BGPNeighbor, bool) {
	ns, err := lab.Neighbors(ctx)
	if err != nil {
		return lab.BGPNeighbor{}, false
	}
	for _, n := range ns {
		if n.Addr == addr.String() {
			return n, true
		}
	}
	return lab.BGPNeighbor{}, false
}

func eventually(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	lab.Eventually(t, d, what, cond)
}

func hostPort(a netip.Addr) string {
	return net.JoinHostPort(a.String(), fmt.Sprint(echo.DefaultTCPPort))
}

func targets(vips []netip.Addr) []string {
	var out []string
	for _, v := range vips {
		out = append(out, hostPort(v))
	}
	return out
}

// result is one row of the scenario table.
type result struct {
	scenario string
	sent     int
	failed   int
	recover  string
	user     string
}

// report logs a scenario's numbers (requests, failures, recovery time), and
// a table row.
func report(t *testing.T, r result) {
	t.Helper()
	t.Logf("SCENARIO %s: %d requests, %d failed, recovery %s", r.scenario, r.sent, r.failed, r.recover)
	t.Logf("  what the user would see: %s", r.user)
	t.Logf("TABLE | %s | %d | %d | %s | %s |", r.scenario, r.sent, r.failed, r.recover, r.user)
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }

// restoreRoutes puts back node i's static routes after its uplink was
// down (the kernel drops routes through a link that goes down, and IPv6
// addresses; on a real host the network configuration would add them
// again): the default
// routes via the router and the other nodes' Pod ranges, as the lab
// wires them.
func restoreRoutes(t *testing.T, ctx context.Context, i, nodes int) {
	t.Helper()
	r4, r6 := lab.RouterNodeAddrs()
	_, n6 := lab.NodeAddrs(i)
	// IPv6 addresses go with the link too (keep_addr_on_down is off).
	cmds := [][]string{{"-6", "addr", "replace", netip.PrefixFrom(n6, lab.NodeNet6.Bits()).String(), "dev", lab.UplinkIf, "nodad"},
		{"route", "replace", "default", "via", r4.String()}, {"-6", "route", "replace", "default", "via", r6.String()}}
	for k := 1; k <= nodes; k++ {
		if k == i {
			continue
		}
		k4, k6 := lab.NodeAddrs(k)
		p4, p6 := lab.PodCIDRs(k)
		cmds = append(cmds, []string{"route", "replace", p4.String(), "via", k4.String()},
			[]string{"-6", "route", "replace", p6.String(), "via", k6.String()})
	}
	for _, c := range cmds {
		if out, err := exec.CommandContext(ctx, "ip", append([]string{"-n", lab.NodeName(i)}, c...)...).CombinedOutput(); err != nil {
			t.Errorf("node%d: ip %v: %v: %s", i, c, err, out)
		}
	}
}

// fibWatch polls the router's kernel routes for vips (what forwards the
// client's packets) every 20ms and records every change of next hops.
type fibWatch struct {
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	changes []string
}

func kernelHops(ctx context.Context, vip netip.Addr) (string, error) {
	r, err := lab.KernelRouteFor(ctx, netip.PrefixFrom(vip, vip.BitLen()))
	if err != nil || r == nil {
		return "", err
	}
	h := slices.Clone(r.NextHops)
	sort.Strings(h)
	return strings.Join(h, ","), nil
}

func routeName(hops string) string {
	if hops == "" {
		return "no route"
	}
	return hops
}

func watchFIB(ctx context.Context, vips ...netip.Addr) *fibWatch {
	ctx, cancel := context.WithCancel(ctx)
	w := &fibWatch{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		last := map[netip.Addr]string{}
		for n := 0; n < 30000 && ctx.Err() == nil; n++ {
			for _, v := range vips {
				got, err := kernelHops(ctx, v)
				if err != nil {
					continue
				}
				if prev, ok := last[v]; ok && prev != got {
					w.mu.Lock()
					w.changes = append(w.changes, fmt.Sprintf("%s %s: %s -> %s", time.Now().Format("15:04:05.000"), v, routeName(prev), routeName(got)))
					w.mu.Unlock()
				}
				last[v] = got
			}
			sleepCtx(ctx, 20*time.Millisecond)
		}
	}()
	return w
}

func (w *fibWatch) stop() []string {
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.changes)
}
