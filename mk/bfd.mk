# speaker/bfd: RFC 5880/5881 BFD. Unit tests, the loopback Manager pair,
# and the netns interop test against FRR's bfdd (needs root and frr, which
# `make deps` installs; CI runs as root), then each fuzz target for a
# bounded time.

# Counted, not timed (see mk/bpf.mk).
BFD_FUZZTIME ?= 300000x
BFD_PKG := ./speaker/bfd/

.PHONY: test-bfd test-bfd-unit fuzz-bfd

test-bfd: test-bfd-unit fuzz-bfd

test-bfd-unit:
	$(GO) test -count=1 -race -timeout 5m $(BFD_PKG)

fuzz-bfd:
	$(GO) test -count=1 -run '^$$' -fuzz '^FuzzUnmarshal$$' -fuzztime $(BFD_FUZZTIME) $(BFD_PKG)
	$(GO) test -count=1 -run '^$$' -fuzz '^FuzzSession$$' -fuzztime $(BFD_FUZZTIME) $(BFD_PKG)

# test-bfd runs this package; test-go leaves it alone.
TEST_EXCLUDE_PKGS += github.com/zerohop/zerohop/speaker/bfd$$
TEST_TARGETS += test-bfd
