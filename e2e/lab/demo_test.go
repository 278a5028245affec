package lab

import "testing"

// The demo names the node behind each of the router's next hops; a wrong
// name would misreport which nodes announce the VIP.
func TestHopNode(t *testing.T) {
	n2v4, n2v6 := NodeAddrs(2)
	for _, tc := range []struct {
		hop, want string
	}{
		{n2v4.String(), " (zh-node2)"},
		{n2v6.String(), " (zh-node2)"},
		{"198.51.100.1", ""}, // the router itself
		{"fe80::1", ""},
		{"not-an-address", ""},
	} {
		if got := hopNode(tc.hop); got != tc.want {
			t.Errorf("hopNode(%q) = %q, want %q", tc.hop, got, tc.want)
		}
	}
}
