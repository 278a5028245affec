# charts/zerohop: the Helm chart. See charts/zerohop/README.md.
#
# test-chart runs ./charts (helm lint --strict, golden renderings —
# ZEROHOP_UPDATE_GOLDEN=1 rewrites them —, the values schema, an install
# into a real API server with RBAC checks, the components in-process with
# the chart's tokens, promtool's check and unit tests of the alerts) and
# ./e2e/chart (root: the lab; helm install into the
# lab's API server, the real controller and speakers as processes with the
# chart's ServiceAccount tokens through the BGP demo path, 403 counts,
# forbidden-action checks, helm uninstall leaving only the CRDs).
# Indented lines are the tests' own output (measurements, notes, and on a
# failure the components' log tails); compile errors are kept too.

.PHONY: test-chart

test-chart:
	$(GO) test -count=1 -timeout 10m -v ./charts/ ./e2e/chart/ 2>&1 | grep -E '^(=== RUN|\s*--- |ok|FAIL|PASS|panic|\s+\S+_test\.go| {8}|# |\S+\.go:[0-9]+:|build zerohop)' | grep -v '^=== RUN'

TEST_TARGETS += test-chart
# test-go leaves these to test-chart (./e2e/chart needs root and the lab).
TEST_EXCLUDE_PKGS += /charts$$ /e2e/chart$$
