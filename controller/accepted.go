package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/zerohop/zerohop/config/crosscheck"
	"github.com/zerohop/zerohop/config/v1alpha1"
)

// Reasons of the Accepted condition on BGPPeers and BGPAdvertisements.
const (
	ReasonAccepted               = "Accepted"
	ReasonAddressInUse           = "AddressInUse"
	ReasonAggregationOutsidePool = "AggregationOutsidePool"
)

// acceptedReconciler reports, on BGPPeers and BGPAdvertisements, what the
// speakers refuse of them (config/crosscheck): a peer whose address an
// older peer already uses on a node, an advertisement whose aggregation
// would announce addresses outside a pool. It only reports; every speaker
// enforces the same rules itself. Every event maps to one key, so one
// reconcile sees all objects at once.
type acceptedReconciler struct{ s *state }

func (s *state) setupAccepted(mgr manager.Manager) error {
	all := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: "all"}}}
	})
	gen := builder.WithPredicates(predicate.GenerationChangedPredicate{})
	err := ctrl.NewControllerManagedBy(mgr).
		Named("zerohop-accepted").
		Watches(&v1alpha1.BGPPeer{}, all, gen).
		Watches(&v1alpha1.BGPAdvertisement{}, all, gen).
		Watches(&v1alpha1.IPAddressPool{}, all, gen).
		// Peers select nodes by label: only label changes matter, and only
		// the labels are cached.
		WatchesMetadata(&corev1.Node{}, all, builder.WithPredicates(predicate.LabelChangedPredicate{})).
		Complete(&acceptedReconciler{s: s})
	if err != nil {
		return fmt.Errorf("accepted controller: %w", err)
	}
	return nil
}

func (r *acceptedReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	c := r.s.client
	var (
		peers v1alpha1.BGPPeerList
		advs  v1alpha1.BGPAdvertisementList
		pools v1alpha1.IPAddressPoolList
		nodes metav1.PartialObjectMetadataList
	)
	nodes.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NodeList"))
	for what, l := range map[string]client.ObjectList{"bgppeers": &peers, "bgpadvertisements": &advs, "pools": &pools, "nodes": &nodes} {
		if err := c.List(ctx, l); err != nil {
			return reconcile.Result{}, fmt.Errorf("list %s: %w", what, err)
		}
	}
	var errs []error
	for i := range peers.Items {
		p := &peers.Items[i]
		if err := r.write(ctx, "bgppeer", p, &p.Status, peerCondition(p, peers.Items, nodes.Items)); err != nil {
			errs = append(errs, err)
		}
	}
	for i := range advs.Items {
		a := &advs.Items[i]
		if err := r.write(ctx, "bgpadvertisement", a, &a.Status, advertisementCondition(a, pools.Items)); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return reconcile.Result{}, fmt.Errorf("accepted: %v", errs)
	}
	return reconcile.Result{}, nil
}

// peerCondition is p's Accepted condition: False where an older peer keeps
// its address on some of the nodes both select.
func peerCondition(p *v1alpha1.BGPPeer, all []v1alpha1.BGPPeer, nodes []metav1.PartialObjectMetadata) metav1.Condition {
	ptrs := make([]*v1alpha1.BGPPeer, len(all))
	for i := range all {
		ptrs[i] = &all[i]
	}
	keepers := map[string][]string{} // keeper -> nodes
	for _, n := range nodes {
		_, conflicts, _ := crosscheck.Peers(ptrs, n.Labels)
		for _, c := range conflicts {
			if c.Peer == p.Name {
				keepers[c.Keeper] = append(keepers[c.Keeper], n.Name)
			}
		}
	}
	cond := metav1.Condition{Type: v1alpha1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: ReasonAccepted,
		Message: "no older BGPPeer uses this peerAddress on the nodes this peer selects", ObservedGeneration: p.Generation}
	if len(keepers) == 0 {
		return cond
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(keepers)) {
		parts = append(parts, fmt.Sprintf("by the older BGPPeer %s on %s", k, nodeList(keepers[k])))
	}
	cond.Status, cond.Reason = metav1.ConditionFalse, ReasonAddressInUse
	cond.Message = fmt.Sprintf("peerAddress %s is already used %s; the speakers there keep that session and do not use this peer",
		p.Spec.PeerAddress, strings.Join(parts, "; "))
	return cond
}

// nodeList names a few nodes and counts the rest, to keep a condition
// readable at a thousand nodes.
func nodeList(nodes []string) string {
	slices.Sort(nodes)
	const shown = 5
	if len(nodes) <= shown {
		return "node " + strings.Join(nodes, ", ")
	}
	return fmt.Sprintf("node %s and %d more", strings.Join(nodes[:shown], ", "), len(nodes)-shown)
}

// advertisementCondition is a's Accepted condition: False when its
// aggregation lengths would announce more than a pool it selects.
func advertisementCondition(a *v1alpha1.BGPAdvertisement, pools []v1alpha1.IPAddressPool) metav1.Condition {
	cond := metav1.Condition{Type: v1alpha1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: ReasonAccepted,
		Message: "every prefix it announces lies inside the pool it comes from", ObservedGeneration: a.Generation}
	var msgs []string
	for i := range pools {
		ok, err := a.Spec.SelectsPool(&pools[i])
		if err != nil || !ok {
			continue
		}
		if err := crosscheck.Aggregation(a, &pools[i]); err != nil {
			msgs = append(msgs, err.Error())
		}
	}
	if len(msgs) > 0 {
		cond.Status, cond.Reason = metav1.ConditionFalse, ReasonAggregationOutsidePool
		cond.Message = strings.Join(msgs, "; ") + "; the speakers do not announce those pools by this advertisement"
	}
	return cond
}

// write sets obj's Accepted condition when it changed, and records a
// Warning Event when it turns False or its reason for being False changes.
func (r *acceptedReconciler) write(ctx context.Context, kind string, obj client.Object, st *v1alpha1.ObjectStatus, cond metav1.Condition) error {
	was := meta.FindStatusCondition(st.Conditions, cond.Type)
	want := st.DeepCopy()
	meta.SetStatusCondition(&want.Conditions, cond)
	if reflect.DeepEqual(want.Conditions, st.Conditions) {
		return nil
	}
	if cond.Status == metav1.ConditionFalse && (was == nil || was.Status != cond.Status || was.Message != cond.Message) {
		r.s.rec.Eventf(obj, nil, corev1.EventTypeWarning, cond.Reason, "Validate", "%s", cond.Message)
	}
	body, err := json.Marshal(map[string]any{"status": want})
	if err != nil {
		return err
	}
	err = r.s.client.Status().Patch(ctx, obj, client.RawPatch(types.MergePatchType, body), client.FieldOwner(FieldOwner))
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("%s %s status: %w", kind, obj.GetName(), err)
	}
	return nil
}
