# bench/: zerohop's datapath against kube-proxy's iptables and nftables
# modes in the lab, the control plane at 10,000 Services, and the XDP
# micro-benchmark. Needs root. See docs/performance.md.

BENCH_ROUNDS ?= 2
BENCH_FLAGS ?= -bench.rounds $(BENCH_ROUNDS)

.PHONY: bench test-bench-smoke

# Every benchmark, one table; results (with CPU model and kernel) in
# bench/results.json. Not part of `make test`: about 17 minutes on the 2-core VM,
# plus any wait for the lab lock.
bench: deps
	@command -v iptables-restore >/dev/null && command -v nft >/dev/null || { echo "bench: iptables and nft needed (make deps)" >&2; exit 1; }
	$(MAKE) --no-print-directory bench-xdp 2>&1 | tee bench/xdp.txt || echo "bench: make bench-xdp failed; its table is left out" | tee bench/xdp.txt
	$(GO) test -count=1 -timeout 30m -run '^TestBench$$' -v ./bench/ -args $(BENCH_FLAGS) \
		-bench.xdp $(CURDIR)/bench/xdp.txt -bench.out $(CURDIR)/bench/results.json \
		2>&1 | grep --line-buffered -v '^=== RUN'

# The same harness at tiny sizes (about 80 s), plus the ruleset unit tests:
# proves every contender serves the VIP correctly and the tables print.
test-bench-smoke:
	$(GO) test -count=1 -timeout 15m -v ./bench/ -args -bench.sizes 1,100 -bench.tcp 1s -bench.udp 1s \
		-bench.cp-services 200 -bench.cp-endpoints 10 2>&1 | grep --line-buffered -v '^=== RUN'

TEST_TARGETS += test-bench-smoke
# test-go leaves bench/ to test-bench-smoke (root, the lab).
TEST_EXCLUDE_PKGS += /bench$$
