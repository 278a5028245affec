package speaker

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/zerohop/zerohop/speaker/bgp"
)

// Announced/Withdrawn Events (BGP) tell a Service's owner, in `kubectl describe
// service`, which nodes attract its traffic. They are news, not state
// (SpeakerStatus is the state), so they are rate-limited twice: at most
// one per Service per prefixEventInterval, so a flapping Service costs
// little, and a node-wide token bucket, so that a speaker starting with
// 10k Services, or a pool edit that moves them all, writes a bounded
// trickle instead of 10k Events at once.
const (
	prefixEventInterval = 10 * time.Second
	prefixEventRate     = 10 // Events per second, node-wide
	prefixEventBurst    = 50
)

// eventLimiter admits an Event for a key when the key had none in the last
// interval and the shared bucket holds a token. Pure: the caller passes the
// time, so it is tested without sleeping.
type eventLimiter struct {
	interval    time.Duration
	rate, burst float64

	mu     sync.Mutex
	tokens float64
	filled time.Time            // when tokens was last topped up
	last   map[string]time.Time // key -> time of its last admitted Event
}

func newEventLimiter(interval time.Duration, rate, burst float64) *eventLimiter {
	return &eventLimiter{interval: interval, rate: rate, burst: burst, tokens: burst, last: map[string]time.Time{}}
}

// allow reports whether an Event for key may go out at now, and if so
// counts it.
func (l *eventLimiter) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.filled.IsZero() && now.After(l.filled) {
		l.tokens = min(l.burst, l.tokens+now.Sub(l.filled).Seconds()*l.rate)
	}
	if l.filled.IsZero() || now.After(l.filled) {
		l.filled = now
	}
	if t, ok := l.last[key]; ok && now.Sub(t) < l.interval {
		return false
	}
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	l.last[key] = now
	// Forget keys whose interval is over, now and then, so the map stays
	// the size of the recent churn rather than of every Service ever seen.
	if len(l.last) > 1024 && len(l.last)%256 == 0 {
		for k, t := range l.last {
			if now.Sub(t) >= l.interval {
				delete(l.last, k)
			}
		}
	}
	return true
}

// svcPrefixes is what this node's plan sends for one Service.
type svcPrefixes struct {
	prefixes []string // sorted
	peers    []string // sorted
}

// planByService folds a plan into per-Service announcements.
func planByService(plan bgp.Plan) map[string]svcPrefixes {
	pfx := map[string]map[string]bool{}
	peers := map[string]map[string]bool{}
	for _, pp := range plan.Peers {
		for _, p := range pp.Paths {
			for _, s := range p.Services {
				if pfx[s] == nil {
					pfx[s], peers[s] = map[string]bool{}, map[string]bool{}
				}
				pfx[s][p.Prefix.String()] = true
				peers[s][pp.Peer.Name] = true
			}
		}
	}
	out := make(map[string]svcPrefixes, len(pfx))
	for s := range pfx {
		out[s] = svcPrefixes{prefixes: slices.Sorted(maps.Keys(pfx[s])), peers: slices.Sorted(maps.Keys(peers[s]))}
	}
	return out
}

// prefixChange is one Event to record.
type prefixChange struct {
	service  string // namespace/name
	reason   string // "Announced" or "Withdrawn"
	prefixes []string
	peers    []string
}

// prefixChanges compares two plans: a Service whose set of prefixes
// gained members is Announced (naming the new ones), one that lost
// members is Withdrawn (naming the lost ones). A change of peers alone is
// not news for the Service's owner. Sorted by service, Withdrawn first.
func prefixChanges(prev, next map[string]svcPrefixes) []prefixChange {
	var out []prefixChange
	for _, s := range slices.Sorted(maps.Keys(prev)) {
		if lost := minus(prev[s].prefixes, next[s].prefixes); len(lost) > 0 {
			out = append(out, prefixChange{service: s, reason: "Withdrawn", prefixes: lost, peers: prev[s].peers})
		}
	}
	for _, s := range slices.Sorted(maps.Keys(next)) {
		if gained := minus(next[s].prefixes, prev[s].prefixes); len(gained) > 0 {
			out = append(out, prefixChange{service: s, reason: "Announced", prefixes: gained, peers: next[s].peers})
		}
	}
	slices.SortStableFunc(out, func(a, b prefixChange) int { return strings.Compare(a.service, b.service) })
	return out
}

// minus returns the members of a that are not in b, in a's order.
func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) { // a Service has one or two prefixes
			out = append(out, x)
		}
	}
	return out
}

// prefixEvents is the reconciler's memory of the last plan.
type prefixEvents struct {
	mu   sync.Mutex
	prev map[string]svcPrefixes
	lim  *eventLimiter
}

// bgpEvents records Announced/Withdrawn Events for what changed since the
// last plan, within the limits above; Events over the limits are counted
// in zerohop_speaker_events_suppressed_total and dropped.
func (r *reconciler) bgpEvents(plan bgp.Plan, svcs []corev1.Service) {
	e := &r.prefixEv
	next := planByService(plan)
	e.mu.Lock()
	if e.lim == nil {
		e.lim = newEventLimiter(prefixEventInterval, prefixEventRate, prefixEventBurst)
	}
	changes := prefixChanges(e.prev, next)
	e.prev = next
	e.mu.Unlock()
	if len(changes) == 0 {
		return
	}
	byName := make(map[string]*corev1.Service, len(svcs))
	for i := range svcs {
		byName[types.NamespacedName{Namespace: svcs[i].Namespace, Name: svcs[i].Name}.String()] = &svcs[i]
	}
	now := time.Now()
	for _, c := range changes {
		svc := byName[c.service]
		if svc == nil {
			// Deleted: nobody reads Events of a gone Service.
			continue
		}
		if !e.lim.allow(c.service, now) {
			eventsSuppressed.Inc()
			continue
		}
		verb := "announces"
		if c.reason == "Withdrawn" {
			verb = "withdrew"
		}
		r.rec.Eventf(svc, nil, corev1.EventTypeNormal, c.reason, "Announce",
			"node %s %s %s to %s", r.opts.NodeName, verb, strings.Join(c.prefixes, ","), strings.Join(c.peers, ","))
	}
}
