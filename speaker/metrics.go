package speaker

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metrics are served on the manager's metrics address, next to
// controller-runtime's own (reconcile counts and durations).
var (
	sessionUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "zerohop_speaker_bgp_session_up",
		Help: "1 when the BGP session to the peer is established, else 0.",
	}, []string{"peer", "address"})
	announced = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "zerohop_speaker_bgp_announced_prefixes",
		Help: "Prefixes this node's plan sends to the peer.",
	}, []string{"peer"})
	registerOnce sync.Once
)

// registerMetrics adds the speaker's metrics to controller-runtime's
// registry once per process (tests start several speakers).
func registerMetrics() {
	registerOnce.Do(func() {
		metrics.Registry.MustRegister(sessionUp, announced)
	})
}
