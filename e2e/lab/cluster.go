package lab

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/zerohop/zerohop/internal/apiserver"
)

// The lab's cluster: next to etcd and kube-apiserver, a real
// kube-controller-manager and kube-scheduler in the root namespace, a
// kubelet stand-in per node (kubelet.go) and, when asked, kube-proxy in
// every node's namespace. EndpointSlices, Pod placement and Node health
// then come from Kubernetes itself.

const (
	// NodeMonitorGracePeriod is how long the node lifecycle controller
	// waits for a node's Lease before it marks the node NotReady, unless
	// Options say otherwise (kube-controller-manager's default is 50 s).
	// Ten renewals by the stand-in: a failover test waits about this long,
	// not a minute.
	NodeMonitorGracePeriod = 10 * time.Second
	// nodeMonitorPeriod is how often the controller checks.
	nodeMonitorPeriod = time.Second
)

// labControllers are the kube-controller-manager controllers the lab
// needs: workloads (Deployment, ReplicaSet), EndpointSlices, node health
// and the evictions it leads to, garbage collection (owner references,
// Pods of deleted nodes), namespaces and ServiceAccounts with their
// tokens. The rest (volumes, jobs, certificates, ...) would only use CPU.
var labControllers = []string{
	"deployment-controller", "replicaset-controller", "endpointslice-controller",
	"node-lifecycle-controller", "taint-eviction-controller", "garbage-collector-controller",
	"pod-garbage-collector-controller", "namespace-controller", "serviceaccount-controller",
	"serviceaccount-token-controller",
}

// Kube-proxy modes for Options.KubeProxy.
const (
	KubeProxyNone     = "none"
	KubeProxyIPTables = "iptables"
	KubeProxyNFTables = "nftables"
)

// ClusterCIDRs are the Pod ranges of all nodes, as kube-proxy's
// --cluster-cidr: 100.64.i.0/24 and 2001:db8:64:i::/64 for node i.
const ClusterCIDRs = "100.64.0.0/16,2001:db8:64::/56"

// startCluster starts the controller manager and the scheduler, a kubelet
// stand-in per node and, if asked, kube-proxy per node, and waits until
// every node is Ready and the controllers work.
func (l *Lab) startCluster(ctx context.Context, s *apiserver.Server) error {
	kc := s.Kubeconfig
	bin := func(name string) string { return filepath.Join(apiserver.BinDir(), name) }
	procs := []spawnSpec{
		{name: "kube-controller-manager", argv: []string{bin("kube-controller-manager"),
			"--kubeconfig=" + kc, "--leader-elect=false", "--secure-port=0",
			"--controllers=" + strings.Join(labControllers, ","),
			"--service-account-private-key-file=" + s.ServiceAccountKeyFile(), "--root-ca-file=" + s.CAFile(),
			"--use-service-account-credentials=false", "--allocate-node-cidrs=false",
			"--node-monitor-period=" + nodeMonitorPeriod.String(),
			"--node-monitor-grace-period=" + l.opts.NodeMonitorGracePeriod.String(),
			"--kube-api-qps=200", "--kube-api-burst=400", "--v=1"}},
		{name: "kube-scheduler", argv: []string{bin("kube-scheduler"),
			"--kubeconfig=" + kc, "--leader-elect=false", "--secure-port=0", "--kube-api-qps=200", "--kube-api-burst=400"}},
	}
	for i := 1; i <= l.opts.Nodes; i++ {
		procs = append(procs, l.kubeletSpec(i))
	}
	if l.opts.KubeProxy != KubeProxyNone {
		for i := 1; i <= l.opts.Nodes; i++ {
			procs = append(procs, l.kubeProxySpec(i))
		}
	}
	l.logf("starting kube-controller-manager, kube-scheduler, %d kubelet stand-ins, kube-proxy %s", l.opts.Nodes, l.opts.KubeProxy)
	for _, sp := range procs {
		if err := l.startProc(sp); err != nil {
			return err
		}
	}
	return l.waitCluster(ctx, 60*time.Second)
}

// startProc spawns a lab process and records it, even when it died at
// once, so Down checks it.
func (l *Lab) startProc(sp spawnSpec) error {
	sp.logDir, sp.detach = l.logDir(), l.opts.Detach
	p, _, err := spawn(sp)
	if p.PID > 0 {
		if aerr := l.addProc(p); aerr != nil {
			return aerr
		}
	}
	return err
}

func (l *Lab) kubeletSpec(i int) spawnSpec {
	argv := append(slices.Clone(l.opts.HelperCommand), kubeletArgs(i, l.st.APIServer.Kubeconfig, l.opts.StateDir, l.opts.HelperCommand)...)
	return spawnSpec{name: KubeletName(i), argv: argv}
}

// KubeletName is the lab's process name of node i's kubelet stand-in.
func KubeletName(i int) string { return "kubelet-" + NodeName(i) }

// kubeProxySpec runs kube-proxy in node i's namespace. `ip netns exec`
// hides the host's bpffs, which kube-proxy does not use. Conntrack limits
// and timeouts are left as they are: they are per host, not per
// namespace, and not the lab's to change.
func (l *Lab) kubeProxySpec(i int) spawnSpec {
	return spawnSpec{name: "kube-proxy-" + NodeName(i), ns: NodeName(i), argv: []string{
		filepath.Join(apiserver.BinDir(), "kube-proxy"),
		"--kubeconfig=" + l.st.APIServer.Kubeconfig, "--hostname-override=" + NodeName(i),
		"--proxy-mode=" + l.opts.KubeProxy, "--cluster-cidr=" + ClusterCIDRs, "--detect-local-mode=ClusterCIDR",
		"--nodeport-addresses=primary",
		"--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0", "--conntrack-tcp-timeout-close-wait=0",
		"--metrics-bind-address=127.0.0.1:10249", "--healthz-bind-address=127.0.0.1:10256",
		"--oom-score-adj=0", "--v=1",
	}}
}

// waitCluster waits until every lab Node is Ready (its stand-in runs) and
// the controller manager has made the default namespace's ServiceAccount.
func (l *Lab) waitCluster(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		var missing []string
		nodes, err := l.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return fmt.Errorf("nodes: %w", err)
		}
		for i := 1; i <= l.opts.Nodes; i++ {
			if !slices.ContainsFunc(nodes.Items, func(n corev1.Node) bool { return n.Name == NodeName(i) && nodeReady(&n) }) {
				missing = append(missing, "node "+NodeName(i)+" Ready")
			}
		}
		if _, err := l.Kube.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err != nil {
			missing = append(missing, "ServiceAccount default/default (kube-controller-manager)")
		}
		for _, p := range l.Procs() {
			if !p.alive() {
				return fmt.Errorf("%s (pid %d) exited; see %s", p.Name, p.PID, filepath.Join(l.logDir(), p.Name+".log"))
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster not up after %s: waiting for %s", d, strings.Join(missing, ", "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// kubeletProc returns the recorded process of node i's stand-in.
func (l *Lab) kubeletProc(i int) (Proc, bool) { return l.Proc(KubeletName(i)) }

// KillKubelet kills node i's kubelet stand-in (SIGKILL): its Pods keep
// running, its Lease goes stale, and after NodeMonitorGracePeriod the node
// lifecycle controller marks the Node NotReady and its Pods not ready.
func (l *Lab) KillKubelet(i int) error {
	p, ok := l.kubeletProc(i)
	if !ok {
		return fmt.Errorf("no kubelet stand-in for %s", NodeName(i))
	}
	if !p.alive() {
		return nil
	}
	if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill %s: %w", p.Name, err)
	}
	for p.alive() {
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// StartKubelet starts node i's stand-in again (after KillKubelet or
// ShutdownNode): it adopts the Pods still running and reports the node
// Ready.
func (l *Lab) StartKubelet(i int) error {
	if p, ok := l.kubeletProc(i); ok && p.alive() {
		return fmt.Errorf("%s runs (pid %d)", p.Name, p.PID)
	}
	l.mu.Lock()
	l.st.Procs = slices.DeleteFunc(l.st.Procs, func(p Proc) bool { return p.Name == KubeletName(i) })
	l.mu.Unlock()
	return l.startProc(l.kubeletSpec(i))
}

// ShutdownNode makes node i's stand-in shut the node down gracefully
// (NodeShutdownSignal) and waits until it has exited: the node is
// NotReady, its Pods terminated and Failed.
func (l *Lab) ShutdownNode(ctx context.Context, i int) error {
	p, ok := l.kubeletProc(i)
	if !ok || !p.alive() {
		return fmt.Errorf("no running kubelet stand-in for %s", NodeName(i))
	}
	if err := syscall.Kill(p.PID, NodeShutdownSignal); err != nil {
		return fmt.Errorf("signal %s: %w", p.Name, err)
	}
	deadline := time.Now().Add(nodeShutdownGrace + 30*time.Second)
	for p.alive() {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: node shutdown not done after %s", p.Name, nodeShutdownGrace+30*time.Second)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}
