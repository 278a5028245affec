// Package gateway_test runs zerohop as a Gateway API implementation in
// the lab: the Gateway API's standard CRDs in the lab's API server, the
// controller with --gateway-api, three speakers announcing by BGP and
// programming XDP. A Gateway with TCP and UDP listeners, two TCPRoutes
// that split 80/20 (one each way) between two Services, a UDPRoute, a
// route to a missing Service, one to a Service in another namespace and
// one split 70/30 between a Service and a missing one; the client's
// connections through the router and the datapath must land on the
// Services within five points of the weights, every status condition must
// be what the spec says, the missing backend's connections must be reset
// (all of them on its own route, its 30% share, within five points, on
// the split one) and cost the other routes nothing, the cross-namespace
// backend must be reset until a ReferenceGrant allows it, and a second
// Gateway with no valid backend at all must be announced and reset every
// connection.
package gateway_test

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
