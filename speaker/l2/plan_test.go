package l2

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/speaker/l2/election"
)

func pool(name string, lbls map[string]string, addrs ...string) *v1alpha1.IPAddressPool {
	p := &v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}
	for _, a := range addrs {
		p.Spec.Addresses = append(p.Spec.Addresses, v1alpha1.Address(a))
	}
	return p
}

func lbService(name string, local bool, ips ...string) corev1.Service {
	s := corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer},
	}
	if local {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}
	for _, ip := range ips {
		s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
	}
	return s
}

func slice(svc string, eps map[string]bool) *discoveryv1.EndpointSlice {
	sl := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: svc}}
	i := 0
	for _, node := range slices.Sorted(func(yield func(string) bool) {
		for n := range eps {
			if !yield(n) {
				return
			}
		}
	}) {
		ready := eps[node]
		i++
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{fmt.Sprintf("100.64.0.%d", i)},
			NodeName:   &node,
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
		})
	}
	return sl
}

// svcKeys names Services of namespace default.
func svcKeys(names ...string) []types.NamespacedName {
	var out []types.NamespacedName
	for _, n := range names {
		out = append(out, types.NamespacedName{Namespace: "default", Name: n})
	}
	return out
}

func TestVIPs(t *testing.T) {
	pools := []*v1alpha1.IPAddressPool{
		pool("l2", map[string]string{"mode": "l2"}, "198.51.100.200-198.51.100.250", "2001:db8:100::200/120"),
		pool("bgp", nil, "203.0.113.0/24"),
	}
	sel := func(k, v string) v1alpha1.LabelSelector {
		return v1alpha1.LabelSelector{MatchLabels: map[string]string{k: v}}
	}
	svcs := []corev1.Service{
		lbService("web", false, "198.51.100.200", "2001:db8:100::200"),
		lbService("local", true, "198.51.100.201"),
		lbService("routed", false, "203.0.113.5"),
		{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "clusterip"}},
	}
	slicesOf := map[types.NamespacedName][]*discoveryv1.EndpointSlice{
		{Namespace: "default", Name: "local"}: {slice("local", map[string]bool{"n1": false, "n2": true})},
	}
	tests := []struct {
		name    string
		advs    []v1alpha1.L2Advertisement
		wantIPs []string
		// for the first VIP
		wantSelectors int // -1: nil (all nodes)
		wantIfaces    []string
	}{
		{name: "no advertisement", advs: nil},
		{
			name:          "by name",
			advs:          []v1alpha1.L2Advertisement{{Spec: v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{"l2"}}}},
			wantIPs:       []string{"198.51.100.200", "2001:db8:100::200", "198.51.100.201"},
			wantSelectors: -1,
		},
		{
			name:    "by selector that matches nothing",
			advs:    []v1alpha1.L2Advertisement{{Spec: v1alpha1.L2AdvertisementSpec{IPAddressPoolSelectors: []v1alpha1.LabelSelector{sel("mode", "bgp")}}}},
			wantIPs: nil,
		},
		{
			name: "two advertisements merge node selectors and interfaces",
			advs: []v1alpha1.L2Advertisement{
				{Spec: v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{"l2"}, NodeSelectors: []v1alpha1.LabelSelector{sel("rack", "a")}, Interfaces: []string{"eth1", "eth0"}}},
				{Spec: v1alpha1.L2AdvertisementSpec{IPAddressPoolSelectors: []v1alpha1.LabelSelector{sel("mode", "l2")}, NodeSelectors: []v1alpha1.LabelSelector{sel("rack", "b")}, Interfaces: []string{"eth0"}}},
			},
			wantIPs:       []string{"198.51.100.200", "2001:db8:100::200", "198.51.100.201"},
			wantSelectors: 2,
			wantIfaces:    []string{"eth0", "eth1"},
		},
		{
			name: "one advertisement without node selectors opens all nodes",
			advs: []v1alpha1.L2Advertisement{
				{Spec: v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{"l2"}, NodeSelectors: []v1alpha1.LabelSelector{sel("rack", "a")}, Interfaces: []string{"eth1"}}},
				{Spec: v1alpha1.L2AdvertisementSpec{}},
			},
			wantIPs:       []string{"198.51.100.200", "2001:db8:100::200", "198.51.100.201", "203.0.113.5"},
			wantSelectors: -1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			vips, errs := VIPs(pools, tc.advs, svcs, slicesOf)
			if len(errs) > 0 {
				t.Fatalf("errors: %v", errs)
			}
			var got []string
			for _, v := range vips {
				got = append(got, v.IP.String())
			}
			if !slices.Equal(got, tc.wantIPs) {
				t.Fatalf("VIPs %v, want %v", got, tc.wantIPs)
			}
			if len(vips) == 0 {
				return
			}
			v := vips[0]
			if tc.wantSelectors < 0 && v.Selectors != nil || tc.wantSelectors >= 0 && len(v.Selectors) != tc.wantSelectors {
				t.Errorf("selectors %v, want %d", v.Selectors, tc.wantSelectors)
			}
			if !slices.Equal(v.Interfaces, tc.wantIfaces) {
				t.Errorf("interfaces %v, want %v", v.Interfaces, tc.wantIfaces)
			}
			for _, v := range vips {
				switch v.Services[0].Name {
				case "local":
					if len(v.Local) != 1 || !v.Local[0]["n2"] || v.Local[0]["n1"] || len(v.Local[0]) != 1 || v.Cluster {
						t.Errorf("local endpoints %v, want only n2", v.Local)
					}
				default:
					if v.Local != nil || !v.Cluster {
						t.Errorf("%s: cluster policy has local set %v", v.Services, v.Local)
					}
				}
			}
		})
	}
}

func TestCompute(t *testing.T) {
	nodes := []election.Node{
		{Name: "n1", Labels: map[string]string{"rack": "a"}},
		{Name: "n2", Labels: map[string]string{"rack": "b"}},
		{Name: "n3", Labels: map[string]string{"rack": "b"}},
	}
	ifaces := []Interface{
		{Name: "lo", Up: true, Loopback: true, Prefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}},
		{Name: "eth0", Up: true, Prefixes: []netip.Prefix{netip.MustParsePrefix("198.51.100.11/24"), netip.MustParsePrefix("2001:db8:100::11/64")}},
		{Name: "eth1", Up: true, Prefixes: []netip.Prefix{netip.MustParsePrefix("192.0.2.11/24")}},
	}
	var vips []VIP
	for i := range 30 {
		vips = append(vips, VIP{
			Services: svcKeys(fmt.Sprint("s", i)),
			IP:       netip.AddrFrom4([4]byte{198, 51, 100, byte(200 + i)}),
		})
	}
	v6 := VIP{Services: svcKeys("v6"), IP: netip.MustParseAddr("2001:db8:100::200")}
	rackB := VIP{Services: svcKeys("rackb"), IP: netip.MustParseAddr("198.51.100.100"),
		Selectors: []v1alpha1.LabelSelector{{MatchLabels: map[string]string{"rack": "b"}}}}
	local := VIP{Services: svcKeys("local"), IP: netip.MustParseAddr("198.51.100.101"),
		Local: []map[string]bool{{"n3": true}}}
	localNone := VIP{Services: svcKeys("nolocal"), IP: netip.MustParseAddr("198.51.100.102"),
		Local: []map[string]bool{{}}}
	named := VIP{Services: svcKeys("named"), IP: netip.MustParseAddr("203.0.113.9"),
		Interfaces: []string{"eth1", "eth9"}}
	offLink := VIP{Services: svcKeys("off"), IP: netip.MustParseAddr("203.0.113.10")}
	all := append(slices.Clone(vips), v6, rackB, local, localNone)

	// ownersOf runs the plan as each node would and returns VIP -> owners.
	ownersOf := func(in Input, vips []VIP) map[netip.Addr][]string {
		owners := map[netip.Addr][]string{}
		for _, n := range nodes {
			in.Self, in.VIPs = n.Name, vips
			owned, errs := Compute(in)
			if len(errs) > 0 {
				t.Fatalf("%s: %v", n.Name, errs)
			}
			for _, o := range owned {
				owners[o.VIP.IP] = append(owners[o.VIP.IP], n.Name)
			}
		}
		return owners
	}
	base := Input{Nodes: nodes, Members: []string{"n1", "n2", "n3"}, Majority: true, Ifaces: ifaces}

	t.Run("exactly one owner per VIP, spread", func(t *testing.T) {
		owners := ownersOf(base, all)
		per := map[string]int{}
		for _, v := range all {
			o := owners[v.IP]
			if v.Services[0].Name == "nolocal" {
				if len(o) != 0 {
					t.Errorf("Local Service without endpoints owned by %v", o)
				}
				continue
			}
			if len(o) != 1 {
				t.Fatalf("%v owned by %v, want exactly one node", v.IP, o)
			}
			per[o[0]]++
		}
		for _, n := range nodes {
			if per[n.Name] == 0 {
				t.Errorf("node %s owns nothing of %d VIPs: %v", n.Name, len(all), per)
			}
		}
		if o := owners[rackB.IP]; o[0] == "n1" {
			t.Errorf("rack b VIP owned by rack a node")
		}
		if o := owners[local.IP]; o[0] != "n3" {
			t.Errorf("Local VIP owned by %v, want the node with the endpoint n3", o)
		}
	})
	t.Run("dead member's VIPs move, others stay", func(t *testing.T) {
		before := ownersOf(base, all)
		in := base
		in.Members = []string{"n1", "n3"}
		after := ownersOf(in, all)
		for _, v := range all {
			b, a := before[v.IP], after[v.IP]
			if len(b) == 0 {
				continue
			}
			if slices.Contains(a, "n2") {
				t.Errorf("%v still owned by dead n2", v.IP)
			}
			if b[0] != "n2" && !slices.Equal(a, b) {
				t.Errorf("%v moved from %v to %v though its owner lives", v.IP, b, a)
			}
		}
	})
	t.Run("no majority answers nothing", func(t *testing.T) {
		in := base
		in.Majority = false
		if o := ownersOf(in, all); len(o) != 0 {
			t.Errorf("owned without majority: %v", o)
		}
	})
	t.Run("link down answers nothing", func(t *testing.T) {
		in := base
		in.LinkDown = map[string]bool{"eth0": true}
		if o := ownersOf(in, all); len(o) != 0 {
			t.Errorf("owned with link down: %v", o)
		}
	})
	t.Run("interfaces", func(t *testing.T) {
		tests := []struct {
			vip  VIP
			want []string
		}{
			{vips[0], []string{"eth0"}},
			{v6, []string{"eth0"}},
			{named, []string{"eth1"}}, // eth9 is not on this node
		}
		for _, tc := range tests {
			for _, n := range nodes {
				in := base
				in.Self, in.VIPs = n.Name, []VIP{tc.vip}
				owned, errs := Compute(in)
				if len(errs) > 0 {
					t.Fatal(errs)
				}
				if len(owned) == 1 && !slices.Equal(owned[0].Interfaces, tc.want) {
					t.Errorf("%v on %v, want %v", tc.vip.IP, owned[0].Interfaces, tc.want)
				}
			}
		}
		// A VIP on no local subnet is an error on its owner only.
		var nerr int
		for _, n := range nodes {
			in := base
			in.Self, in.VIPs = n.Name, []VIP{offLink}
			owned, errs := Compute(in)
			nerr += len(errs)
			if len(owned) != 0 {
				t.Errorf("off-link VIP owned: %v", owned)
			}
		}
		if nerr != 1 {
			t.Errorf("%d errors for the off-link VIP, want 1 (from its owner)", nerr)
		}
	})
}

// TestVIPsFollowRecordedPool: an address is answered by the advertisements
// of the pool it was allocated from, never those of a pool added later
// that declares it too.
func TestVIPsFollowRecordedPool(t *testing.T) {
	at := func(p *v1alpha1.IPAddressPool, minutes int) *v1alpha1.IPAddressPool {
		p.CreationTimestamp = metav1.NewTime(time.Date(2026, 1, 1, 0, minutes, 0, 0, time.UTC))
		return p
	}
	pools := []*v1alpha1.IPAddressPool{
		at(pool("served", nil, "198.51.100.200-198.51.100.250"), 0),
		at(pool("aaa-later", nil, "198.51.100.0/24"), 5),
	}
	onlyLater := []v1alpha1.L2Advertisement{{Spec: v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{"aaa-later"}}}}
	record := func(s corev1.Service, pool string) corev1.Service {
		s.Annotations = map[string]string{v1alpha1.AnnotationAllocatedFrom: pool}
		return s
	}
	tests := []struct {
		name string
		svc  corev1.Service
		want []string
	}{
		{"recorded for the older pool", record(lbService("web", false, "198.51.100.200"), "served"), nil},
		{"no record: the older pool", lbService("web", false, "198.51.100.201"), nil},
		{"recorded for the later pool", record(lbService("web", false, "198.51.100.202"), "aaa-later"), []string{"198.51.100.202"}},
		{"only the later pool declares it", lbService("web", false, "198.51.100.10"), []string{"198.51.100.10"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			vips, errs := VIPs(pools, onlyLater, []corev1.Service{tc.svc}, nil)
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			var got []string
			for _, v := range vips {
				got = append(got, v.IP.String())
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("answered %v, want %v", got, tc.want)
			}
		})
	}
}
