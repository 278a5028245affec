package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/zerohop/zerohop/e2e/lab"
)

// HelperMain runs a bench helper (the load generator or the control-plane
// helper) or a lab helper (the Pods' echo servers) and exits, if this
// process was started as one. Call it first thing in TestMain.
func HelperMain() {
	lab.HelperMain()
	if len(os.Args) < 2 {
		return
	}
	var v any
	var err error
	switch os.Args[1] {
	case LoadArg:
		var r LoadResult
		r, err = runLoadMain(os.Args[2:])
		var ru syscall.Rusage
		if gerr := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); gerr == nil {
			r.CPUUserNS = time.Duration(ru.Utime.Nano()).Nanoseconds()
			r.CPUSysNS = time.Duration(ru.Stime.Nano()).Nanoseconds()
		}
		v = r
	case CPArg:
		v, err = runCPMain(os.Args[2:])
	default:
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(v); err != nil {
		os.Exit(1)
	}
	os.Exit(0)
}

// Print writes the results as tables.
func (r *Results) Print(w io.Writer) {
	c := r.Config
	fmt.Fprintf(w, "\nzerohop bench — %s, %d CPUs, kernel %s, %s\n", r.CPUModel, r.CPUs, r.Kernel, r.Date.Format(time.RFC3339))
	if len(r.Datapath) > 0 {
		fmt.Fprintf(w, "\nDatapath: lab client → router → node1 → 2 Pods; TCP: %d workers × %v of short connections; UDP: %d flows × %v\n",
			c.Workers, c.TCPDuration, c.Workers, c.UDPDuration)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "services\tcontender\treq/s\trounds' req/s\tp50 µs\tp99 µs\tCPU µs/req\tsoftirq µs/req\tUDP pkt/s to Pod\tprogram s\t")
		for _, d := range r.Datapath {
			fmt.Fprintf(tw, "%d\t%s\t%.0f\t%s\t%.0f\t%.0f\t%.1f\t%.1f\t%.0f\t%.3f\t\n", d.Services, d.Contender,
				d.ReqPerSec, spread(d.RoundsReqPerSec), d.P50us, d.P99us, d.CPUServeUsPerReq, d.CPUSoftirqUsPerReq, d.UDPPktPerSec, d.SetupSec)
		}
		_ = tw.Flush()
		fmt.Fprintln(w, "\nRatios (zerohop / baseline; req/s and UDP >1 is better, p99 and CPU <1 is better):")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "services\tbaseline\treq/s\tp99\tCPU/req\tUDP pkt/s\t")
		for _, q := range r.Ratios {
			fmt.Fprintf(tw, "%d\t%s\t%.2fx\t%.2fx\t%.2fx\t%.2fx\t\n", q.Services, q.Baseline, q.ReqPerSec, q.P99, q.CPUPerReq, q.UDPPktPerSec)
		}
		_ = tw.Flush()
		fmt.Fprintln(w, "\nCPU µs/req: machine busy time (/proc/stat, all CPUs) during the TCP run, less the load generator's own CPU, per request.")
		fmt.Fprintln(w, "softirq µs/req: the softirq part of the machine's time (veth, routing, netfilter, XDP on veth), per request.")
		fmt.Fprintln(w, "direct: no load balancer, the client connects to a Pod's own address: the lab's floor, paid by every contender.")
	}
	if cp, sp := r.ControlPlane, r.SpeakerSync; cp != nil || sp != nil {
		n, e := 0, 0
		if cp != nil {
			n, e = cp.Services, cp.Endpoints
		} else {
			n, e = sp.Services, sp.Endpoints
		}
		fmt.Fprintf(w, "\nControl plane: %d Services × %d endpoints\n", n, e)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "what\ttime s\tnote\t")
		if sp != nil {
			fmt.Fprintf(tw, "zerohop speaker: initial sync of %d Services\t%.2f\tRSS %.0f MiB (peak %.0f MiB), CPU %.1f s, %d backends (%d of %d endpoints ready)\t\n",
				sp.Services, sp.SyncSec, sp.RSSMiB, sp.PeakMiB, sp.CPUSec, sp.BackendsInMaps, sp.ReadyEndpoints, sp.Endpoints)
		}
		if cp != nil {
			fmt.Fprintf(tw, "of which bpf: UpsertService × %d, in process\t%.2f\tRSS %.0f MiB (peak %.0f MiB), Maglev M=%d, %d backends\t\n",
				cp.Services, cp.ZerohopSec, cp.ZerohopRSSMiB, cp.ZerohopPeakMiB, cp.MaglevSize, cp.Services*cp.Endpoints)
			fmt.Fprintf(tw, "iptables-restore (nat table)\t%.2f\t%d rules\t\n", cp.IptablesSec, cp.IptablesRules)
			if cp.NftSec > 0 {
				fmt.Fprintf(tw, "nft -f (kube-proxy table)\t%.2f\t%d KiB script\t\n", cp.NftSec, cp.NftScriptKiB)
			} else {
				fmt.Fprintf(tw, "nft -f (kube-proxy table)\t-\tnot timed at this size (-bench.cp-nft); see the datapath's program s\t\n")
			}
		}
		_ = tw.Flush()
		if sp != nil {
			fmt.Fprintf(w, "speaker sync: from `zerohop speaker` start (Services, EndpointSlices and status already in the API; writing them took %.0f s) until bpf.Inspect shows every Service; RSS/peak from /proc/<pid>/status; Go heap live after GC: %.0f MiB at most, %.0f MiB last.\n",
				sp.CreateSec, sp.LiveHeapMaxMiB, sp.LiveHeapLastMiB)
		}
	}
	if r.XDPTable != "" {
		fmt.Fprintln(w, "\nXDP micro-benchmark (make bench-xdp):")
		fmt.Fprintln(w, strings.TrimRight(r.XDPTable, "\n"))
	}
	r.printGoals(w)
}

func (r *Results) printGoals(w io.Writer) {
	if len(r.Ratios) == 0 {
		return
	}
	minSize, maxSize := r.Ratios[0].Services, r.Ratios[0].Services
	for _, q := range r.Ratios {
		minSize, maxSize = min(minSize, q.Services), max(maxSize, q.Services)
	}
	get := func(size int, base string) Ratio {
		for _, q := range r.Ratios {
			if q.Services == size && q.Baseline == base {
				return q
			}
		}
		return Ratio{}
	}
	mark := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}
	fmt.Fprintln(w, "\nGoals:")
	lo, hi := get(minSize, "iptables"), get(maxSize, "iptables")
	fmt.Fprintf(w, "  zerohop ≥ 1.5× iptables req/s at %d service(s): %.2fx %s\n", minSize, lo.ReqPerSec, mark(lo.ReqPerSec >= 1.5))
	fmt.Fprintf(w, "  zerohop ≥ 3× iptables req/s at %d services: %.2fx %s\n", maxSize, hi.ReqPerSec, mark(hi.ReqPerSec >= 3))
	p99ok, cpuok := true, true
	for _, q := range r.Ratios {
		if q.Baseline != "iptables" && q.Baseline != "nftables" {
			continue // the no-load-balancer floor is a reference, not a rival
		}
		p99ok = p99ok && q.P99 <= 1
		cpuok = cpuok && q.CPUPerReq < 1
	}
	fmt.Fprintf(w, "  zerohop p99 no worse than either, every size: %s\n", mark(p99ok))
	fmt.Fprintf(w, "  zerohop per-request CPU lowest, every size: %s\n", mark(cpuok))
	if sp := r.SpeakerSync; sp != nil {
		fmt.Fprintf(w, "  speaker: %d × %d programmed in < 10 s: %.2f s %s; RSS < 200 MiB: %.0f MiB (peak %.0f) %s\n", sp.Services, sp.Endpoints,
			sp.SyncSec, mark(sp.SyncSec < 10), sp.RSSMiB, sp.PeakMiB, mark(sp.PeakMiB < 200))
	}
	if cp := r.ControlPlane; cp != nil {
		fmt.Fprintf(w, "  bpf alone: %d × %d programmed in < 10 s: %.2f s %s; RSS < 200 MiB: %.0f MiB %s\n", cp.Services, cp.Endpoints,
			cp.ZerohopSec, mark(cp.ZerohopSec < 10), cp.ZerohopRSSMiB, mark(cp.ZerohopRSSMiB < 200))
	}
}

// spread is the range of the rounds' values, "min-max".
func spread(v []float64) string {
	if len(v) == 0 {
		return "-"
	}
	lo, hi := v[0], v[0]
	for _, x := range v {
		lo, hi = min(lo, x), max(hi, x)
	}
	return fmt.Sprintf("%.0f-%.0f", lo, hi)
}
