package l2

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/speaker/l2/election"
)

func withLabels(s corev1.Service, kv ...string) corev1.Service {
	s.Labels = map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		s.Labels[kv[i]] = kv[i+1]
	}
	return s
}

func matchLabels(kv ...string) v1alpha1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return v1alpha1.LabelSelector{MatchLabels: m}
}

// renderVIPs states a VIP list as "ip [services] on=candidates", the
// candidates among n1, n2 and n3, all alive.
func renderVIPs(t *testing.T, vips []VIP) []string {
	t.Helper()
	nodes := []election.Node{{Name: "n1"}, {Name: "n2"}, {Name: "n3"}}
	alive := map[string]bool{"n1": true, "n2": true, "n3": true}
	var out []string
	for _, v := range vips {
		var names []string
		for _, k := range v.Services {
			names = append(names, k.Name)
		}
		c, err := Candidates(nodes, v, alive)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v.IP.String()+" ["+strings.Join(names, ",")+"] on="+strings.Join(c, ","))
	}
	return out
}

// TestVIPsPerAddress: one VIP per address, built from every Service
// holding it; serviceSelectors decide per address.
func TestVIPsPerAddress(t *testing.T) {
	pools := []*v1alpha1.IPAddressPool{pool("l2", nil, "198.51.100.200/29", "2001:db8:100::200/125")}
	every := v1alpha1.L2Advertisement{Spec: v1alpha1.L2AdvertisementSpec{}}
	dnsOnly := v1alpha1.L2Advertisement{Spec: v1alpha1.L2AdvertisementSpec{ServiceSelectors: []v1alpha1.LabelSelector{matchLabels("app", "dns")}}}
	slicesOf := map[types.NamespacedName][]*discoveryv1.EndpointSlice{
		{Namespace: "default", Name: "tcp"}:  {slice("tcp", map[string]bool{"n1": true, "n2": true})},
		{Namespace: "default", Name: "udp"}:  {slice("udp", map[string]bool{"n2": true, "n3": true})},
		{Namespace: "default", Name: "far"}:  {slice("far", map[string]bool{"n3": true})},
		{Namespace: "default", Name: "none"}: {slice("none", map[string]bool{"n1": false})},
	}
	tests := []struct {
		name string
		advs []v1alpha1.L2Advertisement
		svcs []corev1.Service
		want []string
	}{
		{name: "two Cluster Services sharing an address: one VIP",
			advs: []v1alpha1.L2Advertisement{every},
			svcs: []corev1.Service{lbService("udp", false, "198.51.100.201"), lbService("tcp", false, "198.51.100.201")},
			want: []string{"198.51.100.201 [tcp,udp] on=n1,n2,n3"}},
		{name: "Local Services sharing an address: the nodes with endpoints of both",
			advs: []v1alpha1.L2Advertisement{every},
			svcs: []corev1.Service{lbService("tcp", true, "198.51.100.201"), lbService("udp", true, "198.51.100.201")},
			want: []string{"198.51.100.201 [tcp,udp] on=n2"}},
		{name: "Local Services sharing an address, no node with both: any with one",
			advs: []v1alpha1.L2Advertisement{every},
			svcs: []corev1.Service{lbService("tcp", true, "198.51.100.201"), lbService("far", true, "198.51.100.201")},
			want: []string{"198.51.100.201 [far,tcp] on=n1,n2,n3"}},
		{name: "Local Services sharing an address, no endpoint anywhere: no node",
			advs: []v1alpha1.L2Advertisement{every},
			svcs: []corev1.Service{lbService("none", true, "198.51.100.201"), lbService("gone", true, "198.51.100.201")},
			want: []string{"198.51.100.201 [gone,none] on="}},
		{name: "a Local and a Cluster Service: the Local one's nodes",
			advs: []v1alpha1.L2Advertisement{every},
			svcs: []corev1.Service{lbService("tcp", true, "198.51.100.201"), lbService("web", false, "198.51.100.201")},
			want: []string{"198.51.100.201 [tcp,web] on=n1,n2"}},
		{name: "a Local Service without endpoints and a Cluster one: any node",
			advs: []v1alpha1.L2Advertisement{every},
			svcs: []corev1.Service{lbService("none", true, "198.51.100.201"), lbService("web", false, "198.51.100.201")},
			want: []string{"198.51.100.201 [none,web] on=n1,n2,n3"}},
		{name: "dual stack and shared: one VIP per address",
			advs: []v1alpha1.L2Advertisement{every},
			svcs: []corev1.Service{lbService("a", false, "198.51.100.201", "2001:db8:100::201"), lbService("b", false, "2001:db8:100::201")},
			want: []string{"198.51.100.201 [a] on=n1,n2,n3", "2001:db8:100::201 [a,b] on=n1,n2,n3"}},
		{name: "serviceSelectors: only matching Services",
			advs: []v1alpha1.L2Advertisement{dnsOnly},
			svcs: []corev1.Service{withLabels(lbService("dns", false, "198.51.100.201"), "app", "dns"), withLabels(lbService("web", false, "198.51.100.202"), "app", "web")},
			want: []string{"198.51.100.201 [dns] on=n1,n2,n3"}},
		{name: "serviceSelectors on a shared address: every holder must match",
			advs: []v1alpha1.L2Advertisement{dnsOnly},
			svcs: []corev1.Service{withLabels(lbService("dns", false, "198.51.100.201"), "app", "dns"), withLabels(lbService("web", false, "198.51.100.201"), "app", "web")},
			want: nil},
		{name: "serviceSelectors on a shared address, every holder matching",
			advs: []v1alpha1.L2Advertisement{dnsOnly},
			svcs: []corev1.Service{withLabels(lbService("dns-tcp", false, "198.51.100.201"), "app", "dns"), withLabels(lbService("dns-udp", false, "198.51.100.201"), "app", "dns")},
			want: []string{"198.51.100.201 [dns-tcp,dns-udp] on=n1,n2,n3"}},
		{name: "a selecting and a non-selecting advertisement: the address is answered",
			advs: []v1alpha1.L2Advertisement{dnsOnly, every},
			svcs: []corev1.Service{withLabels(lbService("web", false, "198.51.100.201"), "app", "web")},
			want: []string{"198.51.100.201 [web] on=n1,n2,n3"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			vips, errs := VIPs(pools, tc.advs, tc.svcs, slicesOf)
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			if got := renderVIPs(t, vips); !slices.Equal(got, tc.want) {
				t.Fatalf("VIPs\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// TestVIPsRules: which advertisements' node selectors and preferences an
// address gets, and bad selectors.
func TestVIPsRules(t *testing.T) {
	pools := []*v1alpha1.IPAddressPool{pool("l2", nil, "198.51.100.200/29")}
	svcs := []corev1.Service{withLabels(lbService("dns", false, "198.51.100.201"), "app", "dns"), lbService("web", false, "198.51.100.202")}
	pref := func(w int32, sel v1alpha1.LabelSelector) v1alpha1.PreferredNodeSelector {
		return v1alpha1.PreferredNodeSelector{Weight: w, Preference: sel}
	}
	advs := []v1alpha1.L2Advertisement{
		{Spec: v1alpha1.L2AdvertisementSpec{ServiceSelectors: []v1alpha1.LabelSelector{matchLabels("app", "dns")},
			PreferredNodeSelectors: []v1alpha1.PreferredNodeSelector{pref(100, matchLabels("kubernetes.io/hostname", "n1"))}}},
		{Spec: v1alpha1.L2AdvertisementSpec{PreferredNodeSelectors: []v1alpha1.PreferredNodeSelector{pref(10, matchLabels("zone", "b")), pref(5, v1alpha1.LabelSelector{})}}},
	}
	vips, errs := VIPs(pools, advs, svcs, nil)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	weights := map[string][]int32{}
	for _, v := range vips {
		for _, p := range v.Preferences {
			weights[v.IP.String()] = append(weights[v.IP.String()], p.Weight)
		}
	}
	if got := weights["198.51.100.201"]; !slices.Equal(got, []int32{100, 10, 5}) {
		t.Errorf("dns address preferences %v, want both advertisements' (100, 10, 5)", got)
	}
	if got := weights["198.51.100.202"]; !slices.Equal(got, []int32{10, 5}) {
		t.Errorf("web address preferences %v, want only the second advertisement's (10, 5)", got)
	}

	bad := []v1alpha1.LabelSelector{{MatchExpressions: []v1alpha1.LabelSelectorRequirement{{Key: "k", Operator: "Near"}}}}
	for _, tc := range []struct {
		name string
		adv  v1alpha1.L2Advertisement
		want string
	}{
		{"bad serviceSelector", v1alpha1.L2Advertisement{Spec: v1alpha1.L2AdvertisementSpec{ServiceSelectors: bad}}, "serviceSelectors"},
		{"bad preference", v1alpha1.L2Advertisement{Spec: v1alpha1.L2AdvertisementSpec{PreferredNodeSelectors: []v1alpha1.PreferredNodeSelector{pref(1, bad[0])}}}, "preferredNodeSelectors[0]"},
	} {
		tc.adv.Name = "broken"
		vips, errs := VIPs(pools, []v1alpha1.L2Advertisement{tc.adv}, svcs, nil)
		if len(vips) != 0 {
			t.Errorf("%s: the advertisement still answers for %v", tc.name, renderVIPs(t, vips))
		}
		if len(errs) != 1 || !strings.Contains(errs[0].Error(), "l2advertisement broken: "+tc.want) {
			t.Errorf("%s: errors %v, want one naming %s", tc.name, errs, tc.want)
		}
	}
}

// TestComputePlacement: preferences place an address on a node with
// failover, and excluded nodes answer for nothing; every node computes
// the same owner.
func TestComputePlacement(t *testing.T) {
	host := func(n string) map[string]string { return map[string]string{"kubernetes.io/hostname": n} }
	nodes := []election.Node{{Name: "n1", Labels: host("n1")}, {Name: "n2", Labels: host("n2")}, {Name: "n3", Labels: host("n3")}}
	ifaces := []Interface{{Name: "eth0", Up: true, Prefixes: []netip.Prefix{netip.MustParsePrefix("198.51.100.11/24")}}}
	prefer := func(t *testing.T, node string) []election.Preference {
		s, err := v1alpha1.NewSelection([]v1alpha1.LabelSelector{{MatchLabels: host(node)}})
		if err != nil {
			t.Fatal(err)
		}
		return []election.Preference{{Weight: 100, Nodes: s}}
	}
	var vips []VIP
	for i := range 20 {
		vips = append(vips, VIP{Services: svcKeys("s"), IP: netip.AddrFrom4([4]byte{198, 51, 100, byte(200 + i)})})
	}
	withPrefs := func(prefs []election.Preference) []VIP {
		out := slices.Clone(vips)
		for i := range out {
			out[i].Preferences = prefs
		}
		return out
	}
	owners := func(t *testing.T, nodes []election.Node, members []string, vips []VIP) map[netip.Addr][]string {
		t.Helper()
		out := map[netip.Addr][]string{}
		for _, n := range nodes {
			owned, errs := Compute(Input{Self: n.Name, Nodes: nodes, VIPs: vips, Members: members, Majority: true, Ifaces: ifaces})
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			for _, o := range owned {
				out[o.VIP.IP] = append(out[o.VIP.IP], n.Name)
			}
		}
		return out
	}
	all := []string{"n1", "n2", "n3"}
	// Two Local Services share each address; only n2 has Pods of both.
	shared := slices.Clone(vips)
	for i := range shared {
		shared[i].Local = []map[string]bool{{"n1": true, "n2": true}, {"n2": true, "n3": true}}
	}
	tests := []struct {
		name    string
		nodes   []election.Node
		members []string
		vips    []VIP
		// want is the owner of every address; "" checks only that each
		// address has one owner, none of them in notOn.
		want  string
		notOn []string
	}{
		{name: "preferred node owns every address", nodes: nodes, members: all, vips: withPrefs(prefer(t, "n2")), want: "n2"},
		{name: "preferred node gone: the others by hash", nodes: nodes, members: []string{"n1", "n3"}, vips: withPrefs(prefer(t, "n2")), notOn: []string{"n2"}},
		{name: "preferred node excluded: the others", nodes: exclude(nodes, "n2"), members: all, vips: withPrefs(prefer(t, "n2")), notOn: []string{"n2"}},
		{name: "excluded node owns nothing", nodes: exclude(nodes, "n1"), members: all, vips: vips, notOn: []string{"n1"}},
		{name: "shared by Local Services: the node with Pods of both", nodes: nodes, members: all, vips: shared, want: "n2"},
		{name: "shared by Local Services, that node dead: the live ones with Pods of either", nodes: nodes, members: []string{"n1", "n3"}, vips: shared, notOn: []string{"n2"}},
		{name: "a Local address whose only endpoint is on an excluded node: no owner", nodes: exclude(nodes, "n3"), members: all,
			vips: []VIP{{Services: svcKeys("loc"), IP: netip.MustParseAddr("198.51.100.250"), Local: []map[string]bool{{"n3": true}}}}, want: "none"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := owners(t, tc.nodes, tc.members, tc.vips)
			spread := map[string]bool{}
			for _, v := range tc.vips {
				o := got[v.IP]
				if tc.want == "none" {
					if len(o) != 0 {
						t.Fatalf("%v owned by %v, want none", v.IP, o)
					}
					continue
				}
				if len(o) != 1 {
					t.Fatalf("%v owned by %v, want exactly one node", v.IP, o)
				}
				if tc.want != "" && o[0] != tc.want {
					t.Fatalf("%v owned by %s, want %s", v.IP, o[0], tc.want)
				}
				if slices.Contains(tc.notOn, o[0]) {
					t.Fatalf("%v owned by %s", v.IP, o[0])
				}
				spread[o[0]] = true
			}
			if tc.want == "" && len(spread) < 2 {
				t.Errorf("20 addresses all on %v: want them spread by hash", spread)
			}
		})
	}
}

func exclude(nodes []election.Node, names ...string) []election.Node {
	out := slices.Clone(nodes)
	for i := range out {
		out[i].Excluded = slices.Contains(names, out[i].Name)
	}
	return out
}
