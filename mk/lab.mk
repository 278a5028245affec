# e2e/: the lab (network namespaces as hosts, FRR router, real API server).
# Everything here needs root. See docs/lab.md.

LAB_NODES ?= 3

.PHONY: lab lab-down build-lab test-lab

# The lab's own command, kept out of bin/zerohop (the binary the image
# ships); its demo runs bin/zerohop, the binary beside it.
build-lab:
	$(GO) build -o bin/zerohop-lab ./cmd/zerohop-lab

# Installs deps, builds, brings the lab up, applies the demo, starts
# bin/zerohop's controller and one speaker per node, and reports what it
# observed. The lab (and those processes) stay up; `make lab-down` ends it.
lab: deps build build-lab
	bin/zerohop-lab up --demo --nodes $(LAB_NODES)

# Removes the lab, and whatever a crashed earlier run left behind. Uses the
# binary that brought the lab up when there is one, so a tree that does not
# build right now can still take its lab down.
lab-down:
	@[[ -x bin/zerohop-lab ]] || $(MAKE) --no-print-directory build-lab
	bin/zerohop-lab down

# One lab for the whole package keeps this to well under a minute.
test-lab:
	$(GO) test -count=1 -timeout 5m -v ./e2e/lab/ ./e2e/echo/ 2>&1 | grep -E '^(=== RUN|\s*--- |ok|FAIL|PASS|panic|\s+\S+_test\.go)' | grep -v '^=== RUN'

TEST_TARGETS += test-lab
# test-go leaves the lab to test-lab (it needs root and the namespaces).
TEST_EXCLUDE_PKGS += /e2e/lab$$

.PHONY: test-e2e
# e2e/datapath (root): speakers drive the XDP datapath in the lab, BGP and
# L2, IPv4 and IPv6: per-node counters, client addresses, Cluster mode by
# direct return, scaling and terminating Pods without resets,
# loadBalancerSourceRanges, and the EndpointSlice → map latency on every
# node (printed).
test-e2e:
	$(GO) test -count=1 -timeout 10m -v ./e2e/datapath/ 2>&1 | grep -E '^(=== RUN|\s*--- |ok|FAIL|PASS|panic|\s+\S+_test\.go)' | grep -v '^=== RUN'

TEST_TARGETS += test-e2e
TEST_EXCLUDE_PKGS += /e2e/datapath$$

.PHONY: test-cluster
# e2e/cluster (root): zerohop beside Kubernetes' own components. A node's
# kubelet stand-in killed, then the node shut down: the node lifecycle
# controller's NotReady, the EndpointSlice change and the router's route
# withdrawn, each timed; and kube-proxy (iptables, then nftables) on every
# node beside zerohop: external, in-cluster, node, hairpin and NodePort
# traffic to a LoadBalancer IP, each handled by exactly one of them (the
# table is printed).
test-cluster:
	$(GO) test -count=1 -timeout 10m -v ./e2e/cluster/ 2>&1 | grep -E '^(=== RUN|\s*--- |ok|FAIL|PASS|panic|\s+\S+_test\.go)|^\s+(kube-proxy|iptables|nftables)\s' | grep -v '^=== RUN'

TEST_TARGETS += test-cluster
TEST_EXCLUDE_PKGS += /e2e/cluster$$

.PHONY: test-gate
# e2e/gate (root): the readiness gate under steady load: a rolling update
# (3 replicas, maxSurge 1, maxUnavailable 0) without the gate (requests
# lost are printed) and with it, a node drain, scaling 3 to 0 to 3 and a
# graceful node shutdown (0 lost with the gate), and the time from
# containers ready to gate True (median and p99 printed).
test-gate:
	$(GO) test -count=1 -timeout 10m -v ./e2e/gate/ 2>&1 | grep -E '^(=== RUN|\s*--- |ok|FAIL|PASS|panic|\s+\S+_test\.go)' | grep -v '^=== RUN'

TEST_TARGETS += test-gate
TEST_EXCLUDE_PKGS += /e2e/gate$$
