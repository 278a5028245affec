package controller

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/controller/ipam"
)

func ctrlConfig(skipNameValidation bool) config.Controller {
	// Tests run several controllers in one process, one after another.
	return config.Controller{SkipNameValidation: &skipNameValidation}
}

// state is shared by the Service and pool reconcilers: the allocator and
// what the controller knows about pools, behind one mutex so that every
// allocation decision sees one consistent picture.
type state struct {
	opts   Options
	client client.Client
	reader client.Reader // uncached, for the start-up load
	rec    recorder.EventRecorder
	log    logr.Logger

	mu       sync.Mutex
	alloc    *ipam.Allocator
	loaded   bool
	pools    map[string]*poolInfo // by name, as last applied
	conflict map[string]string    // Service -> why its old IP was not restored
	// firstWanted is when the controller first saw a Service want a new
	// address (settle.go); cleared once it has all it wants.
	firstWanted map[string]time.Time

	// The settled view of the pools (settle.go). Lock order: mu, then
	// syncMu.
	settle       time.Duration
	syncMu       sync.Mutex
	syncing      chan struct{} // closed when the list in flight is applied
	syncedFrom   time.Time     // start of the last applied quorum list
	poolChangeAt time.Time     // last pool change seen by the watch

	svcEvents  chan event.GenericEvent
	poolEvents chan event.GenericEvent
	kickSvc    chan struct{} // retry unsatisfied Services
	kickPools  chan struct{} // refresh every pool's status
	elected    <-chan struct{}
}

// poolInfo is a pool as the reconcilers need it: the allocator's view plus
// the selectors, compiled once.
type poolInfo struct {
	spec       ipam.PoolSpec
	parseErrs  []string
	namespaces []string
	nsSel      []labels.Selector
	svcSel     []labels.Selector
	hasAlloc   bool
}

func newState(mgr manager.Manager, opts Options) *state {
	return &state{
		opts:        opts,
		client:      mgr.GetClient(),
		reader:      mgr.GetAPIReader(),
		rec:         mgr.GetEventRecorder(FieldOwner),
		log:         mgr.GetLogger().WithName("zerohop-controller"),
		alloc:       ipam.New(),
		pools:       map[string]*poolInfo{},
		conflict:    map[string]string{},
		firstWanted: map[string]time.Time{},
		settle:      opts.SettleTime,
		svcEvents:   make(chan event.GenericEvent, 1024),
		poolEvents:  make(chan event.GenericEvent, 256),
		kickSvc:     make(chan struct{}, 1),
		kickPools:   make(chan struct{}, 1),
		elected:     mgr.Elected(),
	}
}

func (s *state) isLoaded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loaded
}

func (s *state) readyCheck(_ *http.Request) error {
	// The leader is ready once it has loaded every allocation. A standby
	// is ready at once: were it not, a rolling update of a two-replica
	// Deployment would wait forever on the replica that is not leading.
	select {
	case <-s.elected:
	default:
		return nil
	}
	if !s.isLoaded() {
		return errors.New("leader: allocations not loaded yet")
	}
	return nil
}

// ensureLoaded reads every pool and every Service straight from the API
// server (not the cache, which may lag behind the previous leader's last
// writes) and records the IPs in Service statuses before the first
// allocation. Called by every reconcile; only the first does work.
func (s *state) ensureLoaded(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.loaded {
		return nil
	}
	start := time.Now()
	var pools v1alpha1.IPAddressPoolList
	if err := s.reader.List(ctx, &pools); err != nil {
		return fmt.Errorf("load pools: %w", err)
	}
	s.applyPoolsLocked(pools.Items)
	s.syncMu.Lock()
	s.syncedFrom = start
	s.syncMu.Unlock()

	var svcs []corev1.Service
	cont := ""
	for {
		var page corev1.ServiceList
		if err := s.reader.List(ctx, &page, client.Limit(1000), client.Continue(cont)); err != nil {
			return fmt.Errorf("load services: %w", err)
		}
		for i := range page.Items {
			if ours(&page.Items[i], s.opts.DefaultClass) && len(page.Items[i].Status.LoadBalancer.Ingress) > 0 {
				svcs = append(svcs, page.Items[i])
			}
		}
		cont = page.Continue
		if cont == "" {
			break
		}
	}
	// Oldest first: if two Services claim one IP (hand-edited status, or
	// a bug), the one that had it first keeps it.
	slices.SortStableFunc(svcs, func(a, b corev1.Service) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	restored := 0
	for i := range svcs {
		svc := &svcs[i]
		key := svc.Namespace + "/" + svc.Name
		var (
			held  []netip.Addr
			homes []string
		)
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			if ip, err := netip.ParseAddr(ing.IP); err == nil {
				held = append(held, ip.Unmap())
				homes = append(homes, v1alpha1.AllocatedFrom(svc.Annotations[v1alpha1.AnnotationAllocatedFrom], ip.Unmap()))
			}
		}
		if err := s.alloc.Restore(key, held, homes, sharingOf(svc)); err != nil {
			s.conflict[key] = err.Error()
			s.log.Info("not restoring a conflicting allocation", "service", key, "reason", err.Error())
			continue
		}
		restored++
	}
	s.loaded = true
	s.log.Info("loaded existing allocations", "services", restored, "pools", len(pools.Items), "took", time.Since(start))
	s.kick(s.kickPools)
	return nil
}

// kick asks a background loop to do its work once more; kicks coalesce.
func (s *state) kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Start runs the loops that turn kicks into reconcile requests, so
// reconcilers never block on each other's queues.
func (s *state) Start(ctx context.Context) error {
	// Load as soon as this replica leads, not at the first event, so that
	// readiness does not wait for someone to touch a Service.
	for {
		err := s.ensureLoaded(ctx)
		if err == nil {
			break
		}
		s.log.Error(err, "loading existing allocations; retrying")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.kickSvc:
			s.mu.Lock()
			keys := s.alloc.Unsatisfied()
			s.mu.Unlock()
			for _, k := range keys {
				if !s.send(ctx, s.svcEvents, serviceRef(k)) {
					return nil
				}
			}
		case <-s.kickPools:
			var list v1alpha1.IPAddressPoolList
			if err := s.client.List(ctx, &list); err != nil {
				s.log.Error(err, "list pools")
				continue
			}
			for i := range list.Items {
				if !s.send(ctx, s.poolEvents, &list.Items[i]) {
					return nil
				}
			}
			// Pool status is a summary; a few writes a second suffice even
			// while thousands of Services are allocated.
			select {
			case <-time.After(poolStatusInterval):
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// NeedLeaderElection: only the leader may enqueue work.
func (s *state) NeedLeaderElection() bool { return true }

func (s *state) send(ctx context.Context, ch chan event.GenericEvent, obj client.Object) bool {
	select {
	case ch <- event.GenericEvent{Object: obj}:
		return true
	case <-ctx.Done():
		return false
	}
}

// serviceRef is a Service carrying only its key, enough to enqueue it.
func serviceRef(key string) *corev1.Service {
	ns, name, _ := strings.Cut(key, "/")
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
}
