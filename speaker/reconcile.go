package speaker

import (
	"context"
	"errors"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
)

type eventRecorder = recorder.EventRecorder

// Reconcile is the speaker's one reconcile: one read of the cache, then
// one phase per mode in the order that keeps a router from sending a VIP
// to a node that cannot balance it: the datapath is written before
// anything is announced, announcements (BGP, then L2) are withdrawn before
// any entry is deleted, and the status comes last.
func (r *reconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	snap, err := r.read(ctx)
	if err != nil {
		return reconcile.Result{}, err
	}
	var rd round
	desired, svcs := r.programDatapath(ctx, snap, &rd)
	plan, err := r.announceBGP(ctx, snap, svcs, &rd)
	// L2 needs no BGP server, and runs when it failed to start too.
	r.announceL2(ctx, snap, svcs, &rd)
	if err != nil {
		r.setStatus(plan, append(rd.problems, err))
		return reconcile.Result{RequeueAfter: 5 * time.Second}, nil
	}
	next := r.retireDatapath(ctx, desired, &rd)
	r.setStatus(plan, append(rd.problems, rd.failures...))
	if len(rd.problems) > 0 {
		r.log.Info("configuration problems", "errors", errors.Join(rd.problems...).Error())
	}
	if err := errors.Join(rd.failures...); err != nil {
		return reconcile.Result{}, err
	}
	// L2 mode counts its majority against the speakers' SpeakerStatuses,
	// which are not watched: look again now and then.
	if next == 0 && r.l2.active() {
		next = 10 * time.Second
	}
	if rd.recheck > 0 && (next == 0 || rd.recheck < next) {
		next = rd.recheck
	}
	return reconcile.Result{RequeueAfter: next}, nil
}

// round collects what went wrong in one reconcile. Problems are
// configuration errors (a bad selector, a missing Secret, a Service the
// datapath cannot take): reported in the status and logged, and retried
// only when something changes. Failures are errors of the kernel, GoBGP
// or BFD: reported too, and returned so that the reconcile is retried.
type round struct {
	problems []error
	failures []error
	// recheck, when set, is when to look again at what no watched object
	// announces (an unnumbered peer's link-local neighbour).
	recheck time.Duration
}

func (rd *round) problem(errs ...error) { rd.problems = append(rd.problems, errs...) }

func (rd *round) fail(errs ...error) { rd.failures = append(rd.failures, errs...) }
