package controller

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/controller/ipam"
)

// An address never moves once given, so the pool it comes from must be
// chosen from a settled view of the pools. A Service and a pool applied
// together (one kubectl apply, a Helm release, a GitOps sync) reach the
// controller in either order, and the watch of pools may lag behind the
// watch of Services. So a new address is picked only
//
//   - once the Service has waited the settle time since the controller
//     first saw it want one, and the settle time has passed since the last
//     pool change the controller saw (a burst of pool edits settles first);
//   - and from the pool set of a list read from the API server itself
//     (a quorum read, not the cache) that started after those waits.
//
// Every pool created or changed up to the settle time after the Service is
// then known. Addresses a Service already holds are never delayed.

// DefaultSettleTime is Options.SettleTime when unset: long enough for the
// objects of one apply, short next to how long a new Service waits for its
// Pods anyway.
const DefaultSettleTime = time.Second

// poolChangePredicate records when a pool was created, deleted or had its
// spec changed (not status-only updates, which the controller writes
// itself), and lets those events through to the pool reconciler.
func (s *state) poolChangePredicate() predicate.Funcs {
	gen := predicate.GenerationChangedPredicate{}
	return predicate.Funcs{
		CreateFunc: func(event.CreateEvent) bool { s.notePoolChange(); return true },
		DeleteFunc: func(event.DeleteEvent) bool { s.notePoolChange(); return true },
		UpdateFunc: func(e event.UpdateEvent) bool {
			if !gen.Update(e) {
				return false
			}
			s.notePoolChange()
			return true
		},
		GenericFunc: func(event.GenericEvent) bool { return true },
	}
}

func (s *state) notePoolChange() {
	s.syncMu.Lock()
	s.poolChangeAt = time.Now()
	s.syncMu.Unlock()
}

func (s *state) lastPoolChange() time.Time {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	return s.poolChangeAt
}

// syncPools returns once the allocator holds the pool set of a quorum list
// that started at or after since. Concurrent callers share one list; a
// caller whose since is later than the list in flight waits for it and
// starts the next. Lists are applied in the order they started, so the
// view never goes back in time.
func (s *state) syncPools(ctx context.Context, since time.Time) error {
	for {
		s.syncMu.Lock()
		if !s.syncedFrom.Before(since) {
			s.syncMu.Unlock()
			return nil
		}
		if ch := s.syncing; ch != nil {
			s.syncMu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		ch := make(chan struct{})
		s.syncing = ch
		s.syncMu.Unlock()

		start := time.Now()
		err := s.readPools(ctx)

		s.syncMu.Lock()
		s.syncing = nil
		if err == nil && start.After(s.syncedFrom) {
			s.syncedFrom = start
		}
		close(ch)
		s.syncMu.Unlock()
		if err != nil {
			return err
		}
	}
}

// readPools lists the pools from the API server and applies them; when
// that changed anything allocation depends on, every Service is looked at
// again (an IP may have left every pool, or room may have appeared for a
// waiting one) and every pool's status refreshed.
func (s *state) readPools(ctx context.Context) error {
	var list v1alpha1.IPAddressPoolList
	if err := s.reader.List(ctx, &list); err != nil {
		return fmt.Errorf("list pools: %w", err)
	}
	s.mu.Lock()
	changed := s.applyPoolsLocked(list.Items)
	s.mu.Unlock()
	if !changed {
		return nil
	}
	s.kick(s.kickPools)
	return s.requeueAllServices(ctx)
}

func (s *state) requeueAllServices(ctx context.Context) error {
	var list corev1.ServiceList
	if err := s.client.List(ctx, &list); err != nil {
		return fmt.Errorf("list services: %w", err)
	}
	go func() {
		for i := range list.Items {
			if list.Items[i].Spec.Type != corev1.ServiceTypeLoadBalancer {
				continue
			}
			if !s.send(ctx, s.svcEvents, serviceRef(list.Items[i].Namespace+"/"+list.Items[i].Name)) {
				return
			}
		}
	}()
	return nil
}

// wantsNewLocked reports whether req may make Ensure pick a new address:
// a wanted family without an address, or a requested address or named
// pool other than what is held. Called with s.mu held.
func (s *state) wantsNewLocked(req ipam.Request) bool {
	held := s.alloc.IPs(req.Service)
	for _, f := range req.Families {
		found := false
		for _, ip := range held {
			if ipam.FamilyOf(ip) != f {
				continue
			}
			found = true
			for _, want := range req.RequestedIPs {
				if ipam.FamilyOf(want) == f && want != ip {
					return true
				}
			}
			if from := s.alloc.PoolOf(ip); req.Pool != "" && from != "" && from != req.Pool {
				return true
			}
		}
		if !found {
			return true
		}
	}
	return false
}

// settleWaitLocked returns how long the Service must still wait before a new
// address is picked for it; 0 when it may go ahead. Called with s.mu held.
func (s *state) settleWaitLocked(key string, now time.Time) time.Duration {
	first, ok := s.firstWanted[key]
	if !ok {
		first = now
		s.firstWanted[key] = now
	}
	wait := first.Add(s.settle).Sub(now)
	if w := s.lastPoolChange().Add(s.settle).Sub(now); w > wait {
		wait = w
	}
	return max(wait, 0)
}
