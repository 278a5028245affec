package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/zerohop/zerohop/bpf"
	"github.com/zerohop/zerohop/e2e/lab"
)

// Config is one benchmark run.
type Config struct {
	Sizes       []int         // Services loaded (the measured one plus fillers)
	Rounds      int           // contenders take turns this many times; best round kept
	FillerEPs   int           // endpoints per filler Service
	Workers     int           // load generator concurrency
	TCPDuration time.Duration // per contender and size
	UDPDuration time.Duration
	// CPServices x CPEndpoints is the control-plane size.
	CPServices  int
	CPEndpoints int
	MaglevSize  uint32 // 0: the bpf package's (and the chart's) default
	CPNft       bool   // also time nft -f of CPServices x CPEndpoints
	// Ingress is how the lab's frames reach the node (lab.IngressXDP:
	// NIC-like, the default; lab.IngressKernel: the kernel's forwarding
	// and a bridge, as the first bench had it).
	Ingress lab.Ingress
	// Diagnostic rows: the bpf API with XDP redirects into the Pods, the
	// speaker with --direct-to-pods=false, no load balancer with XDP_PASS
	// on the veths.
	BpfXDP, ZerohopStack, DirectXDP bool
	// PerfDir, when set, gets a system-wide `perf record -g` of every
	// timed TCP run (<contender>-<services>.data; a diagnostic: perf's
	// own cost is in those runs' numbers).
	PerfDir string
	// SpeakerServices x CPEndpoints, SpeakerReady of them ready, is the
	// real speaker's initial sync (0: not measured).
	SpeakerServices int
	SpeakerReady    int
}

// DatapathResult is one contender at one size.
type DatapathResult struct {
	Contender string     `json:"contender"`
	Services  int        `json:"services"`
	SetupSec  float64    `json:"setup_s"` // programming the ruleset
	TCP       LoadResult `json:"tcp"`
	ReqPerSec float64    `json:"req_per_s"`
	// Every round's req/s: the spread is the error bar of the best.
	RoundsReqPerSec []float64 `json:"rounds_req_per_s"`
	P50us           float64   `json:"p50_us"`
	P99us           float64   `json:"p99_us"`
	// Machine CPU (all CPUs, /proc/stat) during the TCP run per request:
	// busy is everything but idle and iowait; softirq is the share spent in
	// softirq context, where veth, routing, netfilter and XDP-on-veth run.
	CPUBusyUsPerReq    float64 `json:"cpu_busy_us_per_req"`
	CPUSoftirqUsPerReq float64 `json:"cpu_softirq_us_per_req"`
	// Busy CPU minus the load generator's own user+system time.
	CPUServeUsPerReq float64 `json:"cpu_serve_us_per_req"`
	// The lab's CPU for the requests: softirq (where the kernel moves,
	// routes, filters and balances the packets) plus the user and system
	// time of the processes in the node's and the Pods' namespaces (the
	// echo servers, and the speaker for zerohop). Other work on a shared
	// machine adds to busy time, not to this; used for the ratios and the
	// floor.
	CPULabUsPerReq float64    `json:"cpu_lab_us_per_req"`
	UDP            LoadResult `json:"udp"`
	UDPDelivered   uint64     `json:"udp_delivered"`
	UDPPktPerSec   float64    `json:"udp_pkt_per_s"`             // delivered to the Pods' sockets
	ZerohopPackets uint64     `json:"zerohop_packets,omitempty"` // forwarded by XDP
	// CPU per request above the floor: CPULabUsPerReq less direct's at
	// the same size, what the load balancer itself costs.
	CPUAboveFloorUsPerReq float64 `json:"cpu_above_floor_us_per_req"`
	// The node's own counts per request: packets its IP layer forwarded
	// (Ip ForwDatagrams, during the TCP run), and packets its netfilter
	// saw at the prerouting and forward hooks (a counting run of its own
	// after the timed ones, so no counter rule is in place while timing).
	ForwardedPerReq    float64       `json:"node_forwarded_per_req"`
	NfPreroutingPerReq float64       `json:"node_nf_prerouting_per_req"`
	NfForwardPerReq    float64       `json:"node_nf_forward_per_req"`
	Delivery           *bpf.Delivery `json:"delivery,omitempty"` // zerohop's, during the TCP and UDP runs
}

// Ratio compares zerohop with a baseline at one size.
type Ratio struct {
	Services     int     `json:"services"`
	Baseline     string  `json:"baseline"`
	ReqPerSec    float64 `json:"req_per_s"`   // zerohop / baseline, >1 is better
	P99          float64 `json:"p99"`         // zerohop / baseline, <1 is better
	CPUPerReq    float64 `json:"cpu_per_req"` // the lab's CPU, <1 is better
	UDPPktPerSec float64 `json:"udp_pkt_per_s"`
}

// ControlPlane is the time to program the largest size.
type ControlPlane struct {
	Services        int     `json:"services"`
	Endpoints       int     `json:"endpoints_per_service"`
	ZerohopSec      float64 `json:"zerohop_program_s"`
	ZerohopRSSMiB   float64 `json:"zerohop_rss_mib"`
	ZerohopPeakMiB  float64 `json:"zerohop_peak_rss_mib"`
	IptablesSec     float64 `json:"iptables_restore_s"`
	NftSec          float64 `json:"nft_f_s"`
	IptablesRules   int     `json:"iptables_rules"`
	NftScriptKiB    int     `json:"nft_script_kib"`
	MaglevSize      uint32  `json:"maglev_size"`
	ZerohopServices int     `json:"zerohop_map_services"`
}

// Results is everything a run measured; written to bench/results.json.
type Results struct {
	Date         time.Time        `json:"date"`
	CPUModel     string           `json:"cpu_model"`
	CPUs         int              `json:"cpus"`
	Kernel       string           `json:"kernel"`
	Config       Config           `json:"config"`
	Datapath     []DatapathResult `json:"datapath"`
	Ratios       []Ratio          `json:"ratios"`
	ControlPlane *ControlPlane    `json:"control_plane,omitempty"`
	SpeakerSync  *SpeakerSync     `json:"speaker_sync,omitempty"`
	XDPTable     string           `json:"xdp_table,omitempty"`
}

// cpuTimes is one /proc/stat "cpu" line in clock ticks.
type cpuTimes struct{ busy, softirq uint64 }

func readCPU() (cpuTimes, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return cpuTimes{}, fmt.Errorf("/proc/stat: %q", line)
	}
	var v [8]uint64
	for i := range v {
		if v[i], err = strconv.ParseUint(f[i+1], 10, 64); err != nil {
			return cpuTimes{}, err
		}
	}
	// user nice system idle iowait irq softirq steal
	return cpuTimes{busy: v[0] + v[1] + v[2] + v[5] + v[6] + v[7], softirq: v[6]}, nil
}

// ticksToUs: USER_HZ is 100 on every Linux architecture Go supports.
const ticksToUs = 1e6 / 100

// Measure runs the TCP and UDP loads against the contender that is set up.
func (t *Topology) Measure(ctx context.Context, c Config, name string, services int, targets []netip.AddrPort) (DatapathResult, error) {
	r := DatapathResult{Contender: name, Services: services}
	// Correctness first: answered by one of our Pods, which saw the
	// client's own address (no SNAT on any path).
	c4, _ := lab.ClientAddrs()
	var addrs []string
	for _, a := range targets {
		addrs = append(addrs, a.String())
	}
	for _, proto := range []string{"tcp", "udp"} {
		for i := range 4 {
			addr := addrs[i%len(addrs)]
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			rep, err := t.Lab.Request(rctx, proto, addr)
			cancel()
			if err != nil {
				return r, fmt.Errorf("%s: %s request %d to %s: %w", name, proto, i, addr, err)
			}
			if !slices.ContainsFunc(t.Pods, func(p lab.Pod) bool { return p.Name == rep.Pod }) || rep.ClientIP() != c4.String() {
				return r, fmt.Errorf("%s: %s reply %+v: want a bench Pod seeing client %s", name, proto, rep, c4)
			}
		}
	}

	if waited, quiet := t.settle(ctx); !quiet {
		fmt.Printf("bench: %s with %d services: the lab's control plane still busy after %v; measuring anyway\n", name, services, waited.Round(time.Millisecond))
	}
	fwdBefore, err := nodeForwarded(t.NodeNS())
	if err != nil {
		return r, err
	}
	labBefore, err := t.labProcCPU()
	if err != nil {
		return r, err
	}
	before, err := readCPU()
	if err != nil {
		return r, err
	}
	addr := strings.Join(addrs, ",")
	stopPerf, err := startPerf(ctx, c.PerfDir, fmt.Sprintf("%s-%d", name, services))
	if err != nil {
		return r, err
	}
	tcp, err := t.runLoadHelper(ctx, LoadConfig{Proto: "tcp", Addr: addr, Workers: c.Workers, Duration: c.TCPDuration})
	if perr := stopPerf(); err == nil {
		err = perr
	}
	if err != nil {
		return r, err
	}
	after, err := readCPU()
	if err != nil {
		return r, err
	}
	fwdAfter, err := nodeForwarded(t.NodeNS())
	if err != nil {
		return r, err
	}
	labAfter, err := t.labProcCPU()
	if err != nil {
		return r, err
	}
	r.TCP = tcp
	if tcp.Requests == 0 {
		return r, fmt.Errorf("%s: no TCP request completed (%d errors, first: %s)", name, tcp.Errors, tcp.FirstErr)
	}
	n := float64(tcp.Requests)
	r.ReqPerSec = n / tcp.Elapsed.Seconds()
	r.P50us = float64(tcp.P50.Nanoseconds()) / 1e3
	r.P99us = float64(tcp.P99.Nanoseconds()) / 1e3
	r.CPUBusyUsPerReq = float64(after.busy-before.busy) * ticksToUs / n
	r.CPUSoftirqUsPerReq = float64(after.softirq-before.softirq) * ticksToUs / n
	r.CPUServeUsPerReq = r.CPUBusyUsPerReq - float64(tcp.CPUUserNS+tcp.CPUSysNS)/1e3/n
	r.CPULabUsPerReq = r.CPUSoftirqUsPerReq + float64(labAfter.since(labBefore))*ticksToUs/n
	r.ForwardedPerReq = float64(fwdAfter-fwdBefore) / n

	var inBefore, inAfter uint64
	for _, p := range t.Pods {
		v, err := udpInDatagrams(p.NetNS())
		if err != nil {
			return r, err
		}
		inBefore += v
	}
	udp, err := t.runLoadHelper(ctx, LoadConfig{Proto: "udp", Addr: addr, Workers: c.Workers, Duration: c.UDPDuration})
	if err != nil {
		return r, err
	}
	for _, p := range t.Pods {
		v, err := udpInDatagrams(p.NetNS())
		if err != nil {
			return r, err
		}
		inAfter += v
	}
	r.UDP = udp
	r.UDPDelivered = inAfter - inBefore
	r.UDPPktPerSec = float64(r.UDPDelivered) / udp.Elapsed.Seconds()
	return r, nil
}

// RunDatapath measures every contender at every size, one at a time. With
// several rounds, the contenders take turns round by round and each keeps
// its best round (highest req/s), and its best latencies and CPU figures
// over all rounds (lowest): on a shared machine, other work can only slow
// a round down or add to it, so the best is closest to what the path
// itself costs, and taking turns spreads any slow period over all of
// them.
func (t *Topology) RunDatapath(ctx context.Context, c Config, log io.Writer) ([]DatapathResult, error) {
	var out []DatapathResult
	for _, size := range c.Sizes {
		rs := Place(t.MeasuredServices(), Fillers(size-1, c.FillerEPs))
		cts := ContenderSet{Zerohop: Zerohop{Bin: t.Zerohop, MaglevSize: c.MaglevSize, LogDir: t.Dir},
			BpfXDP: c.BpfXDP, ZerohopStack: c.ZerohopStack, DirectXDP: c.DirectXDP}.Contenders()
		best := make([]*DatapathResult, len(cts))
		for round := range max(1, c.Rounds) {
			for i, ct := range cts {
				r, err := t.runOne(ctx, c, ct, rs, size, round == 0, log)
				if err != nil {
					return out, fmt.Errorf("%s at %d services, round %d: %w", ct.Name(), size, round+1, err)
				}
				fmt.Fprintf(log, "bench: round %d: %s with %d services: %.0f req/s, p99 %.0f µs, %.0f UDP pkt/s (programmed in %.3f s)\n",
					round+1, ct.Name(), size, r.ReqPerSec, r.P99us, r.UDPPktPerSec, r.SetupSec)
				if best[i] == nil {
					r.RoundsReqPerSec = []float64{r.ReqPerSec}
					best[i] = &r
					continue
				}
				setup := min(best[i].SetupSec, r.SetupSec)
				udp := max(best[i].UDPPktPerSec, r.UDPPktPerSec)
				rounds := append(best[i].RoundsReqPerSec, r.ReqPerSec)
				pre, fw := best[i].NfPreroutingPerReq, best[i].NfForwardPerReq // counted in round 1
				p50, p99 := min(best[i].P50us, r.P50us), min(best[i].P99us, r.P99us)
				cpuLab, cpuServe, soft := min(best[i].CPULabUsPerReq, r.CPULabUsPerReq),
					min(best[i].CPUServeUsPerReq, r.CPUServeUsPerReq), min(best[i].CPUSoftirqUsPerReq, r.CPUSoftirqUsPerReq)
				if r.ReqPerSec > best[i].ReqPerSec {
					best[i] = &r
				}
				best[i].SetupSec, best[i].UDPPktPerSec, best[i].RoundsReqPerSec = setup, udp, rounds
				best[i].NfPreroutingPerReq, best[i].NfForwardPerReq = pre, fw
				best[i].P50us, best[i].P99us = p50, p99
				best[i].CPULabUsPerReq, best[i].CPUServeUsPerReq, best[i].CPUSoftirqUsPerReq = cpuLab, cpuServe, soft
			}
		}
		for _, b := range best {
			out = append(out, *b)
		}
	}
	aboveFloor(out)
	return out, nil
}

// aboveFloor fills in each result's CPU per request above the floor, the
// direct row of its size.
func aboveFloor(rs []DatapathResult) {
	for i := range rs {
		for _, d := range rs {
			if d.Contender == "direct" && d.Services == rs[i].Services {
				rs[i].CPUAboveFloorUsPerReq = rs[i].CPULabUsPerReq - d.CPULabUsPerReq
			}
		}
	}
}

// counted is a contender whose packets zerohop's counters see.
type counted interface {
	Packets() (uint64, error)
	Delivery() (bpf.Delivery, error)
}

func (t *Topology) runOne(ctx context.Context, c Config, ct Contender, rs Ruleset, size int, count bool, log io.Writer) (DatapathResult, error) {
	fmt.Fprintf(log, "bench: %s with %d services: programming\n", ct.Name(), size)
	took, err := ct.Setup(ctx, t, rs)
	if err != nil {
		return DatapathResult{}, fmt.Errorf("setup: %w", errJoin(err, ct.Teardown(ctx, t)))
	}
	targets := []netip.AddrPort{netip.AddrPortFrom(VIP, VIPPort)}
	if tg, ok := ct.(targeter); ok {
		targets = tg.Targets(t)
	}
	z, isZ := ct.(counted)
	var dlBefore bpf.Delivery
	if isZ {
		if dlBefore, err = z.Delivery(); err != nil {
			return DatapathResult{}, errJoin(err, ct.Teardown(ctx, t))
		}
	}
	r, err := t.Measure(ctx, c, ct.Name(), size, targets)
	r.SetupSec = took.Seconds()
	if isZ && err == nil {
		// At least SYN, ACK and FIN of every connection, and the UDP.
		r.ZerohopPackets, err = z.Packets()
		if want := 3*r.TCP.Requests + r.UDPDelivered; err == nil && r.ZerohopPackets < want {
			err = fmt.Errorf("%s forwarded %d packets, want at least %d: traffic bypassed XDP", ct.Name(), r.ZerohopPackets, want)
		}
		if err == nil {
			var dl bpf.Delivery
			if dl, err = z.Delivery(); err == nil {
				dl = bpf.Delivery{Peer: dl.Peer - dlBefore.Peer, PeerTC: dl.PeerTC - dlBefore.PeerTC,
					Redirect: dl.Redirect - dlBefore.Redirect, Stack: dl.Stack - dlBefore.Stack, Spoofed: dl.Spoofed - dlBefore.Spoofed}
				r.Delivery = &dl
			}
		}
	}
	if err == nil && count {
		r.NfPreroutingPerReq, r.NfForwardPerReq, err = t.countNetfilter(ctx, c, targets)
	}
	if terr := ct.Teardown(ctx, t); terr != nil {
		err = errJoin(err, terr)
	}
	return r, err
}

func errJoin(a, b error) error {
	if a == nil {
		return b
	}
	if b == nil {
		return a
	}
	return fmt.Errorf("%w; and %w", a, b)
}

// Ratios compares zerohop with each baseline at each size: kube-proxy's
// two modes and the floor.
func Ratios(rs []DatapathResult) []Ratio {
	var out []Ratio
	for _, z := range rs {
		if z.Contender != "zerohop" {
			continue
		}
		for _, b := range rs {
			if b.Services != z.Services || (b.Contender != "iptables" && b.Contender != "nftables" && b.Contender != "direct") {
				continue
			}
			out = append(out, Ratio{
				Services: z.Services, Baseline: b.Contender,
				ReqPerSec:    div(z.ReqPerSec, b.ReqPerSec),
				P99:          div(z.P99us, b.P99us),
				CPUPerReq:    div(z.CPULabUsPerReq, b.CPULabUsPerReq),
				UDPPktPerSec: div(z.UDPPktPerSec, b.UDPPktPerSec),
			})
		}
	}
	return out
}

func div(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// Machine fills in what the numbers were measured on.
func (r *Results) Machine() {
	r.CPUs = runtime.NumCPU()
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				r.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		r.Kernel = strings.TrimSpace(string(b))
	}
}

// WriteJSON writes the results file.
func (r *Results) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
