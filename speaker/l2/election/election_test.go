package election

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/zerohop/zerohop/config/v1alpha1"
)

func vips(n int) []netip.Addr {
	out := make([]netip.Addr, 0, n)
	base4 := netip.MustParseAddr("198.51.100.0").As4()
	for i := range n {
		if i%2 == 0 {
			a := base4
			a[2] += byte(i / 512)
			a[3] = byte(i / 2)
			out = append(out, netip.AddrFrom4(a))
		} else {
			out = append(out, netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", i)))
		}
	}
	return out
}

func TestOwnerIndependentOfOrder(t *testing.T) {
	tests := []struct {
		name  string
		nodes []string
	}{
		{"one", []string{"node-a"}},
		{"three", []string{"node-a", "node-b", "node-c"}},
		{"five", []string{"n1", "n2", "n3", "n4", "n5"}},
		{"with duplicates", []string{"x", "y", "x", "z", "y"}},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, v := range vips(200) {
				want := Owner(v, tc.nodes)
				if !slices.Contains(tc.nodes, want) {
					t.Fatalf("Owner(%s) = %q, not one of %v", v, want, tc.nodes)
				}
				// Each speaker sees the member list in its own order.
				for range 5 {
					perm := slices.Clone(tc.nodes)
					rng.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
					if got := Owner(v, perm); got != want {
						t.Fatalf("Owner(%s, %v) = %q, want %q as for %v", v, perm, got, want, tc.nodes)
					}
				}
			}
		})
	}
}

func TestOwnerNoNodes(t *testing.T) {
	if got := Owner(netip.MustParseAddr("192.0.2.1"), nil); got != "" {
		t.Fatalf("Owner with no eligible nodes = %q, want empty", got)
	}
}

func TestOwnerMappedV4SameAsV4(t *testing.T) {
	nodes := []string{"a", "b", "c", "d"}
	for _, v := range vips(100) {
		if !v.Is4() {
			continue
		}
		mapped := netip.AddrFrom16(v.As16())
		if Owner(v, nodes) != Owner(mapped, nodes) {
			t.Fatalf("%s and %s have different owners", v, mapped)
		}
	}
}

func TestOwnerSpread(t *testing.T) {
	tests := []struct {
		nodes []string
		vips  int
	}{
		{[]string{"node-1", "node-2", "node-3", "node-4", "node-5"}, 1000},
		{[]string{"worker-a", "worker-b", "worker-c", "worker-d", "worker-e"}, 1000},
		{[]string{"k8s-0", "k8s-1", "k8s-2"}, 999},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.nodes), func(t *testing.T) {
			count := map[string]int{}
			for _, v := range vips(tc.vips) {
				count[Owner(v, tc.nodes)]++
			}
			even := float64(tc.vips) / float64(len(tc.nodes))
			for _, n := range tc.nodes {
				dev := (float64(count[n]) - even) / even
				if dev > 0.15 || dev < -0.15 {
					t.Errorf("node %s owns %d VIPs, %.1f%% from the even %.0f", n, count[n], dev*100, even)
				}
			}
			t.Logf("owners: %v (even: %.0f)", count, even)
		})
	}
}

func TestOwnerMinimalMovement(t *testing.T) {
	nodes := []string{"node-1", "node-2", "node-3", "node-4", "node-5"}
	all := vips(1000)
	for _, leaving := range nodes {
		t.Run("leave "+leaving, func(t *testing.T) {
			rest := slices.DeleteFunc(slices.Clone(nodes), func(n string) bool { return n == leaving })
			moved := 0
			for _, v := range all {
				before, after := Owner(v, nodes), Owner(v, rest)
				if before != leaving && before != after {
					t.Fatalf("%s moved from %s to %s though only %s left", v, before, after, leaving)
				}
				if before == leaving {
					moved++
				}
			}
			if moved == 0 {
				t.Fatalf("%s owned nothing of %d VIPs", leaving, len(all))
			}
			// And coming back moves exactly those VIPs back.
			for _, v := range all {
				if a, b := Owner(v, rest), Owner(v, nodes); a != b && b != leaving {
					t.Fatalf("%s moved from %s to %s when %s joined", v, a, b, leaving)
				}
			}
		})
	}
}

func TestOwned(t *testing.T) {
	nodes := []string{"a", "b", "c"}
	all := vips(300)
	total := 0
	for _, n := range nodes {
		for _, v := range Owned(n, all, nodes) {
			if Owner(v, nodes) != n {
				t.Fatalf("Owned(%s) has %s owned by %s", n, v, Owner(v, nodes))
			}
			total++
		}
	}
	if total != len(all) {
		t.Fatalf("nodes own %d VIPs together, want %d", total, len(all))
	}
	if got := Owned("d", all, nodes); got != nil {
		t.Fatalf("ineligible node owns %v", got)
	}
}

func TestEligible(t *testing.T) {
	nodes := []Node{
		{Name: "n1", Labels: map[string]string{"zone": "a", "l2": "yes"}},
		{Name: "n2", Labels: map[string]string{"zone": "b"}},
		{Name: "n3", Labels: map[string]string{"zone": "a"}},
		{Name: "n4", Labels: map[string]string{"zone": "c"}},
	}
	allAlive := map[string]bool{"n1": true, "n2": true, "n3": true, "n4": true}
	excluded := func(names ...string) []Node {
		out := slices.Clone(nodes)
		for i := range out {
			out[i].Excluded = slices.Contains(names, out[i].Name)
		}
		return out
	}
	tests := []struct {
		name      string
		nodes     []Node // default: nodes
		selectors []v1alpha1.LabelSelector
		alive     map[string]bool
		endpoints map[string]bool
		want      []string
	}{
		{name: "no selector: all alive", alive: allAlive, want: []string{"n1", "n2", "n3", "n4"}},
		{name: "dead nodes left out", alive: map[string]bool{"n2": true, "n4": true}, want: []string{"n2", "n4"}},
		{
			name:      "match labels",
			selectors: []v1alpha1.LabelSelector{{MatchLabels: map[string]string{"zone": "a"}}},
			alive:     allAlive, want: []string{"n1", "n3"},
		},
		{
			name: "selectors are ORed",
			selectors: []v1alpha1.LabelSelector{
				{MatchLabels: map[string]string{"zone": "b"}},
				{MatchExpressions: []v1alpha1.LabelSelectorRequirement{{Key: "l2", Operator: metav1.LabelSelectorOpExists}}},
			},
			alive: allAlive, want: []string{"n1", "n2"},
		},
		{
			name: "NotIn",
			selectors: []v1alpha1.LabelSelector{
				{MatchExpressions: []v1alpha1.LabelSelectorRequirement{{Key: "zone", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"a"}}}},
			},
			alive: allAlive, want: []string{"n2", "n4"},
		},
		{name: "local endpoints only", alive: allAlive, endpoints: map[string]bool{"n3": true, "n4": true}, want: []string{"n3", "n4"}},
		{name: "local, no endpoints anywhere", alive: allAlive, endpoints: map[string]bool{}, want: nil},
		{
			name:      "local endpoint on dead node",
			alive:     map[string]bool{"n1": true},
			endpoints: map[string]bool{"n2": true},
			want:      nil,
		},
		{name: "excluded nodes left out", nodes: excluded("n1", "n4"), alive: allAlive, want: []string{"n2", "n3"}},
		{name: "an excluded node with the only endpoint: none", nodes: excluded("n3"), alive: allAlive, endpoints: map[string]bool{"n3": true}, want: nil},
		{
			name:      "excluded even where a selector names it",
			nodes:     excluded("n1"),
			selectors: []v1alpha1.LabelSelector{{MatchLabels: map[string]string{"zone": "a"}}},
			alive:     allAlive, want: []string{"n3"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ns := nodes
			if tc.nodes != nil {
				ns = tc.nodes
			}
			got, err := Eligible(ns, tc.selectors, tc.alive, tc.endpoints)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Eligible = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestEligibleBadSelector(t *testing.T) {
	bad := []v1alpha1.LabelSelector{{MatchExpressions: []v1alpha1.LabelSelectorRequirement{{Key: "k", Operator: "Near"}}}}
	if _, err := Eligible([]Node{{Name: "n"}}, bad, map[string]bool{"n": true}, nil); err == nil {
		t.Fatal("Eligible accepted an unknown operator")
	}
}

func pref(t *testing.T, weight int32, sel v1alpha1.LabelSelector) Preference {
	t.Helper()
	s, err := v1alpha1.NewSelection([]v1alpha1.LabelSelector{sel})
	if err != nil {
		t.Fatal(err)
	}
	return Preference{Weight: weight, Nodes: s}
}

func TestPreferred(t *testing.T) {
	nodes := []Node{
		{Name: "n1", Labels: map[string]string{"zone": "a", "ssd": "yes"}},
		{Name: "n2", Labels: map[string]string{"zone": "b", "ssd": "yes"}},
		{Name: "n3", Labels: map[string]string{"zone": "a"}},
		{Name: "n4", Labels: map[string]string{"zone": "c"}},
	}
	all := []string{"n1", "n2", "n3", "n4"}
	zone := func(z string) v1alpha1.LabelSelector {
		return v1alpha1.LabelSelector{MatchLabels: map[string]string{"zone": z}}
	}
	ssd := v1alpha1.LabelSelector{MatchLabels: map[string]string{"ssd": "yes"}}
	tests := []struct {
		name     string
		eligible []string
		prefs    []Preference
		want     []string
	}{
		{"no preferences: all", all, nil, all},
		{"one preferred node", all, []Preference{pref(t, 50, zone("c"))}, []string{"n4"}},
		{"the weights add up", all, []Preference{pref(t, 30, zone("a")), pref(t, 20, ssd)}, []string{"n1"}},
		{"a heavier preference wins", all, []Preference{pref(t, 30, zone("a")), pref(t, 40, zone("b"))}, []string{"n2"}},
		{"ties stay for the hash", all, []Preference{pref(t, 10, zone("a"))}, []string{"n1", "n3"}},
		{"an empty selector weighs every node alike", all, []Preference{pref(t, 10, v1alpha1.LabelSelector{})}, all},
		{"the preferred node is not eligible: the next best", []string{"n2", "n3", "n4"}, []Preference{pref(t, 30, zone("a")), pref(t, 20, ssd)}, []string{"n3"}},
		{"the next best, tied", []string{"n2", "n3", "n4"}, []Preference{pref(t, 20, zone("a")), pref(t, 20, ssd)}, []string{"n2", "n3"}},
		{"no preferred node eligible: all that are", []string{"n2", "n4"}, []Preference{pref(t, 30, zone("a"))}, []string{"n2", "n4"}},
		{"one eligible node", []string{"n2"}, []Preference{pref(t, 30, zone("a"))}, []string{"n2"}},
		{"none eligible", nil, []Preference{pref(t, 30, zone("a"))}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Preferred(nodes, tc.eligible, tc.prefs); !slices.Equal(got, tc.want) {
				t.Fatalf("Preferred = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestPreferredFailover: with a preference for one node, every address
// lives there while it is eligible, moves by hash among the others when it
// goes, and comes back when it returns; every speaker computes the same.
func TestPreferredFailover(t *testing.T) {
	nodes := []Node{{Name: "edge-1", Labels: map[string]string{"kubernetes.io/hostname": "edge-1"}}, {Name: "edge-2"}, {Name: "edge-3"}}
	prefs := []Preference{pref(t, 100, v1alpha1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/hostname": "edge-1"}})}
	all := []string{"edge-1", "edge-2", "edge-3"}
	moved := map[string]int{}
	for _, v := range vips(200) {
		if got := Owner(v, Preferred(nodes, all, prefs)); got != "edge-1" {
			t.Fatalf("%s owned by %s with edge-1 preferred and up", v, got)
		}
		rest := []string{"edge-2", "edge-3"}
		after := Owner(v, Preferred(nodes, rest, prefs))
		if after != Owner(v, rest) {
			t.Fatalf("%s: with edge-1 gone, %s instead of the hash's %s", v, after, Owner(v, rest))
		}
		moved[after]++
	}
	if moved["edge-2"] == 0 || moved["edge-3"] == 0 {
		t.Fatalf("with edge-1 gone the addresses went to %v, want both others", moved)
	}
}

func BenchmarkOwner(b *testing.B) {
	nodes := []string{"node-1", "node-2", "node-3", "node-4", "node-5"}
	v := netip.MustParseAddr("192.0.2.7")
	for b.Loop() {
		Owner(v, nodes)
	}
}
