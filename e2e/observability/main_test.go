// Package observability_test checks, in the lab, that zerohop shows its own
// work: after traffic through a dual-stack eTP Local Service,
// `zerohop status -o json` on each node reports per-backend flow counts
// equal to the echo servers' own counts; the controller's and speakers'
// metrics endpoints refuse a scrape without a token and serve one with the
// chart's metrics-reader role, parse with the Prometheus text parser and
// carry the zerohop_ families with HELP and sensible values; the chart's
// dashboard and alerts name only what those scrapes hold; and the
// Service's conditions follow a node's uplink cut and return.
package observability_test

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
