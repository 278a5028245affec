package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/zerohop/zerohop/bpf"
)

// CPArg, as the first argument, makes the test binary program a datapath
// with many Services in a process of its own, so that its RSS is the
// datapath's and nothing else's.
const CPArg = "zh-bench-cp"

// CPResult is what the control-plane helper reports.
type CPResult struct {
	Services  int     `json:"services"`
	Endpoints int     `json:"endpoints"`
	Seconds   float64 `json:"seconds"`
	RSSBytes  uint64  `json:"rss_bytes"`
	HWMBytes  uint64  `json:"hwm_bytes"`
	InMaps    int     `json:"in_maps"`
}

func runCPMain(args []string) (CPResult, error) {
	fs := flag.NewFlagSet(CPArg, flag.ContinueOnError)
	n := fs.Int("services", 10000, "services")
	eps := fs.Int("endpoints", 10, "endpoints per service")
	m := fs.Uint("maglev", 0, "Maglev table size (0: default)")
	if err := fs.Parse(args); err != nil {
		return CPResult{}, err
	}
	keys, bes, err := BpfServices(Fillers(*n, *eps))
	if err != nil {
		return CPResult{}, err
	}
	root := fmt.Sprintf("/sys/fs/bpf/zh-bench-cp-%d", os.Getpid())
	dp, err := bpf.Load(zerohopOptions(root, uint32(*m), *n, *n**eps))
	if err != nil {
		return CPResult{}, err
	}
	defer func() { _ = dp.Remove() }()
	t0 := time.Now()
	for i := range keys {
		if err := dp.UpsertService(keys[i], bes[i], bpf.ServiceLocal); err != nil {
			return CPResult{}, fmt.Errorf("service %d: %w", i, err)
		}
	}
	r := CPResult{Services: *n, Endpoints: *eps, Seconds: time.Since(t0).Seconds(), InMaps: len(dp.Services())}
	r.RSSBytes, r.HWMBytes, err = pidMem(os.Getpid())
	return r, err
}

// pidMem reads a process's resident set size and its peak.
func pidMem(pid int) (rss, hwm uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		kb, perr := strconv.ParseUint(f[0], 10, 64)
		if perr != nil {
			continue
		}
		switch k {
		case "VmRSS":
			rss = kb * 1024
		case "VmHWM":
			hwm = kb * 1024
		}
	}
	if rss == 0 {
		return 0, 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
	}
	return rss, hwm, nil
}

// RunControlPlane times programming CPServices x CPEndpoints into the BPF
// maps (in a process of its own, for its RSS) and loading the same
// Services as kube-proxy iptables and nftables rulesets in the node's
// namespace. Loader times already measured by the datapath run at the same
// size are reused.
func (t *Topology) RunControlPlane(ctx context.Context, c Config, dp []DatapathResult) (*ControlPlane, error) {
	args := []string{CPArg, "-services", strconv.Itoa(c.CPServices),
		"-endpoints", strconv.Itoa(c.CPEndpoints), "-maglev", strconv.FormatUint(uint64(c.MaglevSize), 10)}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, t.Exe, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("control-plane helper: %w: %s", err, stderr.Bytes())
	}
	var r CPResult
	if err := json.Unmarshal(bytes.TrimSpace(out), &r); err != nil {
		return nil, fmt.Errorf("control-plane helper output %q: %w", out, err)
	}
	if r.InMaps != c.CPServices {
		return nil, fmt.Errorf("control-plane helper: %d services in maps, want %d", r.InMaps, c.CPServices)
	}
	cp := &ControlPlane{
		Services: c.CPServices, Endpoints: c.CPEndpoints, MaglevSize: c.MaglevSize, ZerohopServices: r.InMaps,
		ZerohopSec: r.Seconds, ZerohopRSSMiB: float64(r.RSSBytes) / (1 << 20), ZerohopPeakMiB: float64(r.HWMBytes) / (1 << 20),
	}
	if cp.MaglevSize == 0 {
		cp.MaglevSize = bpf.DefaultMaglevSize
	}
	rs := Ruleset(Fillers(c.CPServices, c.CPEndpoints))
	ipt := rs.IptablesRestore()
	cp.IptablesRules = strings.Count(ipt, "\n-A ")
	cp.NftScriptKiB = len(rs.NftScript()) / 1024
	for _, d := range dp {
		if d.Services == c.CPServices && c.FillerEPs == c.CPEndpoints {
			switch d.Contender {
			case "iptables":
				cp.IptablesSec = d.SetupSec
			case "nftables":
				cp.NftSec = d.SetupSec
			}
		}
	}
	for _, ct := range []Contender{&Iptables{}, &Nftables{}} {
		sec := &cp.IptablesSec
		if ct.Name() == "nftables" {
			sec = &cp.NftSec
			// 3-4 minutes at 10,000 x 10, a fifth of the bench's
			// budget, for a number the goals (docs/performance.md) do not ask for.
			if !c.CPNft {
				continue
			}
		}
		if *sec != 0 {
			continue
		}
		took, err := ct.Setup(ctx, t, rs)
		if terr := ct.Teardown(ctx, t); err == nil {
			err = terr
		}
		if err != nil {
			return nil, fmt.Errorf("%s with %d services: %w", ct.Name(), c.CPServices, err)
		}
		*sec = took.Seconds()
	}
	return cp, nil
}
