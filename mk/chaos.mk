# e2e/chaos: the chaos suite in the lab (root). Under a bounded
# client load it restarts and upgrades speakers, kills the controller
# leader, stops the API server for 60s, restarts the router's bgpd, cuts
# nodes off (BGP+BFD and L2), deletes and recreates a pool, and sends
# hostile packets, BGP garbage and keyless memberlist traffic. Prints, per
# scenario, requests, failures, recovery and what a user would see (the
# "TABLE |" lines are docs/chaos.md's table). About 5-6 minutes.

.PHONY: test-chaos

test-chaos:
	$(GO) test -count=1 -timeout 12m -v ./e2e/chaos/ 2>&1 | grep -E '^(=== RUN|\s*--- |ok|FAIL|PASS|panic|\s+\S+_test\.go)' | grep -v '^=== RUN'

TEST_TARGETS += test-chaos
TEST_EXCLUDE_PKGS += /e2e/chaos$$
