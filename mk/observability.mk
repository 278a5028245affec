# Observability: `zerohop status`, metrics, Announced/Withdrawn
# Events. The status package's joins and the Event limiter are unit tests
# in test-go; this target is the lab check (e2e/observability; root): a
# controller and three speakers, traffic through a dual-stack eTP Local
# Service, then `zerohop status -o json` on every node must count exactly
# the connections the echo servers counted, and the controller's and
# speakers' metrics must parse with the Prometheus text parser. ~1 min
# after the lab lock. See docs/troubleshooting.md.

.PHONY: test-observability

test-observability:
	$(GO) test -count=1 -timeout 6m -v ./e2e/observability/ 2>&1 | grep -E '^(\s*--- |ok|FAIL|PASS|panic|\s+\S+_test\.go)'

TEST_TARGETS += test-observability
TEST_EXCLUDE_PKGS += /e2e/observability$$
