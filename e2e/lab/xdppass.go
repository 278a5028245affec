package lab

import (
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// A veth delivers frames sent by XDP on its peer (XDP_TX, redirects) only
// when it runs XDP itself; a physical NIC has no such need. The switch's
// ports to the nodes get a program that passes everything, so the nodes'
// datapath can send encapsulated frames (Cluster mode) the way it would
// on real hardware. The links are pinned under PinDir so that they outlive
// `zerohop-lab up`, and go with it on `zerohop-lab down`.
func attachSwitchPass(nodes int) error {
	if err := os.MkdirAll(PinDir, 0o700); err != nil {
		return fmt.Errorf("xdp pass: %w", err)
	}
	for i := 1; i <= nodes; i++ {
		port := fmt.Sprintf("p-node%d", i)
		l, err := AttachXDPPass(SwitchNS, port)
		if err != nil {
			return err
		}
		err = l.Pin(filepath.Join(PinDir, "switch-"+port))
		_ = l.Close() // the pin holds it
		if err != nil {
			return fmt.Errorf("xdp pass on %s/%s: %w", SwitchNS, port, err)
		}
	}
	return nil
}

// AttachXDPPass attaches a program that passes everything to ifname in
// namespace ns, so that the veth accepts frames XDP sends it from its peer
// (XDP_TX, redirects). Closing the link detaches it unless it is pinned.
func AttachXDPPass(ns, ifname string) (link.Link, error) {
	var l link.Link
	err := InNetns(ns, func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Name: "zh_lab_pass", Type: ebpf.XDP, License: "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2 /* XDP_PASS */), asm.Return()},
		})
		if err != nil {
			return err
		}
		defer func() { _ = prog.Close() }()
		l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifc.Index})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("xdp pass on %s/%s: %w", ns, ifname, err)
	}
	return l, nil
}
