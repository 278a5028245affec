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
	datapathEntries = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "zerohop_speaker_datapath_entries",
		Help: "Service keys (VIP, port, protocol) programmed in this node's XDP datapath.",
	})
	datapathUpdates = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "zerohop_speaker_datapath_upserts_total",
		Help: "Service entries written to the XDP datapath.",
	})
	datapathUpdateSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "zerohop_speaker_datapath_update_seconds",
		Help:    "Time to write one reconcile's changed entries into the XDP datapath.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
	})
	registerOnce sync.Once
)

// registerMetrics adds the speaker's metrics to controller-runtime's
// registry once per process (tests start several speakers).
func registerMetrics() {
	registerOnce.Do(func() {
		metrics.Registry.MustRegister(sessionUp, announced, datapathEntries, datapathUpdates, datapathUpdateSeconds)
		metrics.Registry.MustRegister(eventMetrics()...)
	})
}

var xdpOnce sync.Once

// registerXDPMetrics exports the datapath's counters; one datapath per
// process.
func registerXDPMetrics(dp datapathStats) {
	xdpOnce.Do(func() { metrics.Registry.MustRegister(newXDPCollector(dp)) })
}
