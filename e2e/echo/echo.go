// Package echo is the lab's Pod workload: a tiny server that answers on TCP,
// UDP and HTTP with the name of the Pod it runs in and the client address it
// saw. That second field is the point: it shows whether a load balancer
// preserved the client's source address on the way in.
package echo

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Reply is what every protocol answers with, encoded as one JSON line.
type Reply struct {
	Pod    string `json:"pod"`
	Client string `json:"client"` // address:port of the peer as the server saw it
	Proto  string `json:"proto"`  // "tcp", "udp" or "http"
}

// ClientIP returns the address part of Client, without the port.
func (r Reply) ClientIP() string {
	host, _, err := net.SplitHostPort(r.Client)
	if err != nil {
		return r.Client
	}
	return host
}

// Config says which name to answer with and where to listen. A zero port
// leaves that protocol off.
type Config struct {
	Name     string
	TCPPort  int
	UDPPort  int
	HTTPPort int
}

// Counts are what one server answered since it started: TCP connections
// accepted, UDP datagrams answered and HTTP requests served (not counting
// the /count requests themselves). GET /count on the HTTP port returns
// them, so a test can compare a load balancer's counters with what the
// Pods really saw.
type Counts struct {
	TCP  uint64 `json:"tcp"`
	UDP  uint64 `json:"udp"`
	HTTP uint64 `json:"http"`
}

// CountPath is the HTTP path that answers with Counts.
const CountPath = "/count"

type counters struct{ tcp, udp, http atomic.Uint64 }

func (c *counters) snapshot() Counts {
	return Counts{TCP: c.tcp.Load(), UDP: c.udp.Load(), HTTP: c.http.Load()}
}

// Default ports used by the lab for every Pod.
const (
	DefaultTCPPort  = 9000
	DefaultUDPPort  = 9000
	DefaultHTTPPort = 8080
)

// Serve listens on all addresses (both families) and answers until ctx ends.
// It returns the first listener error, or nil when ctx ends.
func Serve(ctx context.Context, cfg Config) error {
	if cfg.Name == "" {
		return errors.New("echo: empty name")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var lc net.ListenConfig
	var n counters
	var closers []io.Closer
	errc := make(chan error, 3)
	var wg sync.WaitGroup

	if cfg.TCPPort != 0 {
		ln, err := lc.Listen(ctx, "tcp", ":"+strconv.Itoa(cfg.TCPPort))
		if err != nil {
			return fmt.Errorf("echo tcp listen: %w", err)
		}
		closers = append(closers, ln)
		wg.Go(func() { errc <- serveTCP(ln, cfg.Name, &n) })
	}
	if cfg.UDPPort != 0 {
		pc, err := lc.ListenPacket(ctx, "udp", ":"+strconv.Itoa(cfg.UDPPort))
		if err != nil {
			closeAll(closers)
			return fmt.Errorf("echo udp listen: %w", err)
		}
		closers = append(closers, pc)
		wg.Go(func() { errc <- serveUDP(pc, cfg.Name, &n) })
	}
	if cfg.HTTPPort != 0 {
		ln, err := lc.Listen(ctx, "tcp", ":"+strconv.Itoa(cfg.HTTPPort))
		if err != nil {
			closeAll(closers)
			return fmt.Errorf("echo http listen: %w", err)
		}
		srv := &http.Server{Handler: httpHandler(cfg.Name, &n), ReadHeaderTimeout: 5 * time.Second}
		closers = append(closers, srv)
		wg.Go(func() { errc <- srv.Serve(ln) })
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	closeAll(closers)
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func closeAll(cs []io.Closer) {
	for _, c := range cs {
		_ = c.Close() // shutting down; nothing useful to do with the error
	}
}

func serveTCP(ln net.Listener, name string, n *counters) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		n.tcp.Add(1)
		go func() {
			defer func() { _ = c.Close() }()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			line, _ := json.Marshal(Reply{Pod: name, Client: c.RemoteAddr().String(), Proto: "tcp"})
			if _, err := c.Write(append(line, '\n')); err != nil {
				return
			}
			// After the greeting, echo whatever the client sends so the
			// connection can also carry load or probe an established flow.
			_, _ = io.Copy(c, c)
		}()
	}
}

func serveUDP(pc net.PacketConn, name string, n *counters) error {
	buf := make([]byte, 2048)
	for {
		_, addr, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		n.udp.Add(1)
		line, _ := json.Marshal(Reply{Pod: name, Client: addr.String(), Proto: "udp"})
		_, _ = pc.WriteTo(append(line, '\n'), addr)
	}
}

func httpHandler(name string, n *counters) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == CountPath {
			line, _ := json.Marshal(n.snapshot())
			_, _ = w.Write(append(line, '\n'))
			return
		}
		n.http.Add(1)
		line, _ := json.Marshal(Reply{Pod: name, Client: r.RemoteAddr, Proto: "http"})
		_, _ = w.Write(append(line, '\n'))
	})
}

// Request asks the echo server at addr (host:port) over proto ("tcp", "udp"
// or "http") and returns its reply. dial lets the caller choose the source
// (for instance a dialer bound inside a network namespace); nil uses a plain
// net.Dialer. UDP is retried a few times since a datagram can be lost while
// neighbours resolve.
func Request(ctx context.Context, dial func(ctx context.Context, network, addr string) (net.Conn, error), proto, addr string) (Reply, error) {
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	switch proto {
	case "tcp":
		c, err := dial(ctx, "tcp", addr)
		if err != nil {
			return Reply{}, fmt.Errorf("echo tcp %s: %w", addr, err)
		}
		defer func() { _ = c.Close() }()
		if dl, ok := ctx.Deadline(); ok {
			_ = c.SetDeadline(dl)
		}
		return readReply(c)
	case "udp":
		c, err := dial(ctx, "udp", addr)
		if err != nil {
			return Reply{}, fmt.Errorf("echo udp %s: %w", addr, err)
		}
		defer func() { _ = c.Close() }()
		var lastErr error
		for range 5 {
			if _, err := c.Write([]byte("?")); err != nil {
				return Reply{}, fmt.Errorf("echo udp %s: %w", addr, err)
			}
			_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			r, err := readReply(c)
			if err == nil {
				return r, nil
			}
			lastErr = err
			if ctx.Err() != nil {
				break
			}
		}
		return Reply{}, fmt.Errorf("echo udp %s: %w", addr, lastErr)
	case "http":
		tr := &http.Transport{DialContext: dial, DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
		if err != nil {
			return Reply{}, err
		}
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			return Reply{}, fmt.Errorf("echo http %s: %w", addr, err)
		}
		defer func() { _ = resp.Body.Close() }()
		if resp.StatusCode != http.StatusOK {
			return Reply{}, fmt.Errorf("echo http %s: status %s", addr, resp.Status)
		}
		return readReply(resp.Body)
	default:
		return Reply{}, fmt.Errorf("echo: unknown protocol %q", proto)
	}
}

// FetchCounts asks the echo server whose HTTP port is at addr (host:port)
// how much it answered; dial as for Request.
func FetchCounts(ctx context.Context, dial func(ctx context.Context, network, addr string) (net.Conn, error), addr string) (Counts, error) {
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	tr := &http.Transport{DialContext: dial, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+CountPath, nil)
	if err != nil {
		return Counts{}, err
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return Counts{}, fmt.Errorf("echo counts %s: %w", addr, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return Counts{}, fmt.Errorf("echo counts %s: status %s", addr, resp.Status)
	}
	var c Counts
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		return Counts{}, fmt.Errorf("echo counts %s: %w", addr, err)
	}
	return c, nil
}

func readReply(r io.Reader) (Reply, error) {
	line, err := bufio.NewReader(r).ReadBytes('\n')
	if err != nil && len(line) == 0 {
		return Reply{}, err
	}
	var rep Reply
	if err := json.Unmarshal(line, &rep); err != nil {
		return Reply{}, fmt.Errorf("bad reply %q: %w", line, err)
	}
	return rep, nil
}
