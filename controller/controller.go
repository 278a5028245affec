// Package controller hands out LoadBalancer IPs from IPAddressPools to
// Services. It wraps the pure allocator in controller/ipam with
// controller-runtime: it loads every existing allocation before it makes a
// new one, writes Service and pool status, and explains every decision in
// an Event.
package controller

import (
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/controller/webhookcert"
	"github.com/zerohop/zerohop/internal/kubescheme"
	"github.com/zerohop/zerohop/internal/metricsauth"
)

// Names used on Services.
const (
	// Class is the spec.loadBalancerClass zerohop serves.
	Class = v1alpha1.LoadBalancerClass
	// AnnotationIPs requests addresses, a comma list with at most one per
	// family.
	AnnotationIPs = "zerohop.io/loadBalancerIPs"
	// AnnotationPool names the pool to allocate from.
	AnnotationPool = "zerohop.io/address-pool"
	// AnnotationShare is the sharing key.
	AnnotationShare = "zerohop.io/allow-shared-ip"
	// ConditionOutsidePool is set on a Service whose IP no pool contains
	// any more (see docs/controller.md, "pool edits").
	ConditionOutsidePool = "zerohop.io/IPOutsidePool"
	// FieldOwner names zerohop's writes.
	FieldOwner = "zerohop-controller"
)

// Options configure a Controller.
type Options struct {
	// DefaultClass makes zerohop serve LoadBalancer Services without a
	// spec.loadBalancerClass too.
	DefaultClass bool
	// MetricsAddr is the Prometheus endpoint address; "0" disables it.
	// It serves HTTPS, and only to a bearer token allowed to GET /metrics
	// (internal/metricsauth), unless MetricsPlainHTTP.
	MetricsAddr      string
	MetricsPlainHTTP bool
	// MetricsCertDir holds tls.crt and tls.key; empty: self-signed.
	MetricsCertDir string
	// HealthAddr serves /healthz and /readyz; "0" or "" disables it.
	HealthAddr string
	// LeaderElection turns on the Lease-based election; only the leader
	// allocates.
	LeaderElection          bool
	LeaderElectionNamespace string
	LeaderElectionID        string
	// LeaseDuration, RenewDeadline and RetryPeriod time the election; 0
	// takes the defaults below.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// QPS and Burst bound the client; defaults suit 10k Services.
	QPS   float32
	Burst int
	// Workers is the number of concurrent Service reconciles.
	Workers int
	// Log is the process's logger. Default: controller-runtime's.
	Log logr.Logger
	// SettleTime is how long a Service that wants a new address waits
	// after the controller first sees it, and after the last pool change,
	// before the address is picked (docs/controller.md, "A settled view
	// of the pools"). 0 means DefaultSettleTime; negative means no wait
	// (the pools are still read from the API server first).
	SettleTime time.Duration
	// ConditionInterval is how often, after a burst of three, the
	// Announced and DatapathProgrammed conditions of one Service may be
	// written (serviceconditions.go); 0 means DefaultConditionInterval.
	ConditionInterval time.Duration
	// Injection serves the webhook that gives new Pods the readiness
	// gate (inject.go); nil: not served.
	Injection *InjectionOptions
}

// The election's timings. A leader that stops cleanly releases the Lease,
// and a standby, which tries every RetryPeriod (client-go adds up to 120%
// jitter), leads within 1.1 s. A leader that dies keeps the Lease until it
// expires, LeaseDuration after its last renewal: a standby leads 7.5–9.1 s
// after the crash. Allocation pauses that long; announcements and traffic
// do not depend on the controller. controller-runtime's defaults (15 s,
// 10 s, 2 s) made a crash cost up to 19 s and a clean stop up to 4.4 s.
// The cost: the leader renews twice a second, a standby reads the Lease
// about once a second.
const (
	DefaultLeaseDuration = 8 * time.Second
	DefaultRenewDeadline = 5 * time.Second
	DefaultRetryPeriod   = 500 * time.Millisecond
)

// Controller is a running or startable controller.
type Controller struct {
	mgr manager.Manager
	st  *state
}

// Scheme returns the scheme the controller uses (core types and zerohop's).
func Scheme() *runtime.Scheme {
	return kubescheme.New()
}

// New builds a controller against cfg; Start runs it.
func New(cfg *rest.Config, opts Options) (*Controller, error) {
	cfg = rest.CopyConfig(cfg)
	if opts.QPS == 0 {
		opts.QPS = 500
	}
	if opts.Burst == 0 {
		opts.Burst = 1000
	}
	if opts.Workers == 0 {
		opts.Workers = 16
	}
	if opts.LeaderElectionID == "" {
		opts.LeaderElectionID = "zerohop-controller"
	}
	if opts.LeaderElectionNamespace == "" {
		opts.LeaderElectionNamespace = "zerohop-system"
	}
	if opts.MetricsAddr == "" {
		opts.MetricsAddr = "0"
	}
	if opts.HealthAddr == "" {
		opts.HealthAddr = "0"
	}
	if opts.LeaseDuration == 0 {
		opts.LeaseDuration = DefaultLeaseDuration
	}
	if opts.RenewDeadline == 0 {
		opts.RenewDeadline = DefaultRenewDeadline
	}
	if opts.RetryPeriod == 0 {
		opts.RetryPeriod = DefaultRetryPeriod
	}
	if opts.SettleTime == 0 {
		opts.SettleTime = DefaultSettleTime
	}
	opts.SettleTime = max(opts.SettleTime, 0)
	if opts.ConditionInterval <= 0 {
		opts.ConditionInterval = DefaultConditionInterval
	}
	cfg.QPS, cfg.Burst = opts.QPS, opts.Burst
	registerMetrics()
	metricsOpts, err := metricsauth.Serving{Addr: opts.MetricsAddr, PlainHTTP: opts.MetricsPlainHTTP, CertDir: opts.MetricsCertDir}.Options()
	if err != nil {
		return nil, err
	}

	var keeper *webhookcert.Keeper
	var webhookServer webhook.Server
	if opts.Injection != nil {
		// The Secret is read by name, straight from the API server: the
		// controller may not list Secrets, so a cache of them cannot
		// work.
		direct, err := client.New(cfg, client.Options{Scheme: Scheme()})
		if err != nil {
			return nil, fmt.Errorf("webhook certificate client: %w", err)
		}
		copts := opts.Injection.Cert
		if copts.Log.GetSink() == nil {
			log := opts.Log
			if log.GetSink() == nil {
				log = ctrl.Log
			}
			copts.Log = log.WithName("webhook-certificate")
		}
		keeper = webhookcert.New(direct, copts)
		webhookServer = injectionServer(*opts.Injection, keeper)
	}

	skip := true
	mgr, err := ctrl.NewManager(cfg, manager.Options{
		WebhookServer:           webhookServer,
		Scheme:                  Scheme(),
		Logger:                  opts.Log,
		Metrics:                 metricsOpts,
		HealthProbeBindAddress:  opts.HealthAddr,
		LeaderElection:          opts.LeaderElection,
		LeaderElectionNamespace: opts.LeaderElectionNamespace,
		LeaderElectionID:        opts.LeaderElectionID,
		// A leader that stops cleanly (SIGTERM: a rolling update, a
		// drain) gives the Lease up, so a standby leads within one
		// RetryPeriod; a leader that dies keeps it for LeaseDuration.
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &opts.LeaseDuration,
		RenewDeadline:                 &opts.RenewDeadline,
		RetryPeriod:                   &opts.RetryPeriod,
		// The cache holds every Service; managed fields are most of an
		// object's bytes and never read here.
		// Nodes are cached for their readiness alone.
		// Pods only with the readiness gate's label (gate.go).
		Cache: cache.Options{DefaultTransform: cache.TransformStripManagedFields(),
			ByObject: map[client.Object]cache.ByObject{
				&corev1.Node{}: {Transform: trimNode},
				&corev1.Pod{}:  {Label: gateSelector},
			}},
		Controller: ctrlConfig(skip),
	})
	if err != nil {
		return nil, fmt.Errorf("controller manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, fmt.Errorf("healthz: %w", err)
	}
	st := newState(mgr, opts)
	if err := mgr.AddReadyzCheck("loaded", st.readyCheck); err != nil {
		return nil, fmt.Errorf("readyz: %w", err)
	}
	if err := st.setup(mgr); err != nil {
		return nil, err
	}
	if keeper != nil {
		if err := st.setupInjection(mgr, keeper); err != nil {
			return nil, err
		}
	}
	return &Controller{mgr: mgr, st: st}, nil
}

// Start runs the controller until ctx ends.
func (c *Controller) Start(ctx context.Context) error {
	if err := c.mgr.Start(ctx); err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	return nil
}

// Loaded reports whether the controller has read every existing
// allocation (and so may allocate).
func (c *Controller) Loaded() bool { return c.st.isLoaded() }

// Client returns the manager's cached client (for tests and tools).
func (c *Controller) Client() client.Client { return c.mgr.GetClient() }

// Manager returns the controller's manager, to which more controllers
// (the Gateway API's) may be added before Start: they share its cache,
// client and leader election.
func (c *Controller) Manager() manager.Manager { return c.mgr }

// ours reports whether zerohop serves svc.
func ours(svc *corev1.Service, defaultClass bool) bool {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || svc.DeletionTimestamp != nil {
		return false
	}
	if svc.Spec.LoadBalancerClass == nil {
		return defaultClass
	}
	return *svc.Spec.LoadBalancerClass == Class
}

const poolStatusInterval = 200 * time.Millisecond

// trimNode keeps what the controller reads of a Node: its labels (peers
// select nodes) and its Ready condition (a dead node's SpeakerStatus is not
// believed).
func trimNode(o any) (any, error) {
	n, ok := o.(*corev1.Node)
	if !ok {
		return o, nil
	}
	out := &corev1.Node{TypeMeta: n.TypeMeta, ObjectMeta: n.ObjectMeta}
	out.ManagedFields = nil
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			out.Status.Conditions = []corev1.NodeCondition{c}
		}
	}
	return out, nil
}
