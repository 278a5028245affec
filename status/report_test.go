package status

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/zerohop/zerohop/bpf"
	"github.com/zerohop/zerohop/config/v1alpha1"
)

var now = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func snapshot() *bpf.Snapshot {
	vip := netip.MustParseAddr("203.0.113.1")
	be := func(a string, f bpf.BackendFlags, flows uint64) bpf.BackendSnapshot {
		return bpf.BackendSnapshot{Backend: bpf.Backend{Addr: netip.MustParseAddr(a), Port: 9000, Flags: f},
			Counters: bpf.Counters{Packets: flows * 5, Bytes: flows * 300, Flows: flows}}
	}
	return &bpf.Snapshot{
		Flows: 7, Attached: []string{"eth0"}, Events: bpf.Events{Encap: 3},
		Delivery: bpf.Delivery{Peer: 40, PeerTC: 40, Stack: 2}, PodLinks: 3,
		Services: []bpf.ServiceSnapshot{{
			Key:          bpf.ServiceKey{Addr: vip, Port: 9000, Proto: bpf.TCP},
			Flags:        bpf.ServiceLocal | bpf.ServiceSourceRanges,
			SourceRanges: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")},
			Counters:     bpf.Counters{Packets: 50, Bytes: 3000, Flows: 10, Drops: 2, Denied: 4, CTMiss: 1, Rejects: 3},
			Backends: []bpf.BackendSnapshot{
				be("100.64.1.3", bpf.BackendLocal|bpf.BackendTerminating, 4),
				be("100.64.1.2", bpf.BackendLocal, 6),
			},
		}},
	}
}

func api() *API {
	since := metav1.NewTime(now.Add(-90 * time.Second))
	ep := func(addr, pod, node string, ready, terminating bool) discoveryv1.Endpoint {
		return discoveryv1.Endpoint{Addresses: []string{addr}, NodeName: ptr.To(node),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready), Terminating: ptr.To(terminating)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Name: pod}}
	}
	return &API{
		Pools: []v1alpha1.IPAddressPool{{ObjectMeta: metav1.ObjectMeta{Name: "lab"},
			Spec: v1alpha1.IPAddressPoolSpec{Addresses: []v1alpha1.Address{"203.0.113.0/26"}}}},
		Services: []corev1.Service{{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer,
				ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
				Ports:                 []corev1.ServicePort{{Name: "tcp", Port: 9000, Protocol: corev1.ProtocolTCP}}},
			Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "203.0.113.1"}}},
				Conditions: []metav1.Condition{
					{Type: "zerohop.io/Announced", Status: metav1.ConditionTrue, Reason: "Announced",
						Message: "203.0.113.1 by node1 (BGP to r4, r6)", LastTransitionTime: metav1.NewTime(now.Add(-time.Minute))},
					{Type: "example.com/Other", Status: metav1.ConditionTrue, Reason: "NotOurs"},
				}},
		}, {
			// Not a LoadBalancer: ignored.
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "plain"},
			Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP},
		}},
		EndpointSlices: []discoveryv1.EndpointSlice{{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: "web-x", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("tcp"), Port: ptr.To[int32](9000), Protocol: ptr.To(corev1.ProtocolTCP)}},
			Endpoints: []discoveryv1.Endpoint{
				ep("100.64.1.2", "web-1", "node1", true, false),
				ep("100.64.1.3", "web-old", "node1", false, true),
				ep("100.64.2.2", "web-2", "node2", true, false),
			},
		}, {
			// The other family's slice does not join the IPv4 VIP.
			ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: "web-y", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			AddressType: discoveryv1.AddressTypeIPv6,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("tcp"), Port: ptr.To[int32](9000)}},
			Endpoints:   []discoveryv1.Endpoint{ep("2001:db8:64:1::2", "web-1", "node1", true, false)},
		}},
		Speakers: []v1alpha1.SpeakerStatus{{
			ObjectMeta: metav1.ObjectMeta{Name: "node1"},
			Status: v1alpha1.SpeakerStatusStatus{Node: "node1",
				Sessions: []v1alpha1.BGPSessionStatus{
					{Peer: "r4", Address: "198.51.100.1", State: "established", Since: &since},
					{Peer: "r6", Address: "2001:db8::1", State: "active", Since: &since},
				},
				Announcements: []v1alpha1.ServiceAnnouncement{{Service: "default/web", Prefixes: []string{"203.0.113.1/32"}, Peers: []string{"r4", "r6"}}},
			},
		}, {
			ObjectMeta: metav1.ObjectMeta{Name: "node2"},
			Status: v1alpha1.SpeakerStatusStatus{Node: "node2",
				Sessions:      []v1alpha1.BGPSessionStatus{{Peer: "r4", Address: "198.51.100.1", State: "established", Since: &since}},
				Announcements: []v1alpha1.ServiceAnnouncement{{Service: "default/web", Prefixes: []string{"203.0.113.1/32"}, Peers: []string{"r4"}}},
				L2:            []v1alpha1.L2Ownership{{IP: "203.0.113.9", Service: "default/gone", Interfaces: []string{"eth0"}}},
				Errors:        []string{"bgppeer r9: bfdProfile x not found"},
			},
		}},
	}
}

func TestBuild(t *testing.T) {
	tests := []struct {
		name  string
		in    Input
		check func(t *testing.T, r Report)
	}{{
		name: "datapath only",
		in:   Input{Datapath: snapshot(), PinRoot: "/sys/fs/bpf/zerohop", Now: now},
		check: func(t *testing.T, r Report) {
			if r.Sources != (Sources{Datapath: "/sys/fs/bpf/zerohop"}) {
				t.Errorf("sources %+v", r.Sources)
			}
			if r.Datapath.ConntrackEntries != 7 || r.Datapath.Events["encap"] != 3 || !reflect.DeepEqual(r.Datapath.Attached, []string{"eth0"}) ||
				r.Datapath.Delivery["peerTC"] != 40 || r.Datapath.Delivery["stack"] != 2 || r.Datapath.PodLinks != 3 {
				t.Errorf("datapath %+v", r.Datapath)
			}
			if len(r.VIPs) != 1 {
				t.Fatalf("vips %+v", r.VIPs)
			}
			v := r.VIPs[0]
			if v.Address != "203.0.113.1" || v.Service != "" || v.Mode != "" || v.TrafficPolicy != "Local" {
				t.Errorf("vip %+v", v)
			}
			p := v.Ports[0]
			want := Port{Port: 9000, Protocol: "tcp", InDatapath: true, SourceRanges: []string{"192.0.2.0/24"},
				Counters: Counters{Packets: 50, Bytes: 3000, Flows: 10, ConntrackMisses: 1}, Drops: Drops{NoBackend: 2, SourceRange: 4, Rejected: 3},
				Backends: []Backend{
					{Address: "100.64.1.2:9000", State: "active", InDatapath: true, Counters: Counters{Packets: 30, Bytes: 1800, Flows: 6}},
					{Address: "100.64.1.3:9000", State: "terminating", InDatapath: true, Counters: Counters{Packets: 20, Bytes: 1200, Flows: 4}},
				}}
			if !reflect.DeepEqual(p, want) {
				t.Errorf("port\n%+v\nwant\n%+v", p, want)
			}
		},
	}, {
		name: "datapath joined with the API on node1",
		in:   Input{Datapath: snapshot(), PinRoot: "/p", API: api(), Node: "node1", Now: now},
		check: func(t *testing.T, r Report) {
			if !r.Sources.API || r.Sources.Datapath != "/p" {
				t.Errorf("sources %+v", r.Sources)
			}
			if len(r.VIPs) != 2 { // web's VIP and the L2-owned address no Service holds
				t.Fatalf("vips %+v", r.VIPs)
			}
			v := r.VIPs[0]
			if v.Service != "default/web" || v.Pool != "lab" || v.Mode != "BGP" || v.TrafficPolicy != "Local" {
				t.Errorf("vip %+v", v)
			}
			wantBy := []Announcer{{Node: "node1", Peers: []string{"r4", "r6"}}, {Node: "node2", Peers: []string{"r4"}}}
			if !reflect.DeepEqual(v.AnnouncedBy, wantBy) {
				t.Errorf("announced by %+v, want %+v", v.AnnouncedBy, wantBy)
			}
			var got []string
			for _, b := range v.Ports[0].Backends {
				got = append(got, strings.Join([]string{b.Address, b.Pod, b.Node, b.State, map[bool]string{true: "dp", false: "api"}[b.InDatapath]}, " "))
			}
			want := []string{
				"100.64.1.2:9000 web-1 node1 ready dp",
				"100.64.1.3:9000 web-old node1 terminating dp",
				"100.64.2.2:9000 web-2 node2 ready api",
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("backends\n%v\nwant\n%v", got, want)
			}
			if v.Ports[0].Backends[0].Flows != 6 {
				t.Errorf("web-1 flows %d, want 6 from the datapath", v.Ports[0].Backends[0].Flows)
			}
			wantS := []Session{
				{Node: "node1", Peer: "r4", Address: "198.51.100.1", State: "established", Since: "2026-11-27T11:58:30Z", UptimeSeconds: 90, PrefixesSent: 1},
				{Node: "node1", Peer: "r6", Address: "2001:db8::1", State: "active", Since: "2026-11-27T11:58:30Z", PrefixesSent: 1},
			}
			if !reflect.DeepEqual(r.Sessions, wantS) {
				t.Errorf("sessions\n%+v\nwant\n%+v", r.Sessions, wantS)
			}
			if len(r.L2) != 0 {
				t.Errorf("l2 %+v: node2's ownership shown on node1", r.L2)
			}
			gone := r.VIPs[1]
			if gone.Address != "203.0.113.9" || gone.Mode != "L2" || gone.Service != "" || gone.Pool != "lab" || len(gone.AnnouncedBy) != 1 {
				t.Errorf("stale L2 vip %+v", gone)
			}
		},
	}, {
		name: "API only, all nodes",
		in:   Input{API: api(), Now: now},
		check: func(t *testing.T, r Report) {
			if r.Datapath != nil || r.Sources.Datapath != "" {
				t.Errorf("datapath %+v from nowhere", r.Datapath)
			}
			if len(r.Sessions) != 3 || len(r.L2) != 1 || r.L2[0].Node != "node2" {
				t.Errorf("sessions %+v l2 %+v", r.Sessions, r.L2)
			}
			for _, b := range r.VIPs[0].Ports[0].Backends {
				if b.InDatapath || b.Flows != 0 {
					t.Errorf("backend %+v: counters without a datapath", b)
				}
			}
			if !strings.Contains(strings.Join(r.Notes, "\n"), "speaker node2 reports: bgppeer r9") {
				t.Errorf("notes %q: want node2's configuration error", r.Notes)
			}
		},
	}, {
		name: "a node with no SpeakerStatus is said so",
		in:   Input{API: api(), Node: "node9", Now: now},
		check: func(t *testing.T, r Report) {
			if len(r.Sessions) != 0 {
				t.Errorf("sessions %+v", r.Sessions)
			}
			if !strings.Contains(strings.Join(r.Notes, "\n"), "no SpeakerStatus node9") {
				t.Errorf("notes %q", r.Notes)
			}
		},
	}, {
		name: "nothing at all",
		in:   Input{Now: now},
		check: func(t *testing.T, r Report) {
			b, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			// Lists are [] not null, so scripts can iterate blindly.
			if want := `{"sources":{"api":false},"vips":[],"sessions":[],"l2":[]}`; string(b) != want {
				t.Errorf("json %s, want %s", b, want)
			}
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.check(t, Build(tc.in)) })
	}
}

// TestConditions: the Service's zerohop.io conditions, and only those,
// are carried to its VIP.
func TestConditions(t *testing.T) {
	r := Build(Input{API: api(), Now: now})
	if len(r.VIPs) != 2 || r.VIPs[1].Conditions != nil {
		t.Fatalf("vips %+v: want the Service's and an L2 leftover without conditions", r.VIPs)
	}
	want := []Condition{{Service: "default/web", Type: "zerohop.io/Announced", Status: "True", Reason: "Announced",
		Message: "203.0.113.1 by node1 (BGP to r4, r6)", Since: now.Add(-time.Minute).UTC().Format(time.RFC3339)}}
	if !reflect.DeepEqual(r.VIPs[0].Conditions, want) {
		t.Fatalf("conditions %+v\nwant %+v", r.VIPs[0].Conditions, want)
	}
}

func TestWriteText(t *testing.T) {
	var b bytes.Buffer
	if err := Build(Input{Datapath: snapshot(), PinRoot: "/p", API: api(), Node: "node1", Now: now}).WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"VIP 203.0.113.1", "service default/web", "pool lab", "mode BGP/Local",
		"announced by node1", "BGP to r4,r6",
		"drops: no-backend 2, source-range 4, rejected 3", "source ranges", "192.0.2.0/24",
		"web-1", "web-2", "terminating",
		"BGP SESSIONS", "1m30s", "L2 OWNERSHIP", "conntrack entries in use: 7",
		"zerohop.io/Announced True (Announced): 203.0.113.1 by node1 (BGP to r4, r6)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text output lacks %q:\n%s", want, out)
		}
	}
}

func TestFormatUptime(t *testing.T) {
	for s, want := range map[int64]string{0: "0s", 59: "59s", 90: "1m30s", 3700: "1h1m", 90000: "1d1h"} {
		if got := FormatUptime(s); got != want {
			t.Errorf("FormatUptime(%d) = %q, want %q", s, got, want)
		}
	}
}
