package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
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

// Contenders are the three datapaths, in the order they are measured,
// and the no-load-balancer reference (and, with xdpDiag, its XDP variant).
func Contenders(xdpDiag bool) []Contender {
	cts := []Contender{&Zerohop{}, &Iptables{}, &Nftables{}, &Direct{}}
	if xdpDiag {
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

// Zerohop is the XDP datapath programmed through the bpf package: XDP and
// tc egress on the node's uplink, the Pods' veths as redirect targets,
// every Service in Local mode with the node's own Pods as backends.
type Zerohop struct {
	// MaglevSize, 0 for the bpf package's default.
	MaglevSize uint32

	dp       *bpf.Datapath
	podLinks []link.Link
}

// zerohopPinRoot is under the lab's pin directory, so `zerohop-lab down`
// sweeps it if a run crashes.
var zerohopPinRoot = lab.PinDir + "/bench"

// Name implements Contender.
func (z *Zerohop) Name() string { return "zerohop" }

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
func (z *Zerohop) Setup(ctx context.Context, t *Topology, rs Ruleset) (time.Duration, error) {
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

// Packets is how many packets the datapath forwarded for the measured
// Service ports, which shows the traffic really went through it.
func (z *Zerohop) Packets() (uint64, error) {
	if z.dp == nil {
		return 0, errors.New("zerohop not set up")
	}
	st, err := z.dp.Stats()
	if err != nil {
		return 0, err
	}
	var n uint64
	for k, s := range st {
		if k.Addr == VIP && k.Port == VIPPort {
			n += s.Packets
		}
	}
	return n, nil
}

// Teardown implements Contender.
func (z *Zerohop) Teardown(context.Context, *Topology) error {
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
