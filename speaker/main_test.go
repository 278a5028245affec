package speaker_test

import (
	"os"
	"testing"

	"github.com/zerohop/zerohop/internal/testnetns"
)

// peerAddr is the BGPPeer address the tests use: an address of this
// test's own network namespace, on a closed port, so that a session never
// comes up, no packet leaves the namespace, and the API server (which
// refuses loopback peers) accepts the object.
const peerAddr = "192.0.2.254"

func TestMain(m *testing.M) { os.Exit(testnetns.Main(m, peerAddr+"/32")) }
