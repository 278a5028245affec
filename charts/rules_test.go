package charts

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// promtool is Debian's prometheus package's (hack/deps.sh installs it).
func promtool(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found (hack/deps.sh installs Debian's prometheus package): %v", err)
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestPrometheusRules checks the chart's alerts with promtool: the rules
// parse and are well formed (check rules), and each alert fires on the
// series it is meant for and not on the others
// (testdata/prometheus-rules-test.yaml).
func TestPrometheusRules(t *testing.T) {
	rules := filepath.Join(chartDir, "files", "prometheus-rules.yaml")
	out := promtool(t, "check", "rules", rules)
	if !strings.Contains(out, "SUCCESS: 9 rules found") {
		t.Fatalf("promtool check rules: want 9 rules:\n%s", out)
	}
	out = promtool(t, "test", "rules", filepath.Join(chartDir, "testdata", "prometheus-rules-test.yaml"))
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules:\n%s", out)
	}
}

// TestRenderedRules checks that the PrometheusRule the chart renders
// carries the rules file that promtool checked.
func TestRenderedRules(t *testing.T) {
	out, err := helm(t, "template", "zerohop", chartDir, "--kube-version", "v1.37.0", "--show-only", "templates/monitoring.yaml",
		"--set", "prometheus.prometheusRule.enabled=true", "--set", "grafana.dashboard.enabled=true")
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	for _, want := range []string{"kind: PrometheusRule", "alert: ZerohopVIPNotAnnounced", "{{ $labels.vip }}", "kind: ConfigMap", "grafana_dashboard: \"1\"", `zerohop.json: "{`} {
		if !strings.Contains(out, want) {
			t.Errorf("rendering lacks %q", want)
		}
	}
}
