package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
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
		ingress := "NIC-like ingress: the router and the switch forward in XDP, the node's uplink receives frames"
		if c.Ingress == lab.IngressKernel {
			ingress = "kernel ingress: the router's kernel forwards, a Linux bridge switches, the node's veth uplink receives socket buffers"
		}
		fmt.Fprintf(w, "\nDatapath: lab client → router → node1 → 2 Pods (%s); TCP: %d workers × %v of short connections; UDP: %d flows × %v\n",
			ingress, c.Workers, c.TCPDuration, c.Workers, c.UDPDuration)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "services\tcontender\treq/s\trounds' req/s\tp50 µs\tp99 µs\tCPU µs/req\tabove floor\tsoftirq µs/req\tfwd pkt/req\tnf pre/req\tnf fwd/req\tUDP pkt/s to Pod\tprogram s\t")
		for _, d := range r.Datapath {
			fmt.Fprintf(tw, "%d\t%s\t%.0f\t%s\t%.0f\t%.0f\t%.1f\t%+.1f\t%.1f\t%.2f\t%.2f\t%.2f\t%.0f\t%.3f\t\n", d.Services, d.Contender,
				d.ReqPerSec, spread(d.RoundsReqPerSec), d.P50us, d.P99us, d.CPULabUsPerReq, d.CPUAboveFloorUsPerReq, d.CPUSoftirqUsPerReq,
				d.ForwardedPerReq, d.NfPreroutingPerReq, d.NfForwardPerReq, d.UDPPktPerSec, d.SetupSec)
		}
		_ = tw.Flush()
		fmt.Fprintln(w, "\nRatios (zerohop / baseline; req/s and UDP >1 is better, p99 and CPU <1 is better):")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "services\tbaseline\treq/s\tp99\tCPU/req\tUDP pkt/s\t")
		for _, q := range r.Ratios {
			fmt.Fprintf(tw, "%d\t%s\t%.2fx\t%.2fx\t%.2fx\t%.2fx\t\n", q.Services, q.Baseline, q.ReqPerSec, q.P99, q.CPUPerReq, q.UDPPktPerSec)
		}
		_ = tw.Flush()
		fmt.Fprintln(w, "\nHow zerohop's node delivered the balanced packets to its Pods (TCP and UDP runs of the best round):")
		for _, d := range r.Datapath {
			if dl := d.Delivery; dl != nil {
				fmt.Fprintf(w, "  %5d  %-14s into the Pod by tc %d (marked by XDP %d), XDP redirect %d, through the node's stack %d\n",
					d.Services, d.Contender, dl.PeerTC, dl.Peer, dl.Redirect, dl.Stack)
			}
		}
		fmt.Fprintln(w, "\nzerohop: a real `zerohop speaker` (chart defaults) programs the node from the Services in the API server; Pods' veths are found and packets sent into them without the node's stack.")
		fmt.Fprintln(w, "bpf-xdp (diagnostic): the bpf API, XDP redirect into the Pods' veths with XDP_PASS on the Pods' eth0 (the speaker would have to enter every Pod to do that).")
		fmt.Fprintln(w, "direct: no load balancer, the client connects to a Pod's own address: the lab's floor, paid by every contender.")
		fmt.Fprintln(w, "CPU µs/req: the lab's CPU during the TCP run, per request: softirq (all CPUs: veth, routing, netfilter, XDP, tc) and the processes in the node's and Pods' namespaces (echo servers, the speaker); above floor: less direct's.")
		fmt.Fprintln(w, "softirq µs/req: the softirq part alone. p50, p99 and CPU are each the best (lowest) of the rounds; req/s is the best round's.")
		fmt.Fprintln(w, "fwd pkt/req: packets the node's IP layer forwarded (Ip ForwDatagrams) per request; nf pre/fwd per req: packets at its netfilter prerouting and forward hooks (a 1 s counting run of its own).")
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
	if len(r.Datapath) == 0 {
		return
	}
	get := func(size int, name string) (DatapathResult, bool) {
		for _, d := range r.Datapath {
			if d.Services == size && d.Contender == name {
				return d, true
			}
		}
		return DatapathResult{}, false
	}
	mark := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}
	var sizes []int
	for _, d := range r.Datapath {
		if !slices.Contains(sizes, d.Services) {
			sizes = append(sizes, d.Services)
		}
	}
	largest := slices.Max(sizes)
	fmt.Fprintln(w, "\nGoals:")
	for _, n := range sizes {
		z, okz := get(n, "zerohop")
		d, okd := get(n, "direct")
		ip, oki := get(n, "iptables")
		nf, okn := get(n, "nftables")
		if !okz {
			continue
		}
		if okd {
			fmt.Fprintf(w, "  %5d services: zerohop ≥ 95%% of direct's req/s: %.0f%% %s\n", n, 100*div(z.ReqPerSec, d.ReqPerSec),
				mark(z.ReqPerSec >= 0.95*d.ReqPerSec))
		}
		if okd && okn {
			fmt.Fprintf(w, "  %5d services: zerohop's CPU above the floor below nftables': %+.1f vs %+.1f µs/req %s\n", n,
				z.CPUAboveFloorUsPerReq, nf.CPUAboveFloorUsPerReq, mark(z.CPUAboveFloorUsPerReq < nf.CPUAboveFloorUsPerReq))
		}
		if okd && oki && n == largest {
			fmt.Fprintf(w, "  %5d services: zerohop's CPU above the floor ≤ ⅓ of iptables': %+.1f vs %+.1f µs/req %s\n", n,
				z.CPUAboveFloorUsPerReq, ip.CPUAboveFloorUsPerReq, mark(z.CPUAboveFloorUsPerReq <= ip.CPUAboveFloorUsPerReq/3))
		}
		if oki && okn {
			fmt.Fprintf(w, "  %5d services: zerohop's p99 no worse than iptables' or nftables': %.0f vs %.0f, %.0f µs %s\n", n,
				z.P99us, ip.P99us, nf.P99us, mark(z.P99us <= ip.P99us && z.P99us <= nf.P99us))
		}
	}
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
