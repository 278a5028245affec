package speaker

import (
	"errors"
	"net/netip"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/zerohop/zerohop/bpf"
	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/speaker/datapath"
)

// TestNoteDatapathSlices: the slice generations reported are those of the
// programmed Services only, so that the readiness gate never believes a
// backend of a Service whose entries are not in place.
func TestNoteDatapathSlices(t *testing.T) {
	vipA, vipB := netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("203.0.113.2")
	desired := map[bpf.ServiceKey]datapath.Entry{
		{Addr: vipA, Port: 80, Proto: bpf.TCP}: {Service: "ns/a"},
		{Addr: vipB, Port: 80, Proto: bpf.TCP}: {Service: "ns/b"},
	}
	slice := func(name string, gen int64) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, Generation: gen}}
	}
	slicesOf := map[types.NamespacedName][]*discoveryv1.EndpointSlice{
		{Namespace: "ns", Name: "a"}: {slice("a-2", 7), slice("a-1", 3)},
		{Namespace: "ns", Name: "b"}: {slice("b-1", 5)},
	}
	tests := []struct {
		name    string
		blocked map[netip.Addr]bool
		want    []v1alpha1.SliceGeneration
	}{
		{"both programmed", nil, []v1alpha1.SliceGeneration{{Name: "ns/a-1", Generation: 3}, {Name: "ns/a-2", Generation: 7}, {Name: "ns/b-1", Generation: 5}}},
		{"b blocked", map[netip.Addr]bool{vipB: true}, []v1alpha1.SliceGeneration{{Name: "ns/a-1", Generation: 3}, {Name: "ns/a-2", Generation: 7}}},
		{"all blocked", map[netip.Addr]bool{vipA: true, vipB: true}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &reconciler{}
			var errs []error
			if len(tc.blocked) > 0 {
				errs = []error{errors.New("map full")}
			}
			r.noteDatapath(desired, tc.blocked, errs, slicesOf)
			got := r.dpStatus.EndpointSlices
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("slice %d: got %v, want %v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

// TestNoteDatapathUrgent: a status that shows a new endpoint waiting to be
// ready (not ready, not terminating) is urgent, since a readiness gate may
// be waiting for it; other slice changes are not.
func TestNoteDatapathUrgent(t *testing.T) {
	vip := netip.MustParseAddr("203.0.113.1")
	desired := map[bpf.ServiceKey]datapath.Entry{{Addr: vip, Port: 80, Proto: bpf.TCP}: {Service: "ns/a"}}
	yes, no := true, false
	ep := func(addr string, ready, terminating *bool) discoveryv1.Endpoint {
		return discoveryv1.Endpoint{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: ready, Terminating: terminating}}
	}
	steps := []struct {
		name   string
		eps    []discoveryv1.Endpoint
		urgent bool
	}{
		{"ready endpoints only", []discoveryv1.Endpoint{ep("10.0.0.1", &yes, nil)}, false},
		{"a new Pod, not ready yet", []discoveryv1.Endpoint{ep("10.0.0.1", &yes, nil), ep("10.0.0.2", &no, nil)}, true},
		{"still waiting: nothing new", []discoveryv1.Endpoint{ep("10.0.0.1", &yes, nil), ep("10.0.0.2", &no, &no)}, false},
		{"it turned ready", []discoveryv1.Endpoint{ep("10.0.0.1", &yes, nil), ep("10.0.0.2", &yes, nil)}, false},
		{"the old one terminating", []discoveryv1.Endpoint{ep("10.0.0.1", &no, &yes), ep("10.0.0.2", &yes, nil)}, false},
		{"another new Pod", []discoveryv1.Endpoint{ep("10.0.0.2", &yes, nil), ep("10.0.0.3", &no, nil)}, true},
	}
	r := &reconciler{}
	for i, s := range steps {
		sl := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a-1", Generation: int64(i + 1)}, Endpoints: s.eps}
		r.noteDatapath(desired, nil, nil, map[types.NamespacedName][]*discoveryv1.EndpointSlice{{Namespace: "ns", Name: "a"}: {sl}})
		if got := r.takeUrgent(); got != s.urgent {
			t.Errorf("%s: urgent %v, want %v", s.name, got, s.urgent)
		}
	}
}
