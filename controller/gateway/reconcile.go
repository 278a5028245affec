package gateway

// The reconciler: reads one Gateway and what it needs from the cache,
// plans, then writes the Service, the EndpointSlices, the Gateway's
// status and its routes' status, each only when it differs.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	discoveryv1ac "k8s.io/client-go/applyconfigurations/discovery/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// annotationApplied records, on what the reconciler applies, a hash of
// what it applied: a Gateway edit that drops an infrastructure label or
// annotation changes the hash, and the next apply takes it off.
const annotationApplied = "gateway.zerohop.io/applied"

type reconciler struct {
	client client.Client
}

func (r *reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var gw gatewayv1.Gateway
	if err := r.client.Get(ctx, req.NamespacedName, &gw); err != nil {
		if !apierrors.IsNotFound(err) {
			return reconcile.Result{}, fmt.Errorf("gateway %s: %w", req.NamespacedName, err)
		}
		// The Service goes with its owner (garbage collection); the
		// routes' entries for the Gateway go now.
		gw.Namespace, gw.Name = req.Namespace, req.Name
		return reconcile.Result{}, r.writeRoutes(ctx, &gw, nil)
	}
	var class gatewayv1.GatewayClass
	if err := r.client.Get(ctx, types.NamespacedName{Name: string(gw.Spec.GatewayClassName)}, &class); err != nil {
		if !apierrors.IsNotFound(err) {
			return reconcile.Result{}, fmt.Errorf("gateway %s: class %s: %w", req.NamespacedName, gw.Spec.GatewayClassName, err)
		}
		// No class (not created yet, or deleted while the finalizer was
		// not there): whatever the Gateway has stays as it is, rather
		// than its address and traffic going with a class re-applied a
		// moment later.
		return reconcile.Result{}, nil
	}
	if !ours(&class) {
		// Not, or no longer, zerohop's: take back what was made for it.
		if err := r.deleteService(ctx, &gw); err != nil {
			return reconcile.Result{}, err
		}
		return reconcile.Result{}, r.writeRoutes(ctx, &gw, nil)
	}
	cs := classState{name: class.Name, accepted: true}
	if c := meta.FindStatusCondition(class.Status.Conditions, string(gatewayv1.GatewayClassConditionStatusAccepted)); c != nil && c.Status == metav1.ConditionFalse {
		cs.accepted, cs.message = false, c.Message
	} else if class.Spec.ParametersRef != nil {
		cs.accepted, cs.message = false, "zerohop takes no parameters"
	}

	routes, err := r.routesOf(ctx, req.NamespacedName)
	if err != nil {
		return reconcile.Result{}, err
	}
	w, err := r.world(ctx, routes)
	if err != nil {
		return reconcile.Result{}, err
	}
	p := makePlan(&gw, cs, routes, w)
	svcName := ServiceName(gw.Name, class.Name)

	var o observed
	want := p.service()
	if want == nil {
		if err := r.deleteService(ctx, &gw); err != nil {
			return reconcile.Result{}, err
		}
	} else if o, err = r.applyService(ctx, &gw, want); err != nil {
		return reconcile.Result{}, err
	}
	var sls []*discoveryv1.EndpointSlice
	if o.blocked == "" {
		var families []corev1.IPFamily
		if o.svc != nil {
			for _, ip := range ingressIPs(o.svc) {
				families = append(families, family(ip.Is4()))
			}
		}
		sls = p.endpoints(svcName, families, r.slicesOf(ctx))
		if want != nil {
			if err := r.applySlices(ctx, o.svc, sls); err != nil {
				return reconcile.Result{}, err
			}
		}
	}
	o.answers = answers(sls)

	if st := p.status(gw.Status, o); !equality.Semantic.DeepEqual(st, gw.Status) {
		gw.Status = st
		if err := r.client.Status().Update(ctx, &gw, client.FieldOwner(FieldOwner)); err != nil {
			return retry(fmt.Errorf("gateway %s: status: %w", req.NamespacedName, err))
		}
	}
	return retry(r.writeRoutes(ctx, &gw, p.routes, routes...))
}

// retry turns a write that met a newer version than the cache's (the
// cache lags behind this reconciler's own last write) into a quiet
// requeue; other errors are returned.
func retry(err error) (reconcile.Result, error) {
	if err != nil && apierrors.IsConflict(err) {
		return reconcile.Result{RequeueAfter: 100 * time.Millisecond}, nil
	}
	return reconcile.Result{}, err
}

// routesOf lists the TCPRoutes and UDPRoutes that name the Gateway in
// their spec or carry zerohop's status for it.
func (r *reconciler) routesOf(ctx context.Context, gw types.NamespacedName) ([]*route, error) {
	var tcp gatewayv1.TCPRouteList
	if err := r.client.List(ctx, &tcp, client.MatchingFields{indexRouteParent: gw.String()}); err != nil {
		return nil, fmt.Errorf("tcproutes of %s: %w", gw, err)
	}
	var udp gatewayv1.UDPRouteList
	if err := r.client.List(ctx, &udp, client.MatchingFields{indexRouteParent: gw.String()}); err != nil {
		return nil, fmt.Errorf("udproutes of %s: %w", gw, err)
	}
	var out []*route
	for i := range tcp.Items {
		out = append(out, fromTCPRoute(&tcp.Items[i]))
	}
	for i := range udp.Items {
		out = append(out, fromUDPRoute(&udp.Items[i]))
	}
	return out, nil
}

// world reads what the routes refer to: the routes' namespaces, the
// Services of their backendRefs and the ReferenceGrants of those
// Services' namespaces.
func (r *reconciler) world(ctx context.Context, routes []*route) (world, error) {
	w := world{namespaces: map[string]labels.Set{}, services: map[types.NamespacedName]*corev1.Service{}, grants: map[string][]*gatewayv1.ReferenceGrant{}}
	for _, rt := range routes {
		if _, ok := w.namespaces[rt.namespace]; !ok {
			var ns corev1.Namespace
			if err := r.client.Get(ctx, types.NamespacedName{Name: rt.namespace}, &ns); err != nil && !apierrors.IsNotFound(err) {
				return w, fmt.Errorf("namespace %s: %w", rt.namespace, err)
			}
			w.namespaces[rt.namespace] = labels.Set(ns.Labels)
		}
		for _, ref := range rt.backends {
			key := backendKey(rt.namespace, ref.BackendObjectReference)
			if _, ok := w.services[key]; ok {
				continue
			}
			var svc corev1.Service
			switch err := r.client.Get(ctx, key, &svc); {
			case err == nil:
				w.services[key] = &svc
			case apierrors.IsNotFound(err):
				w.services[key] = nil
			default:
				return w, fmt.Errorf("service %s: %w", key, err)
			}
			if _, ok := w.grants[key.Namespace]; !ok && key.Namespace != rt.namespace {
				var gl gatewayv1.ReferenceGrantList
				if err := r.client.List(ctx, &gl, client.InNamespace(key.Namespace)); err != nil {
					return w, fmt.Errorf("referencegrants in %s: %w", key.Namespace, err)
				}
				w.grants[key.Namespace] = nil
				for i := range gl.Items {
					w.grants[key.Namespace] = append(w.grants[key.Namespace], &gl.Items[i])
				}
			}
		}
	}
	return w, nil
}

func backendKey(routeNS string, ref gatewayv1.BackendObjectReference) types.NamespacedName {
	ns := routeNS
	if ref.Namespace != nil {
		ns = string(*ref.Namespace)
	}
	return types.NamespacedName{Namespace: ns, Name: string(ref.Name)}
}

// slicesOf returns a function that lists a Service's EndpointSlices from
// the cache (none on an error, which the next event retries).
func (r *reconciler) slicesOf(ctx context.Context) func(types.NamespacedName) []*discoveryv1.EndpointSlice {
	return func(svc types.NamespacedName) []*discoveryv1.EndpointSlice {
		var l discoveryv1.EndpointSliceList
		if err := r.client.List(ctx, &l, client.InNamespace(svc.Namespace), client.MatchingLabels{discoveryv1.LabelServiceName: svc.Name}); err != nil {
			return nil
		}
		out := make([]*discoveryv1.EndpointSlice, len(l.Items))
		for i := range l.Items {
			out[i] = &l.Items[i]
		}
		return out
	}
}

// applyService creates or updates the Gateway's Service when the cached
// one differs from want, and returns what it saw.
func (r *reconciler) applyService(ctx context.Context, gw *gatewayv1.Gateway, want *corev1.Service) (observed, error) {
	var o observed
	key := client.ObjectKeyFromObject(want)
	var have corev1.Service
	switch err := r.client.Get(ctx, key, &have); {
	case apierrors.IsNotFound(err):
	case err != nil:
		return o, fmt.Errorf("gateway %s/%s: service %s: %w", gw.Namespace, gw.Name, key, err)
	case !metav1.IsControlledBy(&have, gw):
		o.blocked = fmt.Sprintf("Service %s exists and is not this Gateway's: delete or rename it", key)
		return o, nil
	default:
		o.svc = &have
		// A Service's primary family cannot change: a Gateway that now
		// asks for an address of the other family gets a new Service.
		if len(want.Spec.IPFamilies) > 0 && len(have.Spec.IPFamilies) > 0 && want.Spec.IPFamilies[0] != have.Spec.IPFamilies[0] {
			if err := r.client.Delete(ctx, &have, client.Preconditions{UID: &have.UID}); err != nil && !apierrors.IsNotFound(err) {
				return o, fmt.Errorf("service %s: replace for another family: %w", key, err)
			}
			return observed{}, fmt.Errorf("service %s: replaced for the address family %s", key, want.Spec.IPFamilies[0])
		}
	}
	sum, err := stamp(want)
	if err != nil {
		return o, err
	}
	if o.svc != nil && o.svc.Annotations[annotationApplied] == sum && serviceMatches(o.svc, want) {
		return o, nil
	}
	var ac corev1ac.ServiceApplyConfiguration
	if err := convert(want, &ac); err != nil {
		return o, fmt.Errorf("service %s: %w", key, err)
	}
	ac.Status = nil
	if err := r.client.Apply(ctx, &ac, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return o, fmt.Errorf("gateway %s/%s: apply service %s: %w", gw.Namespace, gw.Name, key, err)
	}
	// The answer is the Service as it now is (a new one's UID, which its
	// slices' owner references need).
	var live corev1.Service
	if err := convert(&ac, &live); err != nil {
		return o, fmt.Errorf("service %s: %w", key, err)
	}
	o.svc = &live
	return o, nil
}

// serviceMatches compares what the Gateway controls of a Service.
func serviceMatches(have, want *corev1.Service) bool {
	for k, v := range want.Labels {
		if have.Labels[k] != v {
			return false
		}
	}
	for k, v := range want.Annotations {
		if have.Annotations[k] != v {
			return false
		}
	}
	hs, ws := have.Spec, want.Spec
	if hs.Type != ws.Type || !reflect.DeepEqual(hs.LoadBalancerClass, ws.LoadBalancerClass) ||
		!reflect.DeepEqual(hs.AllocateLoadBalancerNodePorts, ws.AllocateLoadBalancerNodePorts) ||
		hs.ExternalTrafficPolicy != ws.ExternalTrafficPolicy || !reflect.DeepEqual(hs.IPFamilyPolicy, ws.IPFamilyPolicy) ||
		(len(ws.IPFamilies) > 0 && !slices.Equal(hs.IPFamilies, ws.IPFamilies)) || len(hs.Ports) != len(ws.Ports) {
		return false
	}
	for i, p := range ws.Ports {
		h := hs.Ports[i]
		if h.Name != p.Name || h.Protocol != p.Protocol || h.Port != p.Port || h.TargetPort != p.TargetPort {
			return false
		}
	}
	return true
}

// stamp sets annotationApplied on obj to a hash of obj without it.
func stamp(obj client.Object) (string, error) {
	ann := obj.GetAnnotations()
	delete(ann, annotationApplied)
	body, err := json.Marshal(obj)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(body)
	sum := hex.EncodeToString(h[:8])
	if ann == nil {
		ann = map[string]string{}
	}
	ann[annotationApplied] = sum
	obj.SetAnnotations(ann)
	return sum, nil
}

// convert turns a typed object into its apply configuration.
func convert(obj, ac any) error {
	body, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	return json.Unmarshal(body, ac)
}

// deleteService removes the Service made for gw, if there is one.
func (r *reconciler) deleteService(ctx context.Context, gw *gatewayv1.Gateway) error {
	var l corev1.ServiceList
	if err := r.client.List(ctx, &l, client.InNamespace(gw.Namespace), client.MatchingLabels{gatewayv1.GatewayNameLabelKey: gw.Name}); err != nil {
		return fmt.Errorf("gateway %s/%s: services: %w", gw.Namespace, gw.Name, err)
	}
	for i := range l.Items {
		svc := &l.Items[i]
		if !metav1.IsControlledBy(svc, gw) {
			continue
		}
		if err := r.client.Delete(ctx, svc, client.Preconditions{UID: &svc.UID}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("gateway %s/%s: delete service %s: %w", gw.Namespace, gw.Name, svc.Name, err)
		}
	}
	return nil
}

// applySlices makes the Gateway's Service's EndpointSlices the wanted
// ones: new and changed ones first, then the ones no longer wanted, so
// that an endpoint moving between slices is never absent from all.
func (r *reconciler) applySlices(ctx context.Context, svc *corev1.Service, want []*discoveryv1.EndpointSlice) error {
	var l discoveryv1.EndpointSliceList
	ns, name := svc.Namespace, svc.Name
	if err := r.client.List(ctx, &l, client.InNamespace(ns), client.MatchingLabels{discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: ManagedBy}); err != nil {
		return fmt.Errorf("endpointslices of %s/%s: %w", ns, name, err)
	}
	have := map[string]*discoveryv1.EndpointSlice{}
	for i := range l.Items {
		have[l.Items[i].Name] = &l.Items[i]
	}
	var errs []error
	for _, sl := range want {
		// Owned by the Service: they go with it.
		sl.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID, Controller: new(true)}}
		h := have[sl.Name]
		delete(have, sl.Name)
		if h != nil && sliceMatches(h, sl) {
			continue
		}
		var ac discoveryv1ac.EndpointSliceApplyConfiguration
		if err := convert(sl, &ac); err != nil {
			return err
		}
		if err := r.client.Apply(ctx, &ac, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
			errs = append(errs, fmt.Errorf("apply endpointslice %s/%s: %w", sl.Namespace, sl.Name, err))
		}
	}
	if len(errs) > 0 {
		// Keep the old slices until the new ones are in.
		return errors.Join(errs...)
	}
	for _, sl := range have {
		if err := r.client.Delete(ctx, sl, client.Preconditions{UID: &sl.UID}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete endpointslice %s/%s: %w", sl.Namespace, sl.Name, err))
		}
	}
	return errors.Join(errs...)
}

func sliceMatches(have, want *discoveryv1.EndpointSlice) bool {
	return have.AddressType == want.AddressType &&
		equality.Semantic.DeepEqual(have.Ports, want.Ports) &&
		equality.Semantic.DeepEqual(have.Endpoints, want.Endpoints) &&
		reflect.DeepEqual(have.Labels, want.Labels) &&
		reflect.DeepEqual(have.Annotations, want.Annotations) &&
		equality.Semantic.DeepEqual(have.OwnerReferences, want.OwnerReferences)
}

// writeRoutes sets, on every route given and every route that names gw or
// holds zerohop's status for it, the entries for gw: those of results,
// or none.
func (r *reconciler) writeRoutes(ctx context.Context, gw *gatewayv1.Gateway, results map[*route][]parentResult, routes ...*route) error {
	if routes == nil {
		var err error
		if routes, err = r.routesOf(ctx, client.ObjectKeyFromObject(gw)); err != nil {
			return err
		}
	}
	var errs []error
	for _, rt := range routes {
		st := routeStatus(rt.status, gw, rt.namespace, results[rt])
		if equality.Semantic.DeepEqual(st, rt.status) || (len(st) == 0 && len(rt.status) == 0) {
			continue
		}
		switch o := rt.obj.(type) {
		case *gatewayv1.TCPRoute:
			o.Status.Parents = st
		case *gatewayv1.UDPRoute:
			o.Status.Parents = st
		}
		if st == nil {
			// parents is required: an empty list, not null.
			switch o := rt.obj.(type) {
			case *gatewayv1.TCPRoute:
				o.Status.Parents = []gatewayv1.RouteParentStatus{}
			case *gatewayv1.UDPRoute:
				o.Status.Parents = []gatewayv1.RouteParentStatus{}
			}
		}
		if err := r.client.Status().Update(ctx, rt.obj, client.FieldOwner(FieldOwner)); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("%s: status: %w", rt, err))
		}
	}
	return errors.Join(errs...)
}
