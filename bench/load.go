package bench

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// LoadArg, as the first argument, makes a bench test binary (see
// HelperMain) run the load generator instead of its tests. The harness
// starts it inside the client namespace with `ip netns exec`, so every
// socket it opens belongs to the client and the process's CPU time is its
// own.
const LoadArg = "zh-bench-load"

// LoadConfig is one bounded load run.
type LoadConfig struct {
	Proto    string // "tcp": short connections; "udp": a datagram stream
	Addr     string // VIP:port, or several comma-separated: worker i uses the (i mod n)th
	Workers  int
	Duration time.Duration
}

// LoadResult is what a load run observed from the client's side.
type LoadResult struct {
	Requests  uint64        `json:"requests"` // completed TCP connections, or UDP datagrams sent
	Errors    uint64        `json:"errors"`
	Replies   uint64        `json:"replies,omitempty"` // UDP replies received
	Elapsed   time.Duration `json:"elapsed_ns"`
	P50       time.Duration `json:"p50_ns,omitempty"`
	P99       time.Duration `json:"p99_ns,omitempty"`
	FirstErr  string        `json:"first_error,omitempty"`
	CPUUserNS int64         `json:"cpu_user_ns"` // the load generator's own CPU time
	CPUSysNS  int64         `json:"cpu_sys_ns"`
}

// runLoadMain parses the helper's flags, runs the load and prints the
// result as one JSON line.
func runLoadMain(args []string) (LoadResult, error) {
	fs := flag.NewFlagSet(LoadArg, flag.ContinueOnError)
	var c LoadConfig
	fs.StringVar(&c.Proto, "proto", "tcp", "tcp or udp")
	fs.StringVar(&c.Addr, "addr", "", "VIP:port (comma-separated: spread over the workers)")
	fs.IntVar(&c.Workers, "workers", 8, "concurrent workers")
	fs.DurationVar(&c.Duration, "duration", 5*time.Second, "how long to send")
	if err := fs.Parse(args); err != nil {
		return LoadResult{}, err
	}
	return RunLoad(context.Background(), c)
}

// RunLoad generates load from the calling process's network namespace.
//
// TCP: each worker in a loop connects, reads the echo server's one-line
// greeting and closes: one short connection per request, the case where
// per-connection costs (NAT rule evaluation, conntrack setup) show. The
// latency of a request is from the start of connect to the greeting.
//
// UDP: each worker sends 64-byte datagrams from its own socket as fast as
// it can; another goroutine per socket drains replies. What reaches the
// Pod is counted on the Pod's side by the caller.
func RunLoad(ctx context.Context, c LoadConfig) (LoadResult, error) {
	if c.Workers < 1 || c.Duration <= 0 || c.Addr == "" {
		return LoadResult{}, fmt.Errorf("load: bad config %+v", c)
	}
	// Workers stop starting requests at the deadline and finish the ones in
	// flight. (A context deadline would also cut those, and a socket
	// deadline can pass before the context reports it is done, which
	// turns the last microseconds into a storm of instant failures.)
	deadline := time.Now().Add(c.Duration)
	var r LoadResult
	var err error
	start := time.Now()
	switch c.Proto {
	case "tcp":
		r, err = tcpLoad(ctx, c, deadline)
	case "udp":
		r, err = udpLoad(ctx, c, deadline)
	default:
		return LoadResult{}, fmt.Errorf("load: unknown protocol %q", c.Proto)
	}
	r.Elapsed = time.Since(start)
	return r, err
}

type firstErr struct {
	once sync.Once
	msg  string
}

func (f *firstErr) set(err error) { f.once.Do(func() { f.msg = err.Error() }) }

func tcpLoad(ctx context.Context, c LoadConfig, deadline time.Time) (LoadResult, error) {
	var reqs, errs atomic.Uint64
	var fe firstErr
	lat := make([][]time.Duration, c.Workers)
	var wg sync.WaitGroup
	addrs := strings.Split(c.Addr, ",")
	for w := range c.Workers {
		addr := addrs[w%len(addrs)]
		wg.Go(func() {
			d := net.Dialer{Timeout: 2 * time.Second}
			buf := make([]byte, 512)
			samples := make([]time.Duration, 0, 1<<16)
			for ctx.Err() == nil && time.Now().Before(deadline) {
				t0 := time.Now()
				err := tcpRequest(ctx, &d, addr, buf)
				if err != nil {
					errs.Add(1)
					fe.set(err)
					continue
				}
				samples = append(samples, time.Since(t0))
				reqs.Add(1)
			}
			lat[w] = samples
		})
	}
	wg.Wait()
	all := slices.Concat(lat...)
	slices.Sort(all)
	r := LoadResult{Requests: reqs.Load(), Errors: errs.Load(), FirstErr: fe.msg}
	if len(all) > 0 {
		r.P50 = all[len(all)*50/100]
		r.P99 = all[min(len(all)-1, len(all)*99/100)]
	}
	return r, nil
}

func tcpRequest(ctx context.Context, d *net.Dialer, addr string, buf []byte) error {
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReaderSize(conn, len(buf)).ReadSlice('\n')
	if err != nil {
		return fmt.Errorf("read greeting: %w", err)
	}
	if len(line) < 2 {
		return errors.New("short greeting")
	}
	return nil
}

func udpLoad(ctx context.Context, c LoadConfig, deadline time.Time) (LoadResult, error) {
	var sent, errs, replies atomic.Uint64
	var fe firstErr
	var wg sync.WaitGroup
	payload := make([]byte, 64)
	addrs := strings.Split(c.Addr, ",")
	for w := range c.Workers {
		conn, err := net.Dial("udp", addrs[w%len(addrs)])
		if err != nil {
			return LoadResult{}, err
		}
		// Replies are drained so that the client's receive queue never
		// fills and makes the kernel send ICMP back into the datapath.
		wg.Go(func() {
			buf := make([]byte, 2048)
			for {
				_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				if _, err := conn.Read(buf); err != nil {
					if errors.Is(err, net.ErrClosed) {
						return
					}
					continue
				}
				replies.Add(1)
			}
		})
		wg.Go(func() {
			defer func() { _ = conn.Close() }()
			for ctx.Err() == nil && time.Now().Before(deadline) {
				if _, err := conn.Write(payload); err != nil {
					// ECONNREFUSED from an earlier ICMP, ENOBUFS: count, go on.
					errs.Add(1)
					fe.set(err)
					continue
				}
				sent.Add(1)
			}
			// Let the reader see late replies, then stop it via the close.
			time.Sleep(250 * time.Millisecond)
		})
	}
	wg.Wait()
	return LoadResult{Requests: sent.Load(), Errors: errs.Load(), Replies: replies.Load(), FirstErr: fe.msg}, nil
}
