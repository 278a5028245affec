// Package testnetns runs a package's tests in a network namespace of their
// own, for tests that must point zerohop at an address without sending a
// packet off the machine: the API server and etcd the tests start live in
// the namespace too, on its loopback, and it goes away with the process.
package testnetns

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// env marks the test binary re-run inside the namespace.
const env = "ZEROHOP_TEST_NETNS"

// Main is a TestMain: it re-runs the test binary under unshare(1) in a new
// network namespace (root needed), brings its loopback up, adds addrs (as
// host routes on lo, so that connections to them stay local), runs the
// tests there and returns their exit code.
func Main(m *testing.M, addrs ...string) int {
	if os.Getenv(env) == "" {
		cmd := exec.Command("unshare", append([]string{"--net", "--"}, os.Args...)...)
		cmd.Env = append(os.Environ(), env+"=1")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return 0
		case errors.As(err, &ee):
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "these tests run in a network namespace of their own (root and unshare(1) needed):", err)
		return 1
	}
	cmds := [][]string{{"link", "set", "lo", "up"}}
	for _, a := range addrs {
		cmds = append(cmds, []string{"addr", "add", a, "dev", "lo"})
	}
	for _, args := range cmds {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "ip %v: %v: %s\n", args, err, out)
			return 1
		}
	}
	return m.Run()
}
