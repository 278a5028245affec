package echo

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"
)

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestServeAnswersEveryProtocol(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	port, httpPort := freePort(t), freePort(t)
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, Config{Name: "pod-a", TCPPort: port, UDPPort: port, HTTPPort: httpPort})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})

	tests := []struct {
		proto string
		port  int
	}{
		{"tcp", port},
		{"udp", port},
		{"http", httpPort},
	}
	for _, tc := range tests {
		t.Run(tc.proto, func(t *testing.T) {
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tc.port))
			var rep Reply
			var err error
			// The server goroutine may not be listening yet: bounded retry.
			for range 50 {
				rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
				rep, err = Request(rctx, nil, tc.proto, addr)
				rcancel()
				if err == nil {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil {
				t.Fatalf("Request: %v", err)
			}
			if rep.Pod != "pod-a" || rep.Proto != tc.proto {
				t.Errorf("reply = %+v, want pod-a over %s", rep, tc.proto)
			}
			if rep.ClientIP() != "127.0.0.1" {
				t.Errorf("client IP = %q, want 127.0.0.1", rep.ClientIP())
			}
		})
	}
}

func TestServeRejectsEmptyName(t *testing.T) {
	if err := Serve(context.Background(), Config{TCPPort: 1}); err == nil {
		t.Fatal("Serve with empty name: want error")
	}
}

func TestRequestUnknownProto(t *testing.T) {
	if _, err := Request(context.Background(), nil, "sctp", "127.0.0.1:1"); err == nil {
		t.Fatal("want error for unknown protocol")
	}
}

func TestCountsWhatItServed(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	port, httpPort := freePort(t), freePort(t)
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, Config{Name: "pod-c", TCPPort: port, UDPPort: port, HTTPPort: httpPort})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	httpAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort))
	// Wait until it listens; /count itself is not counted.
	var err error
	for range 100 {
		if _, err = FetchCounts(context.Background(), nil, httpAddr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("FetchCounts: %v", err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	send := map[string]int{"tcp": 3, "udp": 2, "http": 4}
	for proto, n := range send {
		a := addr
		if proto == "http" {
			a = httpAddr
		}
		for range n {
			if _, err := Request(context.Background(), nil, proto, a); err != nil {
				t.Fatalf("%s: %v", proto, err)
			}
		}
	}
	got, err := FetchCounts(context.Background(), nil, httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Counts{TCP: 3, UDP: 2, HTTP: 4}); got != want {
		t.Fatalf("counts = %+v, want %+v", got, want)
	}
}
