package bgp

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
)

// The router's end of the point-to-point link of TestFRRUnnumbered.
const unnumberedRtrIf = "zhr0"

// frrUnnumberedConfig: an unnumbered neighbour on the veth, and two
// numbered neighbours whose AS FRR takes as it comes (remote-as external
// and internal), for the speaker's dynamicASN sessions.
func frrUnnumberedConfig(logDir string) string {
	return fmt.Sprintf(`frr defaults datacenter
hostname zh-bgpu
log file %s/bgpd.log informational
!
router bgp %d
 bgp router-id %s
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 timers bgp 3 9
 neighbor %s interface remote-as external
 neighbor %s timers connect 1
 neighbor %s remote-as external
 neighbor %s timers connect 1
 neighbor %s remote-as internal
 neighbor %s timers connect 1
 address-family ipv4 unicast
  neighbor %s activate
  neighbor %s activate
  neighbor %s activate
 exit-address-family
 address-family ipv6 unicast
  neighbor %s activate
 exit-address-family
!
`, logDir, rtrASN, rtrA,
		unnumberedRtrIf, unnumberedRtrIf,
		spkA, spkA,
		spkB, spkB,
		unnumberedRtrIf, spkA, spkB,
		unnumberedRtrIf)
}

// TestFRRUnnumbered peers the embedded GoBGP with FRR over a veth that
// has only link-local addresses (BGP unnumbered, RFC 8950: IPv4 routes
// with an IPv6 next hop), and checks dynamicASN against FRR: external
// accepts another AS and refuses the session's own, internal gives an
// iBGP session that carries local-pref.
func TestFRRUnnumbered(t *testing.T) {
	if ps := os.Getenv(innerEnv); ps != "" {
		innerUnnumbered(t, ps)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("TestFRRUnnumbered needs root (network namespaces, FRR); skipped because not root")
	}
	if _, err := os.Stat("/usr/lib/frr/bgpd"); err != nil {
		t.Fatalf("FRR not installed (make deps): %v", err)
	}
	id := strconv.Itoa(os.Getpid() % 100000)
	nsS, nsR := "zh-bgpu-s"+id, "zh-bgpu-r"+id
	pathspace := "zh-bgpu" + id
	for _, ns := range []string{nsS, nsR} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
		run(t, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0")
	}
	// Nodes forward: a node's kernel then ignores Router Advertisements
	// for its own configuration, and the neighbour must still be found.
	run(t, "ip", "netns", "exec", nsS, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	run(t, "ip", "-n", nsS, "link", "add", "zhs0", "type", "veth", "peer", "name", unnumberedRtrIf, "netns", nsR)
	for _, a := range []string{spkA + "/24", spkB + "/24"} {
		run(t, "ip", "-n", nsS, "addr", "add", a, "dev", "zhs0")
	}
	for _, a := range []string{rtrA + "/24", rtrB + "/24"} {
		run(t, "ip", "-n", nsR, "addr", "add", a, "dev", unnumberedRtrIf)
	}
	run(t, "ip", "-n", nsS, "link", "set", "zhs0", "up")
	run(t, "ip", "-n", nsR, "link", "set", unnumberedRtrIf, "up")

	stop := startFRR(t, nsR, pathspace, frrUnnumberedConfig)
	defer stop()

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"netns", "exec", nsS, exe, "-test.run", "^TestFRRUnnumbered$", "-test.count", "1"}
	if testing.Verbose() {
		args = append(args, "-test.v")
	}
	cmd := exec.Command("ip", args...)
	cmd.Env = append(os.Environ(), innerEnv+"="+pathspace)
	out, err := cmd.CombinedOutput()
	t.Logf("speaker side:\n%s", out)
	if err != nil {
		t.Fatalf("speaker side failed: %v", err)
	}
}

// frrNeighbor is FRR's `show bgp neighbors X json` for one neighbour.
type frrNeighbor struct {
	State string `json:"bgpState"`
}

func frrNeighborOf(t testing.TB, ps, name string) frrNeighbor {
	t.Helper()
	out := vtysh(t, ps, "show bgp neighbors "+name+" json")
	var r map[string]frrNeighbor
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("parse %s: %v", out, err)
	}
	return r[name]
}

// routerPathVia returns FRR's path for prefix from the unnumbered
// neighbour (FRR names such a peer by its interface) and whether it has
// one.
func routerPathVia(t testing.TB, ps string, prefix netip.Prefix) (frrPath, bool) {
	t.Helper()
	for id, p := range routerPaths(t, ps, prefix) {
		if id == unnumberedRtrIf || strings.HasPrefix(id, "fe80:") {
			return p, true
		}
	}
	return frrPath{}, false
}

func innerUnnumbered(t *testing.T, ps string) {
	ctx := context.Background()
	s, err := New(ctx, Options{RouterID: netip.MustParseAddr(spkA), ASN: spkASN, Log: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(false)

	// The router's link-local address, as the speaker finds it.
	var ll netip.Addr
	eventually(t, 20*time.Second, "the router's link-local neighbour on zhs0", func() bool {
		ll, err = LinkLocalNeighbor("zhs0")
		return err == nil
	})
	if ll.Zone() != "zhs0" || !ll.IsLinkLocalUnicast() {
		t.Fatalf("neighbour %v: want a link-local address with zone zhs0", ll)
	}
	if _, err := LinkLocalNeighbor("lo"); err == nil {
		t.Fatal("a neighbour on lo")
	}

	un := Peer{Name: "unnumbered", Address: ll, Interface: "zhs0", MyASN: spkASN, ExternalOnly: true,
		HoldTime: 9 * time.Second, ConnectTime: time.Second,
		// Ignored on an unnumbered session: its link has no such address.
		NextHop4: netip.MustParseAddr(spkA)}
	ext := Peer{Name: "dyn-ext", Address: netip.MustParseAddr(rtrA), SourceAddress: netip.MustParseAddr(spkA),
		MyASN: spkASN, ExternalOnly: true, HoldTime: 9 * time.Second, ConnectTime: time.Second}
	// dynamicASN internal: the speaker asks for its own AS.
	inter := Peer{Name: "dyn-int", Address: netip.MustParseAddr(rtrB), SourceAddress: netip.MustParseAddr(spkB),
		MyASN: rtrASN, PeerASN: rtrASN, HoldTime: 9 * time.Second, ConnectTime: time.Second}
	vip4 := netip.MustParsePrefix("198.51.100.1/32")
	vip6 := netip.MustParsePrefix("2001:db8:100::1/128")
	vipExt := netip.MustParsePrefix("198.51.100.2/32")
	vipInt := netip.MustParsePrefix("198.51.100.3/32")
	paths := map[netip.Addr][]Path{
		un.Address:    {{Prefix: vip4, Communities: []uint32{65000<<16 | 4}}, {Prefix: vip6}},
		ext.Address:   {{Prefix: vipExt, LocalPref: 0}},
		inter.Address: {{Prefix: vipInt, LocalPref: 300}},
	}
	if err := s.Apply(ctx, []Peer{un, ext, inter}, paths); err != nil {
		t.Fatal(err)
	}

	eventually(t, 20*time.Second, "unnumbered session up", func() bool {
		return frrNeighborOf(t, ps, unnumberedRtrIf).State == "Established"
	})
	myLL := ""
	eventually(t, 5*time.Second, "IPv4 path over the unnumbered session, with the node's link-local next hop", func() bool {
		p, ok := routerPathVia(t, ps, vip4)
		if !ok || len(p.Nexthops) == 0 || p.Community == nil || p.Community.String != "65000:4" {
			return false
		}
		myLL = p.Nexthops[0].IP
		return strings.HasPrefix(myLL, "fe80:")
	})
	eventually(t, 5*time.Second, "IPv6 path over the unnumbered session", func() bool {
		p, ok := routerPathVia(t, ps, vip6)
		return ok && len(p.Nexthops) > 0 && p.Nexthops[0].IP == myLL
	})
	// The router installs the IPv4 route through the interface.
	eventually(t, 5*time.Second, "the router's kernel route for the IPv4 prefix via the link", func() bool {
		out := vtysh(t, ps, "show ip route "+vip4.String()+" json")
		return strings.Contains(string(out), unnumberedRtrIf) && strings.Contains(string(out), `"selected":true`)
	})
	st := sessionByName(s, "unnumbered")
	if st.Address != ll || !st.Up {
		t.Fatalf("unnumbered session %+v, want up at %v", st, ll)
	}

	eventually(t, 15*time.Second, "dynamicASN external session up with the router's other AS", func() bool {
		return neighborState(t, ps, spkA) == "Established"
	})
	eventually(t, 5*time.Second, "eBGP path without local-pref", func() bool {
		p, ok := routerPaths(t, ps, vipExt)[spkA]
		return ok && (p.LocPrf == nil || *p.LocPrf == 100)
	})
	eventually(t, 15*time.Second, "dynamicASN internal session up as iBGP", func() bool {
		return neighborState(t, ps, spkB) == "Established"
	})
	eventually(t, 5*time.Second, "iBGP path with local-pref 300", func() bool {
		p, ok := routerPaths(t, ps, vipInt)[spkB]
		return ok && p.LocPrf != nil && *p.LocPrf == 300
	})

	// Attributes alone change (the path in the RIB stays the same): the
	// routers get them without a session reset.
	paths[ext.Address] = []Path{{Prefix: vipExt, Communities: []uint32{65000<<16 | 9}}}
	paths[inter.Address] = []Path{{Prefix: vipInt, LocalPref: 310, LargeCommunities: []LargeCommunity{{GlobalAdmin: 64513, LocalData1: 1, LocalData2: 1}}}}
	if err := s.SetPaths(ctx, paths); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "a new community alone reaches the router", func() bool {
		p, ok := routerPaths(t, ps, vipExt)[spkA]
		return ok && p.Community != nil && p.Community.String == "65000:9"
	})
	eventually(t, 5*time.Second, "a new local-pref and large community reach the router", func() bool {
		p, ok := routerPaths(t, ps, vipInt)[spkB]
		return ok && p.LocPrf != nil && *p.LocPrf == 310 && p.LargeCommunity != nil && p.LargeCommunity.String == "64513:1:1"
	})
	if st := sessionByName(s, "dyn-ext"); !st.Up {
		t.Fatalf("session %+v after an attribute change, want it up", st)
	}

	// dynamicASN external towards a router whose AS is the session's own:
	// refused and reported, and no path ever reaches the router, not even
	// for the moment before the reset.
	refused := inter
	refused.Name, refused.PeerASN, refused.ExternalOnly = "dyn-ext-own-as", 0, true
	paths[refused.Address] = []Path{{Prefix: vipInt}}
	if err := s.Apply(ctx, []Peer{un, ext, refused}, paths); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "iBGP path withdrawn with the re-created session", func() bool {
		_, ok := routerPaths(t, ps, vipInt)[spkB]
		return !ok
	})
	deadline := time.Now().Add(6 * time.Second)
	for time.Now().Before(deadline) {
		if st := sessionByName(s, refused.Name); st.Up {
			t.Fatalf("refused session reported up: %+v", st)
		}
		if _, ok := routerPaths(t, ps, vipInt)[spkB]; ok {
			t.Fatal("the router received a path over the refused session")
		}
		time.Sleep(20 * time.Millisecond)
	}
	st = sessionByName(s, refused.Name)
	if !strings.Contains(st.Refused, "dynamicASN external") || !strings.Contains(st.Refused, strconv.Itoa(rtrASN)) {
		t.Fatalf("refused session %+v: want the reason", st)
	}
	// The other sessions were not touched.
	if neighborState(t, ps, spkA) != "Established" || frrNeighborOf(t, ps, unnumberedRtrIf).State != "Established" {
		t.Fatal("refusing one session disturbed the others")
	}

	// Removing the unnumbered peer closes its session.
	delete(paths, un.Address)
	if err := s.Apply(ctx, []Peer{ext}, paths); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "unnumbered session closed, its paths gone", func() bool {
		_, ok := routerPathVia(t, ps, vip4)
		return !ok && frrNeighborOf(t, ps, unnumberedRtrIf).State != "Established"
	})
}

func sessionByName(s *Server, name string) SessionState {
	for _, st := range s.Sessions() {
		if st.Name == name {
			return st
		}
	}
	return SessionState{}
}
