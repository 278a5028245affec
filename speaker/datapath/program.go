// Package datapath is the speaker's datapath mode: the pure planner
// (plan.go: Translate from Services and EndpointSlices to the entries of
// package bpf, Diff to the smallest set of map writes) and the side that
// programs the kernel (program.go: Apply, and the Programmer, which orders
// writes and deletes against the announcements, attaches to the uplinks and
// configures Cluster mode; podlinks.go: the Pod interfaces balanced
// packets are delivered to without the node's stack; neighbours.go: the
// managed neighbour entries both need). The kernel datapath itself, the XDP and tc programs
// and their maps, is package bpf; Kernel is what this package needs of it.
package datapath

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"

	"github.com/zerohop/zerohop/bpf"
)

// Kernel is the XDP datapath in the kernel as the speaker programs it;
// *bpf.Datapath satisfies it.
type Kernel interface {
	Upsert(key bpf.ServiceKey, cfg bpf.ServiceConfig) error
	DeleteService(key bpf.ServiceKey) error
	// Services lists the keys the datapath holds (after a restart, those
	// a previous speaker programmed).
	Services() []bpf.ServiceKey
	// Attach puts the programs on an uplink; attaching twice is a no-op.
	Attach(ifname string) error
	// SetNode and SetPeers configure Cluster mode: this node's underlay
	// addresses and the nodes it accepts encapsulated packets from.
	SetNode(bpf.NodeConfig) error
	SetPeers(prefixes []netip.Prefix) error
	// SetPodLinks gives the interfaces of this node's Pods, which take
	// balanced packets without the node's routing and netfilter.
	SetPodLinks(bpf.PodLinks) error
}

var _ Kernel = (*bpf.Datapath)(nil)

// Apply performs upserts, then deletes, and records in current (when not
// nil) what the datapath now holds, so that the next Diff retries exactly
// what failed. Upserts come first: a Service that moves from one VIP to
// another never has a moment with neither. A failed upsert leaves its key
// in current with unknown content, so the next Diff rewrites it if it is
// still wanted and deletes it if not; a failed delete stays in current and
// is retried. Apply carries on past failures and returns them joined; it
// stops early only when ctx is done.
//
// The caller must announce a VIP only after Apply succeeded for its keys,
// and withdraw it before Apply deletes them (docs/datapath.md, "How the
// speaker programs it").
func Apply(ctx context.Context, k Kernel, current map[bpf.ServiceKey]Entry, upserts []Upsert, deletes []bpf.ServiceKey) error {
	var errs []error
	for _, u := range upserts {
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, err)...)
		}
		cfg := bpf.ServiceConfig{Backends: u.Entry.Backends, Flags: u.Entry.Flags,
			SourceRanges: u.Entry.SourceRanges, AffinityTimeout: u.Entry.AffinityTimeout, RejectWeight: u.Entry.RejectWeight}
		if err := k.Upsert(u.Key, cfg); err != nil {
			errs = append(errs, fmt.Errorf("service %s: upsert %s: %w", u.Entry.Service, u.Key, err))
			if current != nil {
				current[u.Key] = Entry{Service: u.Entry.Service}
			}
			continue
		}
		if current != nil {
			u.Entry.Backends = slices.Clone(u.Entry.Backends)
			u.Entry.SourceRanges = slices.Clone(u.Entry.SourceRanges)
			current[u.Key] = u.Entry
		}
	}
	for _, key := range deletes {
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, err)...)
		}
		if err := k.DeleteService(key); err != nil {
			errs = append(errs, fmt.Errorf("delete %s: %w", key, err))
			continue
		}
		if current != nil {
			delete(current, key)
		}
	}
	return errors.Join(errs...)
}

// DefaultWithdrawGrace is how long a datapath entry outlives its
// announcement: routers that have not yet processed the withdrawal still
// send packets, which should be balanced rather than passed to the host.
const DefaultWithdrawGrace = time.Second

// Options configure a Programmer.
type Options struct {
	Kernel Kernel
	// NodeName is this node's.
	NodeName string
	// Uplinks are the interfaces to attach to; default: those of the
	// default routes plus those L2Advertisements name.
	Uplinks []string
	// PathMTU is the MTU between nodes, for Cluster mode's MSS clamping;
	// 0 disables clamping.
	PathMTU int
	// WithdrawGrace is how long an entry outlives its announcement;
	// default DefaultWithdrawGrace.
	WithdrawGrace time.Duration
	// ManageNeighbours keeps managed neighbour entries for the next hops
	// to the other nodes and for the local backends behind Pod links
	// (neighbours.go).
	ManageNeighbours bool
	// DirectToPods delivers balanced packets into local Pods' interfaces
	// (podlinks.go), skipping the node's routing and netfilter; without
	// it they are rewritten and passed to the node's stack.
	DirectToPods bool
	Log          logr.Logger
	// OnWrite, when set, is told how many entries a round wrote and how
	// long that took; OnSize how many the datapath holds after a change.
	// The speaker exports both as metrics.
	OnWrite func(upserts int, took time.Duration)
	OnSize  func(entries int)
}

// Programmer keeps this node's kernel datapath in step with the wanted
// entries, in the order announcements need: Program writes (and never
// deletes) before anything is announced, Retire deletes what nobody wants
// once its announcements were withdrawn and the grace has passed.
type Programmer struct {
	opts Options

	mu       sync.Mutex
	current  map[bpf.ServiceKey]Entry
	stale    map[bpf.ServiceKey]time.Time // unwanted keys, since when
	attached map[string]bool
	node     bpf.NodeConfig
	nodeSet  bool
	peers    []netip.Prefix
	neigh    map[neighbourKey]bool

	// gen counts the changes to current; podNeighGen is the one
	// podNeigh was computed for.
	gen, podNeighGen uint64
	podLinks         *bpf.PodLinks // as last given to the kernel
	podNeigh         map[neighbourKey]bool
}

// NewProgrammer returns a Programmer that has not looked at the kernel yet.
func NewProgrammer(opts Options) *Programmer {
	if opts.WithdrawGrace == 0 {
		opts.WithdrawGrace = DefaultWithdrawGrace
	}
	return &Programmer{opts: opts}
}

// Program attaches to the uplinks, configures the node and writes every
// new or changed entry of desired; it deletes nothing (see Retire).
// l2Interfaces are the interfaces L2Advertisements name. It returns the
// VIPs that must not be announced because one of their entries is not in
// place.
func (p *Programmer) Program(ctx context.Context, self *corev1.Node, nodes []corev1.Node,
	l2Interfaces []string, desired map[bpf.ServiceKey]Entry) (blocked map[netip.Addr]bool, errs []error) {
	k := p.opts.Kernel
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.current == nil {
		// A restarted speaker finds the previous one's entries: rewrite
		// what is wanted once, retire the rest.
		p.current = Observed(k.Services())
		p.attached = map[string]bool{}
	}
	errs = append(errs, p.attachUplinks(l2Interfaces)...)
	if err := p.configureNode(self, nodes); err != nil {
		errs = append(errs, err)
	}

	start := time.Now()
	ups, _ := Diff(p.current, desired)
	if err := Apply(ctx, k, p.current, ups, nil); err != nil {
		errs = append(errs, fmt.Errorf("datapath: %w", err))
	}
	if len(ups) > 0 {
		p.gen++
	}
	if err := p.syncPodLinks(); err != nil {
		errs = append(errs, err)
	}
	if len(ups) > 0 {
		if p.opts.OnWrite != nil {
			p.opts.OnWrite(len(ups), time.Since(start))
		}
		p.opts.Log.V(1).Info("datapath updated", "upserts", len(ups), "took", time.Since(start))
	}
	p.sized()

	blocked = map[netip.Addr]bool{}
	for key, want := range desired {
		if have, ok := p.current[key]; !ok || !have.Equal(want) {
			blocked[key.Addr] = true
		}
	}
	return blocked, errs
}

// SyncPodLinks looks for Pods' interfaces again (created, gone, or a Pod
// MAC learned since the last look) and gives the datapath the changes.
// The speaker calls it now and then: Pods come and go without an API
// event the speaker watches. A no-op until Program ran once.
func (p *Programmer) SyncPodLinks() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.current == nil {
		return nil
	}
	return p.syncPodLinks()
}

// Retire deletes the entries no longer wanted once they have been
// unwanted for the grace period; the caller has already withdrawn their
// announcements. It returns when to look again, or 0.
func (p *Programmer) Retire(ctx context.Context, desired map[bpf.ServiceKey]Entry) (time.Duration, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.current == nil {
		return 0, nil
	}
	_, unwanted := Diff(p.current, desired)
	now := time.Now()
	grace := p.opts.WithdrawGrace
	next := time.Duration(0)
	var due []bpf.ServiceKey
	stale := map[bpf.ServiceKey]time.Time{}
	for _, key := range unwanted {
		since, ok := p.stale[key]
		if !ok {
			since = now
		}
		stale[key] = since
		if wait := grace - now.Sub(since); wait > 0 {
			if next == 0 || wait < next {
				next = wait
			}
			continue
		}
		due = append(due, key)
	}
	p.stale = stale
	if len(due) == 0 {
		return next, nil
	}
	err := Apply(ctx, p.opts.Kernel, p.current, nil, due)
	p.gen++
	for _, key := range due {
		if _, still := p.current[key]; !still {
			delete(p.stale, key)
		}
	}
	p.sized()
	p.opts.Log.V(1).Info("datapath entries retired", "deleted", len(due))
	if err != nil {
		return time.Second, fmt.Errorf("datapath: %w", err)
	}
	return next, nil
}

// sized reports the number of entries held. Called with p.mu.
func (p *Programmer) sized() {
	if p.opts.OnSize != nil {
		p.opts.OnSize(len(p.current))
	}
}
