# speaker/: the BGP planner (pure table tests) and the embedded GoBGP
# wrapper in speaker/bgp (peers with FRR's bgpd in two network namespaces:
# needs root and frr, which `make deps` installs; CI runs as root), and the
# speaker manager against a real API server. test-bgp runs real speakers in the lab against
# its FRR router (e2e/bgp; root). See docs/speaker.md.

SPEAKER_PKGS := ./speaker/ ./speaker/bgp/

.PHONY: test-speaker test-bgp bench-bgp

test-speaker:
	$(GO) test -count=1 -timeout 5m $(SPEAKER_PKGS)

# One lab per test (TestBGP's scenarios, then TestBGPMetalLB's); prints
# the measured timings.
test-bgp:
	$(GO) test -count=1 -timeout 16m -v ./e2e/bgp/ 2>&1 | grep -E '^(=== RUN|\s*--- |ok|FAIL|PASS|panic|\s+\S+_test\.go)' | grep -v '^=== RUN'

# Cost of one Service change in the BGP layer at 100 and 10k prefixes; not
# part of `make test`.
bench-bgp:
	$(GO) test -count=1 -run '^$$' -bench '^BenchmarkApply$$' -benchtime 20x ./speaker/bgp/

TEST_TARGETS += test-speaker test-bgp
# These packages run in the targets above, not in test-go.
TEST_EXCLUDE_PKGS += /speaker$$ /speaker/bgp$$ /e2e/bgp$$
