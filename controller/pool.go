package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrl "sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/zerohop/zerohop/config/crosscheck"
	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/controller/ipam"
)

// Pool condition types.
const (
	PoolConditionValid       = "Valid"
	PoolConditionOverlapping = "Overlapping"
)

func compilePool(p *v1alpha1.IPAddressPool) *poolInfo {
	pi := &poolInfo{spec: ipam.PoolSpec{
		Name:          p.Name,
		AutoAssign:    p.Spec.AutoAssign == nil || *p.Spec.AutoAssign,
		AvoidBuggyIPs: p.Spec.AvoidBuggyIPs,
		Since:         p.CreationTimestamp.Time,
	}}
	ranges, errs := crosscheck.PoolRanges(p)
	for _, err := range errs {
		pi.parseErrs = append(pi.parseErrs, err.Error())
	}
	pi.spec.Ranges = ranges
	// A pool with a bad entry hands out nothing new: a half-applied pool
	// would allocate from addresses the user may be about to correct. Its
	// good entries still hold the addresses in service.
	pi.spec.Frozen = len(errs) > 0
	if sa := p.Spec.ServiceAllocation; sa != nil {
		pi.hasAlloc = true
		pi.spec.Restricted = true
		pi.spec.Priority = int(sa.Priority)
		pi.namespaces = slices.Clone(sa.Namespaces)
		for i := range sa.NamespaceSelectors {
			sel, err := sa.NamespaceSelectors[i].AsSelector()
			if err != nil {
				pi.parseErrs = append(pi.parseErrs, fmt.Sprintf("namespaceSelectors[%d]: %v", i, err))
				sel = labels.Nothing()
			}
			pi.nsSel = append(pi.nsSel, sel)
		}
		for i := range sa.ServiceSelectors {
			sel, err := sa.ServiceSelectors[i].AsSelector()
			if err != nil {
				pi.parseErrs = append(pi.parseErrs, fmt.Sprintf("serviceSelectors[%d]: %v", i, err))
				sel = labels.Nothing()
			}
			pi.svcSel = append(pi.svcSel, sel)
		}
	}
	return pi
}

// admits applies serviceAllocation: the namespace must be listed by name
// or match a namespace selector (when either is given), and the Service
// must match a service selector (when any is given).
func (pi *poolInfo) admits(ns string, nsLabels, svcLabels labels.Set) bool {
	if !pi.hasAlloc {
		return true
	}
	if len(pi.namespaces) > 0 || len(pi.nsSel) > 0 {
		ok := slices.Contains(pi.namespaces, ns)
		for _, sel := range pi.nsSel {
			ok = ok || sel.Matches(nsLabels)
		}
		if !ok {
			return false
		}
	}
	if len(pi.svcSel) > 0 {
		for _, sel := range pi.svcSel {
			if sel.Matches(svcLabels) {
				return true
			}
		}
		return false
	}
	return true
}

// applyPoolsLocked installs the pool set; it reports whether anything that
// allocation depends on changed.
func (s *state) applyPoolsLocked(items []v1alpha1.IPAddressPool) bool {
	next := make(map[string]*poolInfo, len(items))
	specs := make([]ipam.PoolSpec, 0, len(items))
	for i := range items {
		if items[i].DeletionTimestamp != nil {
			continue
		}
		pi := compilePool(&items[i])
		next[pi.spec.Name] = pi
		specs = append(specs, pi.spec)
	}
	if reflect.DeepEqual(poolSpecs(s.pools), poolSpecs(next)) && sameSelectors(s.pools, next) {
		s.pools = next
		return false
	}
	s.pools = next
	s.alloc.SetPools(specs)
	return true
}

func poolSpecs(m map[string]*poolInfo) map[string]ipam.PoolSpec {
	out := make(map[string]ipam.PoolSpec, len(m))
	for k, v := range m {
		out[k] = v.spec
	}
	return out
}

func sameSelectors(a, b map[string]*poolInfo) bool {
	for k, x := range a {
		y := b[k]
		if y == nil || x.hasAlloc != y.hasAlloc || !slices.Equal(x.namespaces, y.namespaces) ||
			selString(x.nsSel) != selString(y.nsSel) || selString(x.svcSel) != selString(y.svcSel) {
			return false
		}
	}
	return true
}

func selString(ss []labels.Selector) string {
	var b strings.Builder
	for _, s := range ss {
		b.WriteString(s.String())
		b.WriteByte(';')
	}
	return b.String()
}

type poolReconciler struct{ s *state }

// Reconcile brings the allocator's pool set up to date with the last pool
// change seen (pools interact through overlap and priority, so the whole
// set is read), and writes this pool's status.
func (r *poolReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	s := r.s
	if err := s.ensureLoaded(ctx); err != nil {
		return ctrl.Result{}, err
	}
	if err := s.syncPools(ctx, s.lastPoolChange()); err != nil {
		return ctrl.Result{}, err
	}

	var pool v1alpha1.IPAddressPool
	if err := s.client.Get(ctx, req.NamespacedName, &pool); err != nil {
		if apierrors.IsNotFound(err) {
			forgetPoolMetrics(req.Name)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("get pool %s: %w", req.Name, err)
	}
	s.mu.Lock()
	stats, _ := s.alloc.Stats(pool.Name)
	conflicts := s.alloc.Conflicts()[pool.Name]
	pi := s.pools[pool.Name]
	s.mu.Unlock()
	if pi == nil {
		return ctrl.Result{}, nil // deleted meanwhile; a later event follows
	}
	setPoolMetrics(pool.Name, stats)

	want := pool.Status.DeepCopy()
	want.AssignedIPv4 = stats.Assigned[ipam.IPv4]
	want.AvailableIPv4 = stats.Available[ipam.IPv4]
	want.AssignedIPv6 = stats.Assigned[ipam.IPv6]
	want.AvailableIPv6 = stats.Available[ipam.IPv6]
	valid := metav1.Condition{Type: PoolConditionValid, Status: metav1.ConditionTrue, Reason: "AddressesParsed",
		Message: "every address entry parsed", ObservedGeneration: pool.Generation}
	if len(pi.parseErrs) > 0 {
		valid.Status, valid.Reason = metav1.ConditionFalse, "InvalidAddresses"
		valid.Message = "the pool hands out no new address until fixed (the addresses it holds in its good entries stay): " + strings.Join(pi.parseErrs, "; ")
	}
	meta.SetStatusCondition(&want.Conditions, valid)
	ov := metav1.Condition{Type: PoolConditionOverlapping, Status: metav1.ConditionFalse, Reason: "NoConflict",
		Message: "no older pool declares any of these addresses", ObservedGeneration: pool.Generation}
	if len(conflicts) > 0 {
		var parts []string
		for _, c := range conflicts {
			parts = append(parts, fmt.Sprintf("%s (pool %s)", c.Range, c.With))
		}
		ov.Status, ov.Reason = metav1.ConditionTrue, "AddressesOfOlderPool"
		ov.Message = "not handed out by this pool: " + strings.Join(parts, ", ") +
			"; an older pool keeps the addresses it declares, so a pool added later never takes addresses in service"
	}
	was := meta.FindStatusCondition(pool.Status.Conditions, PoolConditionOverlapping)
	meta.SetStatusCondition(&want.Conditions, ov)
	if len(conflicts) > 0 && (was == nil || was.Status != metav1.ConditionTrue || was.Message != ov.Message) {
		s.rec.Eventf(&pool, nil, corev1.EventTypeWarning, "Overlapping", "Validate", "%s", ov.Message)
	}
	if wasValid := meta.FindStatusCondition(pool.Status.Conditions, PoolConditionValid); len(pi.parseErrs) > 0 &&
		(wasValid == nil || wasValid.Status != metav1.ConditionFalse || wasValid.Message != valid.Message) {
		s.rec.Eventf(&pool, nil, corev1.EventTypeWarning, "InvalidAddresses", "Validate", "%s", valid.Message)
	}
	if reflect.DeepEqual(*want, pool.Status) {
		return ctrl.Result{}, nil
	}
	// The whole status goes in the patch: a diff would leave out counters
	// that stayed 0, which the schema requires.
	body, err := json.Marshal(map[string]any{"status": want})
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("pool %s status: %w", pool.Name, err)
	}
	if err := s.client.Status().Patch(ctx, &pool, client.RawPatch(types.MergePatchType, body), client.FieldOwner(FieldOwner)); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("pool %s status: %w", pool.Name, err)
	}
	return ctrl.Result{}, nil
}
