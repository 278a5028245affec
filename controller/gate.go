package controller

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/zerohop/zerohop/config/v1alpha1"
)

// The readiness gate (docs/readiness-gate.md). A Pod that lists
// ConditionLoadBalancerReady in spec.readinessGates is Ready only once
// zerohop has set that condition True: every node that attracts the VIP
// of every zerohop Service selecting the Pod has the Pod's backend in its
// datapath, and at least one node attracts each VIP. The controller
// watches only Pods labelled LabelReadinessGate, so that its cache does
// not hold every Pod of the cluster.
const ConditionLoadBalancerReady corev1.PodConditionType = "zerohop.io/load-balancer-ready"

// LabelReadinessGate marks the Pods the gate controller watches.
const LabelReadinessGate = "zerohop.io/readiness-gate"

// gateSelector selects the Pods the controller caches: those labelled
// LabelReadinessGate, whatever the value.
var gateSelector = func() labels.Selector {
	req, err := labels.NewRequirement(LabelReadinessGate, selection.Exists, nil)
	if err != nil {
		panic(err)
	}
	return labels.NewSelector().Add(*req)
}()

// Reasons of the gate condition.
const (
	ReasonGateReachable     = "Reachable"
	ReasonGateNoLB          = "NoLoadBalancer"
	ReasonGateNotInSlice    = "NotInEndpoints"
	ReasonGateNotAnnounced  = "NotAnnounced"
	ReasonGateNotProgrammed = "NotProgrammed"
)

// gateStuckAfter is how long a Pod whose containers are ready may wait for
// the gate before it is reported stuck (an Event and the stuck gauge).
const gateStuckAfter = 30 * time.Second

var (
	gateDelay = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "zerohop_readiness_gate_delay_seconds",
		Help:    "Time from a gated Pod's containers being ready (as the controller first saw it) to the readiness gate turning True.",
		Buckets: []float64{0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60},
	})
	gateWaiting = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "zerohop_readiness_gates_false",
		Help: "Gated Pods whose containers are ready but whose readiness gate is False, by reason; stuck is true after 30 s.",
	}, []string{"reason", "stuck"})
	gateWrites = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "zerohop_readiness_gate_writes_total",
		Help: "Pod status writes of the readiness gate condition.",
	})
	gateMetricsOnce sync.Once
)

func registerGateMetrics() {
	gateMetricsOnce.Do(func() { metrics.Registry.MustRegister(gateDelay, gateWaiting, gateWrites) })
}

type gateReconciler struct {
	s *state

	mu sync.Mutex
	// pods tracks the gated Pods seen with ready containers and a gate
	// not yet True (by UID): since when, why, and whether the stuck Event
	// went out.
	pods map[types.UID]*gateWait
	// first remembers, per Pod UID and slice, the slice generation in
	// which the controller first saw the Pod: a node that programmed that
	// generation or a later one has the Pod's backend, however much the
	// slice churned since.
	first map[types.UID]map[string]int64
	now   func() time.Time
}

type gateWait struct {
	since  time.Time
	reason string
	stuck  bool
	told   bool
}

func (s *state) setupGate(mgr manager.Manager) error {
	registerGateMetrics()
	r := &gateReconciler{s: s, pods: map[types.UID]*gateWait{}, first: map[types.UID]map[string]int64{}, now: time.Now}
	gated := predicate.NewPredicateFuncs(func(o client.Object) bool {
		p, ok := o.(*corev1.Pod)
		return ok && hasGate(p)
	})
	err := ctrl.NewControllerManagedBy(mgr).
		Named("zerohop-readiness-gate").
		For(&corev1.Pod{}, builder.WithPredicates(gated)).
		Watches(&discoveryv1.EndpointSlice{}, handler.EnqueueRequestsFromMapFunc(slicePods)).
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(r.podsIn)).
		Watches(&v1alpha1.SpeakerStatus{}, handler.Funcs{
			CreateFunc: func(ctx context.Context, _ event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				r.enqueueAll(ctx, q, true)
			},
			DeleteFunc: func(ctx context.Context, _ event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				r.enqueueAll(ctx, q, true)
			},
			// Pods whose gate is True can only lose it to a lost
			// announcement: those are looked at only when sessions,
			// announcements or L2 ownership changed.
			UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				o, ok1 := e.ObjectOld.(*v1alpha1.SpeakerStatus)
				n, ok2 := e.ObjectNew.(*v1alpha1.SpeakerStatus)
				all := !ok1 || !ok2 || !sameAnnouncing(&o.Status, &n.Status)
				r.enqueueAll(ctx, q, all)
			},
		}).
		Watches(&corev1.Node{}, handler.Funcs{
			UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				o, ok1 := e.ObjectOld.(*corev1.Node)
				n, ok2 := e.ObjectNew.(*corev1.Node)
				if !ok1 || !ok2 || nodeReady(o) != nodeReady(n) {
					r.enqueueAll(ctx, q, true)
				}
			},
		}).
		Complete(r)
	if err != nil {
		return fmt.Errorf("readiness gate controller: %w", err)
	}
	return nil
}

// hasGate reports whether the Pod lists zerohop's readiness gate.
func hasGate(p *corev1.Pod) bool {
	return slices.ContainsFunc(p.Spec.ReadinessGates, func(g corev1.PodReadinessGate) bool {
		return g.ConditionType == ConditionLoadBalancerReady
	})
}

// sameAnnouncing reports whether two reports attract the same traffic:
// same sessions, announcements and L2 ownership.
func sameAnnouncing(o, n *v1alpha1.SpeakerStatusStatus) bool {
	oc, nc := *o, *n
	oc.Datapath, nc.Datapath = nil, nil
	return len(affected(&oc, &nc)) == 0
}

// slicePods maps an EndpointSlice to the Pods it lists. Pods without the
// label are not in the cache; their reconcile finds nothing.
func slicePods(_ context.Context, o client.Object) []reconcile.Request {
	sl, ok := o.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil
	}
	var out []reconcile.Request
	for _, ep := range sl.Endpoints {
		if ref := ep.TargetRef; ref != nil && ref.Kind == "Pod" {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: sl.Namespace, Name: ref.Name}})
		}
	}
	return out
}

// podsIn maps a Service change to the gated Pods of its namespace.
func (r *gateReconciler) podsIn(ctx context.Context, o client.Object) []reconcile.Request {
	var pods corev1.PodList
	if err := r.s.client.List(ctx, &pods, client.InNamespace(o.GetNamespace()), client.UnsafeDisableDeepCopy); err != nil {
		r.s.log.Error(err, "readiness gate: list pods", "namespace", o.GetNamespace())
		return nil
	}
	var out []reconcile.Request
	for i := range pods.Items {
		if hasGate(&pods.Items[i]) {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&pods.Items[i])})
		}
	}
	return out
}

// enqueueAll queues the gated Pods whose gate is not True, and with all
// those whose gate is True too.
func (r *gateReconciler) enqueueAll(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request], all bool) {
	var pods corev1.PodList
	if err := r.s.client.List(ctx, &pods, client.UnsafeDisableDeepCopy); err != nil {
		r.s.log.Error(err, "readiness gate: list pods")
		return
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if hasGate(p) && (all || podCondition(p, ConditionLoadBalancerReady) != corev1.ConditionTrue) {
			q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(p)})
		}
	}
}

func podCondition(p *corev1.Pod, t corev1.PodConditionType) corev1.ConditionStatus {
	for _, c := range p.Status.Conditions {
		if c.Type == t {
			return c.Status
		}
	}
	return corev1.ConditionUnknown
}

// backing is one zerohop Service that selects the Pod, with the slice
// that lists the Pod (empty when none does yet).
type backing struct {
	view       serviceView
	slice      string // namespace/name
	generation int64
	// local is externalTrafficPolicy Local: only the Pod's own node
	// balances to it.
	local bool
	node  string // the Pod's node
	// othersReady says another endpoint of the Service is ready. Without
	// one, zerohop does not announce the address (there is nowhere to
	// send it), so the gate cannot wait for the announcement.
	othersReady bool
}

func (r *gateReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var pod corev1.Pod
	if err := r.s.client.Get(ctx, req.NamespacedName, &pod); err != nil {
		if !apierrors.IsNotFound(err) {
			return reconcile.Result{}, fmt.Errorf("get pod %s: %w", req, err)
		}
		r.sweep(ctx)
		return reconcile.Result{}, nil
	}
	// A terminating Pod's readiness no longer decides anything: the
	// datapath keeps its flows as long as it serves.
	if !hasGate(&pod) || pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		r.forget(pod.UID)
		return reconcile.Result{}, nil
	}
	backs, err := r.backings(ctx, &pod)
	if err != nil {
		return reconcile.Result{}, err
	}
	was := podCondition(&pod, ConditionLoadBalancerReady)
	status, reason, msg := r.verdict(pod.UID, was == corev1.ConditionTrue, backs)
	requeue := r.track(&pod, status, reason, msg)
	if err := r.write(ctx, &pod, status, reason, msg); err != nil {
		return reconcile.Result{}, err
	}
	return reconcile.Result{RequeueAfter: requeue}, nil
}

// backings finds the zerohop Services with an address that select the
// Pod, and the slice of each that lists it.
func (r *gateReconciler) backings(ctx context.Context, pod *corev1.Pod) ([]backing, error) {
	var svcs corev1.ServiceList
	if err := r.s.client.List(ctx, &svcs, client.InNamespace(pod.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("pod %s/%s: list services: %w", pod.Namespace, pod.Name, err)
	}
	var out []backing
	for i := range svcs.Items {
		svc := &svcs.Items[i]
		if !selects(svc, pod.Labels, r.s.opts.DefaultClass) {
			continue
		}
		var ips []netip.Addr
		for _, in := range svc.Status.LoadBalancer.Ingress {
			if ip, err := netip.ParseAddr(in.IP); err == nil && !slices.Contains(ips, ip.Unmap()) {
				ips = append(ips, ip.Unmap())
			}
		}
		// A Service still waiting for its address has no load
		// balancer to wait for; holding its Pods back would stall
		// every rollout behind an exhausted pool.
		if len(ips) == 0 {
			continue
		}
		key := svc.Namespace + "/" + svc.Name
		view, err := (&conditionsReconciler{s: r.s}).view(ctx, key, ips)
		if err != nil {
			return nil, fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
		b := backing{view: view, local: svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal, node: pod.Spec.NodeName}
		var sls discoveryv1.EndpointSliceList
		if err := r.s.client.List(ctx, &sls, client.InNamespace(svc.Namespace),
			client.MatchingLabels{discoveryv1.LabelServiceName: svc.Name}, client.UnsafeDisableDeepCopy); err != nil {
			return nil, fmt.Errorf("pod %s/%s: list endpointslices of %s: %w", pod.Namespace, pod.Name, key, err)
		}
		for j := range sls.Items {
			sl := &sls.Items[j]
			if b.slice == "" && listsPod(sl, pod) {
				b.slice = sl.Namespace + "/" + sl.Name
				b.generation = sl.Generation
			}
			b.othersReady = b.othersReady || slices.ContainsFunc(sl.Endpoints, func(ep discoveryv1.Endpoint) bool {
				mine := ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" && ep.TargetRef.Name == pod.Name
				return !mine && (ep.Conditions.Ready == nil || *ep.Conditions.Ready)
			})
		}
		out = append(out, b)
	}
	return out, nil
}

// selects is the one rule for which Pods the gate concerns: those a
// zerohop LoadBalancer Service selects. The gate waits on each such
// Service; the injection webhook (inject.go) gives the gate to the Pods
// one selects when they are created.
func selects(svc *corev1.Service, podLabels map[string]string, defaultClass bool) bool {
	return ours(svc, defaultClass) && len(svc.Spec.Selector) > 0 &&
		labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(podLabels))
}

// gatingService returns the name of a zerohop Service of the namespace
// that selects Pods with these labels, or "" when none does.
func gatingService(ctx context.Context, r client.Reader, namespace string, podLabels map[string]string, defaultClass bool) (string, error) {
	var svcs corev1.ServiceList
	if err := r.List(ctx, &svcs, client.InNamespace(namespace), client.UnsafeDisableDeepCopy); err != nil {
		return "", fmt.Errorf("list services of namespace %s: %w", namespace, err)
	}
	for i := range svcs.Items {
		if selects(&svcs.Items[i], podLabels, defaultClass) {
			return svcs.Items[i].Name, nil
		}
	}
	return "", nil
}

func listsPod(sl *discoveryv1.EndpointSlice, pod *corev1.Pod) bool {
	return slices.ContainsFunc(sl.Endpoints, func(ep discoveryv1.Endpoint) bool {
		ref := ep.TargetRef
		return ref != nil && ref.Kind == "Pod" && ref.Name == pod.Name && (ref.UID == "" || ref.UID == pod.UID)
	})
}

// verdict decides the gate. To turn True every backing Service must be
// announced and its slice programmed, at the generation first seen with
// the Pod, on every node that attracts it (and, in Local mode, on the
// Pod's own node). A Service with no other ready endpoint is not
// announced at all (the speakers announce only what has somewhere to
// go): its slice must then be programmed on every ready node with a
// speaker, the nodes that will announce it once this Pod is Ready. Once True, the gate turns
// False only when the Pod leaves the slices or a VIP is attracted by no
// node: a node lagging one generation behind a churning slice must not
// turn Ready Pods unready, which would churn the slice again.
func (r *gateReconciler) verdict(uid types.UID, wasTrue bool, backs []backing) (metav1.ConditionStatus, string, string) {
	if len(backs) == 0 {
		return metav1.ConditionTrue, ReasonGateNoLB, "no zerohop LoadBalancer Service with an address selects the Pod"
	}
	r.mu.Lock()
	firsts := r.first[uid]
	if firsts == nil {
		firsts = map[string]int64{}
		r.first[uid] = firsts
	}
	r.mu.Unlock()
	var msgs []string
	for _, b := range backs {
		if b.slice == "" {
			return metav1.ConditionFalse, ReasonGateNotInSlice, fmt.Sprintf("service %s: no EndpointSlice lists the Pod yet", b.view.name)
		}
		r.mu.Lock()
		gen, ok := firsts[b.slice]
		if !ok {
			gen = b.generation
			firsts[b.slice] = gen
		}
		r.mu.Unlock()
		nodes, text := b.view.attracting()
		what := "reachable through " + strings.Join(nodes, ", ")
		if len(nodes) == 0 {
			if b.othersReady {
				return metav1.ConditionFalse, ReasonGateNotAnnounced, fmt.Sprintf("service %s: %s", b.view.name, text)
			}
			// No endpoint is ready, so nothing is announced yet: the
			// nodes that will announce once this Pod is Ready are
			// every ready node with a speaker.
			nodes = b.view.reporting()
			if len(nodes) == 0 {
				return metav1.ConditionFalse, ReasonGateNotAnnounced, fmt.Sprintf("service %s: no ready node runs a speaker", b.view.name)
			}
			what = "programmed on " + strings.Join(nodes, ", ") + ", announced once an endpoint is Ready"
		}
		if b.local && b.node != "" && !slices.Contains(nodes, b.node) {
			nodes = append(nodes, b.node)
		}
		if wasTrue {
			msgs = append(msgs, fmt.Sprintf("service %s: %s", b.view.name, what))
			continue
		}
		behind := b.view.behind(nodes, b.slice, gen)
		if len(behind) > 0 {
			return metav1.ConditionFalse, ReasonGateNotProgrammed,
				fmt.Sprintf("service %s: slice %s generation %d not yet programmed on %s", b.view.name, b.slice, gen, strings.Join(behind, ", "))
		}
		msgs = append(msgs, fmt.Sprintf("service %s: %s", b.view.name, what))
	}
	return metav1.ConditionTrue, ReasonGateReachable, strings.Join(msgs, "; ")
}

// attracting returns the ready nodes that draw traffic to the Service's
// addresses (a BGP path to an established session, or L2 ownership),
// sorted, when every address has at least one; otherwise none, and the
// Announced condition's message saying why.
func (v serviceView) attracting() ([]string, string) {
	c, _ := v.announcedCondition()
	if c.Status != metav1.ConditionTrue {
		return nil, c.Message
	}
	var out []string
	for _, sp := range v.speakers {
		if !sp.ready || sp.st == nil {
			continue
		}
		if i, ok := slices.BinarySearchFunc(sp.st.Announcements, v.name, func(a v1alpha1.ServiceAnnouncement, n string) int {
			return cmp.Compare(a.Service, n)
		}); ok {
			a := sp.st.Announcements[i]
			established := slices.ContainsFunc(sp.st.Sessions, func(s v1alpha1.BGPSessionStatus) bool {
				return s.State == "established" && slices.Contains(a.Peers, s.Peer)
			})
			if established && slices.ContainsFunc(v.ips, func(ip netip.Addr) bool { return coversAny(a.Prefixes, ip) }) {
				out = append(out, sp.node)
				continue
			}
		}
		if slices.ContainsFunc(sp.st.L2, func(o v1alpha1.L2Ownership) bool {
			ip, err := netip.ParseAddr(o.IP)
			return err == nil && slices.Contains(v.ips, ip.Unmap())
		}) {
			out = append(out, sp.node)
		}
	}
	slices.Sort(out)
	return out, c.Message
}

// reporting returns the ready nodes whose speaker reports, sorted.
func (v serviceView) reporting() []string {
	var out []string
	for _, sp := range v.speakers {
		if sp.ready && sp.st != nil {
			out = append(out, sp.node)
		}
	}
	slices.Sort(out)
	return out
}

// behind returns the nodes among those given that run a datapath and have
// not programmed the slice at generation gen or later. A node without a
// datapath forwards through kube-proxy, which zerohop does not see.
func (v serviceView) behind(nodes []string, slice string, gen int64) []string {
	var out []string
	for _, sp := range v.speakers {
		if !slices.Contains(nodes, sp.node) || sp.st == nil || sp.st.Datapath == nil {
			continue
		}
		have := sp.st.Datapath.EndpointSlices
		i, ok := slices.BinarySearchFunc(have, slice, func(s v1alpha1.SliceGeneration, n string) int { return cmp.Compare(s.Name, n) })
		if !ok || have[i].Generation < gen {
			out = append(out, sp.node)
		}
	}
	slices.Sort(out)
	return out
}

// track keeps the waiting Pods' metrics and Events, and says when to look
// again so that a stuck gate is reported.
func (r *gateReconciler) track(pod *corev1.Pod, status metav1.ConditionStatus, reason, msg string) time.Duration {
	now := r.now()
	containersReady := podCondition(pod, corev1.ContainersReady) == corev1.ConditionTrue
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.pods[pod.UID]
	if status == metav1.ConditionTrue || !containersReady {
		if w != nil && status == metav1.ConditionTrue {
			d := now.Sub(w.since)
			gateDelay.Observe(d.Seconds())
			if !w.told {
				r.s.rec.Eventf(pod, nil, corev1.EventTypeNormal, "LoadBalancerReady", "Gate", "reachable %s after its containers were ready: %s", d.Round(time.Millisecond), msg)
			}
		}
		if w != nil {
			r.setWaiting(w, -1)
			delete(r.pods, pod.UID)
		}
		return 0
	}
	if w == nil {
		w = &gateWait{since: now}
		r.pods[pod.UID] = w
	} else {
		r.setWaiting(w, -1)
	}
	w.reason = reason
	w.stuck = now.Sub(w.since) >= gateStuckAfter
	r.setWaiting(w, 1)
	if !w.stuck {
		return gateStuckAfter - now.Sub(w.since)
	}
	if !w.told {
		w.told = true
		r.s.rec.Eventf(pod, nil, corev1.EventTypeWarning, "LoadBalancerNotReady", "Gate", "containers ready for %s, gate still False: %s: %s", now.Sub(w.since).Round(time.Second), reason, msg)
	}
	return 0
}

func (r *gateReconciler) setWaiting(w *gateWait, d float64) {
	gateWaiting.WithLabelValues(w.reason, fmt.Sprint(w.stuck)).Add(d)
}

func (r *gateReconciler) forget(uid types.UID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w := r.pods[uid]; w != nil {
		r.setWaiting(w, -1)
	}
	delete(r.pods, uid)
	delete(r.first, uid)
}

// sweep drops the state of Pods that are gone. A Pod deleted gracefully
// was forgotten when it began terminating; one deleted at once is known
// only by name by then, so the UIDs still tracked are checked.
func (r *gateReconciler) sweep(ctx context.Context) {
	r.mu.Lock()
	n := len(r.first)
	r.mu.Unlock()
	if n == 0 {
		return
	}
	var pods corev1.PodList
	if err := r.s.client.List(ctx, &pods, client.UnsafeDisableDeepCopy); err != nil {
		return
	}
	live := map[types.UID]bool{}
	for i := range pods.Items {
		live[pods.Items[i].UID] = true
	}
	r.mu.Lock()
	var gone []types.UID
	for uid := range r.first {
		if !live[uid] {
			gone = append(gone, uid)
		}
	}
	r.mu.Unlock()
	for _, uid := range gone {
		r.forget(uid)
	}
}

// write sets the condition on the Pod's status when it changed, by a
// strategic merge patch that names only this condition, so the kubelet's
// own conditions are never overwritten.
func (r *gateReconciler) write(ctx context.Context, pod *corev1.Pod, status metav1.ConditionStatus, reason, msg string) error {
	for _, c := range pod.Status.Conditions {
		if c.Type == ConditionLoadBalancerReady && string(c.Status) == string(status) && c.Reason == reason && c.Message == msg {
			return nil
		}
	}
	orig := pod.DeepCopy()
	cond := corev1.PodCondition{Type: ConditionLoadBalancerReady, Status: corev1.ConditionStatus(status), Reason: reason, Message: msg,
		LastProbeTime: metav1.NewTime(r.now())}
	cond.LastTransitionTime = cond.LastProbeTime
	i := slices.IndexFunc(pod.Status.Conditions, func(c corev1.PodCondition) bool { return c.Type == ConditionLoadBalancerReady })
	if i < 0 {
		pod.Status.Conditions = append(pod.Status.Conditions, cond)
	} else {
		if pod.Status.Conditions[i].Status == cond.Status {
			cond.LastTransitionTime = pod.Status.Conditions[i].LastTransitionTime
		}
		pod.Status.Conditions[i] = cond
	}
	if err := r.s.client.Status().Patch(ctx, pod, client.StrategicMergeFrom(orig), client.FieldOwner(FieldOwner)); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("pod %s/%s: readiness gate: %w", pod.Namespace, pod.Name, err)
	}
	gateWrites.Inc()
	return nil
}
