// Package chart_test installs the Helm chart into the lab's API server and
// runs the real zerohop controller and speakers with the tokens of the
// chart's own ServiceAccounts, so that the chart's RBAC is what stands
// between the components and the API: the demo path must work with it,
// with no request refused, and each ServiceAccount must be refused what it
// does not need. Then `helm uninstall` must leave nothing of zerohop but
// the CRDs. See charts/zerohop/README.md.
package chart_test

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
