package speaker

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/zerohop/zerohop/bpf"
)

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
			"Packets the XDP program dropped, per Service key and reason (no_backend: no backend could take a new flow; source_range: client outside loadBalancerSourceRanges).",
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
