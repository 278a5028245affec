# speaker/l2: owner election, ARP/NDP responder, memberlist cluster.
# The responder tests build network namespaces (zh-l2a-PID, zh-l2b-PID)
# and need root; CI runs as root. See docs/l2.md.

.PHONY: test-l2-unit

# Election tables, memberlist on loopback, ARP/NDP in namespaces: ~15s.
test-l2-unit:
	$(GO) test -count=1 -timeout 3m -v ./speaker/l2/... 2>&1 | grep -E '^(\s*--- |ok|FAIL|PASS|panic|\s+\S+_test\.go)'

TEST_TARGETS += test-l2-unit
# test-go leaves the namespace tests to test-l2-unit.
TEST_EXCLUDE_PKGS += /speaker/l2(/.*)?$$
