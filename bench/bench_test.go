package bench

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zerohop/zerohop/e2e/lab"
)

var (
	flagSizes      = flag.String("bench.sizes", "1,1000,10000", "Services loaded, comma-separated")
	flagFillerEPs  = flag.Int("bench.filler-endpoints", 2, "endpoints per filler Service (datapath runs)")
	flagRounds     = flag.Int("bench.rounds", 1, "rounds per size (contenders take turns; best kept)")
	flagWorkers    = flag.Int("bench.workers", 8, "load generator concurrency")
	flagTCP        = flag.Duration("bench.tcp", 5*time.Second, "TCP load per contender and size")
	flagUDP        = flag.Duration("bench.udp", 3*time.Second, "UDP load per contender and size")
	flagCPServices = flag.Int("bench.cp-services", 10000, "control plane: Services")
	flagCPEPs      = flag.Int("bench.cp-endpoints", 10, "control plane: endpoints per Service")
	flagMaglev     = flag.Uint("bench.maglev", 0, "Maglev table size (0: bpf's default)")
	flagDirectXDP  = flag.Bool("bench.direct-xdp", false, "also measure direct+xdp: no load balancer, XDP_PASS on the node's and Pods' veths")
	flagBpfXDP     = flag.Bool("bench.bpf-xdp", true, "also measure bpf-xdp (diagnostic): the bpf API, XDP redirects into the Pods' veths, XDP_PASS on the Pods' eth0")
	flagZhStack    = flag.Bool("bench.zerohop-stack", false, "also measure zerohop-stack (diagnostic): the speaker with --direct-to-pods=false")
	flagPerf       = flag.String("bench.perf", "", "directory for a system-wide perf record -g of every timed TCP run (diagnostic: perf's cost is in those numbers)")
	flagIngress    = flag.String("bench.ingress", string(lab.IngressXDP), "how frames reach the node: xdp (NIC-like: the router and switch forward in XDP) or kernel (the kernel's forwarding and a bridge)")
	flagCPNft      = flag.Bool("bench.cp-nft", false, "control plane: also time nft -f at -bench.cp-services x -bench.cp-endpoints (minutes)")
	flagSpeakerSvc = flag.Int("bench.speaker-services", -1, "speaker sync: Services (-1: as -bench.cp-services, 0: skip)")
	flagSpeakerRdy = flag.Int("bench.speaker-ready", 10, "speaker sync: ready endpoints per Service (the rest not ready)")
	flagSpkHeap    = flag.String("bench.speaker-heap", "", "speaker sync: write the speaker's Go heap profile (pprof) to this file after the sync")
	flagOut        = flag.String("bench.out", "", "write results JSON here")
	flagXDP        = flag.String("bench.xdp", "", "file with `make bench-xdp` output to include")
)

func TestMain(m *testing.M) {
	HelperMain()
	os.Exit(m.Run())
}

func parseSizes(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad size %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// TestBench runs the whole benchmark (make bench) or, with small flags, the
// smoke version (make test-bench-smoke). It checks that every contender
// served every request correctly; the numbers are reported, not asserted.
func TestBench(t *testing.T) {
	sizes, err := parseSizes(*flagSizes)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Sizes: sizes, Rounds: *flagRounds, FillerEPs: *flagFillerEPs, Workers: *flagWorkers,
		TCPDuration: *flagTCP, UDPDuration: *flagUDP,
		CPServices: *flagCPServices, CPEndpoints: *flagCPEPs, MaglevSize: uint32(*flagMaglev),
		SpeakerServices: *flagSpeakerSvc, SpeakerReady: *flagSpeakerRdy, CPNft: *flagCPNft, DirectXDP: *flagDirectXDP,
		BpfXDP: *flagBpfXDP, ZerohopStack: *flagZhStack, Ingress: lab.Ingress(*flagIngress), PerfDir: *flagPerf,
	}
	if cfg.Ingress != lab.IngressXDP && cfg.Ingress != lab.IngressKernel {
		t.Fatalf("-bench.ingress %q: want %q or %q", cfg.Ingress, lab.IngressXDP, lab.IngressKernel)
	}
	if cfg.SpeakerServices < 0 {
		cfg.SpeakerServices = cfg.CPServices
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	l := labUp(t, cfg.Ingress)
	// After the lab lock: a wait for another lab test is not ours.
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	topo, err := Prepare(ctx, l, exe, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	res := &Results{Date: time.Now().UTC(), Config: cfg}
	res.Machine()
	res.Datapath, err = topo.RunDatapath(ctx, cfg, os.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	res.Ratios = Ratios(res.Datapath)
	for _, d := range res.Datapath {
		if d.TCP.Errors > 0 {
			t.Errorf("%s at %d services: %d of %d TCP requests failed (first: %s)",
				d.Contender, d.Services, d.TCP.Errors, d.TCP.Requests+d.TCP.Errors, d.TCP.FirstErr)
		}
		if d.UDPDelivered == 0 {
			t.Errorf("%s at %d services: no UDP datagram reached a Pod (%d sent)", d.Contender, d.Services, d.UDP.Requests)
		}
	}
	if cfg.CPServices > 0 || cfg.SpeakerServices > 0 {
		// The control plane gets a lab of its own: the datapath's
		// Services are in this one's API server, and they would be in the
		// speaker's sync.
		topo.Lab = relab(t, ctx, topo.Lab, cfg.Ingress)
	}
	if cfg.CPServices > 0 {
		if res.ControlPlane, err = topo.RunControlPlane(ctx, cfg, res.Datapath); err != nil {
			t.Fatal(err)
		}
	}
	if cfg.SpeakerServices > 0 {
		fmt.Printf("bench: speaker sync: writing %d Services × %d endpoints to the API\n", cfg.SpeakerServices, cfg.CPEndpoints)
		if res.SpeakerSync, err = topo.RunSpeakerSync(ctx, cfg.SpeakerServices, cfg.CPEndpoints, cfg.SpeakerReady, t.TempDir(), *flagSpkHeap); err != nil {
			t.Fatal(err)
		}
	}
	if *flagXDP != "" {
		b, err := os.ReadFile(*flagXDP)
		if err != nil {
			t.Fatal(err)
		}
		res.XDPTable = xdpTable(string(b))
	}
	res.Print(os.Stdout)
	if *flagOut != "" {
		if err := res.WriteJSON(*flagOut); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("\nresults written to %s\n", *flagOut)
	}
}

// labUp is lab.Up with one node: it waits for the lab lock like every
// lab test, and the lab has an API server for the zerohop contender and
// the speaker's sync.
func labUp(t *testing.T, in lab.Ingress) *lab.Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("the bench needs root (network namespaces, BPF, netfilter); running as uid %d", os.Geteuid())
	}
	return lab.Up(t, lab.Options{Nodes: 1, Ingress: in})
}

// relab takes l down and brings a fresh lab up in its place, under the
// lab lock labUp took; the test's end takes it down.
func relab(t *testing.T, ctx context.Context, l *lab.Lab, in lab.Ingress) *lab.Lab {
	t.Helper()
	if err := l.Down(ctx); err != nil {
		t.Fatalf("lab down: %v", err)
	}
	nl, err := lab.Start(ctx, lab.Options{Nodes: 1, Ingress: in})
	if nl != nil {
		t.Cleanup(func() {
			dctx, dcancel := context.WithTimeout(context.Background(), time.Minute)
			defer dcancel()
			if err := nl.Down(dctx); err != nil {
				t.Errorf("lab down: %v", err)
			}
		})
	}
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	return nl
}

// xdpTable keeps the table part of `go test -bench` output: everything but
// go test's own lines.
func xdpTable(s string) string {
	var keep []string
	for line := range strings.SplitSeq(s, "\n") {
		switch {
		case strings.HasPrefix(line, "goos:"), strings.HasPrefix(line, "goarch:"), strings.HasPrefix(line, "pkg:"),
			strings.HasPrefix(line, "cpu:"), strings.HasPrefix(line, "PASS"), strings.HasPrefix(line, "ok "),
			strings.HasPrefix(line, "BenchmarkXDPTable"), strings.HasPrefix(line, "go test"):
			continue
		}
		keep = append(keep, line)
	}
	return strings.TrimSpace(strings.Join(keep, "\n"))
}

func TestFillers(t *testing.T) {
	for _, n := range []int{0, 1, 250, 10000} {
		fs := Fillers(n, 10)
		if len(fs) != n {
			t.Fatalf("Fillers(%d): %d services", n, len(fs))
		}
		keys := map[string]bool{}
		eps := map[netip.AddrPort]bool{}
		for _, s := range fs {
			k := fmt.Sprintf("%s/%s/%d", s.VIP, s.Proto, s.Port)
			if keys[k] {
				t.Fatalf("Fillers(%d): duplicate service %s", n, k)
			}
			keys[k] = true
			if !netip.MustParsePrefix("203.0.113.0/24").Contains(s.VIP) || s.Port < 10000 {
				t.Errorf("filler %s at %s:%d: want 203.0.113.0/24, port >= 10000", s.Name, s.VIP, s.Port)
			}
			if len(s.Endpoints) != 10 {
				t.Errorf("filler %s: %d endpoints", s.Name, len(s.Endpoints))
			}
			for _, ep := range s.Endpoints {
				if !netip.MustParsePrefix("100.80.0.0/12").Contains(ep.Addr()) || eps[ep] {
					t.Errorf("filler endpoint %s: outside 100.80.0.0/12 or repeated", ep)
				}
				eps[ep] = true
			}
		}
	}
}

func testRuleset() Ruleset {
	eps := []netip.AddrPort{netip.MustParseAddrPort("100.64.1.2:9000"), netip.MustParseAddrPort("100.64.1.3:9000")}
	measured := []Service{
		{Name: "bench/echo:tcp-80", VIP: VIP, Port: 80, Proto: "tcp", Endpoints: eps},
		{Name: "bench/echo:udp-80", VIP: VIP, Port: 80, Proto: "udp", Endpoints: eps},
	}
	return Place(measured, Fillers(3, 4))
}

func TestPlace(t *testing.T) {
	rs := testRuleset()
	if len(rs) != 5 || rs[1].Name != "bench/echo:tcp-80" || rs[2].Name != "bench/echo:udp-80" {
		var names []string
		for _, s := range rs {
			names = append(names, s.Name)
		}
		t.Fatalf("order %v: want the measured services in the middle", names)
	}
}

func TestIptablesRestore(t *testing.T) {
	out := testRuleset().IptablesRestore()
	count := func(sub string) int { return strings.Count(out, sub) }
	tests := []struct {
		what      string
		got, want int
	}{
		{"KUBE-SERVICES rules", count("\n-A KUBE-SERVICES "), 5},
		{"KUBE-SVC chains", count("\n:KUBE-SVC-"), 5},
		{"KUBE-SEP chains", count("\n:KUBE-SEP-"), 2*2 + 3*4},
		{"DNAT rules", count(" -j DNAT --to-destination "), 2*2 + 3*4},
		{"probability 1/2", count("--probability 0.5000000000 "), 2 + 3},
		{"probability 1/4", count("--probability 0.2500000000 "), 3},
		{"probability 1/3", count("--probability 0.3333333333 "), 3},
		{"unconditional last endpoint", count("-j KUBE-SEP-") - count("--probability"), 5},
		{"COMMIT", count("COMMIT\n"), 1},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s: %d, want %d", tc.what, tc.got, tc.want)
		}
	}
	for _, want := range []string{
		"-A KUBE-SERVICES -d 203.0.113.10/32 -p udp -m comment --comment \"bench/echo:udp-80 loadbalancer IP\" -m udp --dport 80 -j KUBE-SVC-",
		"-m tcp -p tcp -j DNAT --to-destination 100.64.1.3:9000",
		"-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("ruleset lacks %q", want)
		}
	}
	for line := range strings.SplitSeq(out, "\n") {
		if name, ok := strings.CutPrefix(line, ":"); ok {
			name, _, _ = strings.Cut(name, " ")
			if len(name) > 28 {
				t.Errorf("chain name %q longer than iptables' 28", name)
			}
		}
	}
}

func TestNftScript(t *testing.T) {
	out := testRuleset().NftScript()
	for _, want := range []string{
		"chain services { ip daddr . meta l4proto . th dport vmap @service-ips; }",
		"type ipv4_addr . inet_proto . inet_service : verdict",
		"203.0.113.10 . udp . 80 : goto service-2-udp",
		"chain service-1-tcp { numgen random mod 2 vmap { 0 : goto endpoint-1-0, 1 : goto endpoint-1-1 }; }",
		"chain endpoint-1-1 { ip saddr 100.64.1.3 jump mark-for-masquerade; meta l4proto tcp dnat to 100.64.1.3:9000; }",
		"numgen random mod 4 vmap",
		"type nat hook prerouting priority dstnat",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("script lacks %q", want)
		}
	}
	if n := strings.Count(out, "dnat to "); n != 2*2+3*4 {
		t.Errorf("%d endpoint chains, want %d", n, 2*2+3*4)
	}
}

func TestLiveHeap(t *testing.T) {
	log := "speaker started\n" +
		"gc 1 @0.010s 2%: 0.01+1.2+0.02 ms clock, 0.02+0.5/1.0/0+0.04 ms cpu, 3->4->1 MB, 4 MB goal, 0 MB stacks, 0 MB globals, 2 P\n" +
		"gc 2 @1.500s 5%: 0.02+9+0.03 ms clock, 0.04+1/8/0+0.06 ms cpu, 90->95->61 MB, 100 MB goal, 0 MB stacks, 0 MB globals, 2 P\n" +
		"gc 3 @2.700s 6%: 0.02+9+0.03 ms clock, 0.04+1/8/0+0.06 ms cpu, 110->112->48 MB, 122 MB goal, 0 MB stacks, 0 MB globals, 2 P\n"
	maxM, last := liveHeap(log)
	if maxM != 61 || last != 48 {
		t.Errorf("liveHeap = %v, %v; want 61, 48", maxM, last)
	}
}

func TestRatios(t *testing.T) {
	rs := []DatapathResult{
		{Contender: "zerohop", Services: 1, ReqPerSec: 300, P99us: 50, CPULabUsPerReq: 10, UDPPktPerSec: 90},
		{Contender: "iptables", Services: 1, ReqPerSec: 100, P99us: 100, CPULabUsPerReq: 20, UDPPktPerSec: 30},
		{Contender: "nftables", Services: 1, ReqPerSec: 150, P99us: 25, CPULabUsPerReq: 0, UDPPktPerSec: 45},
	}
	got := Ratios(rs)
	want := []Ratio{
		{Services: 1, Baseline: "iptables", ReqPerSec: 3, P99: 0.5, CPUPerReq: 0.5, UDPPktPerSec: 3},
		{Services: 1, Baseline: "nftables", ReqPerSec: 2, P99: 2, CPUPerReq: 0, UDPPktPerSec: 2},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Ratios = %+v, want %+v", got, want)
	}
}

func TestAboveFloor(t *testing.T) {
	rs := []DatapathResult{
		{Contender: "zerohop", Services: 1, CPULabUsPerReq: 110},
		{Contender: "direct", Services: 1, CPULabUsPerReq: 100},
		{Contender: "iptables", Services: 10, CPULabUsPerReq: 190},
		{Contender: "direct", Services: 10, CPULabUsPerReq: 90},
		{Contender: "nftables", Services: 100, CPULabUsPerReq: 150}, // no floor at this size
	}
	aboveFloor(rs)
	for i, want := range []float64{10, 0, 100, 0, 0} {
		if rs[i].CPUAboveFloorUsPerReq != want {
			t.Errorf("%s at %d: above floor %v, want %v", rs[i].Contender, rs[i].Services, rs[i].CPUAboveFloorUsPerReq, want)
		}
	}
}

func TestProcTicksSince(t *testing.T) {
	base := procTicks{1: 10, 2: 20, 3: 30}
	now := procTicks{1: 15, 2: 20, 4: 7} // 3 ended, 4 started
	if got := now.since(base); got != 5+0+7 {
		t.Fatalf("since = %d, want 12", got)
	}
}
