package bench

import (
	"context"
	"errors"
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

	"github.com/cilium/ebpf/link"

	"github.com/zerohop/zerohop/bpf"
	"github.com/zerohop/zerohop/e2e/lab"
)

// A Contender serves the measured VIP on the node, one at a time.
type Contender interface {
	Name() string
	// Setup programs the ruleset and returns how long programming took.
	Setup(ctx context.Context, t *Topology, rs Ruleset) (time.Duration, error)
	// Teardown removes everything Setup added.
	Teardown(ctx context.Context, t *Topology) error
}

// ContenderSet picks the contenders, in the order they are measured:
// zerohop as it ships, kube-proxy's two modes, the no-load-balancer floor,
// and the diagnostics asked for.
type ContenderSet struct {
	Zerohop Zerohop
	// BpfXDP adds the bpf-API diagnostic (XDP redirect into the Pods'
	// veths), ZerohopStack the speaker with --direct-to-pods=false,
	// DirectXDP no load balancer with XDP_PASS on the veths.
	BpfXDP, ZerohopStack, DirectXDP bool
}

// Contenders lists them.
func (c ContenderSet) Contenders() []Contender {
	z := c.Zerohop
	cts := []Contender{&z, &Iptables{}, &Nftables{}, &Direct{}}
	if c.BpfXDP {
		cts = append(cts, &BpfXDP{MaglevSize: z.MaglevSize})
	}
	if c.ZerohopStack {
		zs := c.Zerohop
		zs.Stack = true
		cts = append(cts, &zs)
	}
	if c.DirectXDP {
		cts = append(cts, &DirectXDP{})
	}
	return cts
}

// A targeter is a contender that is not reached through the VIP.
type targeter interface {
	Targets(t *Topology) []netip.AddrPort
}

// Direct is no load balancer at all: the client connects to the Pods' own
// addresses (the load generator's workers spread over them as a load
// balancer would), which the lab's router routes to the node by its Pod
// CIDR and the node to the Pod's veth, with no NAT table in the node. It
// is the lab's floor: what every contender pays for the client, the
// router, the veths, the Pod's stack and its echo server, whatever the
// datapath.
type Direct struct{}

// Name implements Contender.
func (*Direct) Name() string { return "direct" }

// Targets implements targeter.
func (*Direct) Targets(t *Topology) []netip.AddrPort {
	var out []netip.AddrPort
	for _, p := range t.Pods {
		out = append(out, netip.AddrPortFrom(netip.MustParseAddr(p.IPv4), podPort))
	}
	return out
}

// Setup implements Contender: the lab already routes Pod addresses.
func (*Direct) Setup(context.Context, *Topology, Ruleset) (time.Duration, error) { return 0, nil }

// Teardown implements Contender.
func (*Direct) Teardown(context.Context, *Topology) error { return nil }

// Zerohop is zerohop as it ships: a real `zerohop speaker` on the node,
// with the chart's defaults, programs the datapath from the Services and
// EndpointSlices in the lab's API server (apiobjects.go): XDP and tc on
// the uplink it finds itself, the Pods' veths found as Pod links, every
// balanced packet sent into its Pod without the node's stack. The time
// to program is from the speaker's start until its maps hold every
// Service (informers' initial list included); writing the objects is not
// counted. Stack runs it with --direct-to-pods=false (a diagnostic: the
// rewritten packets go through the node's routing and netfilter).
type Zerohop struct {
	Bin        string // the zerohop binary
	MaglevSize uint32 // 0: the chart's default
	Stack      bool
	LogDir     string

	api    *apiServices
	cmd    *exec.Cmd
	exited chan struct{}
}

// Name implements Contender.
func (z *Zerohop) Name() string {
	if z.Stack {
		return "zerohop-stack"
	}
	return "zerohop"
}

// Setup implements Contender.
func (z *Zerohop) Setup(ctx context.Context, t *Topology, rs Ruleset) (time.Duration, error) {
	if z.api == nil {
		a, err := t.sharedAPI()
		if err != nil {
			return 0, err
		}
		z.api = a
	}
	var measured, fillers []Service
	for _, s := range rs {
		if strings.HasPrefix(s.Name, "filler/") {
			fillers = append(fillers, s)
		} else {
			measured = append(measured, s)
		}
	}
	if err := z.api.ensure(ctx, measured, fillers); err != nil {
		return 0, err
	}
	// The chart's defaults, but for what the lab dictates (where the
	// pins go, no metrics listener) and GOMEMLIMIT, which the chart
	// derives from its memory limit.
	var args []string
	if z.MaglevSize != 0 {
		args = append(args, "--maglev-table-size", strconv.Itoa(int(z.MaglevSize)))
	}
	if z.Stack {
		args = append(args, "--direct-to-pods=false")
	}
	logPath := filepath.Join(z.LogDir, z.Name()+".log")
	start := time.Now()
	cmd, err := t.Lab.StartSpeaker(z.Bin, benchNode, speakerNS, logPath, args, []string{"GOMEMLIMIT=" + strconv.Itoa(speakerMemoryLimit)})
	if err != nil {
		return 0, err
	}
	z.cmd, z.exited = cmd, make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(z.exited) }()
	root := lab.SpeakerPinRoot(benchNode)
	for deadline := start.Add(3 * time.Minute); ; {
		select {
		case <-z.exited:
			return 0, fmt.Errorf("speaker exited: %v; log: %s", waitErr, logTail(logPath))
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		snap, err := bpf.Inspect(root)
		if err == nil && z.programmed(snap, t, len(rs)) {
			return time.Since(start), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("speaker: not programmed after 3 minutes (inspect: %v); log: %s", err, logTail(logPath))
		}
	}
}

// programmed: every Service in the maps, attached to the uplink, and the
// Pods' veths known as Pod links (unless Stack).
func (z *Zerohop) programmed(snap *bpf.Snapshot, t *Topology, services int) bool {
	if len(snap.Services) < services || !slices.Contains(snap.Attached, lab.UplinkIf) {
		return false
	}
	if !z.Stack && snap.PodLinks < len(t.Pods) {
		return false
	}
	for _, s := range snap.Services {
		if s.Key.Addr == VIP && len(s.Backends) != len(t.Pods) {
			return false
		}
	}
	return true
}

// Packets is how many packets the datapath forwarded for the measured
// Service ports, which shows the traffic really went through it.
func (z *Zerohop) Packets() (uint64, error) {
	return measuredPackets(lab.SpeakerPinRoot(benchNode))
}

func measuredPackets(root string) (uint64, error) {
	snap, err := bpf.Inspect(root)
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, s := range snap.Services {
		if s.Key.Addr == VIP && s.Key.Port == VIPPort {
			n += s.Counters.Packets
		}
	}
	return n, nil
}

// Delivery reads how the node sent balanced packets to its Pods.
func (z *Zerohop) Delivery() (bpf.Delivery, error) {
	snap, err := bpf.Inspect(lab.SpeakerPinRoot(benchNode))
	if err != nil {
		return bpf.Delivery{}, err
	}
	return snap.Delivery, nil
}

// Teardown implements Contender: the speaker stops as Kubernetes would
// stop it, and `zerohop speaker --cleanup` removes the pins it keeps on
// purpose, so the next contender finds no XDP on the uplink.
func (z *Zerohop) Teardown(context.Context, *Topology) error {
	if z.cmd == nil {
		return nil
	}
	_ = z.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-z.exited:
	case <-time.After(15 * time.Second):
		_ = z.cmd.Process.Kill()
		<-z.exited
	}
	z.cmd = nil
	out, err := exec.Command(z.Bin, "speaker", "--cleanup", "--bpf-pin-root", lab.SpeakerPinRoot(benchNode)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("speaker --cleanup: %w: %s", err, out)
	}
	return nil
}

// BpfXDP is the datapath programmed through the bpf package's API, as a
// diagnostic of the other way into a Pod: XDP and tc on the node's uplink,
// the Pods' veths marked for XDP redirects (EnableRedirect, with an
// XDP_PASS program on the Pods' eth0 so their veths take redirected
// frames, which the speaker does not do: it would have to enter every
// Pod's namespace), every Service in Local mode with the node's Pods as
// local backends.
type BpfXDP struct {
	// MaglevSize, 0 for the bpf package's default.
	MaglevSize uint32

	dp       *bpf.Datapath
	podLinks []link.Link
}

// zerohopPinRoot is under the lab's pin directory, so `zerohop-lab down`
// sweeps it if a run crashes.
var zerohopPinRoot = lab.PinDir + "/bench"

// Name implements Contender.
func (z *BpfXDP) Name() string { return "bpf-xdp" }

// BpfServices converts a ruleset to the bpf package's terms.
func BpfServices(rs Ruleset) ([]bpf.ServiceKey, [][]bpf.Backend, error) {
	keys := make([]bpf.ServiceKey, 0, len(rs))
	bes := make([][]bpf.Backend, 0, len(rs))
	for _, s := range rs {
		var p bpf.Proto
		switch s.Proto {
		case "tcp":
			p = bpf.TCP
		case "udp":
			p = bpf.UDP
		default:
			return nil, nil, fmt.Errorf("service %s: protocol %q", s.Name, s.Proto)
		}
		keys = append(keys, bpf.ServiceKey{Addr: s.VIP, Port: s.Port, Proto: p})
		b := make([]bpf.Backend, len(s.Endpoints))
		for i, ep := range s.Endpoints {
			b[i] = bpf.Backend{Addr: ep.Addr(), Port: ep.Port(), Flags: bpf.BackendLocal}
		}
		bes = append(bes, b)
	}
	return keys, bes, nil
}

// zerohopOptions sizes the maps for n Services of eps endpoints.
func zerohopOptions(root string, m uint32, services, endpoints int) bpf.Options {
	return bpf.Options{
		PinRoot:     root,
		MaglevSize:  m,
		MaxServices: uint32(max(1024, services+services/4)),
		MaxBackends: uint32(max(4096, endpoints+endpoints/4)),
	}
}

// Setup implements Contender.
func (z *BpfXDP) Setup(ctx context.Context, t *Topology, rs Ruleset) (time.Duration, error) {
	keys, bes, err := BpfServices(rs)
	if err != nil {
		return 0, err
	}
	neps := 0
	for _, b := range bes {
		neps += len(b)
	}
	for _, p := range t.Pods {
		l, err := lab.AttachXDPPass(p.NetNS(), lab.UplinkIf)
		if err != nil {
			return 0, err
		}
		z.podLinks = append(z.podLinks, l)
	}
	// The lab's pin directory, on bpffs; lab teardown removes it.
	if err := os.MkdirAll(lab.PinDir, 0o700); err != nil {
		return 0, err
	}
	var took time.Duration
	err = lab.InNetns(t.NodeNS(), func() error {
		dp, err := bpf.Load(zerohopOptions(zerohopPinRoot, z.MaglevSize, len(rs), neps))
		if err != nil {
			return err
		}
		z.dp = dp
		if err := dp.Attach(lab.UplinkIf); err != nil {
			return err
		}
		for _, v := range t.PodVeths {
			if err := dp.EnableRedirect(v); err != nil {
				return err
			}
		}
		t0 := time.Now()
		for i := range keys {
			if err := dp.UpsertService(keys[i], bes[i], bpf.ServiceLocal); err != nil {
				return err
			}
		}
		took = time.Since(t0)
		return nil
	})
	return took, err
}

// Packets: see Zerohop.Packets.
func (z *BpfXDP) Packets() (uint64, error) { return measuredPackets(zerohopPinRoot) }

// Delivery: see Zerohop.Delivery.
func (z *BpfXDP) Delivery() (bpf.Delivery, error) {
	if z.dp == nil {
		return bpf.Delivery{}, errors.New("bpf-xdp not set up")
	}
	return z.dp.Delivery()
}

// Teardown implements Contender.
func (z *BpfXDP) Teardown(context.Context, *Topology) error {
	var errs []error
	if z.dp != nil {
		errs = append(errs, z.dp.Remove())
		z.dp = nil
	}
	for _, l := range z.podLinks {
		errs = append(errs, l.Close())
	}
	z.podLinks = nil
	return errors.Join(errs...)
}

// DirectXDP is Direct with an XDP_PASS program on the node's uplink and
// on the Pods' eth0, as zerohop has them (its program on the uplink, and
// the Pods' so that their veths take redirected frames): a diagnostic
// (-bench.direct-xdp) for what running XDP on the lab's veths costs by
// itself, whatever the program does.
type DirectXDP struct {
	Direct
	links []link.Link
}

// Name implements Contender.
func (*DirectXDP) Name() string { return "direct+xdp" }

// Setup implements Contender.
func (d *DirectXDP) Setup(_ context.Context, t *Topology, _ Ruleset) (time.Duration, error) {
	nss := []string{t.NodeNS()}
	for _, p := range t.Pods {
		nss = append(nss, p.NetNS())
	}
	for _, ns := range nss {
		l, err := lab.AttachXDPPass(ns, lab.UplinkIf)
		if err != nil {
			return 0, err
		}
		d.links = append(d.links, l)
	}
	return 0, nil
}

// Teardown implements Contender.
func (d *DirectXDP) Teardown(context.Context, *Topology) error {
	var errs []error
	for _, l := range d.links {
		errs = append(errs, l.Close())
	}
	d.links = nil
	return errors.Join(errs...)
}

// Iptables is kube-proxy's iptables mode: the nat table loaded with
// iptables-restore in the node's namespace (Debian's iptables, which is
// iptables-nft: the same rules, kept as nf_tables expressions).
type Iptables struct{}

// Name implements Contender.
func (*Iptables) Name() string { return "iptables" }

// Setup implements Contender.
func (*Iptables) Setup(ctx context.Context, t *Topology, rs Ruleset) (time.Duration, error) {
	return nsRestore(ctx, t.NodeNS(), rs.IptablesRestore(), "iptables-restore", "-w")
}

// Teardown implements Contender. The table goes as a whole (not flushed),
// so no nat hook, and so no conntrack, stays behind for the next contender.
func (*Iptables) Teardown(ctx context.Context, t *Topology) error {
	return nsRun(ctx, t.NodeNS(), "", "nft", "delete", "table", "ip", "nat")
}

// Nftables is kube-proxy's nftables mode, loaded with nft -f.
type Nftables struct{}

// Name implements Contender.
func (*Nftables) Name() string { return "nftables" }

// Setup implements Contender.
func (*Nftables) Setup(ctx context.Context, t *Topology, rs Ruleset) (time.Duration, error) {
	return nsRestore(ctx, t.NodeNS(), rs.NftScript(), "nft", "-f", "-")
}

// Teardown implements Contender.
func (*Nftables) Teardown(ctx context.Context, t *Topology) error {
	return nsRun(ctx, t.NodeNS(), "", "nft", "delete", "table", "ip", NftTable)
}

// nsRestore feeds a ruleset to a loader inside ns and times it.
func nsRestore(ctx context.Context, ns, input string, argv ...string) (time.Duration, error) {
	t0 := time.Now()
	err := nsRun(ctx, ns, input, argv...)
	return time.Since(t0), err
}

// nsRun runs a command inside ns with `ip netns exec`; the rules it writes
// live in that namespace only.
func nsRun(ctx context.Context, ns, stdin string, argv ...string) error {
	if ns == "" || !strings.HasPrefix(ns, "zh-") {
		return fmt.Errorf("refusing to run %s outside a lab namespace (%q)", argv[0], ns)
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, argv...)...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		msg := string(out)
		if len(msg) > 2000 {
			msg = msg[:2000] + "..."
		}
		return fmt.Errorf("%s in %s: %w: %s", argv[0], ns, err, msg)
	}
	return nil
}
