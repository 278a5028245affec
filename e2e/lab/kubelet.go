package lab

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
)

// The kubelet stand-in: one process per node (`helper kubelet`), in the
// root namespace, that does for its Node what kubelet does and nothing
// more: it registers the Node and renews its Lease, runs every Pod bound to
// the node as processes in a network namespace of the Pod's own, wired by
// the node's Pod network (wirePod), and reports the Pod's status, honouring
// readiness probes, restarts, readinessGates and graceful termination.
// Killed, it leaves its Pods running (as a stopped kubelet leaves its
// containers) and finds them again from its state file when restarted;
// sent NodeShutdownSignal, it shuts the node down as kubelet's graceful
// node shutdown does.

const (
	// kubeletLeaseRenew is how often the stand-in renews its node's Lease.
	// The controller manager runs with a node-monitor grace period of
	// NodeMonitorGracePeriod, several renewals.
	kubeletLeaseRenew = time.Second
	// kubeletStatusCheck is how often the stand-in checks that its Node
	// still shows Ready, and says so again if the node lifecycle
	// controller marked it otherwise while it was away.
	kubeletStatusCheck = 5 * time.Second
	// nodeShutdownGrace bounds every Pod's termination in a node shutdown
	// (kubelet's shutdownGracePeriod).
	nodeShutdownGrace = 10 * time.Second
	// podStartRetry is how often a starting container is probed until its
	// first success: kubelet waits a whole periodSeconds, which would slow
	// every lab Pod's start by a second for nothing.
	podStartRetry = 50 * time.Millisecond
)

// NodeShutdownSignal makes a kubelet stand-in shut its node down:
// the Node turns NotReady ("node is shutting down"), every Pod gets the
// DisruptionTarget condition, is terminated within nodeShutdownGrace and
// left Failed, and the stand-in exits. (Real kubelet learns of a shutdown
// from systemd-logind.)
const NodeShutdownSignal = syscall.SIGUSR1

// LabReadyGate is the readinessGates condition type that lab Pods made by
// AddPod carry: SetPodReady sets it, as a load balancer controller or a
// canary tool would set its own gate, and kubelet then reports the Pod
// Ready only while it is True.
const LabReadyGate corev1.PodConditionType = "zerohop.io/lab-ready"

// EchoImage is the image name under which the stand-in runs the lab's echo
// server (e2e/echo): its container args go to `helper echo`.
const EchoImage = "zerohop.io/lab/echo"

// images is the stand-in's catalogue: the image names it can run, each a
// lab helper role of the lab binary (no registry, no container runtime).
var images = map[string]string{
	EchoImage: "echo",
}

// imageRole returns the helper role for an image reference, with or
// without a tag.
func imageRole(image string) (string, bool) {
	if i := lastIndexAfterSlash(image, ':'); i >= 0 {
		image = image[:i]
	}
	role, ok := images[image]
	return role, ok
}

func lastIndexAfterSlash(s string, c byte) int {
	for i := len(s) - 1; i >= 0 && s[i] != '/'; i-- {
		if s[i] == c {
			return i
		}
	}
	return -1
}

// kubeletState is what a stand-in records on disk: its Pods, their
// addresses and processes, so that a restarted stand-in adopts them and
// `zerohop-lab down` stops them.
type kubeletState struct {
	Node string       `json:"node"`
	Pods []kubeletPod `json:"pods"`
}

type kubeletPod struct {
	UID       types.UID `json:"uid"`
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	NetNS     string    `json:"netns"`
	Index     int       `json:"index"`
	IPv4      string    `json:"ipv4"`
	IPv6      string    `json:"ipv6"`
	// Procs holds each container's current process; Proc.Name is the
	// container's name.
	Procs []Proc `json:"procs"`
}

// kubeletStatePath is node's stand-in state file in the lab's state dir.
func kubeletStatePath(stateDir, node string) string {
	return filepath.Join(stateDir, "kubelet-"+node+".json")
}

// kubeletProcs lists the Pod processes every stand-in recorded under
// stateDir, for teardown.
func kubeletProcs(stateDir string) []Proc {
	files, _ := filepath.Glob(filepath.Join(stateDir, "kubelet-*.json"))
	var out []Proc
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var st kubeletState
		if json.Unmarshal(b, &st) != nil {
			continue
		}
		for _, p := range st.Pods {
			out = append(out, p.Procs...)
		}
	}
	return out
}

// PodNetNS is the network namespace of Pod namespace/name on its node.
func PodNetNS(namespace, name string) string { return PodNSPrefix + namespace + "-" + name }

type kubelet struct {
	node     int
	name     string
	cs       kubernetes.Interface
	stateDir string
	logDir   string
	helper   []string
	log      *log.Logger

	mu      sync.Mutex
	st      kubeletState
	workers map[types.UID]*podWorker
	// finished holds the Pods whose worker ended, so that an event that
	// comes after (the Pod's last status, say) does not start them again.
	finished map[types.UID]bool
	stopping bool // node shutdown under way: no new Pods
	wg       sync.WaitGroup
}

// kubeletArgs is the helper's command line for node i.
func kubeletArgs(i int, kubeconfig, stateDir string, helper []string) []string {
	h, _ := json.Marshal(helper)
	return []string{"kubelet", "-node", fmt.Sprint(i), "-kubeconfig", kubeconfig, "-state-dir", stateDir, "-helper", string(h)}
}

// runKubelet is the `helper kubelet` role.
func runKubelet(args []string) error {
	fs := flag.NewFlagSet("kubelet", flag.ContinueOnError)
	node := fs.Int("node", 0, "node number (1-based)")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the lab's API server")
	stateDir := fs.String("state-dir", DefaultStateDir, "the lab's state directory")
	helperJSON := fs.String("helper", "", "JSON argv prefix that runs a lab helper (the catalogue's images)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *node < 1 || *node > MaxNodes {
		return fmt.Errorf("kubelet: -node %d out of range", *node)
	}
	var helper []string
	if err := json.Unmarshal([]byte(*helperJSON), &helper); err != nil || len(helper) == 0 {
		return fmt.Errorf("kubelet: -helper %q: want a JSON argv", *helperJSON)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return fmt.Errorf("kubelet: %w", err)
	}
	cfg.QPS, cfg.Burst = 200, 400
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	k := &kubelet{node: *node, name: NodeName(*node), cs: cs, stateDir: *stateDir,
		logDir: filepath.Join(*stateDir, "logs"), helper: helper, workers: map[types.UID]*podWorker{}, finished: map[types.UID]bool{},
		log: log.New(os.Stderr, "", log.LstdFlags|log.Lmicroseconds)}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	shutdown := make(chan os.Signal, 1)
	signal.Notify(shutdown, NodeShutdownSignal)
	return k.run(ctx, shutdown)
}

func (k *kubelet) run(ctx context.Context, shutdown <-chan os.Signal) error {
	if b, err := os.ReadFile(kubeletStatePath(k.stateDir, k.name)); err == nil {
		if err := json.Unmarshal(b, &k.st); err != nil {
			return fmt.Errorf("kubelet %s: state: %w", k.name, err)
		}
	}
	k.st.Node = k.name
	if err := k.register(ctx); err != nil {
		return err
	}
	k.log.Printf("node %s registered", k.name)
	hbCtx, hbCancel := context.WithCancel(ctx)
	defer hbCancel()
	go k.heartbeat(hbCtx)

	factory := informers.NewSharedInformerFactoryWithOptions(k.cs, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = "spec.nodeName=" + k.name }))
	inf := factory.Core().V1().Pods().Informer()
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { k.podChanged(ctx, obj) },
		UpdateFunc: func(_, obj any) { k.podChanged(ctx, obj) },
		DeleteFunc: func(obj any) { k.podDeleted(obj) },
	})
	if err != nil {
		return err
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return ctx.Err()
	}
	k.dropOrphans(inf.GetStore())
	select {
	case <-ctx.Done():
		// A stopped kubelet leaves its Pods running.
		k.log.Printf("stopping; Pods keep running")
		return nil
	case <-shutdown:
		hbCancel()
		k.shutdownNode(context.WithoutCancel(ctx))
		return nil
	}
}

// register creates the Node as kubelet registers it, or takes over the one
// a previous run registered, and reports it Ready.
func (k *kubelet) register(ctx context.Context) error {
	p4, p6 := PodCIDRs(k.node)
	labels := map[string]string{
		"kubernetes.io/hostname": k.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
		"zerohop.io/lab": "true",
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: k.name, Labels: labels},
		Spec:       corev1.NodeSpec{PodCIDR: p4.String(), PodCIDRs: []string{p4.String(), p6.String()}},
	}
	_, err := k.cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("kubelet: register node %s: %w", k.name, err)
	}
	return k.setNodeStatus(ctx, true, "KubeletReady", "kubelet is posting ready status")
}

// setNodeStatus writes the Node's addresses, capacity and conditions.
func (k *kubelet) setNodeStatus(ctx context.Context, ready bool, reason, msg string) error {
	n4, n6 := NodeAddrs(k.node)
	for attempt := 0; ; attempt++ {
		node, err := k.cs.CoreV1().Nodes().Get(ctx, k.name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("kubelet: node %s: %w", k.name, err)
		}
		now := metav1.Now()
		readyStatus := corev1.ConditionFalse
		if ready {
			readyStatus = corev1.ConditionTrue
		}
		want := []corev1.NodeCondition{
			{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory"},
			{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure"},
			{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID"},
			{Type: corev1.NodeReady, Status: readyStatus, Reason: reason, Message: msg},
		}
		for i := range want {
			want[i].LastHeartbeatTime = now
			want[i].LastTransitionTime = now
			for _, c := range node.Status.Conditions {
				if c.Type == want[i].Type && c.Status == want[i].Status {
					want[i].LastTransitionTime = c.LastTransitionTime
				}
			}
		}
		node.Status.Conditions = want
		node.Status.Addresses = []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: n4.String()},
			{Type: corev1.NodeInternalIP, Address: n6.String()},
			{Type: corev1.NodeHostName, Address: k.name},
		}
		res := corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("8Gi"),
			corev1.ResourcePods: resource.MustParse("110"), corev1.ResourceEphemeralStorage: resource.MustParse("20Gi"),
		}
		node.Status.Capacity, node.Status.Allocatable = res, res
		node.Status.NodeInfo = corev1.NodeSystemInfo{
			KubeletVersion: "v1.37.2-zerohop-lab", OperatingSystem: "linux", Architecture: "amd64",
			ContainerRuntimeVersion: "zerohop-lab://1", OSImage: "zerohop lab",
		}
		_, err = k.cs.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
		if err == nil || !apierrors.IsConflict(err) || attempt > 10 {
			if err != nil {
				return fmt.Errorf("kubelet: node %s status: %w", k.name, err)
			}
			return nil
		}
	}
}

// heartbeat renews the node's Lease, as kubelet does, and puts Ready back
// when the node lifecycle controller marked the node otherwise (after
// this stand-in was stopped and started again, say).
func (k *kubelet) heartbeat(ctx context.Context) {
	leases := k.cs.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	renew := time.NewTicker(kubeletLeaseRenew)
	defer renew.Stop()
	lastCheck := time.Now()
	for {
		now := metav1.NewMicroTime(time.Now())
		lease, err := leases.Get(ctx, k.name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = leases.Create(ctx, &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: k.name, Namespace: corev1.NamespaceNodeLease},
				Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(k.name),
					LeaseDurationSeconds: ptr.To(int32(NodeMonitorGracePeriod / time.Second)), RenewTime: &now},
			}, metav1.CreateOptions{})
		case err == nil:
			lease.Spec.RenewTime = &now
			_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
		}
		if err != nil && ctx.Err() == nil {
			k.log.Printf("lease: %v", err)
		}
		if time.Since(lastCheck) >= kubeletStatusCheck {
			lastCheck = time.Now()
			if node, err := k.cs.CoreV1().Nodes().Get(ctx, k.name, metav1.GetOptions{}); err == nil && !nodeReady(node) {
				if err := k.setNodeStatus(ctx, true, "KubeletReady", "kubelet is posting ready status"); err != nil && ctx.Err() == nil {
					k.log.Print(err)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-renew.C:
		}
	}
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (k *kubelet) podChanged(ctx context.Context, obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	w := k.workers[pod.UID]
	if w == nil {
		if k.stopping || k.finished[pod.UID] || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			return
		}
		w = newPodWorker(k, pod)
		k.workers[pod.UID] = w
		k.wg.Add(1)
		go func() {
			defer k.wg.Done()
			w.run(ctx)
			k.mu.Lock()
			delete(k.workers, pod.UID)
			k.finished[pod.UID] = true
			k.mu.Unlock()
		}()
	}
	w.update(pod)
}

func (k *kubelet) podDeleted(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	k.mu.Lock()
	w := k.workers[pod.UID]
	k.mu.Unlock()
	if w != nil {
		w.forget()
	}
}

// dropOrphans stops the Pods this node's state file has but the API
// server no longer binds to it (deleted while the stand-in was away).
func (k *kubelet) dropOrphans(store cache.Store) {
	k.mu.Lock()
	var orphans []kubeletPod
	for _, p := range k.st.Pods {
		obj, ok, _ := store.GetByKey(p.Namespace + "/" + p.Name)
		if !ok || obj.(*corev1.Pod).UID != p.UID {
			orphans = append(orphans, p)
		}
	}
	k.mu.Unlock()
	for _, p := range orphans {
		k.log.Printf("pod %s/%s is gone from the API server: removing it", p.Namespace, p.Name)
		for _, pr := range p.Procs {
			_ = pr.stop(time.Second)
		}
		_, _ = run(context.Background(), "ip", "netns", "del", p.NetNS)
		k.forgetPod(p.UID)
	}
}

// claimPod returns the node's record of a Pod, making one (with the
// lowest free address pair of the node's Pod ranges) if there is none.
func (k *kubelet) claimPod(pod *corev1.Pod) (kubeletPod, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if i := slices.IndexFunc(k.st.Pods, func(p kubeletPod) bool { return p.UID == pod.UID }); i >= 0 {
		return k.st.Pods[i], true, nil
	}
	for j := 1; j < 250; j++ {
		if slices.ContainsFunc(k.st.Pods, func(p kubeletPod) bool { return p.Index == j }) {
			continue
		}
		a4, a6 := PodAddrs(k.node, j)
		rec := kubeletPod{UID: pod.UID, Namespace: pod.Namespace, Name: pod.Name,
			NetNS: PodNetNS(pod.Namespace, pod.Name), Index: j, IPv4: a4.String(), IPv6: a6.String()}
		k.st.Pods = append(k.st.Pods, rec)
		return rec, false, k.saveLocked()
	}
	return kubeletPod{}, false, fmt.Errorf("node %s has no free Pod address", k.name)
}

func (k *kubelet) setProc(uid types.UID, p Proc) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	i := slices.IndexFunc(k.st.Pods, func(r kubeletPod) bool { return r.UID == uid })
	if i < 0 {
		return nil
	}
	procs := slices.DeleteFunc(k.st.Pods[i].Procs, func(q Proc) bool { return q.Name == p.Name })
	k.st.Pods[i].Procs = append(procs, p)
	return k.saveLocked()
}

func (k *kubelet) forgetPod(uid types.UID) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.st.Pods = slices.DeleteFunc(k.st.Pods, func(p kubeletPod) bool { return p.UID == uid })
	if err := k.saveLocked(); err != nil {
		k.log.Print(err)
	}
}

func (k *kubelet) saveLocked() error {
	b, err := json.MarshalIndent(k.st, "", "  ")
	if err != nil {
		return err
	}
	path := kubeletStatePath(k.stateDir, k.name)
	if err := os.WriteFile(path+".tmp", b, 0o600); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

// shutdownNode is kubelet's graceful node shutdown: NotReady, then every
// Pod terminated within nodeShutdownGrace and left Failed.
func (k *kubelet) shutdownNode(ctx context.Context) {
	t0 := time.Now()
	k.log.Printf("node shutdown: terminating Pods within %s", nodeShutdownGrace)
	if err := k.setNodeStatus(ctx, false, "KubeletNotReady", "node is shutting down"); err != nil {
		k.log.Print(err)
	}
	k.mu.Lock()
	k.stopping = true
	ws := make([]*podWorker, 0, len(k.workers))
	for _, w := range k.workers {
		ws = append(ws, w)
	}
	k.mu.Unlock()
	for _, w := range ws {
		w.nodeShutdown()
	}
	k.wg.Wait()
	k.log.Printf("node shutdown done in %s", time.Since(t0).Round(time.Millisecond))
}
