# speaker/l2: the L2 planner, owner election, ARP/NDP responder, memberlist cluster.
# The responder tests build network namespaces (zh-l2a-PID, zh-l2b-PID)
# and need root; CI runs as root. See docs/l2.md.

.PHONY: test-l2-unit

# Planner and election tables, memberlist on loopback, ARP/NDP in namespaces: ~15s.
test-l2-unit:
	$(GO) test -count=1 -timeout 3m -v ./speaker/l2/... 2>&1 | grep -E '^(\s*--- |ok|FAIL|PASS|panic|\s+\S+_test\.go)'

TEST_TARGETS += test-l2-unit
# test-go leaves the namespace tests to test-l2-unit.
TEST_EXCLUDE_PKGS += /speaker/l2(/.*)?$$

.PHONY: test-l2

# The lab e2e of L2 mode (e2e/l2; root): three speakers answer ARP/NDP from
# the node namespaces; checks one answer per VIP, eTP Local, and measures
# the failover gap when the owner's speaker is killed (TestL2); node
# preference, shared addresses and excluded nodes (TestL2MetalLB). Prints
# the numbers.
test-l2:
	$(GO) test -count=1 -timeout 11m -v ./e2e/l2/ 2>&1 | grep -E '^(=== RUN|\s*--- |ok|FAIL|PASS|panic|\s+\S+_test\.go)' | grep -v '^=== RUN'

TEST_TARGETS += test-l2
TEST_EXCLUDE_PKGS += /e2e/l2$$
