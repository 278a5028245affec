package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/zerohop/zerohop/e2e/lab"
)

// The measured Service: one VIP with a TCP and a UDP port 80, targetPort
// 9000 (the lab's echo servers), two Pods on node 1.
var (
	VIP = netip.MustParseAddr("203.0.113.10")
)

const (
	VIPPort   = 80
	benchNode = 1
	podPort   = 9000
)

// Topology is the lab prepared for the benchmark: two echo Pods on node 1,
// the router's static route for the VIP to node 1 (standing in for a BGP
// announcement, which is not what is measured), and the client tuned for
// many short connections.
type Topology struct {
	Lab      *lab.Lab
	Pods     []lab.Pod
	PodVeths []string // node-side veth of each Pod
	// Exe is a binary whose main calls HelperMain first (the test binary):
	// the load generator and the control-plane helper run as such.
	Exe string
	// Zerohop is the zerohop binary, built by Prepare; Dir holds it and
	// the speakers' logs.
	Zerohop, Dir string

	api *apiServices
}

// sharedAPI is the writer of the Services in the lab's API server, one
// for every contender that reads them.
func (t *Topology) sharedAPI() (*apiServices, error) {
	if t.api != nil {
		return t.api, nil
	}
	if t.Lab.RESTConfig == nil {
		return nil, errors.New("the lab has no API server")
	}
	a, err := newAPIServices(t.Lab.RESTConfig)
	if err != nil {
		return nil, err
	}
	t.api = a
	return a, nil
}

// NodeNS is the namespace of the node under test.
func (t *Topology) NodeNS() string { return lab.NodeName(benchNode) }

// Prepare builds zerohop into dir and adds the Pods and routes to a lab
// that is up.
func Prepare(ctx context.Context, l *lab.Lab, exe, dir string) (*Topology, error) {
	t := &Topology{Lab: l, Exe: exe, Dir: dir}
	bin, err := buildZerohop(ctx, dir)
	if err != nil {
		return nil, err
	}
	t.Zerohop = bin
	for _, name := range []string{"bench-a", "bench-b"} {
		p, err := l.AddPod(ctx, lab.PodSpec{Name: name, Namespace: "bench", Node: benchNode})
		if err != nil {
			return nil, err
		}
		t.Pods = append(t.Pods, p)
		veth, err := routeDev(ctx, t.NodeNS(), p.IPv4)
		if err != nil {
			return nil, err
		}
		t.PodVeths = append(t.PodVeths, veth)
	}
	n4, _ := lab.NodeAddrs(benchNode)
	if out, err := exec.CommandContext(ctx, "ip", "-n", lab.RouterNS, "route", "replace",
		VIP.String()+"/32", "via", n4.String()).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("router route to VIP: %v: %s", err, out)
	}
	// The lab turns the client's transmit checksum offload off (XDP needs
	// complete checksums, as a NIC delivers them), for every contender.
	// Tens of thousands of short connections from one address to one
	// VIP:port: a wide port range and TIME_WAIT reuse keep the client from
	// running out of ports between runs.
	if err := lab.InNetns(lab.ClientNS, func() error {
		for k, v := range map[string]string{
			"/proc/sys/net/ipv4/ip_local_port_range": "1024 65000",
			"/proc/sys/net/ipv4/tcp_tw_reuse":        "1",
		} {
			if err := os.WriteFile(k, []byte(v), 0o644); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("client sysctls: %w", err)
	}
	return t, nil
}

// MeasuredServices are the measured Service's two ports.
func (t *Topology) MeasuredServices() []Service {
	var eps []netip.AddrPort
	for _, p := range t.Pods {
		eps = append(eps, netip.AddrPortFrom(netip.MustParseAddr(p.IPv4), podPort))
	}
	return []Service{
		{Name: "bench/echo:tcp-80", VIP: VIP, Port: VIPPort, Proto: "tcp", Endpoints: eps},
		{Name: "bench/echo:udp-80", VIP: VIP, Port: VIPPort, Proto: "udp", Endpoints: eps},
	}
}

// routeDev is the interface the node routes addr out of.
func routeDev(ctx context.Context, ns, addr string) (string, error) {
	out, err := exec.CommandContext(ctx, "ip", "-n", ns, "-j", "route", "get", addr).Output()
	if err != nil {
		return "", fmt.Errorf("route get %s in %s: %w", addr, ns, err)
	}
	var rs []struct {
		Dev string `json:"dev"`
	}
	if err := json.Unmarshal(out, &rs); err != nil || len(rs) == 0 || rs[0].Dev == "" {
		return "", fmt.Errorf("route get %s in %s: %q", addr, ns, out)
	}
	return rs[0].Dev, nil
}

// udpInDatagrams reads Udp InDatagrams of a namespace (a Pod's: what was
// delivered to its sockets).
func udpInDatagrams(ns string) (uint64, error) {
	var n uint64
	err := lab.InNetns(ns, func() error {
		// /proc/net follows the main thread; thread-self follows this one.
		b, err := os.ReadFile("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		var head []string
		for line := range strings.SplitSeq(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) == 0 || f[0] != "Udp:" {
				continue
			}
			if head == nil {
				head = f
				continue
			}
			for i, h := range head {
				if h == "InDatagrams" && i < len(f) {
					n, err = strconv.ParseUint(f[i], 10, 64)
					return err
				}
			}
		}
		return errors.New("no Udp InDatagrams in snmp")
	})
	return n, err
}

// runLoadHelper runs the load generator in the client namespace as its own
// process and returns what it measured.
func (t *Topology) runLoadHelper(ctx context.Context, c LoadConfig) (LoadResult, error) {
	args := []string{"netns", "exec", lab.ClientNS, t.Exe, LoadArg, "-proto", c.Proto, "-addr", c.Addr,
		"-workers", strconv.Itoa(c.Workers), "-duration", c.Duration.String()}
	cctx, cancel := context.WithTimeout(ctx, c.Duration+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, "ip", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return LoadResult{}, fmt.Errorf("load helper: %w: %s", err, stderr.Bytes())
	}
	var r LoadResult
	if err := json.Unmarshal(bytes.TrimSpace(out), &r); err != nil {
		return LoadResult{}, fmt.Errorf("load helper output %q: %w", out, err)
	}
	return r, nil
}
