package controller

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/zerohop/zerohop/config/v1alpha1"
)

func speaker(node string, ready bool, sessions map[string]string, mut ...func(*v1alpha1.SpeakerStatusStatus)) speakerView {
	st := &v1alpha1.SpeakerStatusStatus{Node: node}
	for p, s := range sessions {
		st.Sessions = append(st.Sessions, v1alpha1.BGPSessionStatus{Peer: p, State: s})
	}
	for _, m := range mut {
		m(st)
	}
	return speakerView{node: node, ready: ready, st: st}
}

func announces(svc string, prefixes []string, peers ...string) func(*v1alpha1.SpeakerStatusStatus) {
	return func(st *v1alpha1.SpeakerStatusStatus) {
		st.Announcements = append(st.Announcements, v1alpha1.ServiceAnnouncement{Service: svc, Prefixes: prefixes, Peers: peers})
	}
}

func owns(svc, ip string, ifaces ...string) func(*v1alpha1.SpeakerStatusStatus) {
	return func(st *v1alpha1.SpeakerStatusStatus) {
		st.L2 = append(st.L2, v1alpha1.L2Ownership{IP: ip, Service: svc, Interfaces: ifaces})
	}
}

func programs(programmed []string, failed ...v1alpha1.DatapathFailure) func(*v1alpha1.SpeakerStatusStatus) {
	return func(st *v1alpha1.SpeakerStatusStatus) {
		st.Datapath = &v1alpha1.DatapathStatus{Programmed: programmed, Failed: failed}
	}
}

var up = map[string]string{"r4": "established", "r6": "established"}

func TestAnnouncedCondition(t *testing.T) {
	const svc = "default/web"
	v4, v6 := netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("2001:db8::1")
	both := []string{"203.0.113.1/32", "2001:db8::1/128"}
	tests := []struct {
		name     string
		ips      []netip.Addr
		speakers []speakerView
		status   metav1.ConditionStatus
		reason   string
		message  string
		counts   map[netip.Addr]int
	}{
		{
			name: "two nodes, both families, both peers",
			ips:  []netip.Addr{v4, v6},
			speakers: []speakerView{
				speaker("n2", true, up, announces(svc, both, "r4", "r6")),
				speaker("n1", true, up, announces(svc, both, "r4", "r6")),
				speaker("n3", true, up),
			},
			status: metav1.ConditionTrue, reason: ReasonAnnounced,
			message: "203.0.113.1, 2001:db8::1 by n1 (BGP to r4, r6), n2 (BGP to r4, r6)",
			counts:  map[netip.Addr]int{v4: 2, v6: 2},
		},
		{
			name: "a node whose sessions are down is named but not counted",
			ips:  []netip.Addr{v4},
			speakers: []speakerView{
				speaker("n1", true, map[string]string{"r4": "active", "r6": "active"}, announces(svc, both, "r4", "r6")),
				speaker("n2", true, map[string]string{"r4": "established", "r6": "idle"}, announces(svc, both, "r4", "r6")),
			},
			status: metav1.ConditionTrue, reason: ReasonAnnounced,
			message: "203.0.113.1 by n2 (BGP to r4; not to r6 (idle)); sent but not accepted from n1 (no established session: r4 (active), r6 (active))",
			counts:  map[netip.Addr]int{v4: 1},
		},
		{
			name: "no session anywhere",
			ips:  []netip.Addr{v4},
			speakers: []speakerView{
				speaker("n1", true, map[string]string{"r4": "connect"}, announces(svc, both, "r4")),
			},
			status: metav1.ConditionFalse, reason: ReasonNotAnnounced,
			message: "no ready node announces 203.0.113.1; 203.0.113.1: sent but not accepted from n1 (no established session: r4 (connect))",
			counts:  map[netip.Addr]int{v4: 0},
		},
		{
			name: "a node that is not ready is not believed",
			ips:  []netip.Addr{v4},
			speakers: []speakerView{
				speaker("n1", false, up, announces(svc, both, "r4")),
			},
			status: metav1.ConditionFalse, reason: ReasonNotAnnounced,
			message: "no ready node announces 203.0.113.1",
			counts:  map[netip.Addr]int{v4: 0},
		},
		{
			name: "one family missing",
			ips:  []netip.Addr{v4, v6},
			speakers: []speakerView{
				speaker("n1", true, up, announces(svc, []string{"203.0.113.0/24"}, "r4")),
			},
			status: metav1.ConditionFalse, reason: ReasonPartlyAnnounced,
			message: "no ready node announces 2001:db8::1; 203.0.113.1 by n1 (BGP to r4)",
			counts:  map[netip.Addr]int{v4: 1, v6: 0},
		},
		{
			name: "L2 owner",
			ips:  []netip.Addr{v4},
			speakers: []speakerView{
				speaker("n1", true, nil, owns(svc, "203.0.113.1", "eth0")),
				speaker("n2", true, nil, owns("other/svc", "203.0.113.9", "eth0")),
			},
			status: metav1.ConditionTrue, reason: ReasonAnnounced,
			message: "203.0.113.1 by n1 (L2 on eth0)",
			counts:  map[netip.Addr]int{v4: 1},
		},
		{
			name:     "no speaker at all",
			ips:      []netip.Addr{v4},
			speakers: nil,
			status:   metav1.ConditionFalse, reason: ReasonNotAnnounced,
			message: "no ready node announces 203.0.113.1",
			counts:  map[netip.Addr]int{v4: 0},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, counts := serviceView{name: svc, ips: tc.ips, speakers: tc.speakers}.announcedCondition()
			if c.Type != ConditionAnnounced || c.Status != tc.status || c.Reason != tc.reason || c.Message != tc.message {
				t.Fatalf("got %s %s %s %q\nwant %s %s %q", c.Type, c.Status, c.Reason, c.Message, tc.status, tc.reason, tc.message)
			}
			if len(counts) != len(tc.counts) {
				t.Fatalf("counts %v, want %v", counts, tc.counts)
			}
			for ip, n := range tc.counts {
				if counts[ip] != n {
					t.Fatalf("counts %v, want %v", counts, tc.counts)
				}
			}
		})
	}
}

func TestDatapathCondition(t *testing.T) {
	const svc = "default/web"
	tests := []struct {
		name     string
		speakers []speakerView
		applies  bool
		status   metav1.ConditionStatus
		message  string
	}{
		{
			name:     "no datapath anywhere",
			speakers: []speakerView{speaker("n1", true, nil)},
		},
		{
			name: "all ready nodes",
			speakers: []speakerView{
				speaker("n1", true, nil, programs([]string{svc})),
				speaker("n2", true, nil, programs([]string{"a/b", svc})),
				speaker("n3", false, nil, programs(nil)), // not ready: not counted
			},
			applies: true, status: metav1.ConditionTrue, message: "programmed on 2 of 2 nodes",
		},
		{
			name: "one failed, one not there yet",
			speakers: []speakerView{
				speaker("n1", true, nil, programs([]string{svc})),
				speaker("n3", true, nil, programs(nil, v1alpha1.DatapathFailure{Service: svc, Reason: "datapath: map full"})),
				speaker("n2", true, nil, programs(nil)),
			},
			applies: true, status: metav1.ConditionFalse,
			message: "programmed on 1 of 3 nodes; n2: not yet; n3: datapath: map full",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, ok := serviceView{name: svc, ips: []netip.Addr{netip.MustParseAddr("203.0.113.1")}, speakers: tc.speakers}.datapathCondition()
			if ok != tc.applies {
				t.Fatalf("applies %v, want %v (%+v)", ok, tc.applies, c)
			}
			if ok && (c.Status != tc.status || c.Message != tc.message) {
				t.Fatalf("got %s %q, want %s %q", c.Status, c.Message, tc.status, tc.message)
			}
		})
	}
}

func TestAssignedCondition(t *testing.T) {
	ips := []netip.Addr{netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("2001:db8::1")}
	c := assignedCondition(ips, []string{"blue", ""}, true, nil)
	if c.Status != metav1.ConditionTrue || c.Message != "203.0.113.1 from pool blue, 2001:db8::1 (in no pool)" {
		t.Fatalf("%+v", c)
	}
	c = assignedCondition(nil, nil, false, &ipamNote{reason: "PoolExhausted", message: "pool blue exhausted"})
	if c.Status != metav1.ConditionFalse || c.Reason != "PoolExhausted" || c.Message != "pool blue exhausted" {
		t.Fatalf("%+v", c)
	}
	c = assignedCondition(ips[:1], []string{"blue"}, false, &ipamNote{reason: "RequireDualStackFailed", message: "no IPv6 pool"})
	if c.Status != metav1.ConditionTrue || !strings.HasSuffix(c.Message, "; no IPv6 pool") {
		t.Fatalf("%+v", c)
	}
}

// TestConditionRateLimit drives the limiter on a fake clock: a burst of
// three per Service, then one per interval, and the global bucket across
// Services.
func TestConditionRateLimit(t *testing.T) {
	now := time.Unix(1000, 0)
	interval := 5 * time.Second
	r := &conditionsReconciler{
		perSvc: map[string]*bucket{},
		newBucket: func() *bucket {
			return &bucket{rate: 1 / interval.Seconds(), burst: conditionBurst, tokens: conditionBurst}
		},
		global: &bucket{rate: 0.1, burst: 4, tokens: 4},
		now:    func() time.Time { return now },
	}
	for i := range conditionBurst {
		if w := r.admit("a/x"); w != 0 {
			t.Fatalf("write %d of the burst held back %v", i+1, w)
		}
	}
	w := r.admit("a/x")
	if w <= 0 || w > interval {
		t.Fatalf("fourth write at once: wait %v, want (0, %v]", w, interval)
	}
	now = now.Add(w)
	if w := r.admit("a/x"); w != 0 {
		t.Fatalf("after waiting, still held back %v", w)
	}
	if w := r.admit("a/x"); w == 0 {
		t.Fatal("sixth write admitted right after the fifth")
	}
	// Global: 4 tokens and 0.5 refilled, 4 used by a/x; another Service
	// waits for it.
	w = r.admit("b/y")
	if w <= 0 {
		t.Fatalf("global bucket empty, but b/y admitted")
	}
	now = now.Add(w)
	if w := r.admit("b/y"); w != 0 {
		t.Fatalf("global bucket refilled, b/y held back %v", w)
	}
	// Over a minute of constant flapping a Service is written at most
	// burst + 60s/interval times.
	r.global = &bucket{rate: 1000, burst: 1000, tokens: 1000}
	start, writes := now, 0
	for now.Sub(start) < time.Minute {
		if r.admit("c/z") == 0 {
			writes++
		}
		now = now.Add(100 * time.Millisecond)
	}
	if max := conditionBurst + int(time.Minute/interval); writes > max || writes < max-1 {
		t.Fatalf("%d writes in a minute of flapping, want about %d", writes, max)
	}
}

// TestAffected: a SpeakerStatus update enqueues the Services whose part
// of it changed, and all the node announces when a session changed.
func TestAffected(t *testing.T) {
	base := func() *v1alpha1.SpeakerStatusStatus {
		return &v1alpha1.SpeakerStatusStatus{
			Sessions: []v1alpha1.BGPSessionStatus{{Peer: "r1", State: "established"}},
			Announcements: []v1alpha1.ServiceAnnouncement{
				{Service: "a/one", Prefixes: []string{"192.0.2.1/32"}, Peers: []string{"r1"}},
				{Service: "a/two", Prefixes: []string{"192.0.2.2/32"}, Peers: []string{"r1"}},
			},
			L2:       []v1alpha1.L2Ownership{{IP: "192.0.2.9", Service: "a/l2", Interfaces: []string{"eth0"}}},
			Datapath: &v1alpha1.DatapathStatus{Programmed: []string{"a/one", "a/three", "a/two"}},
		}
	}
	tests := []struct {
		name string
		mut  func(*v1alpha1.SpeakerStatusStatus)
		want []string
	}{
		{"nothing", func(*v1alpha1.SpeakerStatusStatus) {}, nil},
		{"a session", func(s *v1alpha1.SpeakerStatusStatus) { s.Sessions[0].State = "active" }, []string{"a/one", "a/two"}},
		{"one announcement", func(s *v1alpha1.SpeakerStatusStatus) { s.Announcements = s.Announcements[:1] }, []string{"a/two"}},
		{"an L2 owner", func(s *v1alpha1.SpeakerStatusStatus) { s.L2 = nil }, []string{"a/l2"}},
		{"the datapath of one", func(s *v1alpha1.SpeakerStatusStatus) {
			s.Datapath = &v1alpha1.DatapathStatus{Programmed: []string{"a/one", "a/two"},
				Failed: []v1alpha1.DatapathFailure{{Service: "a/three", Reason: "map full"}}}
		}, []string{"a/three"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := base()
			tc.mut(n)
			got := slices.Sorted(maps.Keys(affected(base(), n)))
			if !slices.Equal(got, tc.want) {
				t.Fatalf("affected %v, want %v", got, tc.want)
			}
		})
	}
}
