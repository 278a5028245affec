// Package bgp_test runs real speakers (the zerohop binary) in the lab's
// node namespaces against the lab's FRR router and checks what the router
// learns: ECMP next hops, withdrawal on endpoint changes, communities,
// local-pref, TCP MD5, IPv6, graceful restart and weighted ECMP.
package bgp_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/zerohop/zerohop/e2e/lab"
)

// zerohopBin is the binary under test, built once by TestMain.
var zerohopBin string

func TestMain(m *testing.M) {
	lab.HelperMain()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "zh-e2e-bgp")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dir) }()
	zerohopBin = filepath.Join(dir, "zerohop")
	goBin := os.Getenv("GO")
	if goBin == "" {
		goBin = "go"
	}
	cmd := exec.Command(goBin, "build", "-o", zerohopBin, "github.com/zerohop/zerohop/cmd/zerohop")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build zerohop:", err)
		return 1
	}
	return m.Run()
}
