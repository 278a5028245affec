package chaos_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/zerohop/zerohop/e2e/echo"
	"github.com/zerohop/zerohop/e2e/lab"
)

// The client load every scenario runs under. Its shape is fixed so that
// scenarios compare: longConns long-lived connections probed every
// probeEvery, and shortRate new connections a second, alternating over
// the targets (IPv4 and IPv6 VIPs).
const (
	longConns  = 8
	probeEvery = 200 * time.Millisecond
	shortRate  = 20
	// The echo server closes a connection after 30s; reopening at 25s is
	// a planned reopen, not a failure.
	longMaxAge = 25 * time.Second
	reqTimeout = 2 * time.Second
	// maxInFlight bounds the short requests waiting for an answer; a tick
	// that finds them all busy is counted as a failure (the client would
	// have had to wait).
	maxInFlight = 100
)

// failure is one failed request: when it started, which kind, and why.
type failure struct {
	at   time.Time
	kind string // "short", "long-dial", "long-probe"
	dst  string
	pod  string // for long-lived connections, the Pod the flow was on
	err  error
}

func (f failure) String() string {
	pod := ""
	if f.pod != "" {
		pod = " (Pod " + f.pod + ")"
	}
	return fmt.Sprintf("%s %s %s%s: %v", f.at.Format("15:04:05.000"), f.kind, f.dst, pod, f.err)
}

// load is a running client load from the client namespace.
type load struct {
	targets []string
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	start   time.Time

	mu       sync.Mutex
	sent     int
	failures []failure
	okShort  []time.Time // start times of answered short requests
	latency  []time.Duration
	reopens  int // planned reopens of long-lived connections
	inFlight int
}

// startLoad starts the load against targets (ip:port of echo servers).
func startLoad(parent context.Context, targets ...string) *load {
	ctx, cancel := context.WithCancel(parent)
	ld := &load{targets: targets, dial: lab.DialerIn(lab.ClientNS), cancel: cancel, start: time.Now()}
	for i := range longConns {
		ld.wg.Add(1)
		go ld.longLived(ctx, targets[i%len(targets)])
	}
	ld.wg.Add(1)
	go ld.shorts(ctx)
	return ld
}

func (ld *load) fail(f failure) {
	ld.mu.Lock()
	ld.failures = append(ld.failures, f)
	ld.mu.Unlock()
}

func (ld *load) shorts(ctx context.Context) {
	defer ld.wg.Done()
	tick := time.NewTicker(time.Second / shortRate)
	defer tick.Stop()
	// Bounded: at most an hour of ticks, whatever the caller does.
	for n := 0; n < 3600*shortRate; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		dst := ld.targets[n%len(ld.targets)]
		ld.mu.Lock()
		ld.sent++
		busy := ld.inFlight >= maxInFlight
		if !busy {
			ld.inFlight++
		}
		ld.mu.Unlock()
		if busy {
			ld.fail(failure{at: time.Now(), kind: "short", dst: dst, err: fmt.Errorf("%d requests already waiting", maxInFlight)})
			continue
		}
		ld.wg.Add(1)
		go func() {
			defer ld.wg.Done()
			t0 := time.Now()
			rctx, cancel := context.WithTimeout(context.Background(), reqTimeout)
			rep, err := echo.Request(rctx, ld.dial, "tcp", dst)
			cancel()
			ld.mu.Lock()
			defer ld.mu.Unlock()
			ld.inFlight--
			if err == nil && rep.Pod == "" {
				err = fmt.Errorf("empty answer")
			}
			if err != nil {
				ld.failures = append(ld.failures, failure{at: t0, kind: "short", dst: dst, err: err})
				return
			}
			ld.okShort = append(ld.okShort, t0)
			ld.latency = append(ld.latency, time.Since(t0))
		}()
	}
}

// longLived keeps one connection to dst open, probing it; a broken probe
// is a failure and the connection is reopened.
func (ld *load) longLived(ctx context.Context, dst string) {
	defer ld.wg.Done()
	deadline := time.Now().Add(time.Hour)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		t0 := time.Now()
		ld.mu.Lock()
		ld.sent++
		ld.mu.Unlock()
		c, r, pod, err := ld.open(ctx, dst)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			ld.fail(failure{at: t0, kind: "long-dial", dst: dst, err: err})
			sleepCtx(ctx, probeEvery)
			continue
		}
		opened := time.Now()
		for seq := 0; ctx.Err() == nil; seq++ {
			if time.Since(opened) > longMaxAge {
				ld.mu.Lock()
				ld.reopens++
				ld.mu.Unlock()
				break
			}
			if !sleepCtx(ctx, probeEvery) {
				break
			}
			p0 := time.Now()
			ld.mu.Lock()
			ld.sent++
			ld.mu.Unlock()
			if err := probe(c, r, fmt.Sprintf("probe-%d", seq)); err != nil {
				if ctx.Err() != nil {
					break
				}
				ld.fail(failure{at: p0, kind: "long-probe", dst: dst, pod: pod, err: err})
				break
			}
		}
		_ = c.Close()
	}
}

func (ld *load) open(ctx context.Context, dst string) (net.Conn, *bufio.Reader, string, error) {
	dctx, cancel := context.WithTimeout(ctx, reqTimeout)
	defer cancel()
	c, err := ld.dial(dctx, "tcp", dst)
	if err != nil {
		return nil, nil, "", err
	}
	r := bufio.NewReader(c)
	_ = c.SetDeadline(time.Now().Add(reqTimeout))
	line, err := r.ReadString('\n')
	if err != nil {
		_ = c.Close()
		return nil, nil, "", fmt.Errorf("greeting: %w", err)
	}
	pod := ""
	if i := strings.Index(line, `"pod":"`); i >= 0 {
		pod = line[i+7:]
		pod = pod[:strings.IndexByte(pod, '"')]
	}
	return c, r, pod, nil
}

// probe sends a line and expects it back within reqTimeout.
func probe(c net.Conn, r *bufio.Reader, msg string) error {
	_ = c.SetDeadline(time.Now().Add(reqTimeout))
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		return err
	}
	got, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(got) != msg {
		return fmt.Errorf("echoed %q, want %q", got, msg)
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// loadResult is what a stopped load saw.
type loadResult struct {
	dur      time.Duration
	sent     int
	failures []failure
	okShort  []time.Time
	p99, max time.Duration
	reopens  int
}

// stop ends the load and waits for its requests (bounded by reqTimeout).
func (ld *load) stop() loadResult {
	ld.cancel()
	ld.wg.Wait()
	ld.mu.Lock()
	defer ld.mu.Unlock()
	res := loadResult{dur: time.Since(ld.start), sent: ld.sent, failures: slices.Clone(ld.failures),
		okShort: slices.Clone(ld.okShort), reopens: ld.reopens}
	slices.SortFunc(res.failures, func(a, b failure) int { return a.at.Compare(b.at) })
	lat := slices.Clone(ld.latency)
	slices.Sort(lat)
	if len(lat) > 0 {
		res.p99 = lat[len(lat)*99/100]
		res.max = lat[len(lat)-1]
	}
	return res
}

// servedRate is the answered short requests a second that started in
// [from, to).
func (r loadResult) servedRate(from, to time.Time) float64 {
	n := 0
	for _, t := range r.okShort {
		if !t.Before(from) && t.Before(to) {
			n++
		}
	}
	return float64(n) / to.Sub(from).Seconds()
}

// window is the span from the first to the last failure start, zero when
// there was at most one.
func (r loadResult) window() time.Duration {
	if len(r.failures) < 2 {
		return 0
	}
	return r.failures[len(r.failures)-1].at.Sub(r.failures[0].at)
}

// count returns the failures matching keep.
func (r loadResult) count(keep func(failure) bool) int {
	n := 0
	for _, f := range r.failures {
		if keep(f) {
			n++
		}
	}
	return n
}

func (r loadResult) summary() string {
	return fmt.Sprintf("%d requests in %s (%d long-lived connections probed every %s, %d new connections/s, IPv4 and IPv6), %d failed; slowest answer %s, p99 %s",
		r.sent, r.dur.Round(100*time.Millisecond), longConns, probeEvery, shortRate, len(r.failures),
		r.max.Round(time.Millisecond), r.p99.Round(time.Millisecond))
}

// firstFailures lists up to n failures, for logs.
func (r loadResult) firstFailures(n int) string {
	var s []string
	for i, f := range r.failures {
		if i == n {
			s = append(s, fmt.Sprintf("... and %d more", len(r.failures)-n))
			break
		}
		s = append(s, f.String())
	}
	return strings.Join(s, "\n")
}
