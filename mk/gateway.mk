# Gateway API (L4): TCPRoute and UDPRoute on the datapath. See docs/gateway.md.
#
# generate-gateway-api-crds copies the standard channel's CRDs of the
# sigs.k8s.io/gateway-api module that go.mod requires into the chart
# (files/gateway-api), untouched; generate-check fails when they are stale.
#
# The planner's tables and the controller against a real API server
# (controller/gateway) are in test-go. test-gateway is the lab check
# (e2e/gateway; root): the Gateway API CRDs in the lab's API server, the
# controller with --gateway-api and three BGP speakers; a Gateway with TCP
# and UDP listeners, two TCPRoutes splitting 80/20 and 20/80 between two
# Services (2000 connections each from the client, through the router and
# XDP, each Service's share within 5 points of its weight), a UDPRoute, a
# route to a missing Service (refused, the others untouched) and a
# cross-namespace backend refused until a ReferenceGrant allows it; every
# condition checked. ~40 s after the lab lock.

.PHONY: generate-gateway-api-crds test-gateway

generate-gateway-api-crds:
	hack/gateway-api-crds.sh

GENERATE_TARGETS += generate-gateway-api-crds

test-gateway:
	$(GO) test -count=1 -timeout 6m -v ./e2e/gateway/ 2>&1 | grep -E '^(\s*--- |ok|FAIL|PASS|panic|\s+\S+_test\.go)'

TEST_TARGETS += test-gateway
TEST_EXCLUDE_PKGS += /e2e/gateway$$
