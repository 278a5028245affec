package speaker

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/speaker/bgp"
)

// Caps keep SpeakerStatus well below etcd's object size limit.
const (
	maxAnnouncements = 5000
	maxErrors        = 50
)

// setStatus records what the last reconcile decided, for the status loop.
func (r *reconciler) setStatus(plan bgp.Plan, errs []error) {
	type ann struct{ prefixes, peers map[string]bool }
	bySvc := map[string]*ann{}
	for _, pp := range plan.Peers {
		for _, p := range pp.Paths {
			for _, s := range p.Services {
				a := bySvc[s]
				if a == nil {
					a = &ann{prefixes: map[string]bool{}, peers: map[string]bool{}}
					bySvc[s] = a
				}
				a.prefixes[p.Prefix.String()] = true
				a.peers[pp.Peer.Name] = true
			}
		}
	}
	st := v1alpha1.SpeakerStatusStatus{Node: r.opts.NodeName}
	for _, s := range slices.Sorted(maps.Keys(bySvc)) {
		if len(st.Announcements) == maxAnnouncements {
			st.Truncated = true
			break
		}
		st.Announcements = append(st.Announcements, v1alpha1.ServiceAnnouncement{
			Service:  s,
			Prefixes: slices.Sorted(maps.Keys(bySvc[s].prefixes)),
			Peers:    slices.Sorted(maps.Keys(bySvc[s].peers)),
		})
	}
	seen := map[string]bool{}
	for _, e := range errs {
		if len(st.Errors) == maxErrors {
			break
		}
		// One bad selector is reported once, not once per Service.
		if msg := e.Error(); !seen[msg] {
			seen[msg] = true
			st.Errors = append(st.Errors, msg)
		}
	}
	r.mu.Lock()
	st.L2 = r.status.L2 // owned by applyL2

	st.Datapath = r.dpStatus // owned by noteDatapath
	if !equality.Semantic.DeepEqual(st, r.status) {
		r.status = st
		r.dirty = true
	}
	r.mu.Unlock()
	r.wake()
}

// statusLoop writes SpeakerStatus when it changed: once per
// StatusInterval on average, so a burst of endpoint changes costs one write
// per interval, and the first few changes after a quiet spell are written
// at once (statusBurst). A change that shows a new endpoint waiting to be
// ready (urgent) is written at once as well: the readiness gate waits for
// every node's status to show it, and during a rollout the slices churn
// enough to keep the pace at one write per interval, which added up to an
// interval to each gate.
func (r *reconciler) statusLoop(ctx context.Context) error {
	lim := rate.NewLimiter(rate.Every(r.opts.StatusInterval), statusBurst)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.kick:
		}
		if !r.takeUrgent() {
			if !r.pace(ctx, lim) {
				return nil
			}
		} else {
			lim.Allow() // counts against the pace when a token is there
		}
		if err := r.writeStatus(ctx); err != nil {
			r.log.Error(err, "write SpeakerStatus")
			// Try again on the next kick or tick.
			r.wake()
		}
	}
}

// takeUrgent reports and clears the urgent flag.
func (r *reconciler) takeUrgent() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	u := r.urgent
	r.urgent = false
	return u
}

// pace waits for the limiter, or less if an urgent change comes in
// meanwhile. It returns false when ctx is done.
func (r *reconciler) pace(ctx context.Context, lim *rate.Limiter) bool {
	res := lim.Reserve()
	t := time.NewTimer(res.Delay())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			res.Cancel()
			return false
		case <-t.C:
			return true
		case <-r.kick:
			if r.takeUrgent() {
				res.Cancel()
				return true
			}
		}
	}
}

// statusBurst is how many SpeakerStatus writes may follow each other
// without waiting for StatusInterval.
const statusBurst = 3

func (r *reconciler) writeStatus(ctx context.Context) error {
	r.mu.Lock()
	if !r.dirty {
		r.mu.Unlock()
		return nil
	}
	st := *r.status.DeepCopy()
	srv := r.bgp.server
	bfdUp := maps.Clone(r.bgp.bfdUp)
	bfdPeers := r.bgp.bfdPeers
	r.dirty = false
	r.mu.Unlock()
	if srv != nil {
		for _, s := range srv.Sessions() {
			ss := v1alpha1.BGPSessionStatus{Peer: s.Name, Address: s.Address.String(), State: s.State}
			if bfdPeers[s.Address] {
				ss.BFD = "down"
				if bfdUp[s.Address] {
					ss.BFD = "up"
				}
			}
			if !s.Since.IsZero() {
				t := metav1.NewTime(s.Since.Truncate(time.Second))
				ss.Since = &t
			}
			st.Sessions = append(st.Sessions, ss)
			if s.Refused != "" && len(st.Errors) < maxErrors && !slices.Contains(st.Errors, s.Refused) {
				st.Errors = append(st.Errors, s.Refused)
			}
		}
	}
	err := r.putStatus(ctx, st)
	if err != nil {
		r.mu.Lock()
		r.dirty = true
		r.mu.Unlock()
	}
	return err
}

func (r *reconciler) putStatus(ctx context.Context, st v1alpha1.SpeakerStatusStatus) error {
	var obj v1alpha1.SpeakerStatus
	err := r.reader.Get(ctx, types.NamespacedName{Name: r.opts.NodeName}, &obj)
	if apierrors.IsNotFound(err) {
		obj = v1alpha1.SpeakerStatus{ObjectMeta: metav1.ObjectMeta{Name: r.opts.NodeName}}
		if err := r.client.Create(ctx, &obj); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create: %w", err)
		}
		if err := r.reader.Get(ctx, types.NamespacedName{Name: r.opts.NodeName}, &obj); err != nil {
			return fmt.Errorf("get: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if equality.Semantic.DeepEqual(obj.Status, st) {
		return nil
	}
	obj.Status = st
	if err := r.client.Status().Update(ctx, &obj); err != nil {
		return fmt.Errorf("update status: %w", err)
	}
	return nil
}
