package crosscheck

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/zerohop/zerohop/config/v1alpha1"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func meta(name string, age int) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(age) * time.Minute))}
}

func peer(name string, age int, addr string, nodeLabels ...string) *v1alpha1.BGPPeer {
	p := &v1alpha1.BGPPeer{ObjectMeta: meta(name, age), Spec: v1alpha1.BGPPeerSpec{MyASN: 64513, PeerASN: 64512, PeerAddress: addr}}
	for _, l := range nodeLabels {
		k, v, _ := strings.Cut(l, "=")
		p.Spec.NodeSelectors = append(p.Spec.NodeSelectors, v1alpha1.LabelSelector{MatchLabels: map[string]string{k: v}})
	}
	return p
}

func TestPeers(t *testing.T) {
	tests := []struct {
		name      string
		peers     []*v1alpha1.BGPPeer
		node      map[string]string
		want      []string
		conflicts []string // "peer<keeper"
	}{
		{"distinct", []*v1alpha1.BGPPeer{peer("r4", 0, "198.51.100.1"), peer("r6", 0, "2001:db8:100::1")}, nil,
			[]string{"r4", "r6"}, nil},
		{"a later duplicate is refused, whatever its name", []*v1alpha1.BGPPeer{peer("zz-router", 0, "198.51.100.1"), peer("aa-dup", 5, "198.51.100.1")}, nil,
			[]string{"zz-router"}, []string{"aa-dup<zz-router"}},
		{"same age: by name", []*v1alpha1.BGPPeer{peer("b", 0, "198.51.100.1"), peer("a", 0, "198.51.100.1")}, nil,
			[]string{"a"}, []string{"b<a"}},
		{"mapped form is the same address", []*v1alpha1.BGPPeer{peer("r", 0, "198.51.100.1"), peer("m", 1, "::ffff:198.51.100.1")}, nil,
			[]string{"r"}, []string{"m<r"}},
		{"duplicate for other nodes only", []*v1alpha1.BGPPeer{peer("r", 0, "198.51.100.1", "rack=a"), peer("s", 1, "198.51.100.1", "rack=b")}, map[string]string{"rack": "b"},
			[]string{"s"}, nil},
		{"older peer not for this node", []*v1alpha1.BGPPeer{peer("r", 0, "198.51.100.1", "rack=a"), peer("s", 1, "198.51.100.1")}, map[string]string{"rack": "b"},
			[]string{"s"}, nil},
		{"unnumbered peers on two interfaces", []*v1alpha1.BGPPeer{unnumbered("a", 0, "eth1"), unnumbered("b", 1, "eth2")}, nil,
			[]string{"a", "b"}, nil},
		{"a later unnumbered peer on an interface in use is refused", []*v1alpha1.BGPPeer{unnumbered("zz", 0, "eth1"), unnumbered("aa", 1, "eth1")}, nil,
			[]string{"zz"}, []string{"aa<zz"}},
		{"an unnumbered and a numbered peer do not collide", []*v1alpha1.BGPPeer{unnumbered("u", 0, "eth1"), peer("r", 1, "198.51.100.1")}, nil,
			[]string{"u", "r"}, nil},
		{"same interface for other nodes only", []*v1alpha1.BGPPeer{unnumbered("u", 0, "eth1", "rack=a"), unnumbered("v", 1, "eth1", "rack=b")}, map[string]string{"rack": "b"},
			[]string{"v"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in, conflicts, errs := Peers(tc.peers, tc.node)
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			var got []string
			for _, p := range in {
				got = append(got, p.Name)
			}
			var gotC []string
			for _, c := range conflicts {
				gotC = append(gotC, c.Peer+"<"+c.Keeper)
				if !strings.Contains(c.Error(), c.Keeper) || !strings.Contains(c.Error(), c.Peer) {
					t.Errorf("error %q does not name both peers", c.Error())
				}
			}
			if !slices.Equal(got, tc.want) || !slices.Equal(gotC, tc.conflicts) {
				t.Fatalf("in force %v conflicts %v, want %v %v", got, gotC, tc.want, tc.conflicts)
			}
		})
	}
}

func unnumbered(name string, age int, iface string, nodeLabels ...string) *v1alpha1.BGPPeer {
	p := peer(name, age, "", nodeLabels...)
	p.Spec.Interface = iface
	return p
}

func TestPeerConflictNamesTheKey(t *testing.T) {
	_, conflicts, _ := Peers([]*v1alpha1.BGPPeer{unnumbered("keep", 0, "eth1"), unnumbered("late", 1, "eth1")}, nil)
	if len(conflicts) != 1 || !strings.Contains(conflicts[0].Error(), "interface eth1") {
		t.Fatalf("conflicts %v, want one naming interface eth1", conflicts)
	}
	_, conflicts, _ = Peers([]*v1alpha1.BGPPeer{peer("keep", 0, "198.51.100.1"), peer("late", 1, "198.51.100.1")}, nil)
	if len(conflicts) != 1 || !strings.Contains(conflicts[0].Error(), "peerAddress 198.51.100.1") {
		t.Fatalf("conflicts %v, want one naming peerAddress 198.51.100.1", conflicts)
	}
}

func TestRouterID(t *testing.T) {
	withID := func(p *v1alpha1.BGPPeer, id string) *v1alpha1.BGPPeer {
		p.Spec.RouterID = id
		return p
	}
	tests := []struct {
		name      string
		peers     []*v1alpha1.BGPPeer // oldest first, as Peers returns them
		wantID    string
		want      []string
		conflicts []string // "peer<keeper"
	}{
		{"none set", []*v1alpha1.BGPPeer{peer("a", 0, "198.51.100.1"), peer("b", 1, "198.51.100.2")}, "invalid IP",
			[]string{"a", "b"}, nil},
		{"one set, the others agree with any", []*v1alpha1.BGPPeer{peer("a", 0, "198.51.100.1"), withID(peer("b", 1, "198.51.100.2"), "192.0.2.7")}, "192.0.2.7",
			[]string{"a", "b"}, nil},
		{"two agree", []*v1alpha1.BGPPeer{withID(peer("a", 0, "198.51.100.1"), "192.0.2.7"), withID(peer("b", 1, "198.51.100.2"), "192.0.2.7")}, "192.0.2.7",
			[]string{"a", "b"}, nil},
		{"the older wins, the younger is refused", []*v1alpha1.BGPPeer{withID(peer("zz", 0, "198.51.100.1"), "192.0.2.7"), withID(peer("aa", 1, "198.51.100.2"), "192.0.2.8")}, "192.0.2.7",
			[]string{"zz"}, []string{"aa<zz"}},
		{"the older without a routerID does not decide", []*v1alpha1.BGPPeer{peer("a", 0, "198.51.100.1"), withID(peer("b", 1, "198.51.100.2"), "192.0.2.8"), withID(peer("c", 2, "198.51.100.3"), "192.0.2.9")}, "192.0.2.8",
			[]string{"a", "b"}, []string{"c<b"}},
		{"not IPv4", []*v1alpha1.BGPPeer{withID(peer("a", 0, "198.51.100.1"), "2001:db8::1"), withID(peer("b", 1, "198.51.100.2"), "192.0.2.8")}, "192.0.2.8",
			[]string{"b"}, []string{"a<"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, kept, conflicts := RouterID(tc.peers)
			var got, gotC []string
			for _, p := range kept {
				got = append(got, p.Name)
			}
			for _, c := range conflicts {
				gotC = append(gotC, c.Peer+"<"+c.Keeper)
				if !strings.Contains(c.Error(), c.Peer) || !strings.Contains(c.Error(), c.RouterID) {
					t.Errorf("error %q does not name the peer and its routerID", c.Error())
				}
			}
			if id.String() != tc.wantID || !slices.Equal(got, tc.want) || !slices.Equal(gotC, tc.conflicts) {
				t.Fatalf("id %s kept %v conflicts %v, want %s %v %v", id, got, gotC, tc.wantID, tc.want, tc.conflicts)
			}
		})
	}
}

func pool(name string, age int, addrs ...string) *v1alpha1.IPAddressPool {
	p := &v1alpha1.IPAddressPool{ObjectMeta: meta(name, age)}
	for _, a := range addrs {
		p.Spec.Addresses = append(p.Spec.Addresses, v1alpha1.Address(a))
	}
	return p
}

func adv(v4, v6 int32) *v1alpha1.BGPAdvertisement {
	a := &v1alpha1.BGPAdvertisement{ObjectMeta: meta("adv", 0)}
	if v4 >= 0 {
		a.Spec.AggregationLength = &v4
	}
	if v6 >= 0 {
		a.Spec.AggregationLengthV6 = &v6
	}
	return a
}

func TestAggregation(t *testing.T) {
	demo := pool("demo-pool", 0, "203.0.113.0/24", "2001:db8:113::/120")
	tests := []struct {
		name    string
		adv     *v1alpha1.BGPAdvertisement
		pool    *v1alpha1.IPAddressPool
		wantErr string
	}{
		{"defaults", adv(-1, -1), demo, ""},
		{"host routes", adv(32, 128), demo, ""},
		{"exactly the pool", adv(24, 120), demo, ""},
		{"inside the pool", adv(28, 124), demo, ""},
		{"default route", adv(0, 128), demo, "spec.aggregationLength 0 is shorter than pool demo-pool's 203.0.113.0/24"},
		{"a /16", adv(16, 128), demo, "spec.aggregationLength 16"},
		{"v6 wider", adv(32, 64), demo, "spec.aggregationLengthV6 64 is shorter than pool demo-pool's 2001:db8:113::/120"},
		{"range pool", adv(30, 128), pool("r", 0, "192.0.2.10-192.0.2.20"), "pool r's 192.0.2.10/31: the aggregate would announce addresses outside the pool; use 32 or more"},
		{"range pool host routes", adv(32, 128), pool("r", 0, "192.0.2.10-192.0.2.20"), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Aggregation(tc.adv, tc.pool)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestPoolOfAndWithin(t *testing.T) {
	demo := pool("demo-pool", 0, "203.0.113.0/24", "2001:db8:113::/120")
	wide := pool("aaa-wide", 10, "203.0.0.0/16", "2001:db8::/32")
	bad := pool("bad", 20, "198.51.100.1/24", "198.51.100.128/25")
	idx, errs := NewPools([]*v1alpha1.IPAddressPool{wide, demo, bad})
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "spec.addresses[0]") {
		t.Fatalf("errors %v, want the bad pool's host-bits entry", errs)
	}
	tests := []struct {
		ip, recorded, want string
	}{
		{"203.0.113.7", "", "demo-pool"},
		{"203.0.113.7", "demo-pool", "demo-pool"},
		{"203.0.113.7", "aaa-wide", "aaa-wide"},
		{"203.0.1.1", "demo-pool", "aaa-wide"},
		{"2001:db8:113::5", "", "demo-pool"},
		{"2001:db8:1::5", "", "aaa-wide"},
		{"198.51.100.200", "", "bad"},
		{"198.51.100.2", "", ""},
		{"192.0.2.1", "demo-pool", ""},
	}
	for _, tc := range tests {
		got := ""
		if p := idx.Of(netip.MustParseAddr(tc.ip), tc.recorded); p != nil {
			got = p.Name
		}
		if got != tc.want {
			t.Errorf("Of(%s, %q) = %q, want %q", tc.ip, tc.recorded, got, tc.want)
		}
	}
	within := []struct {
		prefix string
		want   bool
	}{
		{"203.0.113.7/32", true},
		{"203.0.113.0/24", true},
		{"203.0.112.0/23", false},
		{"0.0.0.0/0", false},
		{"2001:db8:113::/120", true},
		{"2001:db8:113::/64", false},
	}
	for _, tc := range within {
		if got := idx.Within(netip.MustParsePrefix(tc.prefix), demo); got != tc.want {
			t.Errorf("Within(%s, demo) = %v", tc.prefix, got)
		}
	}
}
