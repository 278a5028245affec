package datapath

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/zerohop/zerohop/bpf"
	"github.com/zerohop/zerohop/config/v1alpha1"
)

func weighed(sl *discoveryv1.EndpointSlice, w string) *discoveryv1.EndpointSlice {
	sl.Annotations = map[string]string{v1alpha1.AnnotationEndpointWeight: w}
	return sl
}

func TestTranslateWeights(t *testing.T) {
	ps := slicePorts("http", 8080, corev1.ProtocolTCP)
	tests := []struct {
		name    string
		slices  []*discoveryv1.EndpointSlice
		want    []bpf.Backend
		wantErr string
	}{{
		name: "unweighted slices leave weights at 0 (counted as 1)",
		slices: []*discoveryv1.EndpointSlice{
			slice("a", "web", discoveryv1.AddressTypeIPv4, ps, readyEP("100.64.1.2", "n1")),
		},
		want: []bpf.Backend{lb("100.64.1.2", 8080, bpf.BackendLocal)},
	}, {
		name: "each endpoint takes its slice's weight",
		slices: []*discoveryv1.EndpointSlice{
			weighed(slice("a", "web", discoveryv1.AddressTypeIPv4, ps, readyEP("100.64.1.2", "n1"), readyEP("100.64.2.2", "n2")), "400"),
			weighed(slice("b", "web", discoveryv1.AddressTypeIPv4, ps, readyEP("100.64.1.3", "n1")), "200"),
		},
		want: []bpf.Backend{
			weight(lb("100.64.1.2", 8080, bpf.BackendLocal), 400),
			weight(lb("100.64.1.3", 8080, bpf.BackendLocal), 200),
			weight(rb("100.64.2.2", 8080, "198.51.100.2", bpf.BackendRemote), 400),
		},
	}, {
		name: "a weight that does not parse counts as 1 and is reported",
		slices: []*discoveryv1.EndpointSlice{
			weighed(slice("a", "web", discoveryv1.AddressTypeIPv4, ps, readyEP("100.64.1.2", "n1")), "0"),
		},
		want:    []bpf.Backend{lb("100.64.1.2", 8080, bpf.BackendLocal)},
		wantErr: `EndpointSlice a: zerohop.io/endpoint-weight "0" is not a whole number`,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, errs := Translate(thisNode, []*corev1.Service{svc("web", []string{"203.0.113.1"})}, tc.slices, nodes, nil)
			e, ok := got[key("203.0.113.1", 80, bpf.TCP)]
			if !ok {
				t.Fatalf("no entry: %v", got)
			}
			if !slices.Equal(e.Backends, tc.want) {
				t.Errorf("backends\n got %+v\nwant %+v", e.Backends, tc.want)
			}
			var msgs []string
			for _, err := range errs {
				msgs = append(msgs, err.Error())
			}
			if all := strings.Join(msgs, "; "); (tc.wantErr == "") != (all == "") || !strings.Contains(all, tc.wantErr) {
				t.Errorf("errors %q, want %q", all, tc.wantErr)
			}
		})
	}
	// A changed weight is a changed entry: Diff rewrites it.
	a, _ := Translate(thisNode, []*corev1.Service{svc("web", []string{"203.0.113.1"})}, []*discoveryv1.EndpointSlice{weighed(slice("a", "web", discoveryv1.AddressTypeIPv4, ps, readyEP("100.64.1.2", "n1")), "2")}, nodes, nil)
	b, _ := Translate(thisNode, []*corev1.Service{svc("web", []string{"203.0.113.1"})}, []*discoveryv1.EndpointSlice{weighed(slice("a", "web", discoveryv1.AddressTypeIPv4, ps, readyEP("100.64.1.2", "n1")), "3")}, nodes, nil)
	if ups, _ := Diff(a, b); len(ups) != 1 {
		t.Errorf("a weight change gave %d upserts, want 1", len(ups))
	}
}

func weight(b bpf.Backend, w uint32) bpf.Backend {
	b.Weight = w
	return b
}

func rejecting(sl *discoveryv1.EndpointSlice, w string) *discoveryv1.EndpointSlice {
	if sl.Annotations == nil {
		sl.Annotations = map[string]string{}
	}
	sl.Annotations[v1alpha1.AnnotationRejectWeight] = w
	return sl
}

// TestTranslateRejectWeight: a port's reject share is the sum of its
// slices' reject weights, of the VIP's family and serving that port; one
// that does not parse is left out and reported.
func TestTranslateRejectWeight(t *testing.T) {
	ps := slicePorts("http", 8080, corev1.ProtocolTCP)
	v4, v6 := discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6
	tests := []struct {
		name         string
		slices       []*discoveryv1.EndpointSlice
		want4, want6 uint32
		backends     int
		wantErr      string
	}{{
		name:     "no reject share",
		slices:   []*discoveryv1.EndpointSlice{slice("a", "web", v4, ps, readyEP("100.64.1.2", "n1"))},
		backends: 1,
	}, {
		name: "an empty slice's share beside weighted endpoints, per family",
		slices: []*discoveryv1.EndpointSlice{
			weighed(slice("a", "web", v4, ps, readyEP("100.64.1.2", "n1")), "800"),
			rejecting(slice("r4", "web", v4, ps), "200"),
			rejecting(slice("r6", "web", v6, ps), "1000"),
		},
		want4: 200, want6: 1000, backends: 1,
	}, {
		name: "shares add up",
		slices: []*discoveryv1.EndpointSlice{
			rejecting(slice("r1", "web", v4, ps), "200"),
			rejecting(slice("r2", "web", v4, ps), "300"),
		},
		want4: 500,
	}, {
		name: "another port's share is not this port's",
		slices: []*discoveryv1.EndpointSlice{
			rejecting(slice("r1", "web", v4, slicePorts("dns", 53, corev1.ProtocolUDP)), "200"),
		},
	}, {
		name: "a share that does not parse is left out and reported",
		slices: []*discoveryv1.EndpointSlice{
			rejecting(slice("r1", "web", v4, ps), "-1"),
			rejecting(slice("r2", "web", v4, ps), "7"),
		},
		want4:   7,
		wantErr: `EndpointSlice r1: zerohop.io/reject-weight "-1" is not a whole number`,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, errs := Translate(thisNode, []*corev1.Service{svc("web", []string{"203.0.113.1", "2001:db8::1"})}, tc.slices, nodes, nil)
			e4, e6 := got[key("203.0.113.1", 80, bpf.TCP)], got[key("2001:db8::1", 80, bpf.TCP)]
			if e4.RejectWeight != tc.want4 || e6.RejectWeight != tc.want6 {
				t.Errorf("reject weights v4 %d, v6 %d; want %d, %d", e4.RejectWeight, e6.RejectWeight, tc.want4, tc.want6)
			}
			if len(e4.Backends) != tc.backends || len(e6.Backends) != 0 {
				t.Errorf("backends v4 %v, v6 %v; want %d and none", e4.Backends, e6.Backends, tc.backends)
			}
			var msgs []string
			for _, err := range errs {
				msgs = append(msgs, err.Error())
			}
			if all := strings.Join(msgs, "; "); (tc.wantErr == "") != (all == "") || !strings.Contains(all, tc.wantErr) {
				t.Errorf("errors %q, want %q", all, tc.wantErr)
			}
		})
	}
	// A changed share is a changed entry: Diff rewrites it.
	web := []*corev1.Service{svc("web", []string{"203.0.113.1"})}
	a, _ := Translate(thisNode, web, []*discoveryv1.EndpointSlice{rejecting(slice("r", "web", v4, ps), "2")}, nodes, nil)
	b, _ := Translate(thisNode, web, []*discoveryv1.EndpointSlice{rejecting(slice("r", "web", v4, ps), "3")}, nodes, nil)
	if ups, _ := Diff(a, b); len(ups) != 1 || ups[0].Entry.RejectWeight != 3 {
		t.Errorf("a reject share change gave upserts %+v, want one with weight 3", ups)
	}
}
