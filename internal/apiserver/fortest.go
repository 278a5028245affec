package apiserver

import (
	"context"
	"os"
	"testing"
)

// ForTest starts an API server on loopback for one test (or TestMain-less
// package), stops it when the test ends and fails the test if it cannot
// start. Set ZEROHOP_APISERVER_LOG=1 to see the servers' output.
func ForTest(t testing.TB) *Server {
	t.Helper()
	opts := Options{}
	if os.Getenv("ZEROHOP_APISERVER_LOG") != "" {
		opts.Log = os.Stderr
	}
	s, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("start API server: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop API server: %v", err)
		}
	})
	return s
}
