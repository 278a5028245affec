package controller

import (
	"net/netip"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/zerohop/zerohop/config/v1alpha1"
)

// TestGateVerdict covers the gate's decision for one Service: which nodes
// it waits for (attracting ones, the Pod's own in Local mode, every
// reporting node when nothing can be announced yet) and when a True gate
// turns False.
func TestGateVerdict(t *testing.T) {
	const svc, slice = "ns/web", "ns/web-abc"
	vip := netip.MustParseAddr("192.0.2.1")
	node := func(name string, ready, announces bool, gen int64) speakerView {
		st := &v1alpha1.SpeakerStatusStatus{Node: name, Sessions: []v1alpha1.BGPSessionStatus{{Peer: "r1", State: "established"}}}
		if announces {
			st.Announcements = []v1alpha1.ServiceAnnouncement{{Service: svc, Prefixes: []string{"192.0.2.1/32"}, Peers: []string{"r1"}}}
		}
		st.Datapath = &v1alpha1.DatapathStatus{}
		if gen > 0 {
			st.Datapath.EndpointSlices = []v1alpha1.SliceGeneration{{Name: slice, Generation: gen}}
		}
		return speakerView{node: name, ready: ready, st: st}
	}
	back := func(others, local bool, nodes ...speakerView) backing {
		return backing{view: serviceView{name: svc, ips: []netip.Addr{vip}, speakers: nodes}, slice: slice, generation: 5,
			othersReady: others, local: local, node: "n3"}
	}
	tests := []struct {
		name    string
		wasTrue bool
		back    backing
		status  metav1.ConditionStatus
		reason  string
	}{
		{"announced and programmed everywhere", false, back(true, false, node("n1", true, true, 5), node("n2", true, true, 6)), metav1.ConditionTrue, ReasonGateReachable},
		{"an announcing node behind", false, back(true, false, node("n1", true, true, 5), node("n2", true, true, 4)), metav1.ConditionFalse, ReasonGateNotProgrammed},
		{"a node not announcing may lag", false, back(true, false, node("n1", true, true, 5), node("n2", true, false, 0)), metav1.ConditionTrue, ReasonGateReachable},
		{"a node not ready may lag", false, back(true, false, node("n1", true, true, 5), node("n2", false, true, 0)), metav1.ConditionTrue, ReasonGateReachable},
		{"Local: the Pod's node must have it", false, back(true, true, node("n1", true, true, 5), node("n3", true, false, 0)), metav1.ConditionFalse, ReasonGateNotProgrammed},
		{"nothing announced, others ready", false, back(true, false, node("n1", true, false, 5)), metav1.ConditionFalse, ReasonGateNotAnnounced},
		{"nothing announced, none ready: every reporting node", false, back(false, false, node("n1", true, false, 5), node("n2", true, false, 0)), metav1.ConditionFalse, ReasonGateNotProgrammed},
		{"nothing announced, none ready, all programmed", false, back(false, false, node("n1", true, false, 5), node("n2", true, false, 5)), metav1.ConditionTrue, ReasonGateReachable},
		{"no speaker at all", false, back(false, false), metav1.ConditionFalse, ReasonGateNotAnnounced},
		{"True stays True when a node lags", true, back(true, false, node("n1", true, true, 5), node("n2", true, true, 4)), metav1.ConditionTrue, ReasonGateReachable},
		{"True turns False when nothing is announced", true, back(true, false, node("n1", true, false, 5)), metav1.ConditionFalse, ReasonGateNotAnnounced},
		{"not in a slice", false, backing{view: serviceView{name: svc, ips: []netip.Addr{vip}}}, metav1.ConditionFalse, ReasonGateNotInSlice},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &gateReconciler{pods: map[types.UID]*gateWait{}, first: map[types.UID]map[string]int64{}, now: time.Now}
			st, reason, msg := r.verdict("uid", tc.wasTrue, []backing{tc.back})
			if st != tc.status || reason != tc.reason {
				t.Fatalf("got %s %s (%s), want %s %s", st, reason, msg, tc.status, tc.reason)
			}
		})
	}
	// The generation first seen with the Pod is what a node must reach,
	// not the slice's later ones.
	r := &gateReconciler{pods: map[types.UID]*gateWait{}, first: map[types.UID]map[string]int64{}, now: time.Now}
	b := back(true, false, node("n1", true, true, 5))
	if st, _, _ := r.verdict("uid", false, []backing{b}); st != metav1.ConditionTrue {
		t.Fatalf("first look: %s", st)
	}
	b.generation = 9
	if st, reason, msg := r.verdict("uid", false, []backing{b}); st != metav1.ConditionTrue {
		t.Fatalf("after the slice churned to 9: %s %s %s", st, reason, msg)
	}
	if st, _, _ := r.verdict("other", false, []backing{b}); st != metav1.ConditionFalse {
		t.Fatalf("a Pod first seen at 9 passed on a node at 5")
	}
}
