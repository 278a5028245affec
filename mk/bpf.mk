# bpf/: XDP + tc datapath (C via bpf2go, Go loader, tests, benchmarks).
# Everything here needs root (BPF, netns); CI runs as root.

# Counted, not timed: a timed -fuzztime can fail with "context deadline
# exceeded" when the deadline lands while a worker is busy on a loaded machine.
BPF_FUZZTIME ?= 300000x

.PHONY: generate-bpf test-bpf fuzz-bpf bench-xdp vendor-bpf-headers

# Rebuilds bpf/zh_bpfel.{o,go} from bpf/c/, and the lab's XDP forwarder
# (e2e/lab/xdpfwd/fwd_bpfel.{o,go}) from its c/, with clang-19 against the
# headers in bpf/c/vendor only (deterministic: bpf2go strips DWARF and maps
# source paths to relative ones).
generate-bpf:
	cd bpf && $(GO) generate ./
	cd e2e/lab/xdpfwd && $(GO) generate ./

# Refreshes the kernel UAPI and libbpf headers in bpf/c/vendor (the build
# uses only those): BPF_UAPI is an installed UAPI include directory,
# BPF_LIBBPF libbpf's src/ or installed include/bpf. Then generate-bpf.
BPF_UAPI ?= /usr/include
BPF_LIBBPF ?= /usr/include/bpf
vendor-bpf-headers:
	bpf/c/vendor/update.sh $(BPF_UAPI) $(BPF_LIBBPF)

# PROG_TEST_RUN packet tests, netns end-to-end, pinning hand-over.
test-bpf:
	$(GO) test -count=1 -timeout 5m ./bpf/

# Random packets through the XDP program for a bounded time.
fuzz-bpf:
	$(GO) test -count=1 -run '^$$' -fuzz '^FuzzXDP$$' -fuzztime $(BPF_FUZZTIME) ./bpf/

# ns/packet table from BPF_PROG_TEST_RUN (Local and Cluster mode, encapsulation
# and decapsulation) against an empty program; not part of `make test`.
# ZH_BENCH_QUICK=1 measures 1 service only (about 35 s instead of 60 s).
bench-xdp:
	$(GO) test -count=1 -run '^$$' -bench '^BenchmarkXDPTable$$' -benchtime 1x -timeout 20m ./bpf/

GENERATE_TARGETS += generate-bpf
TEST_TARGETS += test-bpf fuzz-bpf
# test-go leaves bpf/ to test-bpf (root, namespaces, bounded fuzzing).
TEST_EXCLUDE_PKGS += github.com/zerohop/zerohop/bpf$$
