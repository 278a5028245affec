package speaker

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/zerohop/zerohop/bpf"
)

type statsSource struct {
	stats map[bpf.ServiceKey]bpf.ServiceStats
	err   error
}

func (s statsSource) Stats() (map[bpf.ServiceKey]bpf.ServiceStats, error) { return s.stats, s.err }
func (s statsSource) Events() (bpf.Events, error)                         { return bpf.Events{Encap: 7}, s.err }

func TestXDPCollector(t *testing.T) {
	key := bpf.ServiceKey{Addr: netip.MustParseAddr("2001:db8::10"), Port: 443, Proto: bpf.TCP}
	src := statsSource{stats: map[bpf.ServiceKey]bpf.ServiceStats{key: {Counters: bpf.Counters{
		Packets: 10, Bytes: 1500, Drops: 2, CTMiss: 1, Flows: 3, Denied: 4, Rejects: 5}}}}
	tests := []struct {
		name   string
		src    statsSource
		want   string
		metric []string
	}{{
		name: "counters per key and reason",
		src:  src,
		want: `
# HELP zerohop_xdp_drops_total Packets the XDP program dropped, per Service key and reason (no_backend: no backend could take a new flow; source_range: client outside loadBalancerSourceRanges; rejected: a new flow in the reject share of a Gateway route's invalid backendRefs, TCP answered with a reset, UDP dropped).
# TYPE zerohop_xdp_drops_total counter
zerohop_xdp_drops_total{port="443",protocol="tcp",reason="no_backend",vip="2001:db8::10"} 2
zerohop_xdp_drops_total{port="443",protocol="tcp",reason="rejected",vip="2001:db8::10"} 5
zerohop_xdp_drops_total{port="443",protocol="tcp",reason="source_range",vip="2001:db8::10"} 4
# HELP zerohop_xdp_packets_total Packets the XDP program forwarded to a backend, per Service key.
# TYPE zerohop_xdp_packets_total counter
zerohop_xdp_packets_total{port="443",protocol="tcp",vip="2001:db8::10"} 10
# HELP zerohop_xdp_read_errors 1 when the last scrape could not read the datapath's counters.
# TYPE zerohop_xdp_read_errors gauge
zerohop_xdp_read_errors 0
`,
		metric: []string{"zerohop_xdp_drops_total", "zerohop_xdp_packets_total", "zerohop_xdp_read_errors"},
	}, {
		name: "a failed read is visible",
		src:  statsSource{err: errors.New("map gone")},
		want: `
# HELP zerohop_xdp_read_errors 1 when the last scrape could not read the datapath's counters.
# TYPE zerohop_xdp_read_errors gauge
zerohop_xdp_read_errors 1
`,
		metric: []string{"zerohop_xdp_read_errors", "zerohop_xdp_packets_total"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewPedanticRegistry()
			reg.MustRegister(newXDPCollector(tt.src))
			if err := testutil.GatherAndCompare(reg, strings.NewReader(tt.want), tt.metric...); err != nil {
				t.Fatal(err)
			}
		})
	}
}
