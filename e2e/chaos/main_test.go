// Package chaos_test is the chaos suite: in the lab, with a bounded client
// load running (long-lived TCP connections and new short ones, IPv4 and
// IPv6, every failure counted with its time), it restarts and upgrades
// speakers, kills the controller leader, stops the API server, restarts
// the router's bgpd, cuts a node off, deletes and recreates a pool, and
// throws hostile packets, BGP garbage and keyless memberlist traffic at
// the nodes. Each scenario prints the requests sent, the failures, the
// time to recover and what a user would have seen; the table is in
// docs/chaos.md.
package chaos_test

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
