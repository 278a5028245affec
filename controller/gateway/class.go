package gateway

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/gateway-api/pkg/features"
)

// supportedFeatures are the conformance features zerohop implements, in
// the alphabetical order the status requires.
var supportedFeatures = []gatewayv1.SupportedFeature{
	{Name: gatewayv1.FeatureName(features.SupportGateway)},
	{Name: gatewayv1.FeatureName(features.SupportReferenceGrant)},
	{Name: gatewayv1.FeatureName(features.SupportTCPRoute)},
	{Name: gatewayv1.FeatureName(features.SupportUDPRoute)},
}

// classReconciler accepts the GatewayClasses that name zerohop, and
// holds those in use with the spec's finalizer, so that deleting a class
// does not pull the Gateways of it from under their traffic.
type classReconciler struct{ client client.Client }

func (r *classReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var c gatewayv1.GatewayClass
	if err := r.client.Get(ctx, req.NamespacedName, &c); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if !ours(&c) {
		return reconcile.Result{}, nil
	}
	if err := r.holdWhileUsed(ctx, &c); err != nil {
		return reconcile.Result{}, err
	}
	if c.DeletionTimestamp != nil {
		return reconcile.Result{}, nil
	}
	st := *c.Status.DeepCopy()
	cond := metav1.Condition{Type: string(gatewayv1.GatewayClassConditionStatusAccepted), Status: metav1.ConditionTrue,
		Reason: string(gatewayv1.GatewayClassReasonAccepted), ObservedGeneration: c.Generation,
		Message: fmt.Sprintf("zerohop serves this class's Gateways: TCP and UDP listeners, TCPRoutes and UDPRoutes (Gateway API %s)", BundleVersion)}
	if ref := c.Spec.ParametersRef; ref != nil {
		cond.Status, cond.Reason = metav1.ConditionFalse, string(gatewayv1.GatewayClassReasonInvalidParameters)
		cond.Message = fmt.Sprintf("parametersRef %s/%s %s: zerohop takes no parameters; a Gateway picks its pool with infrastructure.annotations (zerohop.io/address-pool)", ref.Group, ref.Kind, ref.Name)
	}
	meta.SetStatusCondition(&st.Conditions, cond)
	st.SupportedFeatures = supportedFeatures
	if equality.Semantic.DeepEqual(st, c.Status) {
		return reconcile.Result{}, nil
	}
	c.Status = st
	if err := r.client.Status().Update(ctx, &c, client.FieldOwner(FieldOwner)); err != nil && !apierrors.IsNotFound(err) {
		return reconcile.Result{}, fmt.Errorf("gatewayclass %s: status: %w", c.Name, err)
	}
	return reconcile.Result{}, nil
}

// holdWhileUsed adds the gateway-exists finalizer while a Gateway uses
// the class, and takes it off when none does.
func (r *classReconciler) holdWhileUsed(ctx context.Context, c *gatewayv1.GatewayClass) error {
	var l gatewayv1.GatewayList
	if err := r.client.List(ctx, &l, client.MatchingFields{indexGatewayClass: c.Name}); err != nil {
		return fmt.Errorf("gatewayclass %s: gateways: %w", c.Name, err)
	}
	used := len(l.Items) > 0
	if used == controllerutil.ContainsFinalizer(c, gatewayv1.GatewayClassFinalizerGatewaysExist) {
		return nil
	}
	orig := c.DeepCopy()
	if used {
		controllerutil.AddFinalizer(c, gatewayv1.GatewayClassFinalizerGatewaysExist)
	} else {
		controllerutil.RemoveFinalizer(c, gatewayv1.GatewayClassFinalizerGatewaysExist)
	}
	if err := r.client.Patch(ctx, c, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}), client.FieldOwner(FieldOwner)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("gatewayclass %s: finalizer: %w", c.Name, err)
	}
	return nil
}

// classesOfGateway enqueues the class of a Gateway created or deleted,
// and both classes of one moved between them: each class's finalizer
// follows whether Gateways use it.
var classesOfGateway = handler.Funcs{
	CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		enqueueClass(q, e.Object)
	},
	UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		enqueueClass(q, e.ObjectOld)
		enqueueClass(q, e.ObjectNew)
	},
	DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		enqueueClass(q, e.Object)
	},
}

func enqueueClass(q workqueue.TypedRateLimitingInterface[reconcile.Request], o client.Object) {
	if gw, ok := o.(*gatewayv1.Gateway); ok {
		q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: string(gw.Spec.GatewayClassName)}})
	}
}
