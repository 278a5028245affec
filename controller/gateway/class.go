package gateway

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
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

// classReconciler accepts the GatewayClasses that name zerohop.
type classReconciler struct{ client client.Client }

func (r *classReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var c gatewayv1.GatewayClass
	if err := r.client.Get(ctx, req.NamespacedName, &c); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if !ours(&c) {
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
