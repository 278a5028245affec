package bgp

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/zerohop/zerohop/config/v1alpha1"
)

func pool(name string, labels map[string]string, addrs ...string) *v1alpha1.IPAddressPool {
	p := &v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	for _, a := range addrs {
		p.Spec.Addresses = append(p.Spec.Addresses, v1alpha1.Address(a))
	}
	return p
}

// peer makes a BGPPeer whose address follows its name's last character,
// so that peers of different names are different routers.
func peer(name string, myASN, peerASN uint32, sel ...v1alpha1.LabelSelector) *v1alpha1.BGPPeer {
	return &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.BGPPeerSpec{MyASN: myASN, PeerASN: peerASN, PeerAddress: fmt.Sprintf("198.51.100.%d", name[len(name)-1]), NodeSelectors: sel}}
}

// aged sets an object's creation time, minutes after an epoch: the older
// of two conflicting objects wins.
func aged[T interface{ SetCreationTimestamp(metav1.Time) }](o T, minutes int) T {
	o.SetCreationTimestamp(metav1.NewTime(time.Date(2026, 1, 1, 0, minutes, 0, 0, time.UTC)))
	return o
}

func adv(name string, f func(*v1alpha1.BGPAdvertisementSpec)) *v1alpha1.BGPAdvertisement {
	a := &v1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if f != nil {
		f(&a.Spec)
	}
	return a
}

func labelsSel(kv ...string) v1alpha1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return v1alpha1.LabelSelector{MatchLabels: m}
}

func svc(key string, local bool, localReady, ready int, ips ...string) Service {
	s := Service{Key: key, LocalOnly: local, LocalReady: localReady, Ready: ready}
	for _, ip := range ips {
		s.IPs = append(s.IPs, netip.MustParseAddr(ip))
	}
	return s
}

func i32(v int32) *int32 { return &v }

// rejects gives a Service a reject share.
func rejects(s Service) Service {
	s.Rejects = true
	return s
}

// labelled sets a Service's labels.
func labelled(s Service, kv ...string) Service {
	s.Labels = labelsSel(kv...).MatchLabels
	return s
}

// dynamic makes a BGPPeer that takes the router's AS from its OPEN.
func dynamic(name string, myASN uint32, mode v1alpha1.DynamicASNMode) *v1alpha1.BGPPeer {
	p := peer(name, myASN, 0)
	p.Spec.DynamicASN = mode
	return p
}

func routerID(p *v1alpha1.BGPPeer, id string) *v1alpha1.BGPPeer {
	p.Spec.RouterID = id
	return p
}

// recorded sets the pool the controller recorded for every address of s.
func recorded(s Service, pool string) Service {
	s.Pools = nil
	for range s.IPs {
		s.Pools = append(s.Pools, pool)
	}
	return s
}

// render turns a plan into "peer: prefix attrs [services]" lines, so a
// table row states its expectation in one readable list.
func render(p Plan) []string {
	var out []string
	for _, pp := range p.Peers {
		if len(pp.Paths) == 0 {
			out = append(out, pp.Peer.Name+": -")
		}
		for _, path := range pp.Paths {
			s := pp.Peer.Name + ": " + path.Prefix.String()
			for _, c := range path.Communities {
				s += fmt.Sprintf(" c=%d:%d", c>>16, c&0xffff)
			}
			for _, c := range path.LargeCommunities {
				s += fmt.Sprintf(" lc=%d:%d:%d", c.GlobalAdmin, c.LocalData1, c.LocalData2)
			}
			if path.LocalPref != 0 {
				s += fmt.Sprintf(" lp=%d", path.LocalPref)
			}
			if path.Weight != 0 {
				s += fmt.Sprintf(" w=%d", path.Weight)
			}
			s += " [" + strings.Join(path.Services, ",") + "]"
			out = append(out, s)
		}
	}
	return out
}

func TestCompute(t *testing.T) {
	node := Node{Name: "n1", Labels: map[string]string{"rack": "a", "zone": "z1"}, Healthy: true}
	pA := pool("a", map[string]string{"tier": "gold"}, "192.0.2.0/28", "2001:db8::/120")
	pB := pool("b", map[string]string{"tier": "silver"}, "198.51.100.10-198.51.100.20")
	pools := []*v1alpha1.IPAddressPool{pA, pB}
	eR1 := peer("r1", 64512, 64513)
	iR2 := peer("r2", 64512, 64512)
	all := adv("all", nil)
	web := svc("ns/web", false, 0, 2, "192.0.2.1")

	tests := []struct {
		name  string
		node  *Node
		pools []*v1alpha1.IPAddressPool
		peers []*v1alpha1.BGPPeer
		advs  []*v1alpha1.BGPAdvertisement
		svcs  []Service
		want  []string
		// wantErr is a substring of the joined errors; empty: no error.
		wantErr string
	}{
		{name: "no peers", advs: []*v1alpha1.BGPAdvertisement{all}, svcs: []Service{web}, want: nil},
		{name: "peer without advertisement", peers: []*v1alpha1.BGPPeer{eR1}, svcs: []Service{web}, want: []string{"r1: -"}},
		{name: "cluster service, empty advertisement selects every pool",
			peers: []*v1alpha1.BGPPeer{eR1}, advs: []*v1alpha1.BGPAdvertisement{all}, svcs: []Service{web},
			want: []string{"r1: 192.0.2.1/32 [ns/web]"}},
		{name: "cluster service with no ready endpoint anywhere",
			peers: []*v1alpha1.BGPPeer{eR1}, advs: []*v1alpha1.BGPAdvertisement{all}, svcs: []Service{svc("ns/web", false, 0, 0, "192.0.2.1")},
			want: []string{"r1: -"}},
		{name: "cluster service with no ready endpoint but a reject share",
			peers: []*v1alpha1.BGPPeer{eR1}, advs: []*v1alpha1.BGPAdvertisement{all}, svcs: []Service{rejects(svc("ns/gw", false, 0, 0, "192.0.2.1"))},
			want: []string{"r1: 192.0.2.1/32 [ns/gw]"}},
		{name: "local service with a reject share but no local endpoint",
			peers: []*v1alpha1.BGPPeer{eR1}, advs: []*v1alpha1.BGPAdvertisement{all}, svcs: []Service{rejects(svc("ns/web", true, 0, 3, "192.0.2.1"))},
			want: []string{"r1: -"}},
		{name: "cluster service announced from a node without local endpoints",
			peers: []*v1alpha1.BGPPeer{eR1}, advs: []*v1alpha1.BGPAdvertisement{all}, svcs: []Service{svc("ns/web", false, 0, 3, "192.0.2.1")},
			want: []string{"r1: 192.0.2.1/32 [ns/web]"}},
		{name: "local service with a ready local endpoint",
			peers: []*v1alpha1.BGPPeer{eR1}, advs: []*v1alpha1.BGPAdvertisement{all}, svcs: []Service{svc("ns/web", true, 1, 3, "192.0.2.1")},
			want: []string{"r1: 192.0.2.1/32 [ns/web]"}},
		{name: "local service without a local endpoint",
			peers: []*v1alpha1.BGPPeer{eR1}, advs: []*v1alpha1.BGPAdvertisement{all}, svcs: []Service{svc("ns/web", true, 0, 3, "192.0.2.1")},
			want: []string{"r1: -"}},
		{name: "ip outside every pool is not ours",
			peers: []*v1alpha1.BGPPeer{eR1}, advs: []*v1alpha1.BGPAdvertisement{all}, svcs: []Service{svc("ns/web", false, 0, 1, "203.0.113.5")},
			want: []string{"r1: -"}},
		{name: "ip in a range pool",
			peers: []*v1alpha1.BGPPeer{eR1}, advs: []*v1alpha1.BGPAdvertisement{all}, svcs: []Service{svc("ns/web", false, 0, 1, "198.51.100.20")},
			want: []string{"r1: 198.51.100.20/32 [ns/web]"}},
		{name: "ip just past a range pool",
			peers: []*v1alpha1.BGPPeer{eR1}, advs: []*v1alpha1.BGPAdvertisement{all}, svcs: []Service{svc("ns/web", false, 0, 1, "198.51.100.21")},
			want: []string{"r1: -"}},
		{name: "advertisement by pool name matches",
			peers: []*v1alpha1.BGPPeer{eR1},
			advs:  []*v1alpha1.BGPAdvertisement{adv("x", func(s *v1alpha1.BGPAdvertisementSpec) { s.IPAddressPools = []string{"b"} })},
			svcs:  []Service{web, svc("ns/db", false, 0, 1, "198.51.100.11")},
			want:  []string{"r1: 198.51.100.11/32 [ns/db]"}},
		{name: "advertisement by pool selector matches",
			peers: []*v1alpha1.BGPPeer{eR1},
			advs: []*v1alpha1.BGPAdvertisement{adv("x", func(s *v1alpha1.BGPAdvertisementSpec) {
				s.IPAddressPoolSelectors = []v1alpha1.LabelSelector{labelsSel("tier", "gold")}
			})},
			svcs: []Service{web, svc("ns/db", false, 0, 1, "198.51.100.11")},
			want: []string{"r1: 192.0.2.1/32 [ns/web]"}},
		{name: "pool name or selector: either is enough",
			peers: []*v1alpha1.BGPPeer{eR1},
			advs: []*v1alpha1.BGPAdvertisement{adv("x", func(s *v1alpha1.BGPAdvertisementSpec) {
				s.IPAddressPools = []string{"b"}
				s.IPAddressPoolSelectors = []v1alpha1.LabelSelector{labelsSel("tier", "gold")}
			})},
			svcs: []Service{web, svc("ns/db", false, 0, 1, "198.51.100.11")},
			want: []string{"r1: 192.0.2.1/32 [ns/web]", "r1: 198.51.100.11/32 [ns/db]"}},
		{name: "pool selector matching nothing",
			peers: []*v1alpha1.BGPPeer{eR1},
			advs: []*v1alpha1.BGPAdvertisement{adv("x", func(s *v1alpha1.BGPAdvertisementSpec) {
				s.IPAddressPoolSelectors = []v1alpha1.LabelSelector{labelsSel("tier", "bronze")}
			})},
			svcs: []Service{web}, want: []string{"r1: -"}},
		{name: "advertisement naming a missing pool",
			peers: []*v1alpha1.BGPPeer{eR1},
			advs:  []*v1alpha1.BGPAdvertisement{adv("x", func(s *v1alpha1.BGPAdvertisementSpec) { s.IPAddressPools = []string{"nope"} })},
			svcs:  []Service{web}, want: []string{"r1: -"}},
		{name: "peer node selector excludes this node",
			peers: []*v1alpha1.BGPPeer{peer("r1", 64512, 64513, labelsSel("rack", "b"))},
			advs:  []*v1alpha1.BGPAdvertisement{all}, svcs: []Service{web}, want: nil},
		{name: "peer node selectors are ORed",
			peers: []*v1alpha1.BGPPeer{peer("r1", 64512, 64513, labelsSel("rack", "b"), labelsSel("zone", "z1"))},
			advs:  []*v1alpha1.BGPAdvertisement{all}, svcs: []Service{web}, want: []string{"r1: 192.0.2.1/32 [ns/web]"}},
		{name: "peer node selector with expressions",
			peers: []*v1alpha1.BGPPeer{peer("r1", 64512, 64513, v1alpha1.LabelSelector{MatchExpressions: []v1alpha1.LabelSelectorRequirement{
				{Key: "rack", Operator: metav1.LabelSelectorOpIn, Values: []string{"a", "c"}}}})},
			advs: []*v1alpha1.BGPAdvertisement{all}, svcs: []Service{web}, want: []string{"r1: 192.0.2.1/32 [ns/web]"}},
		{name: "advertisement node selector excludes this node",
			peers: []*v1alpha1.BGPPeer{eR1},
			advs: []*v1alpha1.BGPAdvertisement{adv("x", func(s *v1alpha1.BGPAdvertisementSpec) {
				s.NodeSelectors = []v1alpha1.LabelSelector{labelsSel("rack", "b")}
			})},
			svcs: []Service{web}, want: []string{"r1: -"}},
		{name: "advertisement node selector includes this node",
			peers: []*v1alpha1.BGPPeer{eR1},
			advs: []*v1alpha1.BGPAdvertisement{adv("x", func(s *v1alpha1.BGPAdvertisementSpec) {
				s.NodeSelectors = []v1alpha1.LabelSelector{labelsSel("rack", "a")}
			})},
			svcs: []Service{web}, want: []string{"r1: 192.0.2.1/32 [ns/web]"}},
		{name: "advertisement limited to one peer",
			peers: []*v1alpha1.BGPPeer{eR1, iR2},
			advs:  []*v1alpha1.BGPAdvertisement{adv("x", func(s *v1alpha1.BGPAdvertisementSpec) { s.Peers = []string{"r2"} })},
			svcs:  []Service{web}, want: []string{"r1: -", "r2: 192.0.2.1/32 [ns/web]"}},
		{name: "advertisement naming an unknown peer",
			peers: []*v1alpha1.BGPPeer{eR1},
			advs:  []*v1alpha1.BGPAdvertisement{adv("x", func(s *v1alpha1.BGPAdvertisementSpec) { s.Peers = []string{"r9"} })},
			svcs:  []Service{web}, want: []string{"r1: -"}},
		{name: "aggregation length v4",
			peers: []*v1alpha1.BGPPeer{eR1},
			advs:  []*v1alpha1.BGPAdvertisement{adv("x", func(s *v1alpha1.BGPAdvertisementSpec) { s.AggregationLength = i32(28) })},
			svcs:  []Service{web, svc("ns/api", false, 0, 1, "192.0.2.9")},
			want:  []string{"r1: 192.0.2.0/28 [ns/api,ns/web]"}},
		{name: "aggregation length v6",
			peers: []*v1alpha1.BGPPeer{eR1},
			advs:  []*v1alpha1.BGPAdvertisement{adv("x", func(s *v1alpha1.BGPAdvertisementSpec) { s.AggregationLengthV6 = i32(124) })},
			svcs:  []Service{svc("ns/v6", false, 0, 1, "2001:db8::5")},
			want:  []string{"r1: 2001:db8::/124 [ns/v6]"}},
		{name: "aggregation 0 would be a default route: refused for the pool",
			peers: []*v1alpha1.BGPPeer{eR1},
			advs:  []*v1alpha1.BGPAdvertisement{all, adv("zero", func(s *v1alpha1.BGPAdvertisementSpec) { s.AggregationLength = i32(0) })},
			svcs:  []Service{web},
			want:  []string{"r1: 192.0.2.1/32 [ns/web]"}, wantErr: "bgpadvertisement zero: spec.aggregationLength 0 is shorter than pool a's 192.0.2.0/28"},
		{name: "aggregation wider than the pool: refused, host routes of other advertisements stay",
			peers: []*v1alpha1.BGPPeer{eR1},
			advs:  []*v1alpha1.BGPAdvertisement{all, adv("wide", func(s *v1alpha1.BGPAdvertisementSpec) { s.AggregationLength = i32(16) })},
			svcs:  []Service{web},
			want:  []string{"r1: 192.0.2.1/32 [ns/web]"}, wantErr: "use 28 or more"},
		{name: "v6 aggregation wider than the pool: refused",
			peers: []*v1alpha1.BGPPeer{eR1},
			advs:  []*v1alpha1.BGPAdvertisement{adv("wide6", func(s *v1alpha1.BGPAdvertisementSpec) { s.AggregationLengthV6 = i32(64) })},
			svcs:  []Service{svc("ns/v6", false, 0, 1, "2001:db8::5")},
			want:  []string{"r1: -"}, wantErr: "spec.aggregationLengthV6 64"},
		{name: "a pool added later over a served address does not change how it is announced",
			pools: []*v1alpha1.IPAddressPool{aged(pA, 0), aged(pool("aaa-wide", nil, "192.0.2.0/24"), 5)},
			peers: []*v1alpha1.BGPPeer{eR1},
			advs: []*v1alpha1.BGPAdvertisement{
				adv("a-only", func(s *v1alpha1.BGPAdvertisementSpec) { s.IPAddressPools = []string{"a"} }),
				adv("wide-only", func(s *v1alpha1.BGPAdvertisementSpec) {
					s.IPAddressPools = []string{"aaa-wide"}
					s.Communities = []string{"no-advertise"}
				}),
			},
			svcs: []Service{recorded(web, "a"), svc("ns/old", false, 0, 1, "192.0.2.2")},
			want: []string{"r1: 192.0.2.1/32 [ns/web]", "r1: 192.0.2.2/32 [ns/old]"}},
		{name: "an address recorded for the pool that came later follows that pool",
			pools: []*v1alpha1.IPAddressPool{aged(pA, 0), aged(pool("aaa-wide", nil, "192.0.2.0/24"), 5)},
			peers: []*v1alpha1.BGPPeer{eR1},
			advs: []*v1alpha1.BGPAdvertisement{
				adv("a-only", func(s *v1alpha1.BGPAdvertisementSpec) { s.IPAddressPools = []string{"a"} }),
				adv("wide-only", func(s *v1alpha1.BGPAdvertisementSpec) {
					s.IPAddressPools = []string{"aaa-wide"}
					s.Communities = []string{"65000:9"}
				}),
			},
			svcs: []Service{recorded(web, "aaa-wide"), recorded(svc("ns/out", false, 0, 1, "192.0.2.40"), "a")},
			want: []string{"r1: 192.0.2.1/32 c=65000:9 [ns/web]", "r1: 192.0.2.40/32 c=65000:9 [ns/out]"}},
		{name: "a later BGPPeer with an address in use is refused; the session in service stays",
			peers: []*v1alpha1.BGPPeer{aged(eR1, 0), aged(&v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "a-dup"},
				Spec: v1alpha1.BGPPeerSpec{MyASN: 64999, PeerASN: 64513, PeerAddress: eR1.Spec.PeerAddress}}, 5)},
			advs: []*v1alpha1.BGPAdvertisement{all}, svcs: []Service{web},
			want: []string{"r1: 192.0.2.1/32 [ns/web]"}, wantErr: "bgppeer a-dup: peerAddress 198.51.100.49 is already used by the older bgppeer r1"},
		{name: "v6 host route by default",
			peers: []*v1alpha1.BGPPeer{eR1}, advs: []*v1alpha1.BGPAdvertisement{all},
			svcs: []Service{svc("ns/v6", false, 0, 1, "2001:db8::5")},
			want: []string{"r1: 2001:db8::5/128 [ns/v6]"}},
		{name: "dual-stack service",
			peers: []*v1alpha1.BGPPeer{eR1}, advs: []*v1alpha1.BGPAdvertisement{all},
			svcs: []Service{svc("ns/ds", false, 0, 1, "192.0.2.3", "2001:db8::3")},
			want: []string{"r1: 192.0.2.3/32 [ns/ds]", "r1: 2001:db8::3/128 [ns/ds]"}},
		{name: "two aggregations of one pool give two prefixes",
			peers: []*v1alpha1.BGPPeer{eR1},
			advs:  []*v1alpha1.BGPAdvertisement{all, adv("agg", func(s *v1alpha1.BGPAdvertisementSpec) { s.AggregationLength = i32(29) })},
			svcs:  []Service{web},
			want:  []string{"r1: 192.0.2.0/29 [ns/web]", "r1: 192.0.2.1/32 [ns/web]"}},
		{name: "standard, well-known and large communities",
			peers: []*v1alpha1.BGPPeer{eR1},
			advs: []*v1alpha1.BGPAdvertisement{adv("x", func(s *v1alpha1.BGPAdvertisementSpec) {
				s.Communities = []string{"65000:100", "no-export", "large:65000:1:2"}
			})},
			svcs: []Service{web}, want: []string{"r1: 192.0.2.1/32 c=65000:100 c=65535:65281 lc=65000:1:2 [ns/web]"}},
		{name: "communities of two advertisements are merged",
			peers: []*v1alpha1.BGPPeer{eR1},
			advs: []*v1alpha1.BGPAdvertisement{
				adv("x", func(s *v1alpha1.BGPAdvertisementSpec) { s.Communities = []string{"65000:2", "65000:1"} }),
				adv("y", func(s *v1alpha1.BGPAdvertisementSpec) { s.Communities = []string{"65000:1", "65000:3"} }),
			},
			svcs: []Service{web}, want: []string{"r1: 192.0.2.1/32 c=65000:1 c=65000:2 c=65000:3 [ns/web]"}},
		{name: "different communities per peer",
			peers: []*v1alpha1.BGPPeer{eR1, iR2},
			advs: []*v1alpha1.BGPAdvertisement{
				adv("x", func(s *v1alpha1.BGPAdvertisementSpec) { s.Peers = []string{"r1"}; s.Communities = []string{"65000:1"} }),
				adv("y", func(s *v1alpha1.BGPAdvertisementSpec) { s.Peers = []string{"r2"}; s.Communities = []string{"65000:2"} }),
			},
			svcs: []Service{web}, want: []string{"r1: 192.0.2.1/32 c=65000:1 [ns/web]", "r2: 192.0.2.1/32 c=65000:2 [ns/web]"}},
		{name: "bad community skips only its advertisement",
			peers: []*v1alpha1.BGPPeer{eR1},
			advs: []*v1alpha1.BGPAdvertisement{
				adv("bad", func(s *v1alpha1.BGPAdvertisementSpec) { s.Communities = []string{"65536:1"} }),
				adv("good", func(s *v1alpha1.BGPAdvertisementSpec) { s.Communities = []string{"65000:7"} }),
			},
			svcs: []Service{web}, want: []string{"r1: 192.0.2.1/32 c=65000:7 [ns/web]"}, wantErr: "bgpadvertisement bad"},
		{name: "local pref on iBGP only",
			peers: []*v1alpha1.BGPPeer{eR1, iR2},
			advs:  []*v1alpha1.BGPAdvertisement{adv("x", func(s *v1alpha1.BGPAdvertisementSpec) { s.LocalPref = 150 })},
			svcs:  []Service{web}, want: []string{"r1: 192.0.2.1/32 [ns/web]", "r2: 192.0.2.1/32 lp=150 [ns/web]"}},
		{name: "highest local pref wins",
			peers: []*v1alpha1.BGPPeer{iR2},
			advs: []*v1alpha1.BGPAdvertisement{
				adv("x", func(s *v1alpha1.BGPAdvertisementSpec) { s.LocalPref = 150 }),
				adv("y", func(s *v1alpha1.BGPAdvertisementSpec) { s.LocalPref = 200 }),
			},
			svcs: []Service{web}, want: []string{"r2: 192.0.2.1/32 lp=200 [ns/web]"}},
		{name: "weighted ECMP on a local service",
			peers: []*v1alpha1.BGPPeer{eR1},
			advs:  []*v1alpha1.BGPAdvertisement{adv("x", func(s *v1alpha1.BGPAdvertisementSpec) { s.WeightedECMP = true })},
			svcs:  []Service{svc("ns/web", true, 3, 4, "192.0.2.1")},
			want:  []string{"r1: 192.0.2.1/32 w=3 [ns/web]"}},
		{name: "weighted ECMP ignores cluster services",
			peers: []*v1alpha1.BGPPeer{eR1},
			advs:  []*v1alpha1.BGPAdvertisement{adv("x", func(s *v1alpha1.BGPAdvertisementSpec) { s.WeightedECMP = true })},
			svcs:  []Service{svc("ns/web", false, 3, 4, "192.0.2.1")},
			want:  []string{"r1: 192.0.2.1/32 [ns/web]"}},
		{name: "weighted aggregate sums local endpoints",
			peers: []*v1alpha1.BGPPeer{eR1},
			advs: []*v1alpha1.BGPAdvertisement{adv("x", func(s *v1alpha1.BGPAdvertisementSpec) {
				s.WeightedECMP = true
				s.AggregationLength = i32(28)
			})},
			svcs: []Service{svc("ns/a", true, 1, 2, "192.0.2.1"), svc("ns/b", true, 2, 2, "192.0.2.2")},
			want: []string{"r1: 192.0.2.0/28 w=3 [ns/a,ns/b]"}},
		{name: "aggregate mixing local and cluster carries no weight",
			peers: []*v1alpha1.BGPPeer{eR1},
			advs: []*v1alpha1.BGPAdvertisement{adv("x", func(s *v1alpha1.BGPAdvertisementSpec) {
				s.WeightedECMP = true
				s.AggregationLength = i32(28)
			})},
			svcs: []Service{svc("ns/a", true, 1, 2, "192.0.2.1"), svc("ns/b", false, 0, 2, "192.0.2.2")},
			want: []string{"r1: 192.0.2.0/28 [ns/a,ns/b]"}},
		{name: "unweighted advertisement of the same prefix drops the weight",
			peers: []*v1alpha1.BGPPeer{eR1},
			advs: []*v1alpha1.BGPAdvertisement{
				adv("x", func(s *v1alpha1.BGPAdvertisementSpec) { s.WeightedECMP = true }),
				all,
			},
			svcs: []Service{svc("ns/web", true, 2, 2, "192.0.2.1")},
			want: []string{"r1: 192.0.2.1/32 [ns/web]"}},
		{name: "unhealthy node keeps sessions, announces nothing",
			node:  &Node{Name: "n1", Labels: node.Labels, Healthy: false},
			peers: []*v1alpha1.BGPPeer{eR1}, advs: []*v1alpha1.BGPAdvertisement{all}, svcs: []Service{web},
			want: []string{"r1: -"}},
		{name: "bad pool address is reported, the pool's other entries still count",
			pools: []*v1alpha1.IPAddressPool{pool("bad", nil, "garbage", "192.0.2.0/28")},
			peers: []*v1alpha1.BGPPeer{eR1}, advs: []*v1alpha1.BGPAdvertisement{all}, svcs: []Service{web},
			want: []string{"r1: 192.0.2.1/32 [ns/web]"}, wantErr: "pool bad"},
		{name: "bad peer selector drops the peer",
			peers: []*v1alpha1.BGPPeer{peer("r1", 64512, 64513, v1alpha1.LabelSelector{MatchExpressions: []v1alpha1.LabelSelectorRequirement{
				{Key: "rack", Operator: "Bogus"}}})},
			advs: []*v1alpha1.BGPAdvertisement{all}, svcs: []Service{web}, want: nil, wantErr: "bgppeer r1"},
		{name: "many services sorted by prefix, peers by name",
			peers: []*v1alpha1.BGPPeer{iR2, eR1}, advs: []*v1alpha1.BGPAdvertisement{all},
			svcs: []Service{svc("ns/c", false, 0, 1, "192.0.2.9"), svc("ns/a", false, 0, 1, "192.0.2.2")},
			want: []string{"r1: 192.0.2.2/32 [ns/a]", "r1: 192.0.2.9/32 [ns/c]", "r2: 192.0.2.2/32 [ns/a]", "r2: 192.0.2.9/32 [ns/c]"}},
		{name: "two services sharing one IP",
			peers: []*v1alpha1.BGPPeer{eR1}, advs: []*v1alpha1.BGPAdvertisement{all},
			svcs: []Service{svc("ns/tcp", false, 0, 1, "192.0.2.4"), svc("ns/udp", false, 0, 1, "192.0.2.4")},
			want: []string{"r1: 192.0.2.4/32 [ns/tcp,ns/udp]"}},
		{name: "serviceSelectors: only matching Services",
			peers: []*v1alpha1.BGPPeer{eR1},
			advs: []*v1alpha1.BGPAdvertisement{adv("x", func(s *v1alpha1.BGPAdvertisementSpec) {
				s.ServiceSelectors = []v1alpha1.LabelSelector{labelsSel("app", "dns")}
			})},
			svcs: []Service{labelled(web, "app", "web"), labelled(svc("ns/dns", false, 0, 1, "192.0.2.2"), "app", "dns")},
			want: []string{"r1: 192.0.2.2/32 [ns/dns]"}},
		{name: "serviceSelectors are ORed, an empty selector matches every Service",
			peers: []*v1alpha1.BGPPeer{eR1},
			advs: []*v1alpha1.BGPAdvertisement{adv("x", func(s *v1alpha1.BGPAdvertisementSpec) {
				s.ServiceSelectors = []v1alpha1.LabelSelector{labelsSel("app", "nope"), {}}
			})},
			svcs: []Service{web},
			want: []string{"r1: 192.0.2.1/32 [ns/web]"}},
		{name: "serviceSelectors choose the communities: another advertisement announces the rest",
			peers: []*v1alpha1.BGPPeer{eR1},
			advs: []*v1alpha1.BGPAdvertisement{all, adv("gold", func(s *v1alpha1.BGPAdvertisementSpec) {
				s.ServiceSelectors = []v1alpha1.LabelSelector{labelsSel("tier", "gold")}
				s.Communities = []string{"65000:1"}
			})},
			svcs: []Service{labelled(web, "tier", "gold"), svc("ns/other", false, 0, 1, "192.0.2.2")},
			want: []string{"r1: 192.0.2.1/32 c=65000:1 [ns/web]", "r1: 192.0.2.2/32 [ns/other]"}},
		{name: "serviceSelectors on a shared address: every holder matches",
			peers: []*v1alpha1.BGPPeer{eR1},
			advs: []*v1alpha1.BGPAdvertisement{adv("gold", func(s *v1alpha1.BGPAdvertisementSpec) {
				s.ServiceSelectors = []v1alpha1.LabelSelector{labelsSel("tier", "gold")}
				s.Communities = []string{"65000:1"}
			})},
			svcs: []Service{labelled(svc("ns/tcp", false, 0, 1, "192.0.2.4"), "tier", "gold"), labelled(svc("ns/udp", false, 0, 1, "192.0.2.4"), "tier", "gold")},
			want: []string{"r1: 192.0.2.4/32 c=65000:1 [ns/tcp,ns/udp]"}},
		{name: "serviceSelectors on a shared address: one holder that does not match keeps the advertisement off it",
			peers: []*v1alpha1.BGPPeer{eR1},
			advs: []*v1alpha1.BGPAdvertisement{all, adv("gold", func(s *v1alpha1.BGPAdvertisementSpec) {
				s.ServiceSelectors = []v1alpha1.LabelSelector{labelsSel("tier", "gold")}
				s.Communities = []string{"65000:1"}
			})},
			svcs: []Service{labelled(svc("ns/tcp", false, 0, 1, "192.0.2.4"), "tier", "gold"), svc("ns/udp", false, 0, 1, "192.0.2.4")},
			want: []string{"r1: 192.0.2.4/32 [ns/tcp,ns/udp]"}},
		{name: "serviceSelectors on a shared address: a holder without endpoints still counts",
			peers: []*v1alpha1.BGPPeer{eR1},
			advs: []*v1alpha1.BGPAdvertisement{adv("gold", func(s *v1alpha1.BGPAdvertisementSpec) {
				s.ServiceSelectors = []v1alpha1.LabelSelector{labelsSel("tier", "gold")}
			})},
			svcs: []Service{labelled(svc("ns/tcp", false, 0, 1, "192.0.2.4"), "tier", "gold"), svc("ns/udp", false, 0, 0, "192.0.2.4")},
			want: []string{"r1: -"}},
		{name: "serviceSelectors decide per address: a dual-stack Service's two addresses alike",
			peers: []*v1alpha1.BGPPeer{eR1},
			advs: []*v1alpha1.BGPAdvertisement{adv("gold", func(s *v1alpha1.BGPAdvertisementSpec) {
				s.ServiceSelectors = []v1alpha1.LabelSelector{labelsSel("tier", "gold")}
			})},
			svcs: []Service{labelled(svc("ns/ds", false, 0, 1, "192.0.2.3", "2001:db8::3"), "tier", "gold"), svc("ns/v6", false, 0, 1, "2001:db8::3")},
			want: []string{"r1: 192.0.2.3/32 [ns/ds]"}},
		{name: "bad serviceSelector leaves its advertisement out",
			peers: []*v1alpha1.BGPPeer{eR1},
			advs: []*v1alpha1.BGPAdvertisement{adv("bad", func(s *v1alpha1.BGPAdvertisementSpec) {
				s.ServiceSelectors = []v1alpha1.LabelSelector{{MatchExpressions: []v1alpha1.LabelSelectorRequirement{{Key: "app", Operator: "Bogus"}}}}
			})},
			svcs: []Service{web}, want: []string{"r1: -"}, wantErr: "bgpadvertisement bad: serviceSelectors"},
		{name: "dynamicASN internal is iBGP: local pref sent",
			peers: []*v1alpha1.BGPPeer{dynamic("d1", 64512, v1alpha1.DynamicASNInternal), dynamic("d2", 64512, v1alpha1.DynamicASNExternal)},
			advs:  []*v1alpha1.BGPAdvertisement{adv("x", func(s *v1alpha1.BGPAdvertisementSpec) { s.LocalPref = 150 })},
			svcs:  []Service{web}, want: []string{"d1: 192.0.2.1/32 lp=150 [ns/web]", "d2: 192.0.2.1/32 [ns/web]"}},
		{name: "a peer asking for another router ID than an older one is not used",
			peers: []*v1alpha1.BGPPeer{aged(routerID(peer("r1", 64512, 64513), "192.0.2.101"), 0), aged(routerID(peer("r2", 64512, 64513), "192.0.2.102"), 5), aged(peer("r3", 64512, 64513), 9)},
			advs:  []*v1alpha1.BGPAdvertisement{all}, svcs: []Service{web},
			want: []string{"r1: 192.0.2.1/32 [ns/web]", "r3: 192.0.2.1/32 [ns/web]"}, wantErr: "bgppeer r2: routerID 192.0.2.102 differs from 192.0.2.101, set by the older bgppeer r1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := Input{Node: node, Pools: pools, Peers: tc.peers, Advertisements: tc.advs, Services: tc.svcs}
			if tc.node != nil {
				in.Node = *tc.node
			}
			if tc.pools != nil {
				in.Pools = tc.pools
			}
			plan, errs := Compute(in)
			got := render(plan)
			if !slices.Equal(got, tc.want) {
				t.Errorf("plan:\n got %q\nwant %q", got, tc.want)
			}
			var msgs []string
			for _, e := range errs {
				msgs = append(msgs, e.Error())
			}
			joined := strings.Join(msgs, "; ")
			switch {
			case tc.wantErr == "" && joined != "":
				t.Errorf("unexpected errors: %s", joined)
			case tc.wantErr != "" && !strings.Contains(joined, tc.wantErr):
				t.Errorf("errors %q do not mention %q", joined, tc.wantErr)
			}
		})
	}
}

func TestParseCommunity(t *testing.T) {
	tests := []struct {
		in      string
		std     uint32
		large   *LargeCommunity
		wantErr bool
	}{
		{in: "65000:100", std: 65000<<16 | 100},
		{in: "0:0", std: 0},
		{in: "no-export", std: 0xFFFFFF01},
		{in: "no-advertise", std: 0xFFFFFF02},
		{in: "no-peer", std: 0xFFFFFF04},
		{in: "blackhole", std: 0xFFFF029A},
		{in: "large:4294967295:1:2", large: &LargeCommunity{4294967295, 1, 2}},
		{in: "65536:1", wantErr: true},
		{in: "1:65536", wantErr: true},
		{in: "large:1:2", wantErr: true},
		{in: "large:1:2:4294967296", wantErr: true},
		{in: "nope", wantErr: true},
	}
	for _, tc := range tests {
		std, lc, large, err := ParseCommunity(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("%s: err %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if tc.wantErr {
			continue
		}
		if tc.large != nil {
			if !large || lc != *tc.large {
				t.Errorf("%s: got large=%v %v, want %v", tc.in, large, lc, *tc.large)
			}
			continue
		}
		if large || std != tc.std {
			t.Errorf("%s: got large=%v %#x, want %#x", tc.in, large, std, tc.std)
		}
	}
}

func TestServiceFrom(t *testing.T) {
	yes, no := true, false
	n1, n2 := "n1", "n2"
	ep := func(addr, pod string, node *string, ready *bool) discoveryv1.Endpoint {
		e := discoveryv1.Endpoint{Addresses: []string{addr}, NodeName: node, Conditions: discoveryv1.EndpointConditions{Ready: ready}}
		if pod != "" {
			e.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: "ns", Name: pod}
		}
		return e
	}
	lb := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal},
		Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{
			{IP: "192.0.2.1"}, {IP: "2001:db8::1"}, {Hostname: "x.example"}}}},
	}
	slices := []*discoveryv1.EndpointSlice{
		{Endpoints: []discoveryv1.Endpoint{ep("100.64.0.1", "a", &n1, &yes), ep("100.64.0.2", "b", &n1, &no), ep("100.64.1.1", "c", &n2, nil)}},
		{Endpoints: []discoveryv1.Endpoint{ep("fd00::1", "a", &n1, &yes), ep("fd00::3", "", &n1, &yes)}},
	}
	got, ok := ServiceFrom(lb, slices, "n1")
	if !ok {
		t.Fatal("load balancer with IPs not taken")
	}
	want := Service{Key: "ns/web", LocalOnly: true, IPs: []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")},
		LocalReady: 2, Ready: 3}
	if got.Key != want.Key || got.LocalOnly != want.LocalOnly || !addrsEqual(got.IPs, want.IPs) || got.LocalReady != want.LocalReady || got.Ready != want.Ready {
		t.Errorf("got %+v, want %+v", got, want)
	}
	cip := lb.DeepCopy()
	cip.Spec.Type = corev1.ServiceTypeClusterIP
	if _, ok := ServiceFrom(cip, slices, "n1"); ok {
		t.Error("ClusterIP Service taken")
	}
	pending := lb.DeepCopy()
	pending.Status = corev1.ServiceStatus{}
	if _, ok := ServiceFrom(pending, slices, "n1"); ok {
		t.Error("Service without IPs taken")
	}
	if got.Rejects {
		t.Error("Rejects set without a reject share")
	}
	rejecting := append(slices, &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{
		Annotations: map[string]string{v1alpha1.AnnotationRejectWeight: "1073741824"}}})
	if got, _ := ServiceFrom(lb, rejecting, "n1"); !got.Rejects || got.Ready != 3 {
		t.Errorf("with a reject share: Rejects %v, Ready %d; want true, 3", got.Rejects, got.Ready)
	}
}

func addrsEqual(a, b []netip.Addr) bool { return slices.Equal(a, b) }

func TestNodeHealthy(t *testing.T) {
	tests := []struct {
		name string
		node *corev1.Node
		want bool
	}{
		{"nil", nil, false},
		{"plain", &corev1.Node{}, true},
		{"excluded", &corev1.Node{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{ExcludeLabel: ""}}}, false},
		{"network unavailable", &corev1.Node{Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{
			{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionTrue}}}}, false},
		{"network available", &corev1.Node{Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{
			{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse}}}}, true},
		{"cordoned", &corev1.Node{Spec: corev1.NodeSpec{Unschedulable: true}}, false},
		{"shutting down", &corev1.Node{Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{
			{Type: corev1.NodeReady, Status: corev1.ConditionFalse, Message: "node is shutting down"}}}}, false},
		{"not ready otherwise", &corev1.Node{Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{
			{Type: corev1.NodeReady, Status: corev1.ConditionFalse, Message: "container runtime down"}}}}, true},
	}
	for _, tc := range tests {
		if got := NodeHealthy(tc.node); got != tc.want {
			t.Errorf("%s: got %v want %v", tc.name, got, tc.want)
		}
	}
}

func TestIBGP(t *testing.T) {
	tests := []struct {
		name string
		spec v1alpha1.BGPPeerSpec
		want bool
	}{
		{"same AS", v1alpha1.BGPPeerSpec{MyASN: 64512, PeerASN: 64512}, true},
		{"other AS", v1alpha1.BGPPeerSpec{MyASN: 64512, PeerASN: 64513}, false},
		{"dynamic internal", v1alpha1.BGPPeerSpec{MyASN: 64512, DynamicASN: v1alpha1.DynamicASNInternal}, true},
		{"dynamic external", v1alpha1.BGPPeerSpec{MyASN: 64512, DynamicASN: v1alpha1.DynamicASNExternal}, false},
	}
	for _, tc := range tests {
		if got := IBGP(&tc.spec); got != tc.want {
			t.Errorf("%s: IBGP = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestPlanRouterID(t *testing.T) {
	node := Node{Name: "n1", Healthy: true}
	tests := []struct {
		name  string
		peers []*v1alpha1.BGPPeer
		want  string
	}{
		{"none", []*v1alpha1.BGPPeer{peer("r1", 64512, 64513)}, "invalid IP"},
		{"from a peer", []*v1alpha1.BGPPeer{peer("r1", 64512, 64513), routerID(peer("r2", 64512, 64513), "192.0.2.9")}, "192.0.2.9"},
		{"the oldest wins", []*v1alpha1.BGPPeer{aged(routerID(peer("r2", 64512, 64513), "192.0.2.9"), 3), aged(routerID(peer("r1", 64512, 64513), "192.0.2.8"), 1)}, "192.0.2.8"},
		{"a peer for other nodes does not count", []*v1alpha1.BGPPeer{routerID(peer("r1", 64512, 64513, labelsSel("rack", "b")), "192.0.2.9")}, "invalid IP"},
	}
	for _, tc := range tests {
		plan, _ := Compute(Input{Node: node, Peers: tc.peers})
		if got := plan.RouterID.String(); got != tc.want {
			t.Errorf("%s: router ID %s, want %s", tc.name, got, tc.want)
		}
	}
}
