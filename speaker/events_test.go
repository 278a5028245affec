package speaker

import (
	"fmt"
	"net/netip"
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/speaker/bgp"
)

func TestEventLimiter(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	type call struct {
		key  string
		at   time.Duration
		want bool
	}
	tests := []struct {
		name  string
		rate  float64
		burst float64
		calls []call
	}{
		{"one per key per interval", 100, 100, []call{
			{"a", 0, true}, {"a", time.Second, false}, {"b", time.Second, true},
			{"a", 9999 * time.Millisecond, false}, {"a", 10 * time.Second, true}, {"b", 10 * time.Second, false},
		}},
		{"bucket empties then refills at rate", 1, 2, []call{
			{"a", 0, true}, {"b", 0, true}, {"c", 0, false},
			{"c", 500 * time.Millisecond, false}, {"c", time.Second, true}, {"d", time.Second, false},
			{"d", 3 * time.Second, true}, {"e", 3 * time.Second, true}, {"f", 3 * time.Second, false},
		}},
		{"refill is capped at burst", 10, 2, []call{
			{"a", 0, true}, {"b", time.Hour, true}, {"c", time.Hour, true}, {"d", time.Hour, false},
		}},
		{"a refused key does not use the interval", 1, 1, []call{
			{"a", 0, true}, {"b", 0, false}, {"b", time.Second, true},
		}},
		{"clock going backwards refills nothing", 1, 1, []call{
			{"a", 10 * time.Second, true}, {"b", 5 * time.Second, false}, {"b", 11 * time.Second, true},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newEventLimiter(10*time.Second, tc.rate, tc.burst)
			for i, c := range tc.calls {
				if got := l.allow(c.key, at(c.at)); got != c.want {
					t.Fatalf("call %d allow(%s, +%s) = %v, want %v", i, c.key, c.at, got, c.want)
				}
			}
		})
	}
}

// TestEventLimiterBoundsMassChange: 10k Services changing at once over
// one minute get burst + rate*60 Events, not 10k.
func TestEventLimiterBoundsMassChange(t *testing.T) {
	l := newEventLimiter(prefixEventInterval, prefixEventRate, prefixEventBurst)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	allowed := 0
	for i := range 10000 {
		// All of them within the minute, evenly.
		if l.allow(fmt.Sprintf("ns/svc-%d", i), t0.Add(time.Duration(i)*6*time.Millisecond)) {
			allowed++
		}
	}
	want := prefixEventBurst + prefixEventRate*60
	if allowed > want || allowed < want-1 {
		t.Fatalf("allowed %d Events for 10000 changes in 60s, want %d", allowed, want)
	}
	if len(l.last) > allowed {
		t.Fatalf("limiter remembers %d keys, admitted %d", len(l.last), allowed)
	}
}

func TestPrefixChanges(t *testing.T) {
	a := func(prefixes, peers []string) svcPrefixes {
		return svcPrefixes{prefixes: prefixes, peers: peers}
	}
	v4, v6 := "203.0.113.1/32", "2001:db8::1/128"
	peers := []string{"r1", "r2"}
	tests := []struct {
		name       string
		prev, next map[string]svcPrefixes
		want       []prefixChange
	}{
		{"nothing changes", map[string]svcPrefixes{"ns/a": a([]string{v4}, peers)},
			map[string]svcPrefixes{"ns/a": a([]string{v4}, peers)}, nil},
		{"new service", nil, map[string]svcPrefixes{"ns/a": a([]string{v4, v6}, peers)},
			[]prefixChange{{"ns/a", "Announced", []string{v4, v6}, peers}}},
		{"service gone", map[string]svcPrefixes{"ns/a": a([]string{v4}, peers)}, nil,
			[]prefixChange{{"ns/a", "Withdrawn", []string{v4}, peers}}},
		{"one family added, names only the new prefix", map[string]svcPrefixes{"ns/a": a([]string{v4}, peers)},
			map[string]svcPrefixes{"ns/a": a([]string{v4, v6}, peers)},
			[]prefixChange{{"ns/a", "Announced", []string{v6}, peers}}},
		{"prefix swapped: withdrawn first", map[string]svcPrefixes{"ns/a": a([]string{v4}, peers)},
			map[string]svcPrefixes{"ns/a": a([]string{v6}, []string{"r2"})},
			[]prefixChange{{"ns/a", "Withdrawn", []string{v4}, peers}, {"ns/a", "Announced", []string{v6}, []string{"r2"}}}},
		{"peers alone change: no event", map[string]svcPrefixes{"ns/a": a([]string{v4}, peers)},
			map[string]svcPrefixes{"ns/a": a([]string{v4}, []string{"r1"})}, nil},
		{"sorted by service", nil, map[string]svcPrefixes{"ns/b": a([]string{v6}, peers), "ns/a": a([]string{v4}, peers)},
			[]prefixChange{{"ns/a", "Announced", []string{v4}, peers}, {"ns/b", "Announced", []string{v6}, peers}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := prefixChanges(tc.prev, tc.next); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("prefixChanges =\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}

func TestPlanByService(t *testing.T) {
	peer := func(name string) *v1alpha1.BGPPeer {
		return &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name}}
	}
	p4, p6 := netip.MustParsePrefix("203.0.113.1/32"), netip.MustParsePrefix("2001:db8::1/128")
	plan := bgp.Plan{Peers: []bgp.PeerPlan{
		{Peer: peer("r1"), Paths: []bgp.Path{{Prefix: p4, Services: []string{"ns/a", "ns/b"}}, {Prefix: p6, Services: []string{"ns/a"}}}},
		{Peer: peer("r2"), Paths: []bgp.Path{{Prefix: p4, Services: []string{"ns/a", "ns/b"}}}},
	}}
	got := planByService(plan) // prefixes sorted as strings
	want := map[string]svcPrefixes{
		"ns/a": {prefixes: []string{p6.String(), p4.String()}, peers: []string{"r1", "r2"}},
		"ns/b": {prefixes: []string{p4.String()}, peers: []string{"r1", "r2"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("planByService = %+v, want %+v", got, want)
	}
}
