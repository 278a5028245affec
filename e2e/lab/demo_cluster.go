package lab

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

// The demo's workload: a Deployment the controller manager scales, whose
// Pods the scheduler places and whose EndpointSlices the EndpointSlice
// controller writes.
const (
	demoReplicas       = 2
	demoScaledReplicas = 3
)

func (l *Lab) applyDemoDeployment(ctx context.Context, replicas int32) error {
	labels := map[string]string{"app": "echo"}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: "demo"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					AutomountServiceAccountToken:  ptr.To(false),
					TerminationGracePeriodSeconds: ptr.To(int64(5)),
					Containers:                    []corev1.Container{EchoContainer()},
				},
			},
		},
	}
	_, err := l.Kube.AppsV1().Deployments("demo").Create(ctx, d, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("deployment demo/echo: %w", err)
	}
	return nil
}

// waitDeploymentPods waits (bounded) until a Deployment has n ready Pods
// and returns them, ordered by name.
func (l *Lab) waitDeploymentPods(ctx context.Context, ns, name string, n int, d time.Duration) ([]Pod, error) {
	dep, err := l.Kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("deployment %s/%s: %w", ns, name, err)
	}
	sel := metav1.FormatLabelSelector(dep.Spec.Selector)
	deadline := time.Now().Add(d)
	for {
		list, err := l.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			return nil, err
		}
		var ready []Pod
		for i := range list.Items {
			o := &list.Items[i]
			if o.DeletionTimestamp == nil && podCondition(o, corev1.PodReady) == corev1.ConditionTrue {
				ready = append(ready, podFromObject(name, o))
			}
		}
		if len(ready) >= n {
			sort.Slice(ready, func(a, b int) bool { return ready[a].Name < ready[b].Name })
			return ready, nil
		}
		if time.Now().After(deadline) {
			return ready, fmt.Errorf("deployment %s/%s: %d of %d Pods ready after %s", ns, name, len(ready), n, d)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// scheduledBy names who bound a Pod to its node, from the Pod's Scheduled
// event.
func (l *Lab) scheduledBy(ctx context.Context, pod Pod) string {
	evs, err := l.Kube.EventsV1().Events(pod.Namespace).List(ctx, metav1.ListOptions{
		FieldSelector: "regarding.name=" + pod.Name + ",reason=Scheduled"})
	if err != nil || len(evs.Items) == 0 {
		return "no Scheduled event"
	}
	e := evs.Items[0]
	if e.ReportingController != "" {
		return e.ReportingController
	}
	return e.DeprecatedSource.Component
}

// waitSlicesReady waits (bounded) until each of a Service's EndpointSlices
// has n ready endpoints: the EndpointSlice controller follows the Pods'
// readiness a moment later.
func (l *Lab) waitSlicesReady(ctx context.Context, ns, svc string, n int, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		list, err := l.Kube.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc})
		if err != nil {
			return
		}
		ok := len(list.Items) > 0
		for _, es := range list.Items {
			ready := 0
			for _, e := range es.Endpoints {
				if e.Conditions.Ready != nil && *e.Conditions.Ready {
					ready++
				}
			}
			ok = ok && ready == n
		}
		if ok {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sliceWriters lists a Service's EndpointSlices with the controller that
// manages them.
func (l *Lab) sliceWriters(ctx context.Context, ns, svc string) []string {
	list, err := l.Kube.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc})
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	for _, es := range list.Items {
		ready := 0
		for _, e := range es.Endpoints {
			if e.Conditions.Ready != nil && *e.Conditions.Ready {
				ready++
			}
		}
		out = append(out, fmt.Sprintf("%s (%s, %d ready endpoints, managed by %s)", es.Name, es.AddressType, ready,
			es.Labels[discoveryv1.LabelManagedBy]))
	}
	sort.Strings(out)
	return out
}

func (l *Lab) printDeployment(ctx context.Context, p func(string, ...any), pods []Pod) {
	for _, pod := range pods {
		p("  Pod demo/%s on %s (scheduled by %s): %s, %s", pod.Name, NodeName(pod.Node), l.scheduledBy(ctx, pod), pod.IPv4, pod.IPv6)
	}
	for _, s := range l.sliceWriters(ctx, "demo", "echo") {
		p("  EndpointSlice demo/%s", s)
	}
}

// podNodes lists the nodes that run the Pods, in order.
func podNodes(pods []Pod) []int {
	var nodes []int
	for _, pod := range pods {
		if !slices.Contains(nodes, pod.Node) {
			nodes = append(nodes, pod.Node)
		}
	}
	slices.Sort(nodes)
	return nodes
}

// demoRoutes waits for, and prints, the router's route for each VIP with
// one next hop per node that has a Pod (externalTrafficPolicy Local: only
// those announce). It returns the VIPs that are announced.
func (l *Lab) demoRoutes(ctx context.Context, p func(string, ...any), vips []netip.Addr, pods []Pod, wait time.Duration, t0 time.Time, since string) map[netip.Addr]bool {
	nodes := podNodes(pods)
	announced := map[netip.Addr]bool{}
	for _, v := range vips {
		r, err := waitRIBRoute(ctx, netip.PrefixFrom(v, v.BitLen()), len(nodes), wait)
		switch {
		case err != nil:
			p("  route for %s: %v", v, err)
		case r == nil:
			p("  route for %s: NONE after %s (no speaker announced it)", v, wait)
		default:
			announced[v] = true
			var hops []string
			for _, h := range r.NextHops {
				hops = append(hops, h+hopNode(h))
			}
			p("  route for %s: %s %s, next hops %s (%s after %s)", r.Prefix, r.Protocol, selectedWord(r),
				strings.Join(hops, ", "), time.Since(t0).Round(10*time.Millisecond), since)
			if len(r.NextHops) != len(nodes) {
				p("    (expected %d next hops, one per node with a Pod; saw %d)", len(nodes), len(r.NextHops))
			}
		}
	}
	if len(vips) == 0 {
		p("  route for the VIP: none to look up (no VIP assigned)")
	}
	return announced
}

// demoScale scales the Deployment up and shows the controller manager's
// new Pod, where the scheduler put it, and the router's route following.
func (l *Lab) demoScale(ctx context.Context, p func(string, ...any), vips []netip.Addr, wait time.Duration) {
	p("\n== scaling Deployment demo/echo to %d replicas", demoScaledReplicas)
	t0 := time.Now()
	patch := fmt.Appendf(nil, `{"spec":{"replicas":%d}}`, demoScaledReplicas)
	if _, err := l.Kube.AppsV1().Deployments("demo").Patch(ctx, "echo", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		p("  NOT scaled: %v", err)
		return
	}
	pods, err := l.waitDeploymentPods(ctx, "demo", "echo", demoScaledReplicas, podWait)
	if err != nil {
		p("  NOT scaled: %v", err)
		return
	}
	p("  %d Pods ready %s after the scale:", len(pods), time.Since(t0).Round(10*time.Millisecond))
	l.waitSlicesReady(ctx, "demo", "echo", len(pods), 10*time.Second)
	l.printDeployment(ctx, p, pods)
	l.demoRoutes(ctx, p, vips, pods, wait, t0, "the scale")
}

// printPods lists the lab's Nodes and Pods as the API server has them.
func (l *Lab) printPods(ctx context.Context, p func(string, ...any)) {
	if nodes, err := l.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err == nil {
		for _, n := range nodes.Items {
			state := "NotReady"
			if nodeReady(&n) {
				state = "Ready"
			}
			var taints []string
			for _, t := range n.Spec.Taints {
				taints = append(taints, t.Key+":"+string(t.Effect))
			}
			if len(taints) > 0 {
				state += ", taints " + strings.Join(taints, " ")
			}
			p("  node  %s: %s", n.Name, state)
		}
	}
	list, err := l.Kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		p("  pods: %v", err)
		return
	}
	for _, o := range list.Items {
		ips := []string{}
		for _, ip := range o.Status.PodIPs {
			ips = append(ips, ip.IP)
		}
		state := string(o.Status.Phase)
		if o.DeletionTimestamp != nil {
			state += ", terminating"
		}
		p("  pod   %s/%s on %s: %s %s ready=%s", o.Namespace, o.Name, o.Spec.NodeName, strings.Join(ips, " "), state,
			podCondition(&o, corev1.PodReady))
	}
}

// demoKubeProxyCounters prints, in iptables mode, kube-proxy's packet
// counters on its rules for the VIPs on each node: zero, since XDP rewrote
// the client's packets before netfilter saw them.
func (l *Lab) demoKubeProxyCounters(ctx context.Context, p func(string, ...any), vips []netip.Addr) {
	switch l.opts.KubeProxy {
	case KubeProxyNone:
		return
	case KubeProxyNFTables:
		p("  kube-proxy (nftables) keeps no rule counters; `make test-cluster` counts at netfilter's first hook instead")
		return
	}
	var parts []string
	for i := 1; i <= l.opts.Nodes; i++ {
		out, err := run(ctx, "ip", "netns", "exec", NodeName(i), "sh", "-c", "iptables-save -c -t nat; ip6tables-save -c -t nat")
		if err != nil {
			parts = append(parts, fmt.Sprintf("%s: %v", NodeName(i), err))
			continue
		}
		n, rules := 0, 0
		for _, line := range strings.Split(string(out), "\n") {
			for _, v := range vips {
				if strings.Contains(line, "-A KUBE-SERVICES -d "+v.String()+"/") {
					rules++
					var pk int
					_, _ = fmt.Sscanf(line, "[%d:", &pk)
					n += pk
				}
			}
		}
		parts = append(parts, fmt.Sprintf("%s %d packets on %d rules", NodeName(i), n, rules))
	}
	p("  kube-proxy (iptables) rules for the VIPs: %s", strings.Join(parts, ", "))
	p("  (XDP rewrote the client's packets before netfilter; kube-proxy serves the VIP to Pods and nodes)")
}
