package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/controller/ipam"
)

func (s *state) setup(mgr manager.Manager) error {
	if err := mgr.Add(s); err != nil {
		return fmt.Errorf("kick loop: %w", err)
	}
	sr := &serviceReconciler{s: s}
	err := ctrl.NewControllerManagedBy(mgr).
		Named("zerohop-service").
		For(&corev1.Service{}, builder.WithPredicates(predicate.Funcs{
			// Services that were never LoadBalancers need no look; one that
			// changes type is seen through the update (old or new is LB).
			CreateFunc: func(e event.CreateEvent) bool { return isLB(e.Object) },
			UpdateFunc: func(e event.UpdateEvent) bool { return isLB(e.ObjectOld) || isLB(e.ObjectNew) },
			DeleteFunc: func(e event.DeleteEvent) bool { return isLB(e.Object) },
		})).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(s.pendingIn)).
		WatchesRawSource(source.Channel(s.svcEvents, &handler.EnqueueRequestForObject{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: s.opts.Workers}).
		Complete(sr)
	if err != nil {
		return fmt.Errorf("service controller: %w", err)
	}
	err = ctrl.NewControllerManagedBy(mgr).
		Named("zerohop-pool").
		For(&v1alpha1.IPAddressPool{}, builder.WithPredicates(s.poolChangePredicate())).
		WatchesRawSource(source.Channel(s.poolEvents, &handler.EnqueueRequestForObject{})).
		Complete(&poolReconciler{s: s})
	if err != nil {
		return fmt.Errorf("pool controller: %w", err)
	}
	if err := s.setupConditions(mgr); err != nil {
		return err
	}
	if err := s.setupGate(mgr); err != nil {
		return err
	}
	return s.setupAccepted(mgr)
}

func isLB(o client.Object) bool {
	svc, ok := o.(*corev1.Service)
	return ok && svc.Spec.Type == corev1.ServiceTypeLoadBalancer
}

// pendingIn maps a Namespace change (its labels may now match a pool's
// namespaceSelectors) to the waiting Services in it.
func (s *state) pendingIn(_ context.Context, o client.Object) []reconcile.Request {
	s.mu.Lock()
	keys := s.alloc.Unsatisfied()
	s.mu.Unlock()
	var out []reconcile.Request
	for _, k := range keys {
		ns, name, _ := strings.Cut(k, "/")
		if ns == o.GetName() {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}})
		}
	}
	return out
}

type serviceReconciler struct{ s *state }

func (r *serviceReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	start := time.Now()
	defer func() { reconcileSeconds.Observe(time.Since(start).Seconds()) }()
	s := r.s
	if err := s.ensureLoaded(ctx); err != nil {
		return reconcile.Result{}, err
	}
	key := req.Namespace + "/" + req.Name
	var svc corev1.Service
	if err := s.client.Get(ctx, req.NamespacedName, &svc); err != nil {
		if !apierrors.IsNotFound(err) {
			return reconcile.Result{}, fmt.Errorf("get service %s: %w", key, err)
		}
		s.release(key)
		return reconcile.Result{}, nil
	}
	if !ours(&svc, s.opts.DefaultClass) {
		return reconcile.Result{}, r.stopServing(ctx, &svc, key)
	}

	request, err := r.request(ctx, &svc)
	if err != nil {
		refusals.WithLabelValues(string(ipam.ReasonInvalidRequest)).Inc()
		s.rec.Eventf(&svc, nil, corev1.EventTypeWarning, string(ipam.ReasonInvalidRequest), "Allocate", "%v", err)
		return reconcile.Result{}, nil
	}
	s.mu.Lock()
	fresh := s.wantsNewLocked(request)
	var wait time.Duration
	if fresh {
		wait = s.settleWaitLocked(key, time.Now())
	}
	s.mu.Unlock()
	if wait > 0 {
		return reconcile.Result{RequeueAfter: wait}, nil
	}
	if fresh {
		if err := s.syncPools(ctx, time.Now()); err != nil {
			return reconcile.Result{}, err
		}
	}
	s.mu.Lock()
	res := s.alloc.Ensure(request)
	if res.Satisfied {
		delete(s.firstWanted, key)
	}
	conflict, hadConflict := s.conflict[key]
	delete(s.conflict, key)
	s.mu.Unlock()

	if hadConflict {
		s.rec.Eventf(&svc, nil, corev1.EventTypeWarning, string(ipam.ReasonIPInUse), "Restore",
			"the IP in this Service's status was not kept at controller start: %s", conflict)
	}
	var refusal *ipamNote
	for _, n := range res.Notes {
		typ := corev1.EventTypeNormal
		if n.Refusal {
			refusal = &ipamNote{reason: string(n.Reason), message: n.Message}
			typ = corev1.EventTypeWarning
			refusals.WithLabelValues(string(n.Reason)).Inc()
		}
		s.rec.Eventf(&svc, nil, typ, string(n.Reason), "Allocate", "%s", n.Message)
	}
	for _, ip := range res.Released {
		releases.Inc()
		s.rec.Eventf(&svc, nil, corev1.EventTypeNormal, "IPReleased", "Release", "released %s", ip)
	}
	for _, a := range res.Allocated {
		allocations.WithLabelValues(a.Pool).Inc()
		msg := fmt.Sprintf("assigned %s from pool %s", a.IP, a.Pool)
		if len(a.SharedWith) > 0 {
			msg += fmt.Sprintf(", shared with %s", strings.Join(a.SharedWith, ", "))
		}
		s.rec.Eventf(&svc, nil, corev1.EventTypeNormal, "IPAllocated", "Allocate", "%s", msg)
	}
	if len(res.Released) > 0 {
		s.kick(s.kickSvc)
	}
	if len(res.Released) > 0 || len(res.Allocated) > 0 {
		s.kick(s.kickPools)
	}

	// The pools first, so that a speaker that sees an address in the
	// status also sees where it came from.
	if err := r.recordPools(ctx, &svc, v1alpha1.FormatAllocatedFrom(res.IPs, res.Pools)); err != nil {
		return reconcile.Result{}, err
	}
	// Status: exactly the IPs held, and the outside-pool condition.
	orig := svc.DeepCopy()
	var ingress []corev1.LoadBalancerIngress
	// VIP: traffic reaches the node addressed to the VIP and the node's own
	// datapath (XDP) picks the Pod; and kube-proxy keeps serving in-cluster
	// clients, which never cross the uplink's XDP hook, only for VIP.
	vip := corev1.LoadBalancerIPModeVIP
	for _, ip := range res.IPs {
		ingress = append(ingress, corev1.LoadBalancerIngress{IP: ip.String(), IPMode: &vip})
	}
	svc.Status.LoadBalancer.Ingress = ingress
	if len(res.Outside) > 0 {
		var list []string
		for _, ip := range res.Outside {
			list = append(list, ip.String())
		}
		msg := fmt.Sprintf("%s is in no IPAddressPool any more; it stays assigned until you move it (set %s, or delete and re-create the Service)",
			strings.Join(list, ", "), AnnotationIPs)
		if !meta.IsStatusConditionTrue(svc.Status.Conditions, ConditionOutsidePool) {
			s.rec.Eventf(&svc, nil, corev1.EventTypeWarning, string(ipam.ReasonIPOutsidePool), "Allocate", "%s", msg)
		}
		meta.SetStatusCondition(&svc.Status.Conditions, metav1.Condition{Type: ConditionOutsidePool,
			Status: metav1.ConditionTrue, Reason: "RangeRemoved", Message: msg, ObservedGeneration: svc.Generation})
	} else {
		meta.RemoveStatusCondition(&svc.Status.Conditions, ConditionOutsidePool)
	}
	assigned := assignedCondition(res.IPs, res.Pools, res.Satisfied, refusal)
	if have := meta.FindStatusCondition(svc.Status.Conditions, ConditionAddressAssigned); have == nil || have.Status != assigned.Status ||
		have.Reason != assigned.Reason || have.Message != assigned.Message || have.ObservedGeneration != svc.Generation {
		assigned.ObservedGeneration = svc.Generation
		meta.SetStatusCondition(&svc.Status.Conditions, assigned)
	}
	if reflect.DeepEqual(orig.Status, svc.Status) {
		return reconcile.Result{}, nil
	}
	// A patch that carries the conditions replaces the whole list: it
	// must not be computed from a copy older than the conditions
	// reconciler's last write, or it would undo that write.
	patch := client.MergeFrom(orig)
	if !reflect.DeepEqual(orig.Status.Conditions, svc.Status.Conditions) {
		patch = client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})
	}
	if err := s.client.Status().Patch(ctx, &svc, patch, client.FieldOwner(FieldOwner)); err != nil {
		if apierrors.IsNotFound(err) {
			s.release(key)
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("service %s status: %w", key, err)
	}
	return reconcile.Result{}, nil
}

// recordPools sets the annotation that records which pool each address
// came from (v1alpha1.AnnotationAllocatedFrom); "" removes it.
func (r *serviceReconciler) recordPools(ctx context.Context, svc *corev1.Service, value string) error {
	if svc.Annotations[v1alpha1.AnnotationAllocatedFrom] == value {
		return nil
	}
	var v any = value
	if value == "" {
		v = nil
	}
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{v1alpha1.AnnotationAllocatedFrom: v}}})
	if err != nil {
		return err
	}
	if err := r.s.client.Patch(ctx, svc, client.RawPatch(types.MergePatchType, body), client.FieldOwner(FieldOwner)); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("service %s/%s: record pool: %w", svc.Namespace, svc.Name, err)
	}
	return nil
}

// release frees a deleted Service's IPs.
func (s *state) release(key string) []netip.Addr {
	s.mu.Lock()
	held := s.alloc.Release(key)
	delete(s.conflict, key)
	delete(s.firstWanted, key)
	s.mu.Unlock()
	if len(held) > 0 {
		releases.Add(float64(len(held)))
		s.kick(s.kickSvc)
		s.kick(s.kickPools)
	}
	return held
}

// stopServing handles a Service that is no longer ours (type or class
// changed): free its IPs and take back the status zerohop wrote.
func (r *serviceReconciler) stopServing(ctx context.Context, svc *corev1.Service, key string) error {
	s := r.s
	held := s.release(key)
	if err := r.recordPools(ctx, svc, ""); err != nil {
		return err
	}
	if len(held) == 0 {
		return nil
	}
	for _, ip := range held {
		s.rec.Eventf(svc, nil, corev1.EventTypeNormal, "IPReleased", "Release",
			"released %s: the Service is no longer a LoadBalancer of class %s", ip, Class)
	}
	mine := map[string]bool{}
	for _, ip := range held {
		mine[ip.String()] = true
	}
	orig := svc.DeepCopy()
	var keep []corev1.LoadBalancerIngress
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if !mine[ing.IP] {
			keep = append(keep, ing)
		}
	}
	svc.Status.LoadBalancer.Ingress = keep
	for _, t := range []string{ConditionOutsidePool, ConditionAddressAssigned, ConditionAnnounced, ConditionDatapathProgrammed} {
		meta.RemoveStatusCondition(&svc.Status.Conditions, t)
	}
	if reflect.DeepEqual(orig.Status, svc.Status) {
		return nil
	}
	patch := client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})
	if err := s.client.Status().Patch(ctx, svc, patch, client.FieldOwner(FieldOwner)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("service %s status: %w", key, err)
	}
	return nil
}

// request turns a Service into an allocation request.
func (r *serviceReconciler) request(ctx context.Context, svc *corev1.Service) (ipam.Request, error) {
	s := r.s
	req := ipam.Request{
		Service: svc.Namespace + "/" + svc.Name,
		Pool:    svc.Annotations[AnnotationPool],
		Sharing: sharingOf(svc),
	}
	for _, f := range svc.Spec.IPFamilies {
		switch f {
		case corev1.IPv4Protocol:
			req.Families = append(req.Families, ipam.IPv4)
		case corev1.IPv6Protocol:
			req.Families = append(req.Families, ipam.IPv6)
		}
	}
	if len(req.Families) == 0 {
		req.Families = []ipam.Family{ipam.IPv4}
	}
	pol := svc.Spec.IPFamilyPolicy
	if pol == nil || *pol == corev1.IPFamilyPolicySingleStack {
		req.Families = req.Families[:1]
	}
	req.RequireAll = pol != nil && *pol == corev1.IPFamilyPolicyRequireDualStack

	raw := svc.Annotations[AnnotationIPs]
	if raw == "" {
		raw = svc.Spec.LoadBalancerIP //nolint:staticcheck // deprecated, still honoured: existing manifests set it
	}
	for _, part := range strings.Split(raw, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		ip, err := netip.ParseAddr(part)
		if err != nil || ip.Zone() != "" {
			return req, fmt.Errorf("requested IP %q is not an IP address", part)
		}
		req.RequestedIPs = append(req.RequestedIPs, ip.Unmap())
	}

	var ns corev1.Namespace
	if err := s.client.Get(ctx, types.NamespacedName{Name: svc.Namespace}, &ns); err != nil && !apierrors.IsNotFound(err) {
		return req, fmt.Errorf("namespace %s: %w", svc.Namespace, err)
	}
	nsLabels, svcLabels := labels.Set(ns.Labels), labels.Set(svc.Labels)
	// Evaluated inside Ensure, under s.mu, against the pools the
	// allocator holds at that moment.
	req.Allowed = func(pool string) bool {
		pi := s.pools[pool]
		return pi != nil && pi.admits(svc.Namespace, nsLabels, svcLabels)
	}
	return req, nil
}

// sharingOf extracts what sharing rules look at.
func sharingOf(svc *corev1.Service) ipam.Sharing {
	sh := ipam.Sharing{
		Key:   svc.Annotations[AnnotationShare],
		Local: svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal,
	}
	if len(svc.Spec.Selector) > 0 {
		sh.Selector = labels.SelectorFromSet(svc.Spec.Selector).String()
	}
	for _, p := range svc.Spec.Ports {
		proto := string(p.Protocol)
		if proto == "" {
			proto = "TCP"
		}
		sh.Ports = append(sh.Ports, ipam.Port{Port: p.Port, Protocol: proto})
	}
	return sh
}
