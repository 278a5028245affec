package lab

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/zerohop/zerohop/e2e/lab/xdpfwd"
)

// Ingress is how the lab carries frames from the router to the nodes'
// uplinks.
type Ingress string

const (
	// IngressXDP: the router forwards in XDP (FIB lookup, ECMP, TTL,
	// redirect) and the node segment switches known unicast MACs in XDP,
	// so a node's uplink receives frames as a NIC driver hands them to
	// XDP, before any socket buffer exists. Every sender's transmit
	// checksum offload is off (a NIC finishes the checksum before the
	// wire), and the client's and the nodes' veths have GRO on, which
	// gives a veth the NAPI it needs to take redirected frames whatever
	// runs on the node. The default.
	IngressXDP Ingress = "xdp"
	// IngressKernel: the kernel's forwarding and a Linux bridge, as the
	// lab had first. A node's XDP then receives socket buffers, which a
	// veth copies into XDP buffers (veth_convert_skb_to_xdp_buff), work a
	// NIC never does.
	IngressKernel Ingress = "kernel"
)

// IngressEnv, when set, is the default Ingress ("xdp" or "kernel"), so
// every lab test can be run either way.
const IngressEnv = "ZEROHOP_LAB_INGRESS"

func defaultIngress() (Ingress, error) {
	switch v := Ingress(os.Getenv(IngressEnv)); v {
	case "":
		return IngressXDP, nil
	case IngressXDP, IngressKernel:
		return v, nil
	default:
		return "", fmt.Errorf("$%s=%q: want %q or %q", IngressEnv, v, IngressXDP, IngressKernel)
	}
}

// Where the forwarders' counters are pinned (ReadForwarderCounts).
var (
	RouterCounts = filepath.Join(PinDir, "fwd-router-counts")
	SwitchCounts = filepath.Join(PinDir, "fwd-switch-counts")
)

// ReadForwarderCounts reads what the router's or the switch's XDP
// forwarder (RouterCounts, SwitchCounts) did, with IngressXDP.
func ReadForwarderCounts(path string) (xdpfwd.Counts, error) { return xdpfwd.ReadCounts(path) }

// setupIngress sets up the ingress on a topology buildTopology made.
func setupIngress(in Ingress, nodes int) error {
	if in == IngressKernel {
		if err := attachSwitchPass(nodes); err != nil {
			return err
		}
		return InNetns(ClientNS, func() error { return disableTxChecksum(UplinkIf) })
	}
	if err := os.MkdirAll(PinDir, 0o700); err != nil {
		return fmt.Errorf("xdp ingress: %w", err)
	}
	// Every sender whose frames the forwarders redirect finishes its
	// checksums; the hosts at the ends (client, nodes) take redirected
	// frames (the router's interfaces run XDP, which does that).
	senders := map[string][]string{ClientNS: {UplinkIf}, RouterNS: {RouterClientIf, RouterNodesIf}}
	for i := 1; i <= nodes; i++ {
		senders[NodeName(i)] = []string{UplinkIf}
	}
	for ns, ifs := range senders {
		if err := InNetns(ns, func() error {
			for _, ifname := range ifs {
				if err := disableTxChecksum(ifname); err != nil {
					return err
				}
				if ns == RouterNS {
					continue
				}
				if err := setGRO(ifname, true); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("xdp ingress in %s: %w", ns, err)
		}
	}
	macs := map[string]net.HardwareAddr{} // switch port -> the MAC of the host behind it
	if err := InNetns(RouterNS, func() error {
		ifc, err := net.InterfaceByName(RouterNodesIf)
		if err == nil {
			macs["p-router"] = ifc.HardwareAddr
		}
		return err
	}); err != nil {
		return fmt.Errorf("xdp ingress: %w", err)
	}
	for i := 1; i <= nodes; i++ {
		if err := InNetns(NodeName(i), func() error {
			ifc, err := net.InterfaceByName(UplinkIf)
			if err == nil {
				macs[fmt.Sprintf("p-node%d", i)] = ifc.HardwareAddr
			}
			return err
		}); err != nil {
			return fmt.Errorf("xdp ingress: %w", err)
		}
	}
	if err := attachForwarder(RouterNS, "router", RouterCounts, []string{RouterClientIf, RouterNodesIf}, nil); err != nil {
		return err
	}
	ports := []string{"p-router"}
	for i := 1; i <= nodes; i++ {
		ports = append(ports, fmt.Sprintf("p-node%d", i))
	}
	return attachForwarder(SwitchNS, "switch", SwitchCounts, ports, macs)
}

// attachForwarder loads a forwarder in ns and attaches it to ifnames,
// which are also where it may redirect to: the router's when macs is nil,
// else the switch's, which knows the host behind each port by its MAC.
// Links and counters are pinned under PinDir, so they outlive `zerohop-lab
// up` and go with `zerohop-lab down`.
func attachForwarder(ns, role, countsPin string, ifnames []string, macs map[string]net.HardwareAddr) error {
	err := InNetns(ns, func() error {
		f, err := xdpfwd.Load()
		if err != nil {
			return err
		}
		defer func() { _ = f.Close() }()
		idx := map[string]int{}
		for _, n := range ifnames {
			ifc, err := net.InterfaceByName(n)
			if err != nil {
				return err
			}
			idx[n] = ifc.Index
			if err := f.AddPort(ifc.Index); err != nil {
				return err
			}
			if m, ok := macs[n]; ok {
				if err := f.Learn(m, ifc.Index); err != nil {
					return err
				}
			}
		}
		if err := f.PinCounts(countsPin); err != nil {
			return err
		}
		for _, n := range ifnames {
			attach := f.AttachRouter
			if macs != nil {
				attach = f.AttachSwitch
			}
			l, err := attach(idx[n])
			if err != nil {
				return fmt.Errorf("attach to %s: %w", n, err)
			}
			err = l.Pin(filepath.Join(PinDir, "fwd-"+role+"-"+n))
			_ = l.Close() // the pin holds it
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("xdp %s forwarder in %s: %w", role, ns, err)
	}
	return nil
}

// setGRO is `ethtool -K ifname gro on|off` (ETHTOOL_SGRO). On a veth,
// GRO on also gives it NAPI, which it needs to take frames redirected to
// it by XDP on its peer.
func setGRO(ifname string, on bool) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer func() { _ = unix.Close(fd) }()
	val := struct{ cmd, data uint32 }{cmd: 0x2c} // ETHTOOL_SGRO
	if on {
		val.data = 1
	}
	var ifr struct {
		name [unix.IFNAMSIZ]byte
		data unsafe.Pointer
		_    [16]byte
	}
	copy(ifr.name[:], ifname)
	ifr.data = unsafe.Pointer(&val)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return fmt.Errorf("ethtool -K %s gro %v: %w", ifname, on, errno)
	}
	runtime.KeepAlive(&val)
	return nil
}
