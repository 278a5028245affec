package bench

import (
	"context"
	"time"
)

// Settling before a timed run: the lab's own processes outside the
// node (the API server, etcd, the controllers, FRR) must be quiet. A
// fresh speaker lists every Service and EndpointSlice at its start, and
// the API server collects the garbage of that list seconds later: at
// 10,000 Services its GC took a third of the machine for 1.5 s of
// zerohop's timed run, which no other contender paid and which a speaker
// that has been running for days never causes.
const (
	settleWindow = 500 * time.Millisecond
	settleQuiet  = 0.10 // of one CPU, in every window (idle, the lab uses about 0.03)
	// The API server's GC after a large write or list starts a second
	// or two after the requests end, so one quiet window says little.
	settleQuietFor = 2 * time.Second
	settleMax      = 45 * time.Second
)

// settle waits until the lab's processes have used less than settleQuiet
// of a CPU in every window for settleQuietFor, or settleMax has passed.
// It returns how long it waited and whether the lab was quiet by then.
func (t *Topology) settle(ctx context.Context) (time.Duration, bool) {
	start := time.Now()
	used := func() float64 {
		var s float64
		for _, p := range t.Lab.Procs() {
			if v, err := pidCPU(p.PID); err == nil {
				s += v
			}
		}
		return s
	}
	quiet := time.Duration(0)
	for time.Since(start) < settleMax {
		before := used()
		select {
		case <-ctx.Done():
			return time.Since(start), false
		case <-time.After(settleWindow):
		}
		if used()-before < settleQuiet*settleWindow.Seconds() {
			quiet += settleWindow
		} else {
			quiet = 0
		}
		if quiet >= settleQuietFor {
			return time.Since(start), true
		}
	}
	return time.Since(start), false
}
