package gateway

// Cache indexes, and the maps from a watched object to the Gateways whose
// plan it changes.

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

const (
	// indexRouteParent: a route's Gateways ("namespace/name"), named in
	// its spec or in zerohop's entries of its status.
	indexRouteParent = "zerohop.gateway.parent"
	// indexRouteBackend: the Services ("namespace/name") a route's
	// backendRefs name.
	indexRouteBackend = "zerohop.gateway.backend"
	// indexGatewayClass: a Gateway's class.
	indexGatewayClass = "zerohop.gateway.class"
)

func addIndexes(ctx context.Context, fi client.FieldIndexer) error {
	for _, obj := range []client.Object{&gatewayv1.TCPRoute{}, &gatewayv1.UDPRoute{}} {
		if err := fi.IndexField(ctx, obj, indexRouteParent, func(o client.Object) []string { return parentKeys(asRoute(o)) }); err != nil {
			return fmt.Errorf("index %T parents: %w", obj, err)
		}
		if err := fi.IndexField(ctx, obj, indexRouteBackend, func(o client.Object) []string { return backendKeys(asRoute(o)) }); err != nil {
			return fmt.Errorf("index %T backends: %w", obj, err)
		}
	}
	err := fi.IndexField(ctx, &gatewayv1.Gateway{}, indexGatewayClass, func(o client.Object) []string {
		return []string{string(o.(*gatewayv1.Gateway).Spec.GatewayClassName)}
	})
	if err != nil {
		return fmt.Errorf("index gateway classes: %w", err)
	}
	return nil
}

func asRoute(o client.Object) *route {
	switch r := o.(type) {
	case *gatewayv1.TCPRoute:
		return fromTCPRoute(r)
	case *gatewayv1.UDPRoute:
		return fromUDPRoute(r)
	}
	return nil
}

func parentKeys(r *route) []string {
	if r == nil {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	add := func(ref gatewayv1.ParentReference) {
		stub := &gatewayv1.Gateway{}
		stub.Name = string(ref.Name)
		stub.Namespace = r.namespace
		if ref.Namespace != nil {
			stub.Namespace = string(*ref.Namespace)
		}
		if k := stub.Namespace + "/" + stub.Name; namesGateway(ref, r.namespace, stub) && !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	for _, ref := range r.parents {
		add(ref)
	}
	for _, ps := range r.status {
		if ps.ControllerName == ControllerName {
			add(ps.ParentRef)
		}
	}
	return out
}

func backendKeys(r *route) []string {
	if r == nil {
		return nil
	}
	var out []string
	for _, ref := range r.backends {
		if (ref.Group == nil || *ref.Group == "") && (ref.Kind == nil || *ref.Kind == "Service") {
			out = append(out, backendKey(r.namespace, ref.BackendObjectReference).String())
		}
	}
	return out
}

func requests(keys ...string) []reconcile.Request {
	var out []reconcile.Request
	seen := map[string]bool{}
	for _, k := range keys {
		if seen[k] {
			continue
		}
		seen[k] = true
		var nn types.NamespacedName
		for i := range len(k) {
			if k[i] == '/' {
				nn = types.NamespacedName{Namespace: k[:i], Name: k[i+1:]}
				break
			}
		}
		out = append(out, reconcile.Request{NamespacedName: nn})
	}
	return out
}

func (r *reconciler) gatewaysOfClass(ctx context.Context, o client.Object) []reconcile.Request {
	var l gatewayv1.GatewayList
	if err := r.client.List(ctx, &l, client.MatchingFields{indexGatewayClass: o.GetName()}); err != nil {
		return nil
	}
	var keys []string
	for _, gw := range l.Items {
		keys = append(keys, gw.Namespace+"/"+gw.Name)
	}
	return requests(keys...)
}

func (r *reconciler) gatewaysOfRoute(_ context.Context, o client.Object) []reconcile.Request {
	return requests(parentKeys(asRoute(o))...)
}

// gatewaysOfBackend maps a Service ("namespace/name") to the Gateways of
// the routes that send to it.
func (r *reconciler) gatewaysOfBackend(ctx context.Context, svc string) []string {
	var keys []string
	var tcp gatewayv1.TCPRouteList
	if err := r.client.List(ctx, &tcp, client.MatchingFields{indexRouteBackend: svc}); err == nil {
		for i := range tcp.Items {
			keys = append(keys, parentKeys(fromTCPRoute(&tcp.Items[i]))...)
		}
	}
	var udp gatewayv1.UDPRouteList
	if err := r.client.List(ctx, &udp, client.MatchingFields{indexRouteBackend: svc}); err == nil {
		for i := range udp.Items {
			keys = append(keys, parentKeys(fromUDPRoute(&udp.Items[i]))...)
		}
	}
	return keys
}

// gatewaysOfService: a Gateway's own Service (its address and
// conditions), or a Service routes send to.
func (r *reconciler) gatewaysOfService(ctx context.Context, o client.Object) []reconcile.Request {
	keys := r.gatewaysOfBackend(ctx, o.GetNamespace()+"/"+o.GetName())
	if gw := o.GetLabels()[gatewayv1.GatewayNameLabelKey]; gw != "" {
		if svc, ok := o.(*corev1.Service); ok {
			for _, ref := range svc.OwnerReferences {
				if ref.Kind == "Gateway" && ref.Name == gw {
					keys = append(keys, o.GetNamespace()+"/"+gw)
				}
			}
		}
	}
	return requests(keys...)
}

// gatewaysOfSlice: a Gateway's own slices (repaired when edited or
// deleted), or the slices of a Service routes send to.
func (r *reconciler) gatewaysOfSlice(ctx context.Context, o client.Object) []reconcile.Request {
	lb := o.GetLabels()
	if lb[discoveryv1.LabelManagedBy] == ManagedBy {
		if gw := lb[gatewayv1.GatewayNameLabelKey]; gw != "" {
			return requests(o.GetNamespace() + "/" + gw)
		}
		return nil
	}
	if svc := lb[discoveryv1.LabelServiceName]; svc != "" {
		return requests(r.gatewaysOfBackend(ctx, o.GetNamespace()+"/"+svc)...)
	}
	return nil
}

// gatewaysOfGrant: a ReferenceGrant may allow or stop any cross-namespace
// backendRef into its namespace; grants change rarely, so every Gateway
// is looked at again.
func (r *reconciler) gatewaysOfGrant(ctx context.Context, o client.Object) []reconcile.Request {
	return r.allGateways(ctx, o)
}

func (r *reconciler) allGateways(ctx context.Context, _ client.Object) []reconcile.Request {
	var l gatewayv1.GatewayList
	if err := r.client.List(ctx, &l); err != nil {
		return nil
	}
	var keys []string
	for _, gw := range l.Items {
		keys = append(keys, gw.Namespace+"/"+gw.Name)
	}
	return requests(keys...)
}
