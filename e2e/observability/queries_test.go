package observability_test

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"

	dto "github.com/prometheus/client_model/go"
	"sigs.k8s.io/yaml"
)

// The chart's dashboard and alerts, checked against a lab's scrape.
const (
	dashboardFile = "../../charts/zerohop/files/grafana-dashboard.json"
	rulesFile     = "../../charts/zerohop/files/prometheus-rules.yaml"
)

// targetLabels are the labels Prometheus adds to every series it scrapes
// through the chart's ServiceMonitors (the target's, and the node label
// their relabeling sets); a query may group by them although zerohop does
// not export them.
var targetLabels = []string{"job", "instance", "namespace", "pod", "container", "endpoint", "service", "node"}

// selector is one metric a query reads and the label names it matches
// that metric on.
type selector struct {
	metric string
	labels []string
}

// queryUse is what one PromQL expression names: the metrics it selects
// (with their matchers' label names) and the labels it groups or joins by.
type queryUse struct {
	selectors []selector
	grouping  []string
}

// promqlKeywords are identifiers that are neither metrics nor functions.
var promqlKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"bool": true, "and": true, "or": true, "unless": true, "offset": true, "atan2": true,
}

// groupingKeywords are followed by a parenthesized list of label names.
var groupingKeywords = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}

type token struct {
	kind byte // 'i' identifier, 's' string, 'n' number, or the punctuation itself
	text string
}

// lexPromQL splits an expression into the tokens the name check needs.
// It is not a full PromQL parser: the expressions are checked by promtool
// (the rules) and by Grafana (the dashboard); this only finds names.
func lexPromQL(expr string) ([]token, error) {
	var out []token
	r := []rune(expr)
	for i := 0; i < len(r); {
		c := r[i]
		switch {
		case unicode.IsSpace(c):
			i++
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for j < len(r) && r[j] != c {
				if r[j] == '\\' && c != '`' {
					j++
				}
				j++
			}
			if j >= len(r) {
				return nil, fmt.Errorf("unterminated string at %d in %q", i, expr)
			}
			out = append(out, token{'s', string(r[i+1 : j])})
			i = j + 1
		case c == '[':
			// A range or subquery duration: nothing to check inside.
			j := i
			for j < len(r) && r[j] != ']' {
				j++
			}
			i = j + 1
		case c == '$':
			// A Grafana variable outside a string ($__rate_interval).
			j := i + 1
			for j < len(r) && (unicode.IsLetter(r[j]) || unicode.IsDigit(r[j]) || r[j] == '_') {
				j++
			}
			i = j
		case unicode.IsLetter(c) || c == '_' || c == ':':
			j := i
			for j < len(r) && (unicode.IsLetter(r[j]) || unicode.IsDigit(r[j]) || r[j] == '_' || r[j] == ':') {
				j++
			}
			out = append(out, token{'i', string(r[i:j])})
			i = j
		case unicode.IsDigit(c) || c == '.':
			j := i
			for j < len(r) && (unicode.IsDigit(r[j]) || r[j] == '.' || unicode.IsLetter(r[j])) {
				j++
			}
			out = append(out, token{'n', string(r[i:j])})
			i = j
		default:
			out = append(out, token{byte(c), string(c)})
			i++
		}
	}
	return out, nil
}

// namesIn finds what an expression names.
func namesIn(expr string) (queryUse, error) {
	toks, err := lexPromQL(expr)
	if err != nil {
		return queryUse{}, err
	}
	var u queryUse
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		next := func(k int) token {
			if i+k < len(toks) {
				return toks[i+k]
			}
			return token{}
		}
		switch {
		case t.kind == 'i' && groupingKeywords[t.text] && next(1).kind == '(':
			j := i + 2
			for ; j < len(toks) && toks[j].kind != ')'; j++ {
				if toks[j].kind == 'i' {
					u.grouping = append(u.grouping, toks[j].text)
				}
			}
			i = j
		case t.kind == 'i' && promqlKeywords[t.text]:
		case t.kind == 'i' && (next(1).kind == '(' || next(1).kind == 'i' && (next(1).text == "by" || next(1).text == "without")):
			// A function, or an aggregation (sum by (...) (...)).
		case t.kind == 'i' || t.kind == '{':
			sel := selector{}
			j := i
			if t.kind == 'i' {
				sel.metric = t.text
				j = i + 1
			}
			if j < len(toks) && toks[j].kind == '{' {
				for j++; j < len(toks) && toks[j].kind != '}'; j++ {
					if toks[j].kind != 'i' {
						continue
					}
					if toks[j].text == "__name__" && j+2 < len(toks) && toks[j+2].kind == 's' {
						sel.metric = toks[j+2].text
						continue
					}
					sel.labels = append(sel.labels, toks[j].text)
				}
			} else {
				j--
			}
			if sel.metric == "" {
				return u, fmt.Errorf("a selector without a metric name in %q", expr)
			}
			u.selectors = append(u.selectors, sel)
			i = j
		}
	}
	return u, nil
}

// exported is what a scrape holds: per metric family, its type and the
// label names its series carry.
type exported map[string]struct {
	typ    dto.MetricType
	labels map[string]bool
}

func (e exported) add(fams map[string]*dto.MetricFamily) {
	for name, f := range fams {
		cur, ok := e[name]
		if !ok {
			cur.typ, cur.labels = f.GetType(), map[string]bool{}
		}
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				cur.labels[lp.GetName()] = true
			}
		}
		e[name] = cur
	}
}

// family resolves a series name to its family: a histogram's _bucket,
// _sum and _count series belong to it, and _bucket adds the le label.
func (e exported) family(series string) (string, map[string]bool, bool) {
	if f, ok := e[series]; ok {
		return series, f.labels, true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(series, suf)
		if !ok {
			continue
		}
		if f, ok := e[base]; ok && (f.typ == dto.MetricType_HISTOGRAM || f.typ == dto.MetricType_SUMMARY) {
			labels := f.labels
			if suf == "_bucket" {
				labels = map[string]bool{"le": true}
				for l := range f.labels {
					labels[l] = true
				}
			}
			return base, labels, true
		}
	}
	return "", nil, false
}

// check returns what expr names that the scrape does not have: a
// metric, a matcher's label on its metric, or a grouping label on none of
// the expression's metrics (target labels aside).
func (e exported) check(expr string) []string {
	u, err := namesIn(expr)
	if err != nil {
		return []string{err.Error()}
	}
	var bad []string
	known := map[string]bool{}
	for _, l := range targetLabels {
		known[l] = true
	}
	for _, s := range u.selectors {
		_, labels, ok := e.family(s.metric)
		if !ok {
			bad = append(bad, "metric "+s.metric)
			continue
		}
		for l := range labels {
			known[l] = true
		}
		for _, l := range s.labels {
			if !labels[l] && !slices.Contains(targetLabels, l) {
				bad = append(bad, fmt.Sprintf("label %s on %s", l, s.metric))
			}
		}
	}
	if len(bad) > 0 {
		// An unknown metric's labels are unknown too: say the first thing.
		return bad
	}
	for _, l := range u.grouping {
		if !known[l] {
			bad = append(bad, "grouping label "+l)
		}
	}
	return bad
}

// labelValuesQuery is Grafana's template variable query.
var labelValuesQuery = regexp.MustCompile(`^label_values\(\s*([^,]+?)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)$`)

// dashboardQueries lists every PromQL expression of the dashboard: panel
// targets and template variables (label_values(expr, label) becomes expr
// grouped by label, so both names are checked).
func dashboardQueries(t *testing.T, path string) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	out := map[string]string{}
	for _, p := range d.Panels {
		for i, tg := range p.Targets {
			out[fmt.Sprintf("panel %q target %d", p.Title, i)] = tg.Expr
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(string)
		if m, ok := v.Query.(map[string]any); ok {
			q, _ = m["query"].(string)
		}
		if m := labelValuesQuery.FindStringSubmatch(q); m != nil {
			q = fmt.Sprintf("count by (%s) (%s)", m[2], m[1])
		}
		out["variable "+v.Name] = q
	}
	if len(out) == 0 {
		t.Fatalf("%s: no queries found", path)
	}
	return out
}

// ruleQueries lists every alert's expression.
func ruleQueries(t *testing.T, path string) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Rules []struct {
				Alert  string `json:"alert"`
				Record string `json:"record"`
				Expr   string `json:"expr"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	out := map[string]string{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			out["alert "+r.Alert+r.Record] = r.Expr
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s: no rules found", path)
	}
	return out
}

// TestNamesIn pins the name finder on the shapes the dashboard and the
// alerts use, so that the lab check cannot pass by finding nothing.
func TestNamesIn(t *testing.T) {
	tests := []struct {
		expr      string
		selectors []selector
		grouping  []string
	}{
		{`zerohop_speaker_bgp_session_up == 0`, []selector{{metric: "zerohop_speaker_bgp_session_up"}}, nil},
		{`sum by (node, peer) (increase(zerohop_bfd_session_state_changes_total{node=~"$node", state="Down"}[$__rate_interval])) >= 3`,
			[]selector{{metric: "zerohop_bfd_session_state_changes_total", labels: []string{"node", "state"}}}, []string{"node", "peer"}},
		{`max by (pool, family) (zerohop_pool_addresses_assigned) / max by (pool, family) (zerohop_pool_addresses) > 0.9`,
			[]selector{{metric: "zerohop_pool_addresses_assigned"}, {metric: "zerohop_pool_addresses"}}, []string{"pool", "family", "pool", "family"}},
		{`histogram_quantile(0.99, sum by (le) (rate(zerohop_service_reconcile_seconds_bucket[5m])))`,
			[]selector{{metric: "zerohop_service_reconcile_seconds_bucket"}}, []string{"le"}},
		{`{__name__="zerohop_xdp_flows_total", vip="203.0.113.1"} * on (vip) group_left (service) x`,
			[]selector{{metric: "zerohop_xdp_flows_total", labels: []string{"vip"}}, {metric: "x"}}, []string{"vip", "service"}},
	}
	for _, tc := range tests {
		u, err := namesIn(tc.expr)
		if err != nil {
			t.Fatalf("%s: %v", tc.expr, err)
		}
		if fmt.Sprint(u.selectors) != fmt.Sprint(tc.selectors) || fmt.Sprint(u.grouping) != fmt.Sprint(tc.grouping) {
			t.Errorf("%s:\n got %v %v\nwant %v %v", tc.expr, u.selectors, u.grouping, tc.selectors, tc.grouping)
		}
	}
	// And the check itself: a renamed metric, a missing label.
	e := exported{"zerohop_xdp_flows_total": {typ: dto.MetricType_COUNTER, labels: map[string]bool{"vip": true, "port": true}}}
	for expr, want := range map[string]string{
		`sum by (vip) (rate(zerohop_xdp_flows_total[5m]))`:           "",
		`sum by (vip) (rate(zerohop_xdp_flow_total[5m]))`:            "metric zerohop_xdp_flow_total",
		`sum by (pool) (rate(zerohop_xdp_flows_total[5m]))`:          "grouping label pool",
		`rate(zerohop_xdp_flows_total{proto="tcp"}[5m])`:             "label proto on zerohop_xdp_flows_total",
		`sum by (node) (rate(zerohop_xdp_flows_total{pod="x"}[5m]))`: "",
	} {
		if got := strings.Join(e.check(expr), ";"); got != want {
			t.Errorf("check(%s) = %q, want %q", expr, got, want)
		}
	}
}
