// Package bgp_test runs real speakers (the zerohop binary) in the lab's
// node namespaces against the lab's FRR router and checks what the router
// learns: ECMP next hops, withdrawal on endpoint changes, communities,
// local-pref, TCP MD5, IPv6, graceful restart, weighted ECMP, eBGP
// multihop and BFD failover.
package bgp_test

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
