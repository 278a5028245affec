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
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/internal/kubescheme"
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
	MetricsAddr string
	// HealthAddr serves /healthz and /readyz; "0" or "" disables it.
	HealthAddr string
	// LeaderElection turns on the Lease-based election; only the leader
	// allocates.
	LeaderElection          bool
	LeaderElectionNamespace string
	LeaderElectionID        string
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
}

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
	if opts.SettleTime == 0 {
		opts.SettleTime = DefaultSettleTime
	}
	opts.SettleTime = max(opts.SettleTime, 0)
	cfg.QPS, cfg.Burst = opts.QPS, opts.Burst
	registerMetrics()

	skip := true
	mgr, err := ctrl.NewManager(cfg, manager.Options{
		Scheme:                        Scheme(),
		Logger:                        opts.Log,
		Metrics:                       metricsserver.Options{BindAddress: opts.MetricsAddr},
		HealthProbeBindAddress:        opts.HealthAddr,
		LeaderElection:                opts.LeaderElection,
		LeaderElectionNamespace:       opts.LeaderElectionNamespace,
		LeaderElectionID:              opts.LeaderElectionID,
		LeaderElectionReleaseOnCancel: true,
		// The cache holds every Service; managed fields are most of an
		// object's bytes and never read here.
		Cache:      cache.Options{DefaultTransform: cache.TransformStripManagedFields()},
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
