# Observability: `zerohop status`, metrics, Service conditions and Events.
# The status package's joins, the Event limiter, the metrics filter and
# the conditions' aggregation and rate limits are unit tests in test-go;
# the alerts' promtool tests are in test-chart. This target is the lab
# check (e2e/observability; root): a controller and three speakers with
# BFD, traffic through a dual-stack eTP Local Service, then
# `zerohop status -o json` on every node must count exactly the
# connections the echo servers counted; every metrics endpoint refuses a
# scrape without a token (401) or without the chart's metrics-reader role
# (403) and serves one with it; the scrapes parse with the Prometheus text
# parser; the chart's dashboard and alerts name only metrics and labels
# the scrapes hold; and the Service's conditions follow node 1's uplink
# cut and return. ~1.5 min after the lab lock. See
# docs/troubleshooting.md and docs/controller.md.

.PHONY: test-observability

test-observability:
	$(GO) test -count=1 -timeout 6m -v ./e2e/observability/ 2>&1 | grep -E '^(\s*--- |ok|FAIL|PASS|panic|\s+\S+_test\.go)'

TEST_TARGETS += test-observability
TEST_EXCLUDE_PKGS += /e2e/observability$$
