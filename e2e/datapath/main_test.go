// Package datapath_test runs the whole path in the lab: real speakers (the
// zerohop binary) announce VIPs to FRR and program their node's XDP
// datapath, and a client reaches Pods through the router with no NodePort
// and no kube-proxy. It checks per-node XDP counters, client addresses
// preserved, Cluster mode by direct return, scaling and terminating Pods
// without resets, loadBalancerSourceRanges, and the time from an
// EndpointSlice change to the maps of every node.
package datapath_test

import (
	"os"
	"testing"

	"github.com/zerohop/zerohop/e2e/lab"
)

// zerohopBin is the binary under test, built once by TestMain.
var zerohopBin string

func TestMain(m *testing.M) {
	os.Exit(lab.RunWithZerohop(m, &zerohopBin))
}
