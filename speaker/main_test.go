package speaker_test

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// peerAddr is the BGPPeer address the tests use: an address of this
// test's own network namespace, on a closed port, so that a session never
// comes up, no packet leaves the namespace, and the API server (which
// refuses loopback peers) accepts the object.
const peerAddr = "192.0.2.254"

// inNetNS marks the test binary re-run in a network namespace of its own.
const inNetNS = "ZEROHOP_SPEAKER_TEST_NETNS"

// TestMain runs the package's tests in a private network namespace made by
// unshare(1): the API server and etcd that the tests start live there too,
// on its loopback, and the namespace goes away with the process.
func TestMain(m *testing.M) {
	if os.Getenv(inNetNS) == "" {
		cmd := exec.Command("unshare", append([]string{"--net", "--"}, os.Args...)...)
		cmd.Env = append(os.Environ(), inNetNS+"=1")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				os.Exit(ee.ExitCode())
			}
			fmt.Fprintln(os.Stderr, "speaker tests need a network namespace of their own (root and unshare(1)):", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", peerAddr + "/32", "dev", "lo"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "ip %v: %v: %s\n", args, err, out)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}
