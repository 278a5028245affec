package speaker

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/zerohop/zerohop/bpf"
	"github.com/zerohop/zerohop/speaker/l2"
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
	sessionFlaps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "zerohop_speaker_bgp_session_flaps_total",
		Help: "Times an established BGP session to the peer went down.",
	}, []string{"peer"})
	l2OwnershipChanges = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "zerohop_speaker_l2_ownership_changes_total",
		Help: "VIPs this node took over (change=acquired) or gave up (change=released) in L2 mode.",
	}, []string{"change"})
	l2Announcements = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "zerohop_speaker_l2_announcements_sent_total",
		Help: "Gratuitous ARPs (family=ipv4) and unsolicited neighbour advertisements (family=ipv6) sent for owned VIPs.",
	}, []string{"family"})
	eventsSuppressed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "zerohop_speaker_events_suppressed_total",
		Help: "Announced/Withdrawn Events not recorded because of the per-Service interval or the node-wide rate limit.",
	})
	registerOnce sync.Once
)

// registerMetrics adds the speaker's metrics to controller-runtime's
// registry once per process (tests start several speakers). The fixed
// label values start at zero so the series exist before the first change.
func registerMetrics() {
	registerOnce.Do(func() {
		for _, c := range []string{"acquired", "released"} {
			l2OwnershipChanges.WithLabelValues(c)
		}
		for _, f := range []string{"ipv4", "ipv6"} {
			l2Announcements.WithLabelValues(f)
		}
		metrics.Registry.MustRegister(sessionUp, announced, sessionFlaps, l2OwnershipChanges, l2Announcements,
			datapathEntries, datapathUpdates, datapathUpdateSeconds, eventsSuppressed)
	})
}

var xdpOnce sync.Once

// registerXDPMetrics exports the datapath's counters; one datapath per
// process.
func registerXDPMetrics(dp datapathStats) {
	xdpOnce.Do(func() { metrics.Registry.MustRegister(newXDPCollector(dp)) })
}

// countL2Changes counts VIPs gained and lost between two owned sets.
func countL2Changes(before, after []l2.Owned) {
	had := make(map[netip.Addr]bool, len(before))
	for _, o := range before {
		had[o.VIP.IP] = true
	}
	has := make(map[netip.Addr]bool, len(after))
	for _, o := range after {
		has[o.VIP.IP] = true
		if !had[o.VIP.IP] {
			l2OwnershipChanges.WithLabelValues("acquired").Inc()
		}
	}
	for ip := range had {
		if !has[ip] {
			l2OwnershipChanges.WithLabelValues("released").Inc()
		}
	}
}

// countL2Announcement is the l2 Announcer's OnAnnounce hook.
func countL2Announcement(vip netip.Addr) {
	f := "ipv6"
	if vip.Is4() {
		f = "ipv4"
	}
	l2Announcements.WithLabelValues(f).Inc()
}

// countDatapathWrite and countDatapathEntries are the datapath
// Programmer's hooks.
func countDatapathWrite(upserts int, took time.Duration) {
	datapathUpdateSeconds.Observe(took.Seconds())
	datapathUpdates.Add(float64(upserts))
}

func countDatapathEntries(n int) { datapathEntries.Set(float64(n)) }

// datapathStats is the part of *bpf.Datapath the XDP metrics read.
type datapathStats interface {
	Stats() (map[bpf.ServiceKey]bpf.ServiceStats, error)
	Events() (bpf.Events, error)
}

// xdpCollector turns the datapath's per-CPU counters into Prometheus
// counters at scrape time, so that packets handled in XDP (invisible to
// iptables counters and tcpdump) show up per Service key.
type xdpCollector struct {
	dp datapathStats

	packets, bytes, flows, ctMiss, drops, events, scrapeErrors *prometheus.Desc
}

func newXDPCollector(dp datapathStats) *xdpCollector {
	svc := []string{"vip", "port", "protocol"}
	return &xdpCollector{
		dp:      dp,
		packets: prometheus.NewDesc("zerohop_xdp_packets_total", "Packets the XDP program forwarded to a backend, per Service key.", svc, nil),
		bytes:   prometheus.NewDesc("zerohop_xdp_bytes_total", "L3 bytes the XDP program forwarded to a backend, per Service key.", svc, nil),
		flows:   prometheus.NewDesc("zerohop_xdp_flows_total", "Connection-tracking entries created, per Service key.", svc, nil),
		ctMiss:  prometheus.NewDesc("zerohop_xdp_conntrack_misses_total", "Packets other than a TCP SYN that found no flow, per Service key.", svc, nil),
		drops: prometheus.NewDesc("zerohop_xdp_drops_total",
			"Packets the XDP program dropped, per Service key and reason (no_backend: no backend could take a new flow; source_range: client outside loadBalancerSourceRanges; rejected: a new flow in the reject share of a Gateway route's invalid backendRefs, TCP answered with a reset, UDP dropped).",
			append(svc, "reason"), nil),
		events: prometheus.NewDesc("zerohop_xdp_events_total",
			"Node-wide datapath events: encapsulation, decapsulation, fragments, ICMP relays and echo replies.", []string{"event"}, nil),
		scrapeErrors: prometheus.NewDesc("zerohop_xdp_read_errors", "1 when the last scrape could not read the datapath's counters.", nil, nil),
	}
}

func (c *xdpCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.packets, c.bytes, c.flows, c.ctMiss, c.drops, c.events, c.scrapeErrors} {
		ch <- d
	}
}

func (c *xdpCollector) Collect(ch chan<- prometheus.Metric) {
	failed := 0.0
	stats, err := c.dp.Stats()
	if err != nil {
		failed = 1
	}
	for k, s := range stats {
		l := []string{k.Addr.String(), fmt.Sprint(k.Port), k.Proto.String()}
		ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(s.Packets), l...)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(s.Bytes), l...)
		ch <- prometheus.MustNewConstMetric(c.flows, prometheus.CounterValue, float64(s.Flows), l...)
		ch <- prometheus.MustNewConstMetric(c.ctMiss, prometheus.CounterValue, float64(s.CTMiss), l...)
		ch <- prometheus.MustNewConstMetric(c.drops, prometheus.CounterValue, float64(s.Drops), append(l, "no_backend")...)
		ch <- prometheus.MustNewConstMetric(c.drops, prometheus.CounterValue, float64(s.Denied), append(l, "source_range")...)
		ch <- prometheus.MustNewConstMetric(c.drops, prometheus.CounterValue, float64(s.Rejects), append(l, "rejected")...)
	}
	ev, err := c.dp.Events()
	if err != nil {
		failed = 1
	} else {
		for name, v := range map[string]uint64{
			"encap": ev.Encap, "encap_fail": ev.EncapFail, "decap": ev.Decap, "decap_refused": ev.DecapRefused,
			"decap_no_local": ev.DecapNoLocal, "mss_clamped": ev.MSSClamped, "frag_first": ev.FragFirst,
			"frag_hit": ev.FragHit, "frag_miss": ev.FragMiss, "icmp_relay": ev.ICMPRelay,
			"icmp_no_flow": ev.ICMPNoFlow, "echo_reply": ev.EchoReply,
		} {
			ch <- prometheus.MustNewConstMetric(c.events, prometheus.CounterValue, float64(v), name)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.scrapeErrors, prometheus.GaugeValue, failed)
}
