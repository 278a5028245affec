package controller

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// The controller, not each speaker, writes the Announced and
// DatapathProgrammed conditions: a Service's state is the sum of every
// node's, which only a reader of all SpeakerStatuses knows, and one
// leader-elected writer per Service cannot fight itself the way a speaker
// per node would. It reads the SpeakerStatuses (and Node readiness, so a
// dead node's last report is not believed) from its cache and writes a
// Service only when a condition's status, reason or message changed.
//
// Writes are rate-limited twice, so that a flapping peer that touches
// every Service on every flap costs the API server a bounded rate: each
// Service may be written conditionBurst times at once and then once per
// ConditionInterval; all Services together at conditionQPS. A held-back
// write is retried later from the state at that time, so intermediate
// flaps merge into one write and the last state always lands.
const (
	DefaultConditionInterval = 5 * time.Second
	conditionBurst           = 3
	conditionQPS             = 50
	conditionGlobalBurst     = 200
)

var (
	vipAnnouncers = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "zerohop_vip_announcing_nodes",
		Help: "Ready nodes attracting the VIP's traffic: by BGP to at least one established session, or as its L2 owner. Exported by the leader.",
	}, []string{"service", "vip"})
	conditionWrites = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "zerohop_service_condition_writes_total",
		Help: "Service status writes made for the Announced and DatapathProgrammed conditions.",
	})
	conditionDelays = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "zerohop_service_condition_writes_delayed_total",
		Help: "Condition writes held back by the per-Service or global rate limit (retried later with the state of then).",
	})
	conditionMetricsOnce sync.Once
)

func registerConditionMetrics() {
	conditionMetricsOnce.Do(func() {
		metrics.Registry.MustRegister(vipAnnouncers, conditionWrites, conditionDelays)
	})
}

type conditionsReconciler struct {
	s *state

	mu        sync.Mutex
	perSvc    map[string]*bucket
	newBucket func() *bucket
	global    *bucket
	vips      map[string][]netip.Addr // service -> VIP series exported
	now       func() time.Time
}

func (s *state) setupConditions(mgr manager.Manager) error {
	registerConditionMetrics()
	interval := s.opts.ConditionInterval
	r := &conditionsReconciler{
		s:      s,
		perSvc: map[string]*bucket{},
		global: &bucket{rate: conditionQPS, burst: conditionGlobalBurst},
		vips:   map[string][]netip.Addr{},
		now:    time.Now,
	}
	r.global.tokens = conditionGlobalBurst
	r.newBucket = func() *bucket {
		return &bucket{rate: 1 / interval.Seconds(), burst: conditionBurst, tokens: conditionBurst}
	}
	svcChanged := predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool { return isLB(e.Object) },
		// Its own writes come back as updates too: the reconcile finds
		// nothing to change and stops there.
		UpdateFunc: func(e event.UpdateEvent) bool { return isLB(e.ObjectOld) || isLB(e.ObjectNew) },
		DeleteFunc: func(e event.DeleteEvent) bool { return isLB(e.Object) },
	}
	err := ctrl.NewControllerManagedBy(mgr).
		Named("zerohop-conditions").
		For(&corev1.Service{}, builder.WithPredicates(svcChanged)).
		Watches(&v1alpha1.SpeakerStatus{}, r.speakerHandler()).
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(r.allServices), builder.WithPredicates(predicate.Funcs{
			CreateFunc: func(event.CreateEvent) bool { return true },
			DeleteFunc: func(event.DeleteEvent) bool { return true },
			UpdateFunc: func(e event.UpdateEvent) bool {
				o, ok1 := e.ObjectOld.(*corev1.Node)
				n, ok2 := e.ObjectNew.(*corev1.Node)
				return !ok1 || !ok2 || nodeReady(o) != nodeReady(n)
			},
		})).
		Complete(r)
	if err != nil {
		return fmt.Errorf("conditions controller: %w", err)
	}
	return nil
}

// speakerHandler maps a SpeakerStatus change to the Services it names
// before and after; a speaker that appears or goes, or starts or stops
// reporting a datapath, changes the node count of every Service.
func (r *conditionsReconciler) speakerHandler() handler.EventHandler {
	add := func(q workqueue.TypedRateLimitingInterface[reconcile.Request], names map[string]bool) {
		for n := range names {
			ns, name, ok := cutKey(n)
			if ok {
				q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}})
			}
		}
	}
	all := func(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		for _, req := range r.allServices(ctx, nil) {
			q.Add(req)
		}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, _ event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			all(ctx, q)
		},
		DeleteFunc: func(ctx context.Context, _ event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			all(ctx, q)
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			o, ok1 := e.ObjectOld.(*v1alpha1.SpeakerStatus)
			n, ok2 := e.ObjectNew.(*v1alpha1.SpeakerStatus)
			if !ok1 || !ok2 || (o.Status.Datapath == nil) != (n.Status.Datapath == nil) {
				all(ctx, q)
				return
			}
			add(q, affected(&o.Status, &n.Status))
		},
	}
}

// affected returns the Services whose conditions a SpeakerStatus update
// may change: those whose announcement, L2 ownership or datapath state
// differs, and, when a session changed, every Service the node announces.
// A speaker rewrites its status for any change; most touch few Services,
// and the cost of an update must not grow with all of them.
func affected(o, n *v1alpha1.SpeakerStatusStatus) map[string]bool {
	out := map[string]bool{}
	sessions := !equality.Semantic.DeepEqual(o.Sessions, n.Sessions)
	anns := map[string]*v1alpha1.ServiceAnnouncement{}
	for i := range o.Announcements {
		anns[o.Announcements[i].Service] = &o.Announcements[i]
		if sessions {
			out[o.Announcements[i].Service] = true
		}
	}
	for i := range n.Announcements {
		a := &n.Announcements[i]
		if prev, ok := anns[a.Service]; !ok || sessions || !equality.Semantic.DeepEqual(prev, a) {
			out[a.Service] = true
		}
		delete(anns, a.Service)
	}
	for s := range anns {
		out[s] = true // no longer announced
	}
	l2 := map[string]string{}
	for _, x := range o.L2 {
		l2[x.IP] = x.Service + "|" + strings.Join(x.Interfaces, ",")
	}
	for _, x := range n.L2 {
		if l2[x.IP] != x.Service+"|"+strings.Join(x.Interfaces, ",") {
			out[x.Service] = true
		}
		delete(l2, x.IP)
	}
	for _, v := range l2 {
		svc, _, _ := strings.Cut(v, "|")
		out[svc] = true
	}
	var od, nd v1alpha1.DatapathStatus
	if o.Datapath != nil {
		od = *o.Datapath
	}
	if n.Datapath != nil {
		nd = *n.Datapath
	}
	state := map[string]string{}
	for _, s := range od.Programmed {
		state[s] = "ok"
	}
	for _, f := range od.Failed {
		state[f.Service] = "failed: " + f.Reason
	}
	seen := map[string]string{}
	for _, s := range nd.Programmed {
		seen[s] = "ok"
	}
	for _, f := range nd.Failed {
		seen[f.Service] = "failed: " + f.Reason
	}
	for s, st := range seen {
		if state[s] != st {
			out[s] = true
		}
		delete(state, s)
	}
	for s := range state {
		out[s] = true
	}
	return out
}

func cutKey(k string) (string, string, bool) {
	ns, name, ok := strings.Cut(k, "/")
	return ns, name, ok && ns != "" && name != ""
}

// allServices lists every Service that holds a zerohop address.
func (r *conditionsReconciler) allServices(ctx context.Context, _ client.Object) []reconcile.Request {
	var list corev1.ServiceList
	if err := r.s.client.List(ctx, &list); err != nil {
		r.s.log.Error(err, "conditions: list services")
		return nil
	}
	var out []reconcile.Request
	for i := range list.Items {
		svc := &list.Items[i]
		if ours(svc, r.s.opts.DefaultClass) && len(svc.Status.LoadBalancer.Ingress) > 0 {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}})
		}
	}
	return out
}

func (r *conditionsReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	key := req.Namespace + "/" + req.Name
	var svc corev1.Service
	if err := r.s.client.Get(ctx, req.NamespacedName, &svc); err != nil {
		if !apierrors.IsNotFound(err) {
			return reconcile.Result{}, fmt.Errorf("get service %s: %w", key, err)
		}
		r.forget(key)
		return reconcile.Result{}, nil
	}
	var ips []netip.Addr
	if ours(&svc, r.s.opts.DefaultClass) {
		for _, in := range svc.Status.LoadBalancer.Ingress {
			if ip, err := netip.ParseAddr(in.IP); err == nil && !slices.Contains(ips, ip.Unmap()) {
				ips = append(ips, ip.Unmap())
			}
		}
	}
	orig := svc.DeepCopy()
	var announced, programmed *metav1.Condition
	if len(ips) == 0 {
		r.forget(key)
	} else {
		view, err := r.view(ctx, key, ips)
		if err != nil {
			return reconcile.Result{}, err
		}
		a, counts := view.announcedCondition()
		announced = &a
		r.export(key, counts)
		if d, ok := view.datapathCondition(); ok {
			programmed = &d
		}
	}
	changed := setOrRemove(&svc.Status.Conditions, ConditionAnnounced, announced, svc.Generation)
	changed = append(changed, setOrRemove(&svc.Status.Conditions, ConditionDatapathProgrammed, programmed, svc.Generation)...)
	if len(changed) == 0 && len(orig.Status.Conditions) == len(svc.Status.Conditions) {
		return reconcile.Result{}, nil
	}
	if wait := r.admit(key); wait > 0 {
		conditionDelays.Inc()
		return reconcile.Result{RequeueAfter: wait}, nil
	}
	patch := client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})
	if err := r.s.client.Status().Patch(ctx, &svc, patch, client.FieldOwner(FieldOwner)); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(key)
			return reconcile.Result{}, nil
		}
		// A conflict is another writer (the allocation) in between: the
		// requeue reads the Service again.
		return reconcile.Result{}, fmt.Errorf("service %s conditions: %w", key, err)
	}
	conditionWrites.Inc()
	// kubectl describe service shows Events, not conditions: each change
	// is told there too, at the rate of the writes.
	// What is news: a condition that turns True or False or changes its
	// reason, and a True one whose nodes or peers changed. A condition
	// first set False (a new Service before the speakers report) and a
	// False one whose details shift (a session going from idle to
	// active) are not.
	for _, c := range changed {
		prev := meta.FindStatusCondition(orig.Status.Conditions, c.Type)
		typ := corev1.EventTypeNormal
		if c.Status != metav1.ConditionTrue {
			if prev == nil || (prev.Status == c.Status && prev.Reason == c.Reason) {
				continue
			}
			typ = corev1.EventTypeWarning
		}
		r.s.rec.Eventf(&svc, nil, typ, eventReasons[c.Type], "Report", "%s: %s", c.Reason, c.Message)
	}
	return reconcile.Result{}, nil
}

// eventReasons are the reasons of the Events that tell a condition's
// change; the speakers' own per-node Events are Announced and Withdrawn.
var eventReasons = map[string]string{
	ConditionAnnounced:          "Announcement",
	ConditionDatapathProgrammed: "Datapath",
}

// setOrRemove sets want (or removes the type when want is nil) and
// returns the condition when its status, reason or message changed.
func setOrRemove(conds *[]metav1.Condition, typ string, want *metav1.Condition, gen int64) []metav1.Condition {
	have := meta.FindStatusCondition(*conds, typ)
	if want == nil {
		meta.RemoveStatusCondition(conds, typ)
		return nil
	}
	want.ObservedGeneration = gen
	if have != nil && have.Status == want.Status && have.Reason == want.Reason && have.Message == want.Message {
		if have.ObservedGeneration != gen {
			meta.SetStatusCondition(conds, *want)
		}
		return nil
	}
	meta.SetStatusCondition(conds, *want)
	return []metav1.Condition{*want}
}

// view reads the speakers' reports and the nodes' readiness from the
// cache.
func (r *conditionsReconciler) view(ctx context.Context, key string, ips []netip.Addr) (serviceView, error) {
	// Read-only: no copy of every node's report per Service.
	var sps v1alpha1.SpeakerStatusList
	if err := r.s.client.List(ctx, &sps, client.UnsafeDisableDeepCopy); err != nil {
		return serviceView{}, fmt.Errorf("list speakerstatuses: %w", err)
	}
	var nodes corev1.NodeList
	if err := r.s.client.List(ctx, &nodes, client.UnsafeDisableDeepCopy); err != nil {
		return serviceView{}, fmt.Errorf("list nodes: %w", err)
	}
	ready := map[string]bool{}
	for i := range nodes.Items {
		ready[nodes.Items[i].Name] = nodeReady(&nodes.Items[i])
	}
	v := serviceView{name: key, ips: ips}
	for i := range sps.Items {
		sp := &sps.Items[i]
		n := sp.Status.Node
		if n == "" {
			n = sp.Name
		}
		v.speakers = append(v.speakers, speakerView{node: n, ready: ready[n], st: &sp.Status})
	}
	return v, nil
}

func (r *conditionsReconciler) export(key string, counts map[netip.Addr]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ip := range r.vips[key] {
		if _, still := counts[ip]; !still {
			vipAnnouncers.DeleteLabelValues(key, ip.String())
		}
	}
	r.vips[key] = r.vips[key][:0]
	for ip, n := range counts {
		vipAnnouncers.WithLabelValues(key, ip.String()).Set(float64(n))
		r.vips[key] = append(r.vips[key], ip)
	}
}

func (r *conditionsReconciler) forget(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ip := range r.vips[key] {
		vipAnnouncers.DeleteLabelValues(key, ip.String())
	}
	delete(r.vips, key)
	delete(r.perSvc, key)
}

// admit takes a token from the Service's bucket and the global one, or
// says how long to wait.
func (r *conditionsReconciler) admit(key string) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	b := r.perSvc[key]
	if b == nil {
		b = r.newBucket()
		r.perSvc[key] = b
	}
	if w := b.wait(now); w > 0 {
		return w
	}
	if w := r.global.wait(now); w > 0 {
		return w
	}
	b.take(now)
	r.global.take(now)
	return 0
}

// bucket is a token bucket on an explicit clock, so tests can drive it.
type bucket struct {
	rate, burst, tokens float64
	last                time.Time
}

func (b *bucket) refill(now time.Time) {
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
}

// wait is how long until a token is there (0: now).
func (b *bucket) wait(now time.Time) time.Duration {
	b.refill(now)
	if b.tokens >= 1 {
		return 0
	}
	return time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
}

func (b *bucket) take(now time.Time) {
	b.refill(now)
	b.tokens--
}
