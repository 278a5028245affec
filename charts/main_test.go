package charts

import (
	"os"
	"testing"

	"github.com/zerohop/zerohop/internal/testnetns"
)

// peerAddr and nodeAddr are addresses of the tests' own network namespace:
// the BGPPeer is a closed port there, so the session never comes up, no
// packet leaves the namespace, and the API server (which refuses loopback
// peers) accepts the object.
const (
	peerAddr = "192.0.2.254"
	nodeAddr = "192.0.2.253"
)

func TestMain(m *testing.M) { os.Exit(testnetns.Main(m, peerAddr+"/32", nodeAddr+"/32")) }
