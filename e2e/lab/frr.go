package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The router's BFD profile when the lab runs BFD: fast enough that a dead
// node leaves the router's ECMP in well under half a second (detection
// 3 × 100 ms after the node's last packet). Tests give zerohop's
// BFDProfile the same timers, so both ends detect at that speed.
const (
	BFDProfileName = "zerohop"
	BFDInterval    = 100 * time.Millisecond
	BFDDetectMult  = 3
)

// FRR runs as the Debian package's frr user (it must belong to the vty
// group to open its vty sockets); the pathspace keeps every socket of the
// lab's daemons under /var/run/frr/<pathspace>, away from a system FRR.
const (
	frrDir       = "/usr/lib/frr"
	frrPathspace = RouterNS
	frrRunRoot   = "/var/run/frr"
)

// RouterConfig is what the lab's router config is generated from.
type RouterConfig struct {
	ASN      uint32
	RouterID netip.Addr
	// Neighbors are the nodes' uplink addresses (both families).
	Neighbors []Neighbor
	// MaximumPaths is the ECMP width for BGP routes.
	MaximumPaths int
	// BFD turns on BFD for every neighbor.
	BFD bool
	// LogDir gets the daemons' log files.
	LogDir string
}

// Neighbor is one BGP neighbor of the router.
type Neighbor struct {
	Addr netip.Addr
	ASN  uint32
	Name string // for the description
}

// bgpdConfig renders the bgpd configuration. Timers are short so tests see
// sessions come up in seconds, not the defaults' minutes.
func bgpdConfig(c RouterConfig) string {
	var b strings.Builder
	fmt.Fprintf(&b, "frr defaults datacenter\nhostname %s\nlog file %s informational\n!\n", RouterNS, filepath.Join(c.LogDir, "bgpd.log"))
	fmt.Fprintf(&b, "router bgp %d\n bgp router-id %s\n", c.ASN, c.RouterID)
	b.WriteString(" no bgp ebgp-requires-policy\n no bgp network import-check\n no bgp default ipv4-unicast\n")
	// Nodes may use one ASN or one each; either way their paths are ECMP.
	b.WriteString(" bgp bestpath as-path multipath-relax\n timers bgp 3 9\n")
	// Graceful restart: when bgpd dies, zebra keeps its routes in the
	// kernel (stale, for rib-stale-time) until the restarted bgpd sends
	// them again, so traffic does not stop with the control plane.
	// FRR 8.4's bgpd cannot be told it restarts (no -K), so it would
	// install each node's path as its session returns and shrink the kept
	// ECMP routes for a moment; read-only mode after start installs them
	// whole instead (startUpdateDelay here, RestartConfig for a restart).
	// preserve-fw-state is left off on purpose: with it, bgpd's selection
	// deferral counts only the sessions already up, so the first node's
	// End-of-RIB ends it, and bgpd tells zebra to drop every stale route it
	// has not sent again, which empties or shrinks the kept routes under
	// read-only mode's feet.
	b.WriteString(" bgp graceful-restart\n " + startUpdateDelay + "\n")
	for _, n := range c.Neighbors {
		fmt.Fprintf(&b, " neighbor %s remote-as %d\n", n.Addr, n.ASN)
		if n.Name != "" {
			fmt.Fprintf(&b, " neighbor %s description %s\n", n.Addr, n.Name)
		}
		fmt.Fprintf(&b, " neighbor %s timers connect 2\n", n.Addr)
		if c.BFD {
			fmt.Fprintf(&b, " neighbor %s bfd\n neighbor %s bfd profile %s\n", n.Addr, n.Addr, BFDProfileName)
		}
	}
	for _, fam := range []string{"ipv4", "ipv6"} {
		fmt.Fprintf(&b, " address-family %s unicast\n", fam)
		for _, n := range c.Neighbors {
			if n.Addr.Is4() == (fam == "ipv4") {
				fmt.Fprintf(&b, "  neighbor %s activate\n", n.Addr)
			}
		}
		fmt.Fprintf(&b, "  maximum-paths %d\n exit-address-family\n", c.MaximumPaths)
	}
	b.WriteString("!\n")
	return b.String()
}

func zebraConfig(c RouterConfig) string {
	return fmt.Sprintf("hostname %s\nlog file %s informational\n!\n", RouterNS, filepath.Join(c.LogDir, "zebra.log"))
}

func bfddConfig(c RouterConfig) string {
	ms := BFDInterval.Milliseconds()
	return fmt.Sprintf("hostname %s\nlog file %s informational\n!\nbfd\n profile %s\n  receive-interval %d\n  transmit-interval %d\n  detect-multiplier %d\n !\n!\n",
		RouterNS, filepath.Join(c.LogDir, "bfdd.log"), BFDProfileName, ms, ms, BFDDetectMult)
}

// startFRR writes configs into dir and starts zebra, bgpd and bfdd inside
// the router namespace. It returns the processes in start order.
func startFRR(ctx context.Context, c RouterConfig, dir string, detach bool) ([]Proc, error) {
	u, err := user.Lookup("frr")
	if err != nil {
		return nil, fmt.Errorf("frr user (is the frr package installed?): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	sock := filepath.Join(frrRunRoot, frrPathspace)
	for _, d := range []string{dir, sock} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, err
		}
		if err := os.Chown(d, uid, gid); err != nil {
			return nil, err
		}
	}
	files := map[string]string{"zebra": zebraConfig(c), "bgpd": bgpdConfig(c), "bfdd": bfddConfig(c)}
	var procs []Proc
	for _, d := range []string{"zebra", "bgpd", "bfdd"} {
		conf := filepath.Join(dir, d+".conf")
		if err := os.WriteFile(conf, []byte(files[d]), 0o640); err != nil {
			return procs, err
		}
		if err := os.Chown(conf, uid, gid); err != nil {
			return procs, err
		}
		argv := []string{filepath.Join(frrDir, d), "-N", frrPathspace, "-f", conf,
			"-i", filepath.Join(dir, d+".pid"), "-u", "frr", "-g", "frr"}
		p, _, err := spawn(spawnSpec{name: "frr-" + d, ns: RouterNS, argv: argv, logDir: dir, detach: detach})
		if err != nil {
			return procs, err
		}
		procs = append(procs, p)
		// Each daemon needs zebra's socket; wait for the daemon's vty socket
		// before starting the next so start-up order is deterministic.
		if err := waitFile(ctx, filepath.Join(sock, d+".vty"), 10*time.Second); err != nil {
			return procs, fmt.Errorf("frr %s did not come up (log %s): %w", d, filepath.Join(dir, d+".log"), err)
		}
	}
	return procs, nil
}

func waitFile(ctx context.Context, path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s did not appear within %s", path, timeout)
}

// Vtysh runs one vtysh command against the lab router and returns stdout.
// vtysh complains on stderr about the pathspace's missing vtysh.conf; that
// is harmless and ignored.
func Vtysh(ctx context.Context, command string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "vtysh", "-N", frrPathspace, "-c", command)
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("vtysh -c %q: %w", command, err)
	}
	return out, nil
}

// BGPNeighbor is the state of one router neighbor, from `show bgp neighbors json`.
type BGPNeighbor struct {
	Addr        string
	RemoteAS    uint32
	State       string // "Established", "Active", ...
	BFDStatus   string // "Up", "Down" or "" when BFD is off
	PrefixesIn4 int
	PrefixesIn6 int
}

// Neighbors returns the router's BGP neighbors and their states.
func Neighbors(ctx context.Context) ([]BGPNeighbor, error) {
	out, err := Vtysh(ctx, "show bgp neighbors json")
	if err != nil {
		return nil, err
	}
	return parseNeighbors(out)
}

func parseNeighbors(out []byte) ([]BGPNeighbor, error) {
	var raw map[string]struct {
		RemoteAs    uint32 `json:"remoteAs"`
		BgpState    string `json:"bgpState"`
		PeerBfdInfo *struct {
			Status string `json:"status"`
		} `json:"peerBfdInfo"`
		AddressFamilyInfo map[string]struct {
			AcceptedPrefixCounter int `json:"acceptedPrefixCounter"`
		} `json:"addressFamilyInfo"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		return nil, fmt.Errorf("parse bgp neighbors: %w", err)
	}
	var ns []BGPNeighbor
	for addr, r := range raw {
		n := BGPNeighbor{Addr: addr, RemoteAS: r.RemoteAs, State: r.BgpState}
		if r.PeerBfdInfo != nil {
			n.BFDStatus = r.PeerBfdInfo.Status
		}
		n.PrefixesIn4 = r.AddressFamilyInfo["ipv4Unicast"].AcceptedPrefixCounter
		n.PrefixesIn6 = r.AddressFamilyInfo["ipv6Unicast"].AcceptedPrefixCounter
		ns = append(ns, n)
	}
	sortBy(ns, func(n BGPNeighbor) string { return n.Addr })
	return ns, nil
}

// RIBRoute is one route in the router's RIB (zebra), from `show ip route json`.
type RIBRoute struct {
	Prefix    string
	Protocol  string // "bgp", "kernel", "connected", ...
	Selected  bool
	Installed bool
	NextHops  []string // addresses of the active next hops
}

// RIB returns the router's zebra routes for prefix (e.g. "203.0.113.10/32").
func RIB(ctx context.Context, prefix netip.Prefix) ([]RIBRoute, error) {
	fam := "ip"
	if prefix.Addr().Is6() {
		fam = "ipv6"
	}
	out, err := Vtysh(ctx, fmt.Sprintf("show %s route %s json", fam, prefix))
	if err != nil {
		return nil, err
	}
	return parseRIB(out)
}

func parseRIB(out []byte) ([]RIBRoute, error) {
	var raw map[string][]struct {
		Prefix    string `json:"prefix"`
		Protocol  string `json:"protocol"`
		Selected  bool   `json:"selected"`
		Installed bool   `json:"installed"`
		Nexthops  []struct {
			IP     string `json:"ip"`
			Active bool   `json:"active"`
		} `json:"nexthops"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		return nil, fmt.Errorf("parse rib: %w", err)
	}
	var rs []RIBRoute
	for _, entries := range raw {
		for _, e := range entries {
			r := RIBRoute{Prefix: e.Prefix, Protocol: e.Protocol, Selected: e.Selected, Installed: e.Installed}
			for _, nh := range e.Nexthops {
				if nh.Active {
					r.NextHops = append(r.NextHops, nh.IP)
				}
			}
			rs = append(rs, r)
		}
	}
	return rs, nil
}

// KernelRoute is the router's kernel FIB entry for a prefix.
type KernelRoute struct {
	Dst      string
	Protocol string
	NextHops []string // gateway addresses; more than one means ECMP
}

// KernelRouteFor returns the router's kernel route for exactly prefix, or
// nil when there is none.
func KernelRouteFor(ctx context.Context, prefix netip.Prefix) (*KernelRoute, error) {
	fam := "-4"
	if prefix.Addr().Is6() {
		fam = "-6"
	}
	out, err := run(ctx, "ip", "-n", RouterNS, fam, "-j", "route", "show", "exact", prefix.String())
	if err != nil {
		return nil, err
	}
	return parseKernelRoute(out)
}

func parseKernelRoute(out []byte) (*KernelRoute, error) {
	var raw []struct {
		Dst      string `json:"dst"`
		Gateway  string `json:"gateway"`
		Protocol string `json:"protocol"`
		Nexthops []struct {
			Gateway string `json:"gateway"`
		} `json:"nexthops"`
	}
	if len(strings.TrimSpace(string(out))) == 0 {
		return nil, nil
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		return nil, fmt.Errorf("parse ip route: %w", err)
	}
	if len(raw) == 0 {
		return nil, nil
	}
	r := &KernelRoute{Dst: raw[0].Dst, Protocol: raw[0].Protocol}
	if raw[0].Gateway != "" {
		r.NextHops = append(r.NextHops, raw[0].Gateway)
	}
	for _, nh := range raw[0].Nexthops {
		r.NextHops = append(r.NextHops, nh.Gateway)
	}
	return r, nil
}
