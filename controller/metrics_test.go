package controller_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/zerohop/zerohop/controller"
)

// scrape reads the controller's metrics endpoint and parses it with the
// Prometheus text parser, as a Prometheus server would.
func scrape(addr string) (map[string]*dto.MetricFamily, error) {
	code, body, err := httpGet("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("/metrics: HTTP %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(strings.NewReader(body))
}

// sample returns the value of the series of family name whose labels
// include want; ok is false when there is no such series.
func sample(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			match = match && labels[k] == v
		}
		if !match {
			continue
		}
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue(), true
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue(), true
		case dto.MetricType_HISTOGRAM:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// TestMetrics runs the controller with its metrics endpoint, fills a
// four-address pool past its end and asks for a bad address, and checks
// what the endpoint says: pool size and use per family, allocations,
// refusals by reason, releases and the reconcile histogram, each with its
// HELP text and type.
func TestMetrics(t *testing.T) {
	e := newEnv(t)
	const ns = "zh-metrics"
	e.namespace(t, ns, nil)
	addr := freeLoopbackAddr(t)
	stop := e.startController(t, controller.Options{MetricsAddr: addr, MetricsPlainHTTP: true})
	defer stop()

	// The counters are process-wide (controller-runtime's registry) and
	// other tests in this binary count into them too: refusals and
	// releases are compared with their values before this test.
	var before map[string]*dto.MetricFamily
	eventually(t, waitFor, func() string {
		var err error
		if before, err = scrape(addr); err != nil {
			return err.Error()
		}
		return ""
	})
	exhaustedBefore, _ := sample(before, "zerohop_refusals_total", map[string]string{"reason": "PoolExhausted"})
	invalidBefore, _ := sample(before, "zerohop_refusals_total", map[string]string{"reason": "InvalidRequest"})
	releasesBefore, _ := sample(before, "zerohop_releases_total", nil)

	const pool = "zh-metrics-pool"
	e.pool(t, pool, []string{"192.0.2.200/30", "2001:db8:200::/126"})
	// Four fit; the fifth is refused until one is released.
	ips := map[string]string{}
	for i := range 4 {
		name := fmt.Sprintf("s%d", i)
		e.svc(t, ns, name)
		eventually(t, waitFor, func() string {
			got := ingressIPs(e.getSvc(t, ns, name))
			if len(got) != 1 {
				return fmt.Sprintf("%s/%s ingress %v, want one IPv4 address", ns, name, got)
			}
			ips[name] = got[0]
			return ""
		})
	}
	e.svc(t, ns, "s4")
	e.waitEvent(t, ns, "s4", "PoolExhausted")
	e.svc(t, ns, "bad", annotate(controller.AnnotationIPs, "not-an-ip"))
	e.waitEvent(t, ns, "bad", "InvalidRequest")

	type want struct {
		name   string
		labels map[string]string
		// check says what is wrong with the value, or "".
		check func(v float64) string
	}
	equals := func(w float64) func(float64) string {
		return func(v float64) string {
			if v != w {
				return fmt.Sprintf("%v, want %v", v, w)
			}
			return ""
		}
	}
	atLeast := func(w float64) func(float64) string {
		return func(v float64) string {
			if v < w {
				return fmt.Sprintf("%v, want at least %v", v, w)
			}
			return ""
		}
	}
	v4 := map[string]string{"pool": pool, "family": "IPv4"}
	v6 := map[string]string{"pool": pool, "family": "IPv6"}
	check := func(wants []want) {
		t.Helper()
		eventually(t, waitFor, func() string {
			mfs, err := scrape(addr)
			if err != nil {
				return err.Error()
			}
			for _, w := range wants {
				v, ok := sample(mfs, w.name, w.labels)
				if !ok {
					return fmt.Sprintf("no series %s%v", w.name, w.labels)
				}
				if msg := w.check(v); msg != "" {
					return fmt.Sprintf("%s%v = %s", w.name, w.labels, msg)
				}
			}
			return ""
		})
	}
	check([]want{
		{"zerohop_pool_addresses", v4, equals(4)},
		{"zerohop_pool_addresses", v6, equals(4)},
		{"zerohop_pool_addresses_assigned", v4, equals(4)}, // the four Services allocated
		{"zerohop_pool_addresses_assigned", v6, equals(0)}, // single-stack IPv4 Services
		{"zerohop_allocations_total", map[string]string{"pool": pool}, equals(4)},
		{"zerohop_refusals_total", map[string]string{"reason": "PoolExhausted"}, atLeast(exhaustedBefore + 1)},
		{"zerohop_refusals_total", map[string]string{"reason": "InvalidRequest"}, atLeast(invalidBefore + 1)},
		{"zerohop_service_reconcile_seconds", nil, atLeast(6)},
	})

	// Releasing one address lets the waiting Service have it.
	e.deleteSvc(t, ns, "s1")
	e.waitIPs(t, ns, "s4", ips["s1"])
	check([]want{
		{"zerohop_pool_addresses_assigned", v4, equals(4)},
		{"zerohop_allocations_total", map[string]string{"pool": pool}, equals(5)},
		{"zerohop_releases_total", nil, atLeast(releasesBefore + 1)},
	})
	e.deleteAllServices(t, ns)
	check([]want{{"zerohop_pool_addresses_assigned", v4, equals(0)}})

	// Every zerohop_ family has HELP text and the documented type.
	mfs, err := scrape(addr)
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]dto.MetricType{
		"zerohop_pool_addresses":            dto.MetricType_GAUGE,
		"zerohop_pool_addresses_assigned":   dto.MetricType_GAUGE,
		"zerohop_allocations_total":         dto.MetricType_COUNTER,
		"zerohop_releases_total":            dto.MetricType_COUNTER,
		"zerohop_refusals_total":            dto.MetricType_COUNTER,
		"zerohop_service_reconcile_seconds": dto.MetricType_HISTOGRAM,
		// Set by the conditions reconciler (serviceconditions_test.go).
		"zerohop_vip_announcing_nodes":                   dto.MetricType_GAUGE,
		"zerohop_service_condition_writes_total":         dto.MetricType_COUNTER,
		"zerohop_service_condition_writes_delayed_total": dto.MetricType_COUNTER,
		// The readiness gate (gate_test.go).
		"zerohop_readiness_gate_delay_seconds": dto.MetricType_HISTOGRAM,
		"zerohop_readiness_gates_false":        dto.MetricType_GAUGE,
		"zerohop_readiness_gate_writes_total":  dto.MetricType_COUNTER,
	}
	for name, typ := range types {
		mf := mfs[name]
		if mf == nil {
			// A VIP's series exist while a Service holds it; this test's
			// may be gone by now.
			// So do the gated Pods' while one waits.
			if name != "zerohop_vip_announcing_nodes" && name != "zerohop_readiness_gates_false" {
				t.Errorf("%s missing", name)
			}
			continue
		}
		if mf.GetHelp() == "" {
			t.Errorf("%s has no HELP", name)
		}
		if mf.GetType() != typ {
			t.Errorf("%s is a %v, want %v", name, mf.GetType(), typ)
		}
	}
	for name := range mfs {
		if strings.HasPrefix(name, "zerohop_") {
			if _, ok := types[name]; !ok {
				t.Errorf("%s is not in this test's list (and docs/controller.md?)", name)
			}
		}
	}

	// A deleted pool's series go away rather than report stale sizes.
	if err := e.cli.Delete(t.Context(), e.getPool(t, pool)); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, func() string {
		mfs, err := scrape(addr)
		if err != nil {
			return err.Error()
		}
		if _, ok := sample(mfs, "zerohop_pool_addresses", v4); ok {
			return "zerohop_pool_addresses of the deleted pool still served"
		}
		return ""
	})
}
