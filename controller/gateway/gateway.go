// Package gateway makes zerohop a Gateway API implementation for L4:
// Gateways of a GatewayClass whose controllerName is ControllerName, with
// TCP and UDP listeners, and the TCPRoutes and UDPRoutes attached to them.
//
// It adds no path of its own to the datapath or the announcements. Each
// accepted Gateway becomes a LoadBalancer Service of zerohop's class
// (named <gateway>-<class>, owned by the Gateway, one port per listener)
// and EndpointSlices that this package writes for it: the endpoints of
// the Services each listener's route sends to, with the route's weights
// divided among each backend's ready endpoints
// (v1alpha1.AnnotationEndpointWeight). The controller allocates the
// Service's address from the pools as for any Service, and the speakers
// announce it and program the datapath from the Service and the slices as
// for any Service. The Gateway's and the routes' status is computed back
// from what the Service reports: its address, and its Announced and
// DatapathProgrammed conditions.
//
// The planner (plan.go, endpoints.go) is pure; reconcile.go reads the
// cache and writes.
package gateway

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/gateway-api/pkg/consts"
)

// ControllerName is the spec.controllerName of the GatewayClasses zerohop
// serves.
const ControllerName gatewayv1.GatewayController = "zerohop.io/gateway-controller"

// FieldOwner names this package's writes (server-side apply and status).
const FieldOwner = "zerohop-gateway"

// ManagedBy is the endpointslice.kubernetes.io/managed-by value of the
// EndpointSlices this package writes, so that Kubernetes' EndpointSlice
// controllers leave them alone.
const ManagedBy = "gateway.zerohop.io"

// BundleVersion is the Gateway API release whose types zerohop is built
// with and whose standard CRDs the chart installs.
const BundleVersion = consts.BundleVersion

// Options configure the Gateway API controllers.
type Options struct {
	// Workers is the number of concurrent Gateway reconciles (default 4).
	Workers int
}

// The kinds this package reads; all must be served for it to start.
var required = []string{"GatewayClass", "Gateway", "TCPRoute", "UDPRoute", "ReferenceGrant"}

// Setup adds the GatewayClass and Gateway controllers to mgr, whose
// leader election they share with the rest of zerohop's controller. It
// fails, naming what is missing, when the API server does not serve the
// Gateway API kinds (their CRDs are not installed).
func Setup(mgr manager.Manager, opts Options) error {
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if err := gatewayv1.Install(mgr.GetScheme()); err != nil {
		return fmt.Errorf("gateway api scheme: %w", err)
	}
	for _, kind := range required {
		gk := schema.GroupKind{Group: gatewayv1.GroupName, Kind: kind}
		if _, err := mgr.GetRESTMapper().RESTMapping(gk, gatewayv1.GroupVersion.Version); err != nil {
			if meta.IsNoMatchError(err) {
				return fmt.Errorf("gateway api: the API server does not serve %s (%s): install the Gateway API CRDs (standard channel %s), or turn the Gateway API off", kind, gatewayv1.GroupVersion, BundleVersion)
			}
			return fmt.Errorf("gateway api: %s: %w", kind, err)
		}
	}
	if err := addIndexes(context.Background(), mgr.GetFieldIndexer()); err != nil {
		return err
	}
	r := &reconciler{client: mgr.GetClient()}
	err := builder.ControllerManagedBy(mgr).
		Named("zerohop-gatewayclass").
		For(&gatewayv1.GatewayClass{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, deletion))).
		// A Gateway created or deleted, or moved from a class to another.
		Watches(&gatewayv1.Gateway{}, classesOfGateway).
		Complete(&classReconciler{client: mgr.GetClient()})
	if err != nil {
		return fmt.Errorf("gatewayclass controller: %w", err)
	}
	err = builder.ControllerManagedBy(mgr).
		Named("zerohop-gateway").
		For(&gatewayv1.Gateway{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&gatewayv1.GatewayClass{}, handler.EnqueueRequestsFromMapFunc(r.gatewaysOfClass)).
		Watches(&gatewayv1.TCPRoute{}, handler.EnqueueRequestsFromMapFunc(r.gatewaysOfRoute)).
		Watches(&gatewayv1.UDPRoute{}, handler.EnqueueRequestsFromMapFunc(r.gatewaysOfRoute)).
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(r.gatewaysOfService)).
		Watches(&discoveryv1.EndpointSlice{}, handler.EnqueueRequestsFromMapFunc(r.gatewaysOfSlice)).
		Watches(&gatewayv1.ReferenceGrant{}, handler.EnqueueRequestsFromMapFunc(r.gatewaysOfGrant)).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.allGateways), builder.WithPredicates(predicate.LabelChangedPredicate{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: opts.Workers}).
		Complete(r)
	if err != nil {
		return fmt.Errorf("gateway controller: %w", err)
	}
	return nil
}

// deletion lets an object's deletion through (a finalizer to take off).
var deletion = predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetDeletionTimestamp() != nil })

// ours reports whether a GatewayClass names zerohop.
func ours(c *gatewayv1.GatewayClass) bool {
	return c != nil && c.Spec.ControllerName == ControllerName
}
