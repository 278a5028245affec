// Package speaker is zerohop's node agent. It watches Services,
// EndpointSlices, Nodes, zerohop's pools, BGP and L2 objects and the
// password Secrets in its namespace, and every event leads to the same one
// reconcile (reconcile.go), a short sequence of phases over one consistent
// read of the cache (snapshot.go):
//
//   - datapath (datapath.go): speaker/datapath translates every Service
//     into entries of the XDP datapath and writes the new and changed ones;
//     a VIP whose entries are not all in place is not announced;
//   - BGP (bgp.go): speaker/bgp plans the paths of each peer and its
//     embedded GoBGP announces them; BFD sessions follow the peers;
//   - L2 (l2.go): speaker/l2 elects one owner per VIP among the live
//     memberlist members and answers ARP/NDP for the VIPs this node owns
//     (and re-decides between reconciles, on membership changes);
//   - retire (datapath.go): entries nobody wants go, after the
//     announcements above were withdrawn and a grace period passed;
//   - status (status.go): a SpeakerStatus named after the node, and
//     Events (events.go).
//
// Each mode keeps its pure planner and its I/O in its own package
// (speaker/bgp, speaker/l2, speaker/datapath); this package only reads the
// cache, orders the phases and reports. Every part logs through the one
// logr.Logger of Options.Log. docs/speaker.md has the details.
package speaker

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/internal/kubescheme"
	"github.com/zerohop/zerohop/internal/metricsauth"
	"github.com/zerohop/zerohop/speaker/bgp"
	"github.com/zerohop/zerohop/speaker/datapath"
)

// FieldOwner names the speaker's writes.
const FieldOwner = "zerohop-speaker"

// Options configure a Speaker.
type Options struct {
	// NodeName is the node this speaker runs on (from the downward API).
	NodeName string
	// Namespace is the speaker's namespace: password Secrets without a
	// namespace are looked up here, and only here are they watched.
	Namespace string
	// Log is the process's logger; every part of the speaker (the
	// manager, GoBGP, the L2 responder, memberlist) logs through it.
	// Default: controller-runtime's.
	Log logr.Logger
	// RouterID overrides the BGP router ID; default: the routerID of a
	// selected BGPPeer, else the node's first IPv4 InternalIP.
	RouterID netip.Addr
	// MetricsAddr and HealthAddr: "0" or "" disables them. Metrics are
	// served over HTTPS, only to a bearer token allowed to GET /metrics
	// (internal/metricsauth), unless MetricsPlainHTTP.
	MetricsAddr      string
	MetricsPlainHTTP bool
	// MetricsCertDir holds tls.crt and tls.key; empty: self-signed.
	MetricsCertDir string
	HealthAddr     string
	// PprofAddr serves Go's /debug/pprof; "" or "0" (the default) disables it.
	PprofAddr string
	// KeepPathsOnExit leaves the BGP sessions to die with the process
	// instead of closing them, so routers with graceful restart keep the
	// paths until the next speaker is up (a rolling upgrade).
	KeepPathsOnExit bool
	// StatusInterval bounds how often SpeakerStatus is written. Default 1s.
	StatusInterval time.Duration
	// BFD, when set, runs BFD for peers with a bfdProfile (speaker/bfd).
	BFD BFD
	// MemberlistPort is where L2 speakers gossip; default 7946.
	MemberlistPort int
	// MemberlistKey is the speakers' shared gossip key (at least 16
	// bytes); when empty it is read from the Secret MemberlistSecret (key
	// "secretkey") in Namespace. Needed only for L2Advertisements.
	MemberlistKey    []byte
	MemberlistSecret string
	QPS              float32
	Burst            int
	// Datapath, when set, is programmed with every LoadBalancer Service,
	// and a VIP is announced only once its entries are in place.
	// *bpf.Datapath is the real one.
	Datapath datapath.Kernel
	// Uplinks are the interfaces the datapath attaches to; default: those
	// of the default routes plus those L2Advertisements name.
	Uplinks []string
	// PathMTU is the MTU between nodes, for Cluster mode's MSS clamping;
	// 0 disables clamping.
	PathMTU int
	// WithdrawGrace is how long an entry outlives its announcement;
	// default datapath.DefaultWithdrawGrace.
	WithdrawGrace time.Duration
	// OwnerDaemonSet names the speaker's DaemonSet in Namespace. When it
	// is gone at shutdown, the speaker is being uninstalled (helm
	// uninstall deletes the DaemonSet before its Pods): it then closes
	// its BGP sessions rather than keeping paths, and Uninstalled reports
	// true so the caller removes the datapath. When it exists (a restart,
	// a rolling upgrade, a drain) or cannot be read, nothing changes.
	OwnerDaemonSet string
	// NoNeighbours leaves the kernel's neighbour table alone; by default
	// the speaker keeps managed entries for the next hops to the other
	// nodes, which Cluster mode's encapsulation needs, and for the local
	// backends behind Pod links (speaker/datapath/neighbours.go).
	NoNeighbours bool
	// DirectToPods delivers balanced packets into the local Pods'
	// interfaces without the node's routing and netfilter
	// (speaker/datapath/podlinks.go); PodLinkInterval is how often the
	// speaker looks for Pods' interfaces between reconciles (default
	// DefaultPodLinkInterval).
	DirectToPods    bool
	PodLinkInterval time.Duration
}

// Speaker is a startable speaker.
type Speaker struct {
	mgr         manager.Manager
	r           *reconciler
	opts        Options
	uninstalled bool
}

// Scheme returns the types the speaker reads: core and zerohop's.
func Scheme() *runtime.Scheme {
	return kubescheme.New()
}

// New builds a speaker against cfg; Start runs it.
func New(cfg *rest.Config, opts Options) (*Speaker, error) {
	if opts.NodeName == "" {
		return nil, errors.New("speaker: node name is required")
	}
	if opts.Namespace == "" {
		opts.Namespace = "zerohop-system"
	}
	if opts.MetricsAddr == "" {
		opts.MetricsAddr = "0"
	}
	if opts.HealthAddr == "" {
		opts.HealthAddr = "0"
	}
	if opts.MemberlistPort == 0 {
		opts.MemberlistPort = DefaultMemberlistPort
	}
	if opts.StatusInterval == 0 {
		opts.StatusInterval = time.Second
	}
	cfg = rest.CopyConfig(cfg)
	if opts.QPS > 0 {
		cfg.QPS, cfg.Burst = opts.QPS, opts.Burst
	}
	registerMetrics()
	if st, ok := opts.Datapath.(datapathStats); ok {
		registerXDPMetrics(st)
	}
	if opts.Datapath != nil {
		registerDatapathStatusMetrics()
	}
	metricsOpts, err := metricsauth.Serving{Addr: opts.MetricsAddr, PlainHTTP: opts.MetricsPlainHTTP, CertDir: opts.MetricsCertDir}.Options()
	if err != nil {
		return nil, err
	}
	skip := true
	mgr, err := ctrl.NewManager(cfg, manager.Options{
		Scheme:                 Scheme(),
		Logger:                 opts.Log,
		Metrics:                metricsOpts,
		HealthProbeBindAddress: opts.HealthAddr,
		PprofBindAddress:       opts.PprofAddr,
		Cache: cache.Options{
			DefaultTransform: trimForCache,
			ByObject: map[client.Object]cache.ByObject{
				// Secrets only in the speaker's namespace: a speaker runs
				// on every node, and must not hold every Secret of the
				// cluster. All Nodes are cached: L2 mode elects owners
				// among them and gossips to their InternalIPs.
				&corev1.Secret{}: {Namespaces: map[string]cache.Config{opts.Namespace: {}}},
			},
		},
		// Tests run several speakers in one process.
		Controller: config.Controller{SkipNameValidation: &skip},
	})
	if err != nil {
		return nil, fmt.Errorf("speaker manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, fmt.Errorf("healthz: %w", err)
	}
	// The manager's logger is opts.Log, or controller-runtime's without it.
	opts.Log = mgr.GetLogger()
	r := &reconciler{
		opts:   opts,
		client: mgr.GetClient(),
		reader: mgr.GetAPIReader(),
		rec:    mgr.GetEventRecorder(FieldOwner),
		log:    opts.Log.WithName("speaker").WithValues("node", opts.NodeName),
		kick:   make(chan struct{}, 1),
	}
	if opts.Datapath != nil {
		r.dp = datapath.NewProgrammer(datapath.Options{
			Kernel: opts.Datapath, NodeName: opts.NodeName, Uplinks: opts.Uplinks,
			PathMTU: opts.PathMTU, WithdrawGrace: opts.WithdrawGrace,
			ManageNeighbours: !opts.NoNeighbours, DirectToPods: opts.DirectToPods, Log: r.log,
			OnWrite: countDatapathWrite, OnSize: countDatapathEntries,
		})
	}
	all := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: "all"}}}
	})
	b := ctrl.NewControllerManagedBy(mgr).Named("speaker")
	for _, obj := range []client.Object{
		&corev1.Service{}, &discoveryv1.EndpointSlice{}, &corev1.Node{}, &corev1.Secret{},
		&v1alpha1.IPAddressPool{}, &v1alpha1.BGPPeer{}, &v1alpha1.BGPAdvertisement{}, &v1alpha1.BFDProfile{},
		&v1alpha1.L2Advertisement{},
	} {
		b = b.Watches(obj, all)
	}
	if err := b.Complete(r); err != nil {
		return nil, fmt.Errorf("speaker controller: %w", err)
	}
	if err := mgr.Add(manager.RunnableFunc(r.statusLoop)); err != nil {
		return nil, err
	}
	if err := mgr.Add(manager.RunnableFunc(r.l2Loop)); err != nil {
		return nil, err
	}
	if err := mgr.Add(manager.RunnableFunc(r.podLinkLoop)); err != nil {
		return nil, err
	}
	if opts.BFD != nil {
		opts.BFD.Subscribe(r.bfdChanged)
	}
	return &Speaker{mgr: mgr, r: r, opts: opts}, nil
}

// Start runs the speaker until ctx ends.
func (s *Speaker) Start(ctx context.Context) error {
	err := s.mgr.Start(ctx)
	keep := s.opts.KeepPathsOnExit
	if s.opts.OwnerDaemonSet != "" && s.ownerGone() {
		s.r.log.Info("DaemonSet gone: uninstalling, closing sessions", "daemonset", s.opts.OwnerDaemonSet)
		s.uninstalled = true
		keep = false
	}
	s.r.close(keep)
	if err != nil {
		return fmt.Errorf("speaker: %w", err)
	}
	return nil
}

// Uninstalled reports, after Start returned, whether the speaker's
// DaemonSet was gone (see Options.OwnerDaemonSet).
func (s *Speaker) Uninstalled() bool { return s.uninstalled }

// ownerGone asks the API server, briefly, whether the DaemonSet is gone.
// helm uninstall deletes the RBAC and the ServiceAccount right after the
// DaemonSet, usually before the Pods stop: a refusal (401, 403) for a
// read the chart grants is taken as uninstall too. A timeout or any other
// error is not: the datapath stays.
func (s *Speaker) ownerGone() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var ds appsv1.DaemonSet
	err := s.mgr.GetAPIReader().Get(ctx, types.NamespacedName{Namespace: s.opts.Namespace, Name: s.opts.OwnerDaemonSet}, &ds)
	switch {
	case err == nil:
		return ds.DeletionTimestamp != nil
	case apierrors.IsNotFound(err), apierrors.IsForbidden(err), apierrors.IsUnauthorized(err):
		s.r.log.Info("own DaemonSet gone or no longer readable", "daemonset", s.opts.OwnerDaemonSet, "error", err.Error())
		return true
	default:
		s.r.log.Info("cannot tell whether this is an uninstall; keeping the datapath", "daemonset", s.opts.OwnerDaemonSet, "error", err.Error())
		return false
	}
}

// BGP returns the embedded BGP server once the first reconcile created
// it, else nil (for tests and status tools).
func (s *Speaker) BGP() *bgp.Server {
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	return s.r.bgp.server
}

// reconciler holds the speaker's state. Every event enqueues the same key,
// so that one reconcile sees one consistent picture and bursts of events
// collapse into one recomputation.
type reconciler struct {
	opts   Options
	client client.Client
	reader client.Reader
	rec    eventRecorder
	log    logr.Logger
	kick   chan struct{} // wakes the status loop

	mu     sync.Mutex // guards status, dirty and bgp
	status v1alpha1.SpeakerStatusStatus
	dirty  bool
	bgp    bgpState

	l2 l2State
	// dp programs the kernel datapath; nil without one (announce only).
	dp *datapath.Programmer
	// dpStatus is the last Program round's outcome per Service, for
	// SpeakerStatus (datapath_status.go); nil without a datapath.
	dpStatus *v1alpha1.DatapathStatus
	// waiting holds the endpoints (slice/address) that are neither ready
	// nor terminating in the programmed slices: Pods a readiness gate
	// may be holding back. urgent says a new one has joined since the
	// last SpeakerStatus write (statusLoop). Both guarded by mu.
	waiting map[string]bool
	urgent  bool

	prefixEv prefixEvents // Announced/Withdrawn Events (events.go)
}

func (r *reconciler) close(keepPaths bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bgp.server != nil {
		r.bgp.server.Close(keepPaths)
	}
}

// wake tells the status loop to look, without waiting.
func (r *reconciler) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}
