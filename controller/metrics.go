package controller

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/zerohop/zerohop/controller/ipam"
)

// Metrics live in controller-runtime's registry, which its metrics server
// serves; they are process-wide, like the registry.
var (
	poolSize = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "zerohop_pool_addresses",
		Help: "Addresses a pool can hand out (assigned + available), by family; clamped to 2^63-1.",
	}, []string{"pool", "family"})
	poolUsed = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "zerohop_pool_addresses_assigned",
		Help: "Addresses of a pool held by Services, by family.",
	}, []string{"pool", "family"})
	allocations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "zerohop_allocations_total",
		Help: "IPs assigned to Services, by pool.",
	}, []string{"pool"})
	releases = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "zerohop_releases_total",
		Help: "IPs released by Services.",
	})
	refusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "zerohop_refusals_total",
		Help: "Allocation requests refused, by reason (PoolExhausted, IPInUse, ...).",
	}, []string{"reason"})
	reconcileSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "zerohop_service_reconcile_seconds",
		Help:    "Time to reconcile one Service, including its status write.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
	})
	registerOnce sync.Once
)

func registerMetrics() {
	registerOnce.Do(func() {
		metrics.Registry.MustRegister(poolSize, poolUsed, allocations, releases, refusals, reconcileSeconds)
	})
}

func setPoolMetrics(pool string, st ipam.PoolStats) {
	for _, f := range []ipam.Family{ipam.IPv4, ipam.IPv6} {
		fam := f.String()
		total := float64(st.Assigned[f]) + float64(st.Available[f])
		poolSize.WithLabelValues(pool, fam).Set(total)
		poolUsed.WithLabelValues(pool, fam).Set(float64(st.Assigned[f]))
	}
}

func forgetPoolMetrics(pool string) {
	poolSize.DeletePartialMatch(prometheus.Labels{"pool": pool})
	poolUsed.DeletePartialMatch(prometheus.Labels{"pool": pool})
}
