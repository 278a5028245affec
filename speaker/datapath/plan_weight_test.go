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
			got, errs := Translate(thisNode, []*corev1.Service{svc("web", []string{"203.0.113.1"})}, tc.slices, nodes)
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
	a, _ := Translate(thisNode, []*corev1.Service{svc("web", []string{"203.0.113.1"})}, []*discoveryv1.EndpointSlice{weighed(slice("a", "web", discoveryv1.AddressTypeIPv4, ps, readyEP("100.64.1.2", "n1")), "2")}, nodes)
	b, _ := Translate(thisNode, []*corev1.Service{svc("web", []string{"203.0.113.1"})}, []*discoveryv1.EndpointSlice{weighed(slice("a", "web", discoveryv1.AddressTypeIPv4, ps, readyEP("100.64.1.2", "n1")), "3")}, nodes)
	if ups, _ := Diff(a, b); len(ups) != 1 {
		t.Errorf("a weight change gave %d upserts, want 1", len(ups))
	}
}

func weight(b bpf.Backend, w uint32) bpf.Backend {
	b.Weight = w
	return b
}
