package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zerohop/zerohop/e2e/lab"
)

// nodeForwarded reads Ip ForwDatagrams of a namespace: the packets its IP
// layer forwarded.
func nodeForwarded(ns string) (uint64, error) {
	var n uint64
	err := lab.InNetns(ns, func() error {
		// /proc/net follows the main thread; thread-self follows this one.
		b, err := os.ReadFile("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		lines := strings.Split(string(b), "\n")
		for i, line := range lines {
			head := strings.Fields(line)
			if len(head) == 0 || head[0] != "Ip:" || i+1 >= len(lines) {
				continue
			}
			vals := strings.Fields(lines[i+1])
			for j, h := range head {
				if h == "ForwDatagrams" && j < len(vals) {
					n, err = strconv.ParseUint(vals[j], 10, 64)
					return err
				}
			}
		}
		return fmt.Errorf("no Ip ForwDatagrams in %s's snmp", ns)
	})
	return n, err
}

// countTable holds the counting run's rules: packets at the node's
// prerouting and forward hooks, ahead of every other rule (priority
// -400), whatever they are.
const countTable = "zh_bench_count"

// countNetfilter runs a short TCP load against the contender with counter
// rules at the node's prerouting and forward hooks, and returns the
// packets each saw per request. The rules exist only for this run, so the
// timed runs pay for no hook that is not the contender's own.
func (t *Topology) countNetfilter(ctx context.Context, c Config, targets []netip.AddrPort) (pre, fwd float64, err error) {
	script := "table inet " + countTable + " {\n" +
		"  chain count_pre { type filter hook prerouting priority -400; policy accept; counter; }\n" +
		"  chain count_forward { type filter hook forward priority -400; policy accept; counter; }\n}\n"
	if err := nsRun(ctx, t.NodeNS(), script, "nft", "-f", "-"); err != nil {
		return 0, 0, err
	}
	defer func() {
		if derr := nsRun(ctx, t.NodeNS(), "", "nft", "delete", "table", "inet", countTable); derr != nil && err == nil {
			err = derr
		}
	}()
	var addrs []string
	for _, a := range targets {
		addrs = append(addrs, a.String())
	}
	load, err := t.runLoadHelper(ctx, LoadConfig{Proto: "tcp", Addr: strings.Join(addrs, ","), Workers: c.Workers, Duration: time.Second})
	if err != nil {
		return 0, 0, err
	}
	if load.Requests == 0 {
		return 0, 0, fmt.Errorf("counting run: no request completed (%d errors, first: %s)", load.Errors, load.FirstErr)
	}
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", t.NodeNS(), "nft", "-j", "list", "table", "inet", countTable).Output()
	if err != nil {
		return 0, 0, fmt.Errorf("nft list table %s: %w", countTable, err)
	}
	var doc struct {
		Nftables []struct {
			Rule *struct {
				Chain string `json:"chain"`
				Expr  []struct {
					Counter *struct {
						Packets uint64 `json:"packets"`
					} `json:"counter"`
				} `json:"expr"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return 0, 0, fmt.Errorf("nft counters %q: %w", out, err)
	}
	got := map[string]uint64{}
	for _, e := range doc.Nftables {
		if e.Rule == nil {
			continue
		}
		for _, x := range e.Rule.Expr {
			if x.Counter != nil {
				got[e.Rule.Chain] += x.Counter.Packets
			}
		}
	}
	n := float64(load.Requests)
	return float64(got["count_pre"]) / n, float64(got["count_forward"]) / n, nil
}

// procTicks is user+system clock ticks per process, at one moment.
type procTicks map[int]uint64

// since is the ticks the processes of p used after base; a process
// started in between counts from zero, one that ended is left out.
func (p procTicks) since(base procTicks) uint64 {
	var n uint64
	for pid, t := range p {
		if b := base[pid]; t >= b {
			n += t - b
		}
	}
	return n
}

// labProcCPU reads the CPU ticks of every process in the node's and the
// Pods' network namespaces.
func (t *Topology) labProcCPU() (procTicks, error) {
	nss := []string{t.NodeNS()}
	for _, p := range t.Pods {
		nss = append(nss, p.NetNS())
	}
	var inodes []uint64
	for _, ns := range nss {
		var st unix.Stat_t
		if err := unix.Stat("/run/netns/"+ns, &st); err != nil {
			return nil, fmt.Errorf("netns %s: %w", ns, err)
		}
		inodes = append(inodes, st.Ino)
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	out := procTicks{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) != nil || !slices.Contains(inodes, st.Ino) {
			continue
		}
		sec, err := pidCPU(pid)
		if err != nil {
			continue // gone
		}
		out[pid] = uint64(sec*100 + 0.5)
	}
	return out, nil
}

// startPerf starts a system-wide `perf record -g` into dir/name.data, or
// nothing without dir; the returned function stops it and waits.
func startPerf(ctx context.Context, dir, name string) (func() error, error) {
	if dir == "" {
		return func() error { return nil }, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "perf", "record", "-a", "-g", "-F", "499", "-q", "-o", filepath.Join(dir, name+".data"))
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("perf record: %w", err)
	}
	time.Sleep(200 * time.Millisecond) // perf opens its events before the load starts
	return func() error {
		_ = cmd.Process.Signal(syscall.SIGINT)
		if err := cmd.Wait(); err != nil && !strings.Contains(err.Error(), "interrupt") {
			return fmt.Errorf("perf record: %w", err)
		}
		return nil
	}, nil
}
