// Package cluster_test runs zerohop in the lab's cluster as a user would
// run it next to Kubernetes' own components: what happens when a node's
// kubelet dies or the node shuts down (the node lifecycle controller's
// NotReady, then zerohop's reaction, timed), and how zerohop's datapath and
// kube-proxy (iptables and nftables modes) share LoadBalancer IPs.
package cluster_test

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
