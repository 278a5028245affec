# controller/: IP allocation for LoadBalancer Services (see
# docs/controller.md). The pure allocator (controller/ipam) has table tests
# and two fuzz targets; the controller's scenarios and the 500-Service
# restart test run against a real etcd + kube-apiserver.

# Counted, not timed (see mk/bpf.mk).
CONTROLLER_FUZZTIME ?= 200000x
# Each FuzzAllocator input is a script of up to 100 operations, so fewer
# executions cover as much; ~20-40 s on 2 shared cores.
CONTROLLER_ALLOC_FUZZTIME ?= 60000x

.PHONY: test-controller test-controller-unit test-controller-integration fuzz-controller bench-controller

test-controller: test-controller-unit test-controller-integration fuzz-controller

test-controller-unit:
	$(GO) test -count=1 -race -timeout 3m ./controller/ipam/

# ~30 scenarios, then the restart test; ~1-2 minutes on 2 cores.
test-controller-integration:
	$(GO) test -count=1 -timeout 10m -v ./controller/ 2>&1 | grep -E '^(\s*--- |ok|FAIL|PASS|panic|\s+\S+_test\.go)'

fuzz-controller:
	$(GO) test -count=1 -run '^$$' -fuzz '^FuzzParseRange$$' -fuzztime $(CONTROLLER_FUZZTIME) -fuzzminimizetime 3s ./controller/ipam/
	$(GO) test -count=1 -run '^$$' -fuzz '^FuzzAllocator$$' -fuzztime $(CONTROLLER_ALLOC_FUZZTIME) -fuzzminimizetime 3s ./controller/ipam/

# 10,000 Services across 3 pools, controller in its own process; prints
# the time from the last create to the last status write and the
# controller's peak RSS. Not part of `make test`.
bench-controller:
	$(GO) test -tags bench -count=1 -run '^TestBench10k$$' -timeout 40m -v ./controller/ 2>&1 | grep -E '^(bench-controller:|\s*--- |ok|FAIL|PASS|panic|\s+\S+_test\.go)'

TEST_EXCLUDE_PKGS += github.com/zerohop/zerohop/controller$$ github.com/zerohop/zerohop/controller/ipam$$
TEST_TARGETS += test-controller
