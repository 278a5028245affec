package bfd

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the zerohop_bfd_* series. Per-peer series are deleted when
// the peer is removed so a churned peer list does not grow the registry.
type metrics struct {
	state   *prometheus.GaugeVec
	up      *prometheus.GaugeVec
	changes *prometheus.CounterVec
	rx      *prometheus.CounterVec
	tx      *prometheus.CounterVec
	dropped *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "zerohop_bfd_session_state",
			Help: "BFD session state per peer, RFC 5880 encoding: 0 AdminDown, 1 Down, 2 Init, 3 Up.",
		}, []string{"peer"}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "zerohop_bfd_session_up",
			Help: "1 while the BFD session to the peer is Up, else 0.",
		}, []string{"peer"}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zerohop_bfd_session_state_changes_total",
			Help: "BFD session state changes per peer, by the state entered.",
		}, []string{"peer", "state"}),
		rx: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zerohop_bfd_packets_received_total",
			Help: "Valid BFD control packets received per peer.",
		}, []string{"peer"}),
		tx: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zerohop_bfd_packets_sent_total",
			Help: "BFD control packets sent per peer.",
		}, []string{"peer"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zerohop_bfd_packets_dropped_total",
			Help: "Received BFD packets discarded, by reason (malformed, ttl, no_session, send_error).",
		}, []string{"reason"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.state, m.up, m.changes, m.rx, m.tx, m.dropped} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("bfd metrics: already registered (one Manager per registry): %w", err)
			}
			return nil, fmt.Errorf("bfd metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) setState(peer string, st State) {
	m.state.WithLabelValues(peer).Set(float64(st))
	up := 0.0
	if st == StateUp {
		up = 1
	}
	m.up.WithLabelValues(peer).Set(up)
}

func (m *metrics) forget(peer string) {
	m.state.DeleteLabelValues(peer)
	m.up.DeleteLabelValues(peer)
	m.rx.DeleteLabelValues(peer)
	m.tx.DeleteLabelValues(peer)
	m.changes.DeletePartialMatch(prometheus.Labels{"peer": peer})
}
