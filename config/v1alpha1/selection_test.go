package v1alpha1

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestSelectsPool(t *testing.T) {
	gold := &IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "gold", Labels: map[string]string{"tier": "gold"}}}
	sel := func(k, v string) LabelSelector { return LabelSelector{MatchLabels: map[string]string{k: v}} }
	bad := LabelSelector{MatchExpressions: []LabelSelectorRequirement{{Key: "tier", Operator: "In"}}}
	tests := []struct {
		name      string
		pools     []string
		selectors []LabelSelector
		want      bool
		wantErr   bool
	}{
		{name: "neither names nor selectors: every pool", want: true},
		{name: "by name", pools: []string{"silver", "gold"}, want: true},
		{name: "another name, no selectors", pools: []string{"silver"}, want: false},
		{name: "by selector", selectors: []LabelSelector{sel("tier", "silver"), sel("tier", "gold")}, want: true},
		{name: "selector matching nothing", selectors: []LabelSelector{sel("tier", "silver")}, want: false},
		{name: "name or selector: either is enough", pools: []string{"gold"}, selectors: []LabelSelector{sel("tier", "silver")}, want: true},
		{name: "bad selector", selectors: []LabelSelector{bad}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bgp := &BGPAdvertisementSpec{IPAddressPools: tc.pools, IPAddressPoolSelectors: tc.selectors}
			l2 := &L2AdvertisementSpec{IPAddressPools: tc.pools, IPAddressPoolSelectors: tc.selectors}
			for kind, selects := range map[string]func(*IPAddressPool) (bool, error){"bgp": bgp.SelectsPool, "l2": l2.SelectsPool} {
				got, err := selects(gold)
				if (err != nil) != tc.wantErr || got != tc.want {
					t.Errorf("%s: SelectsPool = %v, %v; want %v, error %v", kind, got, err, tc.want, tc.wantErr)
				}
			}
		})
	}
}

func TestSelection(t *testing.T) {
	rackA := map[string]string{"rack": "a"}
	tests := []struct {
		name      string
		selectors []LabelSelector
		labels    map[string]string
		want      bool
	}{
		{"none selects every node", nil, rackA, true},
		{"one of several matches", []LabelSelector{{MatchLabels: map[string]string{"rack": "b"}}, {MatchLabels: rackA}}, rackA, true},
		{"none matches", []LabelSelector{{MatchLabels: map[string]string{"rack": "b"}}}, rackA, false},
		{"an empty selector selects everything", []LabelSelector{{}}, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewSelection(tc.selectors)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Matches(tc.labels); got != tc.want {
				t.Errorf("Matches = %v, want %v", got, tc.want)
			}
			peer := &BGPPeerSpec{NodeSelectors: tc.selectors}
			if got, err := peer.SelectsNode(tc.labels); err != nil || got != tc.want {
				t.Errorf("BGPPeerSpec.SelectsNode = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
	if _, err := NewSelection([]LabelSelector{{}, {MatchExpressions: []LabelSelectorRequirement{{Key: "k", Operator: "Exists", Values: []string{"v"}}}}}); err == nil {
		t.Error("a bad selector compiled")
	}
}
