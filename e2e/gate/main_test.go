// Package gate_test runs zerohop's readiness gate in the lab's cluster
// under steady load: a rolling update with and without the gate, a node
// drain, a graceful node shutdown, and scaling to zero and back, counting
// the requests lost in each and timing the gate (docs/readiness-gate.md).
package gate_test

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
