// Package lab builds zerohop's test lab out of network namespaces: an
// external client, an FRR router, a node segment (a bridge) with N nodes,
// Pods as namespaces running an echo server, and a real cluster: etcd,
// kube-apiserver, kube-controller-manager and kube-scheduler, reached by
// the nodes over a link-local management bridge, a kubelet stand-in per node
// and, when asked, kube-proxy on every node. Nodes, Pod placement, Pod
// status and EndpointSlices come from Kubernetes, so speakers under test see
// what they would in a cluster.
//
// The same code serves tests (Up, which tears down at test end) and
// `zerohop-lab up|down|status` (cmd/zerohop-lab: Start with Detach, then Down
// from another process using the state file under /run/zerohop-lab). It is
// test and lab code: the zerohop binary never links it.
//
//	zh-client ── zh-router ── [zh-switch: br0] ── zh-node1 ── zh-pod-*
//	                                          ├── zh-node2 ── zh-pod-*
//	                                          └── ...
//	root namespace: zh-mgmt (169.254.100.1, kube-apiserver) ── mgmt of each node
package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/zerohop/zerohop/e2e/echo"
	"github.com/zerohop/zerohop/internal/apiserver"
)

// Default ASNs: the router is 64512, nodes 64513 (both private).
const (
	DefaultRouterASN = 64512
	DefaultNodeASN   = 64513
	DefaultNodes     = 3
	// PinDir is where speakers in the lab pin BPF objects; down removes it.
	PinDir = "/sys/fs/bpf/zh-lab"
)

// SpeakerPinRoot is where the speaker of node i (1-based) pins its
// datapath: the lab's nodes share the host's bpffs.
func SpeakerPinRoot(i int) string { return PinDir + "/" + NodeName(i) }

// Options configure a lab.
type Options struct {
	Nodes        int    // default 3
	RouterASN    uint32 // default 64512
	NodeASN      uint32 // ASN the router expects from nodes; default 64513
	MaximumPaths int    // router's ECMP width; default 8
	BFD          bool   // BFD on the router's neighbors
	// Ingress is how frames reach the nodes' uplinks; default
	// $ZEROHOP_LAB_INGRESS, else IngressXDP (ingress.go).
	Ingress Ingress
	// BridgePods are the nodes whose Pods hang off a bridge, cni0 (the
	// Flannel style); the other nodes' Pods have routed veths (the Calico
	// style). See wirePod.
	BridgePods []int
	// NoAPIServer leaves Kubernetes out (plumbing-only labs).
	NoAPIServer bool
	// KubeProxy runs kube-proxy on every node in this mode (KubeProxyIPTables
	// or KubeProxyNFTables); default KubeProxyNone.
	KubeProxy string
	// NodeMonitorGracePeriod is kube-controller-manager's
	// --node-monitor-grace-period; default NodeMonitorGracePeriod.
	NodeMonitorGracePeriod time.Duration
	// StateDir holds the state file, logs and configs; default
	// /run/zerohop-lab.
	StateDir string
	// HelperCommand is the argv prefix that reaches RunHelper in a fresh
	// process: Pods' echo servers and test BGP peers run as such helpers.
	// Default: this executable with HelperArg (see HelperMain).
	HelperCommand []string
	// Detach lets the lab's processes outlive this process (`zerohop-lab up`);
	// otherwise they die with it.
	Detach bool
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

func (o *Options) defaults() error {
	if o.Nodes == 0 {
		o.Nodes = DefaultNodes
	}
	if o.Nodes < 1 || o.Nodes > MaxNodes {
		return fmt.Errorf("lab: %d nodes; want 1..%d", o.Nodes, MaxNodes)
	}
	if o.RouterASN == 0 {
		o.RouterASN = DefaultRouterASN
	}
	if o.NodeASN == 0 {
		o.NodeASN = DefaultNodeASN
	}
	if o.MaximumPaths == 0 {
		o.MaximumPaths = 8
	}
	if o.Ingress == "" {
		in, err := defaultIngress()
		if err != nil {
			return err
		}
		o.Ingress = in
	}
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir
	}
	if o.NodeMonitorGracePeriod == 0 {
		o.NodeMonitorGracePeriod = NodeMonitorGracePeriod
	}
	switch o.KubeProxy {
	case "":
		o.KubeProxy = KubeProxyNone
	case KubeProxyNone, KubeProxyIPTables, KubeProxyNFTables:
	default:
		return fmt.Errorf("lab: kube-proxy mode %q; want %s, %s or %s", o.KubeProxy, KubeProxyIPTables, KubeProxyNFTables, KubeProxyNone)
	}
	if len(o.HelperCommand) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		o.HelperCommand = []string{exe, HelperArg}
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	return nil
}

// Lab is a running lab.
type Lab struct {
	opts Options
	mu   sync.Mutex
	st   *State
	api  *apiserver.Server // nil when loaded from a state file

	// Kube is an admin client of the lab's API server; RESTConfig its
	// configuration. Nil with NoAPIServer.
	Kube       kubernetes.Interface
	RESTConfig *rest.Config
}

// Up builds a lab for a test and tears it down when the test ends,
// whether it passed or not. It needs root.
func Up(t testing.TB, opts Options) *Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("the lab needs root (network namespaces, FRR); running as uid %d", os.Geteuid())
	}
	// Labs use fixed namespace names: tests in other packages (go test
	// runs packages in parallel) wait their turn here instead of failing.
	unlock, err := lockLab(t, 30*time.Minute)
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	t.Cleanup(unlock)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// A test holding the lock may reclaim what a killed run left behind,
	// but only when nothing of it still runs: a lab someone started by
	// hand (make lab) has live processes and is refused as before.
	dir := opts.StateDir
	if dir == "" {
		dir = DefaultStateDir
	}
	if left := existingLab(dir); len(left) > 0 && abandoned(dir) {
		t.Logf("lab: removing what a killed run left behind (%s)", strings.Join(left, ", "))
		if err := Down(ctx, dir); err != nil {
			t.Fatalf("lab up: removing a killed run's leftovers: %v", err)
		}
	}
	l, err := Start(ctx, opts)
	if l != nil {
		t.Cleanup(func() {
			dctx, dcancel := context.WithTimeout(context.Background(), time.Minute)
			defer dcancel()
			if err := l.Down(dctx); err != nil {
				t.Errorf("lab down: %v", err)
			}
		})
	}
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	return l
}

// LockFile serialises lab tests across processes.
const LockFile = "/run/zh-lab.lock"

// lockLab takes LockFile, polling so that a wait is bounded and reported.
func lockLab(t testing.TB, wait time.Duration) (func(), error) {
	f, err := os.OpenFile(LockFile, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", LockFile, err)
	}
	start := time.Now()
	reported := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", LockFile, err)
		}
		if time.Since(start) > wait {
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: another lab test held it for over %s", LockFile, wait)
		}
		if !reported {
			t.Logf("waiting for another lab test to finish (%s)", LockFile)
			reported = true
		}
		time.Sleep(500 * time.Millisecond)
	}
	if reported {
		t.Logf("lab lock taken after %s", time.Since(start).Round(time.Second))
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		_ = f.Close()
	}, nil
}

// Start builds the lab. On error it returns the half-built lab too, so the
// caller can Down it (Up does); Start itself also tries.
func Start(ctx context.Context, opts Options) (*Lab, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	if leftovers := existingLab(opts.StateDir); len(leftovers) > 0 {
		return nil, fmt.Errorf("lab: a lab is already up or was left behind (%s); run `zerohop-lab down` (or make lab-down) first",
			strings.Join(leftovers, ", "))
	}
	l := &Lab{opts: opts, st: &State{Nodes: opts.Nodes}}
	if err := os.MkdirAll(l.logDir(), 0o755); err != nil {
		return nil, err
	}
	if err := l.start(ctx); err != nil {
		dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if derr := l.Down(dctx); derr != nil {
			err = errors.Join(err, fmt.Errorf("cleanup: %w", derr))
		}
		return nil, err
	}
	return l, nil
}

func (l *Lab) logf(format string, args ...any) {
	fmt.Fprintf(l.opts.Log, "lab: "+format+"\n", args...)
}

func (l *Lab) logDir() string { return filepath.Join(l.opts.StateDir, "logs") }

func (l *Lab) save() error { return writeState(l.opts.StateDir, l.st) }

func (l *Lab) addProc(p Proc) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.st.Procs = append(l.st.Procs, p)
	return l.save()
}

func (l *Lab) start(ctx context.Context) error {
	t0 := time.Now()
	l.st.Dirs = []string{filepath.Join(frrRunRoot, frrPathspace)}
	if err := l.save(); err != nil {
		return err
	}
	l.logf("building %d nodes, router, client", l.opts.Nodes)
	if err := buildTopology(ctx, l.opts.Nodes, l.opts.BridgePods, l.st, l.save); err != nil {
		return fmt.Errorf("topology: %w", err)
	}
	l.logf("ingress: %s", l.opts.Ingress)
	if err := setupIngress(l.opts.Ingress, l.opts.Nodes); err != nil {
		return fmt.Errorf("topology: %w", err)
	}
	if l.st.Extra == nil {
		l.st.Extra = map[string]string{}
	}
	l.st.Extra["ingress"] = string(l.opts.Ingress)
	if err := l.save(); err != nil {
		return err
	}
	rc := RouterConfig{ASN: l.opts.RouterASN, MaximumPaths: l.opts.MaximumPaths, BFD: l.opts.BFD,
		LogDir: filepath.Join(l.opts.StateDir, "frr")}
	rc.RouterID, _ = RouterNodeAddrs()
	for i := 1; i <= l.opts.Nodes; i++ {
		n4, n6 := NodeAddrs(i)
		rc.Neighbors = append(rc.Neighbors, Neighbor{Addr: n4, ASN: l.opts.NodeASN, Name: NodeName(i)},
			Neighbor{Addr: n6, ASN: l.opts.NodeASN, Name: NodeName(i)})
	}
	l.logf("starting FRR (zebra, bgpd, bfdd) in %s", RouterNS)
	procs, err := startFRR(ctx, rc, rc.LogDir, l.opts.Detach)
	for _, p := range procs {
		if aerr := l.addProc(p); aerr != nil {
			return aerr
		}
	}
	if err != nil {
		return fmt.Errorf("frr: %w", err)
	}
	if !l.opts.NoAPIServer {
		if err := l.startAPIServer(ctx); err != nil {
			return err
		}
	}
	l.logf("up in %s", time.Since(t0).Round(time.Millisecond))
	return nil
}

func (l *Lab) startAPIServer(ctx context.Context) error {
	l.logf("starting etcd and kube-apiserver on %s", MgmtHost)
	logf, err := os.OpenFile(filepath.Join(l.logDir(), "apiserver.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	// An *os.File, not a pipe: detached servers keep writing after we exit.
	defer func() { _ = logf.Close() }()
	s, err := apiserver.Start(ctx, apiserver.Options{
		BindAddress: MgmtHost.String(),
		DataDir:     filepath.Join(l.opts.StateDir, "apiserver"),
		Log:         logf,
		Detach:      l.opts.Detach,
	})
	if err != nil {
		return fmt.Errorf("apiserver: %w", err)
	}
	l.api = s
	for _, p := range []struct {
		name string
		pid  int
	}{{"etcd", s.EtcdPID()}, {"kube-apiserver", s.APIServerPID()}} {
		start, _, err := procStart(p.pid)
		if err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		if err := l.addProc(Proc{Name: p.name, PID: p.pid, Start: start}); err != nil {
			return err
		}
	}
	l.st.APIServer = &APIServerInfo{URL: s.URL, Kubeconfig: s.Kubeconfig}
	if err := l.save(); err != nil {
		return err
	}
	if err := l.connect(s.Config); err != nil {
		return err
	}
	return l.startCluster(ctx, s)
}

func (l *Lab) connect(cfg *rest.Config) error {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	l.Kube, l.RESTConfig = cs, cfg
	return nil
}

// Load attaches to a lab started by another process (`zerohop-lab up`).
func Load(opts Options) (*Lab, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	st, err := readState(opts.StateDir)
	if err != nil {
		return nil, fmt.Errorf("no lab is up (%w)", err)
	}
	opts.Nodes = st.Nodes
	l := &Lab{opts: opts, st: st}
	if st.APIServer != nil {
		cfg, err := clientcmd.BuildConfigFromFlags("", st.APIServer.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("lab kubeconfig: %w", err)
		}
		if err := l.connect(cfg); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// Nodes is the number of nodes.
func (l *Lab) Nodes() int { return l.opts.Nodes }

// Ingress is how frames reach the nodes' uplinks.
func (l *Lab) Ingress() Ingress {
	if in := Ingress(l.st.Extra["ingress"]); in != "" {
		return in
	}
	return IngressKernel // a lab from before there was a choice
}

// APIServer returns where the lab's API server is, or nil.
func (l *Lab) APIServer() *APIServerInfo { return l.st.APIServer }

// StateDir is the lab's state directory (logs are under logs/).
func (l *Lab) StateDir() string { return l.opts.StateDir }

// Down stops everything the lab started and removes what it created.
func (l *Lab) Down(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	if l.api != nil {
		if err := l.api.Stop(); err != nil {
			errs = append(errs, err)
		}
		l.api = nil
	}
	if err := teardown(ctx, l.opts.StateDir, l.st); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Down removes the lab recorded in stateDir ("" = default) and then sweeps
// what a crashed run may have left without recording it: lab-named network
// namespaces (and the processes inside them), root links, FRR's pathspace
// and the BPF pin directory.
func Down(ctx context.Context, stateDir string) error {
	if stateDir == "" {
		stateDir = DefaultStateDir
	}
	st, err := readState(stateDir)
	if err != nil && !os.IsNotExist(err) {
		// A corrupt state file: still sweep by name.
		st = nil
	}
	if st == nil {
		st = &State{}
	}
	return teardown(ctx, stateDir, st)
}

// labNS matches the names of every namespace the lab creates.
var labNS = regexp.MustCompile(`^zh-(client|router|switch|node[0-9]+|pod-.+)$`)

// labRootLink matches the lab's links in the root namespace.
var labRootLink = regexp.MustCompile(`^zh-(mgmt|m-node[0-9]+)$`)

func teardown(ctx context.Context, stateDir string, st *State) error {
	var errs []error
	// Processes first, newest first: zerohop, peers, kube-proxy, the
	// kubelet stand-ins, then the control plane and FRR, each checked
	// against its recorded start time; then the Pods' processes the
	// stand-ins recorded.
	for i := len(st.Procs) - 1; i >= 0; i-- {
		if err := st.Procs[i].stop(10 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range kubeletProcs(stateDir) {
		if err := p.stop(time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	names := slices.Clone(st.Namespaces)
	all, err := listNetns()
	if err != nil {
		errs = append(errs, err)
	}
	for _, n := range all {
		if labNS.MatchString(n) && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	for _, n := range names {
		if !nsExists(n) {
			continue
		}
		// Anything still inside a lab namespace was started by a lab (a
		// crashed run's echo server or daemon); it keeps the namespace's
		// links alive, so it goes too.
		pids, err := netnsPIDs(n)
		if err != nil {
			errs = append(errs, err)
		}
		for _, pid := range pids {
			start, _, err := procStart(pid)
			if err != nil {
				continue
			}
			if err := (Proc{Name: "in " + n, PID: pid, Start: start}).stop(5 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
		if _, err := run(ctx, "ip", "netns", "del", n); err != nil && nsExists(n) {
			errs = append(errs, err)
		}
	}
	links := slices.Clone(st.RootLinks)
	if out, err := run(ctx, "ip", "-o", "link", "show"); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) > 1 {
				name := strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0]
				if labRootLink.MatchString(name) && !slices.Contains(links, name) {
					links = append(links, name)
				}
			}
		}
	}
	for _, ln := range links {
		if _, err := os.Stat("/sys/class/net/" + ln); err != nil {
			continue // went with its namespace
		}
		if _, err := run(ctx, "ip", "link", "del", ln); err != nil {
			// The peer end of a veth goes when its namespace is
			// deleted, which may happen between the check and here.
			if _, statErr := os.Stat("/sys/class/net/" + ln); statErr == nil {
				errs = append(errs, err)
			}
		}
	}
	dirs := append(slices.Clone(st.Dirs), filepath.Join(frrRunRoot, frrPathspace), PinDir, stateDir)
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// existingLab lists what shows a lab is up or was left behind.
// abandoned reports whether nothing of the lab recorded in stateDir still
// runs: no recorded process, no kubelet stand-in's Pod and no process in a
// lab namespace.
func abandoned(stateDir string) bool {
	if stateDir == "" {
		stateDir = DefaultStateDir
	}
	if st, err := readState(stateDir); err == nil {
		for _, p := range st.Procs {
			if p.alive() {
				return false
			}
		}
	}
	for _, p := range kubeletProcs(stateDir) {
		if p.alive() {
			return false
		}
	}
	all, _ := listNetns()
	for _, n := range all {
		if !labNS.MatchString(n) {
			continue
		}
		if pids, err := netnsPIDs(n); err != nil || len(pids) > 0 {
			return false
		}
	}
	return true
}

func existingLab(stateDir string) []string {
	var found []string
	if _, err := os.Stat(statePath(stateDir)); err == nil {
		found = append(found, statePath(stateDir))
	}
	all, _ := listNetns()
	for _, n := range all {
		if labNS.MatchString(n) {
			found = append(found, "netns "+n)
		}
	}
	if _, err := os.Stat("/sys/class/net/" + MgmtBridge); err == nil {
		found = append(found, "link "+MgmtBridge)
	}
	return found
}

// Leftovers reports anything of a lab that still exists: lab namespaces,
// root links, recorded processes still running, FRR's pathspace, the pin
// directory and the state directory. Empty means clean.
func Leftovers(stateDir string, procs []Proc) []string {
	if stateDir == "" {
		stateDir = DefaultStateDir
	}
	var found []string
	all, _ := listNetns()
	for _, n := range all {
		if labNS.MatchString(n) {
			found = append(found, "netns "+n)
		}
	}
	ents, _ := os.ReadDir("/sys/class/net")
	for _, e := range ents {
		if labRootLink.MatchString(e.Name()) {
			found = append(found, "link "+e.Name())
		}
	}
	for _, p := range procs {
		if p.alive() {
			found = append(found, fmt.Sprintf("process %s (pid %d)", p.Name, p.PID))
		}
	}
	for _, d := range []string{filepath.Join(frrRunRoot, frrPathspace), PinDir, stateDir} {
		if _, err := os.Stat(d); err == nil {
			found = append(found, d)
		}
	}
	return found
}

// Procs returns the processes the lab has started.
func (l *Lab) Procs() []Proc {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.st.Procs)
}

// Proc returns the process the lab started under name (e.g.
// "kube-apiserver", "frr-bgpd").
func (l *Lab) Proc(name string) (Proc, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.st.Procs {
		if p.Name == name {
			return p, true
		}
	}
	return Proc{}, false
}

// PodSpec describes a lab workload: a Deployment of one echo server Pod
// pinned to a node.
type PodSpec struct {
	// Name is the Deployment's; the Pod's own name is generated by its
	// ReplicaSet (Pod.Name).
	Name      string
	Namespace string // Kubernetes namespace; default "default"
	Node      int
	Labels    map[string]string
	NotReady  bool // start with the readiness gate False (SetPodReady flips it)
}

// podWait bounds how long AddPod and friends wait for Kubernetes.
const podWait = time.Minute

// AddPod creates a workload, a Deployment of one echo server Pod on the
// given node, and waits until the controller manager, the scheduler and
// the node's kubelet stand-in have made it Running (and Ready, unless
// spec.NotReady) and the node reaches it.
func (l *Lab) AddPod(ctx context.Context, spec PodSpec) (Pod, error) {
	if l.Kube == nil {
		return Pod{}, errors.New("lab has no API server")
	}
	if spec.Namespace == "" {
		spec.Namespace = "default"
	}
	if spec.Node < 1 || spec.Node > l.opts.Nodes {
		return Pod{}, fmt.Errorf("pod %s: no node %d", spec.Name, spec.Node)
	}
	if _, ok := l.PodByName(spec.Name); ok {
		return Pod{}, fmt.Errorf("workload %s exists (lab workload names are unique across namespaces)", spec.Name)
	}
	if err := ensureNamespace(ctx, l.Kube, spec.Namespace); err != nil {
		return Pod{}, err
	}
	if _, err := l.Kube.AppsV1().Deployments(spec.Namespace).Create(ctx, workloadDeployment(spec), metav1.CreateOptions{}); err != nil {
		return Pod{}, fmt.Errorf("deployment %s/%s: %w", spec.Namespace, spec.Name, err)
	}
	obj, err := l.waitWorkloadPod(ctx, spec.Namespace, spec.Name, func(p *corev1.Pod) bool {
		return p.Spec.NodeName != "" && p.Status.PodIP != ""
	})
	if err != nil {
		return Pod{}, err
	}
	if err := setGate(ctx, l.Kube, obj.Namespace, obj.Name, !spec.NotReady); err != nil {
		return Pod{}, err
	}
	want := corev1.PodReady
	if spec.NotReady {
		want = corev1.ContainersReady
	}
	if obj, err = l.waitWorkloadPod(ctx, spec.Namespace, spec.Name, func(p *corev1.Pod) bool {
		return podCondition(p, want) == corev1.ConditionTrue
	}); err != nil {
		return Pod{}, err
	}
	pod := podFromObject(spec.Name, obj)
	if pod.Node != spec.Node {
		return Pod{}, fmt.Errorf("pod %s/%s scheduled to %s, want %s", obj.Namespace, obj.Name, obj.Spec.NodeName, NodeName(spec.Node))
	}
	// Ready means reachable: the readiness probe came from the node.
	l.mu.Lock()
	l.st.Pods = append(l.st.Pods, pod)
	err = l.save()
	l.mu.Unlock()
	return pod, err
}

// podFromObject describes a workload's Pod from its API object.
func podFromObject(workload string, obj *corev1.Pod) Pod {
	p := Pod{Name: obj.Name, Workload: workload, Namespace: obj.Namespace, Labels: obj.Labels}
	for i := 1; i <= MaxNodes; i++ {
		if NodeName(i) == obj.Spec.NodeName {
			p.Node = i
		}
	}
	for _, ip := range obj.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil && a.Is4() {
			p.IPv4 = ip.IP
		} else if err == nil {
			p.IPv6 = ip.IP
		}
	}
	return p
}

// waitWorkloadPod waits (bounded) for the live Pod of a workload (not one
// being deleted) to satisfy ok, and returns it.
func (l *Lab) waitWorkloadPod(ctx context.Context, ns, workload string, ok func(*corev1.Pod) bool) (*corev1.Pod, error) {
	deadline := time.Now().Add(podWait)
	last := "no Pod yet"
	for {
		list, err := l.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: WorkloadLabel + "=" + workload})
		if err != nil {
			return nil, fmt.Errorf("workload %s/%s: %w", ns, workload, err)
		}
		for i := range list.Items {
			p := &list.Items[i]
			if p.DeletionTimestamp != nil {
				continue
			}
			if ok(p) {
				return p, nil
			}
			last = fmt.Sprintf("pod %s on %q phase %s conditions %v", p.Name, p.Spec.NodeName, p.Status.Phase, conditionSummary(p))
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("workload %s/%s: not there after %s (last: %s)", ns, workload, podWait, last)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func conditionSummary(p *corev1.Pod) string {
	var s []string
	for _, c := range p.Status.Conditions {
		s = append(s, fmt.Sprintf("%s=%s", c.Type, c.Status))
	}
	return strings.Join(s, ",")
}

// Pods returns the lab's workload Pods.
func (l *Lab) Pods() []Pod {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.st.Pods)
}

// SetPodReady sets the readiness gate of a workload's Pod and waits until
// its kubelet stand-in reports the Pod's Ready condition accordingly; the
// EndpointSlice controller takes it from there.
func (l *Lab) SetPodReady(ctx context.Context, name string, ready bool) error {
	pod, ok := l.PodByName(name)
	if !ok {
		return fmt.Errorf("no lab pod %s", name)
	}
	if err := setGate(ctx, l.Kube, pod.Namespace, pod.Name, ready); err != nil {
		return err
	}
	want := corev1.ConditionFalse
	if ready {
		want = corev1.ConditionTrue
	}
	deadline := time.Now().Add(podWait)
	for {
		obj, err := l.Kube.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
		if podCondition(obj, corev1.PodReady) == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pod %s/%s: Ready not %s after %s", pod.Namespace, pod.Name, want, podWait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TerminatePod scales a workload to zero: its ReplicaSet deletes the Pod
// gracefully, and the Pod drains (terminating, still serving, its echo
// server answering through a long preStop sleep) until DeletePod or the
// lab's end. It returns once the Pod is terminating.
func (l *Lab) TerminatePod(ctx context.Context, name string) error {
	pod, ok := l.PodByName(name)
	if !ok {
		return fmt.Errorf("no lab pod %s", name)
	}
	patch := []byte(`{"spec":{"replicas":0}}`)
	if _, err := l.Kube.AppsV1().Deployments(pod.Namespace).Patch(ctx, pod.Workload, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("deployment %s/%s scale to 0: %w", pod.Namespace, pod.Workload, err)
	}
	deadline := time.Now().Add(podWait)
	for {
		obj, err := l.Kube.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
		if obj.DeletionTimestamp != nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pod %s/%s not terminating after %s", pod.Namespace, pod.Name, podWait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// DeletePod deletes a workload and its Pod at once (no grace), and waits
// until the node's stand-in has removed the Pod's namespace.
func (l *Lab) DeletePod(ctx context.Context, name string) error {
	pod, ok := l.PodByName(name)
	if !ok {
		return fmt.Errorf("no lab pod %s", name)
	}
	bg := metav1.DeletePropagationBackground
	if err := l.Kube.AppsV1().Deployments(pod.Namespace).Delete(ctx, pod.Workload, metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deployment %s/%s: %w", pod.Namespace, pod.Workload, err)
	}
	if err := l.Kube.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	l.mu.Lock()
	l.st.Pods = slices.DeleteFunc(l.st.Pods, func(p Pod) bool { return p.Workload == pod.Workload })
	err := l.save()
	l.mu.Unlock()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(podWait)
	for nsExists(pod.NetNS()) {
		if time.Now().After(deadline) {
			return fmt.Errorf("pod %s/%s: namespace %s still there after %s", pod.Namespace, pod.Name, pod.NetNS(), podWait)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// AddService creates svc in the API server (if it is not there); the
// EndpointSlice controller keeps its EndpointSlices.
func (l *Lab) AddService(ctx context.Context, svc *corev1.Service) error {
	if l.Kube == nil {
		return errors.New("lab has no API server")
	}
	if svc.Namespace == "" {
		svc.Namespace = "default"
	}
	if err := ensureNamespace(ctx, l.Kube, svc.Namespace); err != nil {
		return err
	}
	if _, err := l.Kube.CoreV1().Services(svc.Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	l.mu.Lock()
	ref := ServiceRef{Namespace: svc.Namespace, Name: svc.Name}
	if !slices.Contains(l.st.Services, ref) {
		l.st.Services = append(l.st.Services, ref)
	}
	err := l.save()
	l.mu.Unlock()
	return err
}

// Request asks an echo server at addr (ip:port) from the client namespace.
func (l *Lab) Request(ctx context.Context, proto, addr string) (echo.Reply, error) {
	return echo.Request(ctx, DialerIn(ClientNS), proto, addr)
}

// Requests sends n requests to addr over proto from the client and counts
// the answers per workload (AddPod's name). It stops at the first request
// that fails or whose Pod saw another source than the client's own
// address, since direct delivery must preserve it.
func (l *Lab) Requests(ctx context.Context, proto, addr string, n int) (map[string]int, error) {
	c4, c6 := ClientAddrs()
	want := c4.String()
	if strings.HasPrefix(addr, "[") {
		want = c6.String()
	}
	per := map[string]int{}
	for i := range n {
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		rep, err := l.Request(rctx, proto, addr)
		cancel()
		if err != nil {
			return per, fmt.Errorf("request %d/%d %s %s: %w", i+1, n, proto, addr, err)
		}
		if rep.ClientIP() != want {
			return per, fmt.Errorf("request %d %s %s: Pod %s saw client %s, want %s (source not preserved)", i+1, proto, addr, rep.Pod, rep.Client, want)
		}
		per[l.Workload(rep.Pod)]++
	}
	return per, nil
}

// PodByName returns a lab workload's Pod, by the workload's name or the
// Pod's.
func (l *Lab) PodByName(name string) (Pod, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := slices.IndexFunc(l.st.Pods, func(p Pod) bool { return p.Workload == name || p.Name == name })
	if i < 0 {
		return Pod{}, false
	}
	return l.st.Pods[i], true
}

func sortBy[T any](s []T, key func(T) string) {
	sort.Slice(s, func(a, b int) bool { return key(s[a]) < key(s[b]) })
}

// Workload returns the workload (AddPod's name) whose Pod answered as pod,
// or pod itself when it is no lab workload's.
func (l *Lab) Workload(pod string) string {
	if p, ok := l.PodByName(pod); ok {
		return p.Workload
	}
	return pod
}
