package bgp

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
)

// The FRR test runs GoBGP and a real FRR in two network namespaces joined
// by a veth. GoBGP opens its sockets from its own goroutines, so the test
// cannot move just one thread into a namespace: the outer test sets up the
// namespaces and FRR, then runs this same test binary inside the speaker's
// namespace, where innerEnv tells it to do the BGP part.
const innerEnv = "ZEROHOP_BGP_TEST_INNER"

// Addresses (documentation ranges): the speaker side has .1 and .3, the
// router .2 and .4, so that one router serves an eBGP and an iBGP session.
const (
	spkA    = "192.0.2.1"
	spkB    = "192.0.2.3"
	rtrA    = "192.0.2.2"
	rtrB    = "192.0.2.4"
	spk6    = "2001:db8:ff::1"
	rtr6    = "2001:db8:ff::2"
	rtrASN  = 64513
	spkASN  = 64512
	md5Pass = "zh-s3cret"
)

func frrConfig(logDir string) string {
	return fmt.Sprintf(`frr defaults datacenter
hostname zh-bgpt
log file %s/bgpd.log informational
!
router bgp %d
 bgp router-id %s
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 bgp bestpath as-path multipath-relax
 timers bgp 3 9
 neighbor %s remote-as %d
 neighbor %s password %s
 neighbor %s timers connect 1
 neighbor %s remote-as %d
 neighbor %s timers connect 1
 neighbor %s remote-as %d
 neighbor %s timers connect 1
 address-family ipv4 unicast
  neighbor %s activate
  neighbor %s activate
  neighbor %s activate
  maximum-paths 8
  maximum-paths ibgp 8
 exit-address-family
 address-family ipv6 unicast
  neighbor %s activate
  neighbor %s activate
 exit-address-family
!
`, logDir, rtrASN, rtrA,
		spkA, spkASN, spkA, md5Pass, spkA,
		spkB, rtrASN, spkB,
		spk6, spkASN, spk6,
		spkA, spkB, spk6, spk6, spkA)
}

func run(t testing.TB, argv ...string) {
	t.Helper()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
}

// TestFRR peers the embedded GoBGP with FRR's bgpd: TCP MD5 (wrong, then
// right password), eBGP and iBGP, IPv4 and IPv6, per-peer communities,
// local-pref, link bandwidth, and adding, updating and removing peers
// without disturbing the others.
func TestFRR(t *testing.T) {
	if ps := os.Getenv(innerEnv); ps != "" {
		inner(t, ps)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("TestFRR needs root (network namespaces, FRR); skipped because not root")
	}
	if _, err := os.Stat("/usr/lib/frr/bgpd"); err != nil {
		t.Fatalf("FRR not installed (make deps): %v", err)
	}
	id := strconv.Itoa(os.Getpid() % 100000)
	nsS, nsR := "zh-bgpt-s"+id, "zh-bgpt-r"+id
	pathspace := "zh-bgpt" + id
	for _, ns := range []string{nsS, nsR} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
		// No DAD: link-local addresses are usable at once, so FRR need
		// not wait for one before the IPv6 session.
		run(t, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0")
	}
	run(t, "ip", "-n", nsS, "link", "add", "zhs0", "type", "veth", "peer", "name", "zhr0", "netns", nsR)
	for _, a := range []string{spkA + "/24", spkB + "/24"} {
		run(t, "ip", "-n", nsS, "addr", "add", a, "dev", "zhs0")
	}
	run(t, "ip", "-n", nsS, "addr", "add", spk6+"/64", "dev", "zhs0", "nodad")
	for _, a := range []string{rtrA + "/24", rtrB + "/24"} {
		run(t, "ip", "-n", nsR, "addr", "add", a, "dev", "zhr0")
	}
	run(t, "ip", "-n", nsR, "addr", "add", rtr6+"/64", "dev", "zhr0", "nodad")
	run(t, "ip", "-n", nsS, "link", "set", "zhs0", "up")
	run(t, "ip", "-n", nsR, "link", "set", "zhr0", "up")

	stop := startFRR(t, nsR, pathspace, frrConfig)
	defer stop()

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"netns", "exec", nsS, exe, "-test.run", "^TestFRR$", "-test.count", "1"}
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

// startFRR starts zebra and bgpd, configured by bgpdConf, in ns and
// returns a function that stops them.
func startFRR(t *testing.T, ns, pathspace string, bgpdConf func(logDir string) string) func() {
	t.Helper()
	u, err := user.Lookup("frr")
	if err != nil {
		t.Fatalf("frr user: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	// Not t.TempDir: its parents are closed to the frr user.
	dir, err := os.MkdirTemp("", "zh-bgpt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join("/var/run/frr", pathspace)
	for _, d := range []string{dir, sock} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = os.RemoveAll(sock) })
	confs := map[string]string{
		"zebra": fmt.Sprintf("hostname zh-bgpt\nlog file %s/zebra.log informational\n!\n", dir),
		"bgpd":  bgpdConf(dir),
	}
	var procs []*exec.Cmd
	stop := func() {
		for i := len(procs) - 1; i >= 0; i-- {
			_ = procs[i].Process.Kill()
			_ = procs[i].Wait()
		}
		procs = nil
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "bgpd.log")); err == nil {
				t.Logf("bgpd.log:\n%s", b)
			}
		}
	}
	for _, d := range []string{"zebra", "bgpd"} {
		conf := filepath.Join(dir, d+".conf")
		if err := os.WriteFile(conf, []byte(confs[d]), 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(conf, uid, gid); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("ip", "netns", "exec", ns, "/usr/lib/frr/"+d, "-N", pathspace, "-f", conf,
			"-i", filepath.Join(dir, d+".pid"), "-u", "frr", "-g", "frr")
		if err := cmd.Start(); err != nil {
			stop()
			t.Fatalf("start %s: %v", d, err)
		}
		procs = append(procs, cmd)
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, err := os.Stat(filepath.Join(sock, d+".vty")); err == nil {
				break
			}
			if time.Now().After(deadline) {
				stop()
				t.Fatalf("%s did not start", d)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return stop
}

// frrPath is the part of FRR's `show bgp ... json` path that the tests
// look at.
type frrPath struct {
	Peer struct {
		PeerID string `json:"peerId"`
	} `json:"peer"`
	Community      *struct{ String string } `json:"community"`
	LargeCommunity *struct{ String string } `json:"largeCommunity"`
	ExtCommunity   *struct{ String string } `json:"extendedCommunity"`
	LocPrf         *uint32                  `json:"locPrf"`
	Nexthops       []frrNexthop             `json:"nexthops"`
}

type frrNexthop struct {
	IP string `json:"ip"`
}

func vtysh(t testing.TB, pathspace, command string) []byte {
	t.Helper()
	out, err := exec.Command("vtysh", "-N", pathspace, "-c", command).Output()
	if err != nil {
		t.Fatalf("vtysh %q: %v", command, err)
	}
	return out
}

// routerPaths returns FRR's paths for prefix, by the address of the peer
// that sent them.
func routerPaths(t testing.TB, pathspace string, prefix netip.Prefix) map[string]frrPath {
	t.Helper()
	fam := "ipv4"
	if prefix.Addr().Is6() {
		fam = "ipv6"
	}
	out := vtysh(t, pathspace, fmt.Sprintf("show bgp %s unicast %s json", fam, prefix))
	var r struct {
		Paths []frrPath `json:"paths"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("parse %s: %v", out, err)
	}
	m := map[string]frrPath{}
	for _, p := range r.Paths {
		m[p.Peer.PeerID] = p
	}
	return m
}

func neighborState(t testing.TB, pathspace, addr string) string {
	t.Helper()
	out := vtysh(t, pathspace, "show bgp neighbors "+addr+" json")
	var r map[string]struct {
		State string `json:"bgpState"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("parse %s: %v", out, err)
	}
	return r[addr].State
}

// eventually polls cond every 50ms for at most d.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func inner(t *testing.T, ps string) {
	ctx := context.Background()
	s, err := New(ctx, Options{RouterID: netip.MustParseAddr(spkA), ASN: spkASN, Log: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(false)
	transitions := map[string]int{}
	events := make(chan SessionState, 100)
	s.Watch(func(st SessionState) {
		select {
		case events <- st:
		default:
		}
	})
	countUps := func() {
		for {
			select {
			case st := <-events:
				if st.Up {
					transitions[st.Name]++
				}
			default:
				return
			}
		}
	}

	ebgp := Peer{Name: "ebgp", Address: netip.MustParseAddr(rtrA), MyASN: spkASN, PeerASN: rtrASN,
		SourceAddress: netip.MustParseAddr(spkA), Password: "wrong", HoldTime: 9 * time.Second, ConnectTime: time.Second, GracefulRestart: true,
		NextHop6: netip.MustParseAddr(spk6)}
	ibgp := Peer{Name: "ibgp", Address: netip.MustParseAddr(rtrB), MyASN: rtrASN, PeerASN: rtrASN,
		SourceAddress: netip.MustParseAddr(spkB), HoldTime: 9 * time.Second, ConnectTime: time.Second}
	v6 := Peer{Name: "v6", Address: netip.MustParseAddr(rtr6), MyASN: spkASN, PeerASN: rtrASN,
		HoldTime: 9 * time.Second, ConnectTime: time.Second, NextHop4: netip.MustParseAddr(spkA)}
	vip := netip.MustParsePrefix("198.51.100.1/32")
	vip6 := netip.MustParsePrefix("2001:db8:100::1/128")
	vip4over6 := netip.MustParsePrefix("198.51.100.2/32")
	vip6over4 := netip.MustParsePrefix("2001:db8:100::2/128")
	paths := map[netip.Addr][]Path{
		ebgp.Address: {{Prefix: vip, Communities: []uint32{65000<<16 | 100, 0xFFFFFF01}, Weight: 3}, {Prefix: vip6over4}},
		ibgp.Address: {{Prefix: vip, LocalPref: 200, LargeCommunities: []LargeCommunity{{GlobalAdmin: 65000, LocalData1: 1, LocalData2: 2}}}},
		v6.Address:   {{Prefix: vip4over6}, {Prefix: vip6, Communities: []uint32{65000<<16 | 6}}},
	}
	if err := s.Apply(ctx, []Peer{ebgp, ibgp, v6}, paths); err != nil {
		t.Fatal(err)
	}

	eventually(t, 15*time.Second, "iBGP and IPv6 sessions up", func() bool {
		return neighborState(t, ps, spkB) == "Established" && neighborState(t, ps, spk6) == "Established"
	})
	eventually(t, 5*time.Second, "iBGP path with local-pref and large community", func() bool {
		p, ok := routerPaths(t, ps, vip)[spkB]
		return ok && p.LocPrf != nil && *p.LocPrf == 200 && p.LargeCommunity != nil && p.LargeCommunity.String == "65000:1:2" && p.Community == nil
	})
	eventually(t, 5*time.Second, "IPv6 path over the IPv6 session", func() bool {
		p, ok := routerPaths(t, ps, vip6)[spk6]
		return ok && p.Community != nil && p.Community.String == "65000:6" && len(p.Nexthops) > 0 && p.Nexthops[0].IP == spk6
	})
	eventually(t, 5*time.Second, "IPv4 path over the IPv6 session, with the node's IPv4 next hop", func() bool {
		p, ok := routerPaths(t, ps, vip4over6)[spk6]
		return ok && len(p.Nexthops) > 0 && p.Nexthops[0].IP == spkA
	})
	// Wrong MD5 password: the session never comes up.
	time.Sleep(3 * time.Second)
	if st := neighborState(t, ps, spkA); st == "Established" {
		t.Fatalf("eBGP session with the wrong MD5 password is %s", st)
	}
	if _, ok := routerPaths(t, ps, vip)[spkA]; ok {
		t.Fatal("router has a path over the session with the wrong password")
	}

	// The right password: only that session is re-created.
	countUps()
	before := transitions["ibgp"]
	ebgp.Password = md5Pass
	if err := s.SetPeers(ctx, []Peer{ebgp, ibgp, v6}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "eBGP session up with the right MD5 password", func() bool {
		return neighborState(t, ps, spkA) == "Established"
	})
	eventually(t, 5*time.Second, "eBGP path with communities and link bandwidth, without local-pref", func() bool {
		p, ok := routerPaths(t, ps, vip)[spkA]
		return ok && p.Community != nil && p.Community.String == "65000:100 no-export" &&
			p.ExtCommunity != nil && strings.Contains(p.ExtCommunity.String, "LB:") && p.LargeCommunity == nil
	})
	eventually(t, 5*time.Second, "IPv6 path over the IPv4 session, with the node's IPv6 next hop", func() bool {
		p, ok := routerPaths(t, ps, vip6over4)[spkA]
		return ok && slices.Contains(p.Nexthops, frrNexthop{IP: spk6})
	})
	countUps()
	if transitions["ibgp"] != before {
		t.Fatalf("updating the eBGP peer reset the iBGP session (%d ups, was %d)", transitions["ibgp"], before)
	}

	// One peer stops receiving the prefix, the other keeps it.
	delete(paths, ibgp.Address)
	if err := s.SetPaths(ctx, paths); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "iBGP path withdrawn, eBGP path kept", func() bool {
		m := routerPaths(t, ps, vip)
		_, i := m[spkB]
		_, e := m[spkA]
		return !i && e
	})
	// Attributes change in place.
	paths[ebgp.Address] = []Path{{Prefix: vip, Communities: []uint32{65000<<16 | 200}}}
	if err := s.SetPaths(ctx, paths); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "new community, no link bandwidth", func() bool {
		p, ok := routerPaths(t, ps, vip)[spkA]
		return ok && p.Community != nil && p.Community.String == "65000:200" && p.ExtCommunity == nil
	})

	// Removing a peer ends its session and its paths.
	if err := s.SetPeers(ctx, []Peer{ibgp, v6}); err != nil {
		t.Fatal(err)
	}
	delete(paths, ebgp.Address)
	if err := s.SetPaths(ctx, paths); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "removed peer's path gone", func() bool {
		_, ok := routerPaths(t, ps, vip)[spkA]
		return !ok && neighborState(t, ps, spkA) != "Established"
	})
	if got := s.Paths(); len(got) != 2 || got[0] != vip4over6 || got[1] != vip6 {
		t.Fatalf("RIB holds %v, want %v and %v", got, vip4over6, vip6)
	}
	var names []string
	for _, st := range s.Sessions() {
		names = append(names, fmt.Sprintf("%s=%s", st.Name, st.State))
	}
	if got := strings.Join(names, ","); got != "ibgp=established,v6=established" {
		t.Fatalf("sessions %s", got)
	}
}
