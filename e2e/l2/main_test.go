// Package l2_test runs real speakers (the zerohop binary) in the lab's node
// namespaces in L2 mode and checks, from the router on the node segment,
// that exactly one node answers ARP and NDP for each VIP, that
// externalTrafficPolicy Local picks a node with a ready Pod, and how long
// traffic stops when the owner's speaker is killed.
package l2_test

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
