package xdpfwd

import (
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Forwarder is one load of the programs, in the network namespace of the
// thread that loaded it: its ports and forwarding table are its own.
type Forwarder struct {
	objs fwdObjects
}

// Load loads the programs and their maps.
func Load() (*Forwarder, error) {
	f := &Forwarder{}
	if err := loadFwdObjects(&f.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load lab forwarder: %+v", ve)
		}
		return nil, fmt.Errorf("load lab forwarder: %w", err)
	}
	return f, nil
}

// Close releases this process's handles; attached links that are pinned
// keep the programs and their maps.
func (f *Forwarder) Close() error { return f.objs.Close() }

// AddPort lets frames be redirected to the interface.
func (f *Forwarder) AddPort(ifindex int) error {
	if err := f.objs.Ports.Put(uint32(ifindex), uint32(ifindex)); err != nil {
		return fmt.Errorf("port %d: %w", ifindex, err)
	}
	return nil
}

// Learn puts a host's MAC behind a port of the switch.
func (f *Forwarder) Learn(mac net.HardwareAddr, port int) error {
	var k fwdMacKey
	if len(mac) != len(k.Mac) {
		return fmt.Errorf("MAC %q", mac)
	}
	copy(k.Mac[:], mac)
	if err := f.objs.Fdb.Put(k, uint32(port)); err != nil {
		return fmt.Errorf("learn %s at port %d: %w", mac, port, err)
	}
	return nil
}

// AttachRouter attaches the router's forwarder to the interface.
func (f *Forwarder) AttachRouter(ifindex int) (link.Link, error) {
	return link.AttachXDP(link.XDPOptions{Program: f.objs.ZhLabRoute, Interface: ifindex})
}

// AttachSwitch attaches the switch's forwarder to the interface.
func (f *Forwarder) AttachSwitch(ifindex int) (link.Link, error) {
	return link.AttachXDP(link.XDPOptions{Program: f.objs.ZhLabSwitch, Interface: ifindex})
}

// PinCounts pins the counters, so another process can read them
// (ReadCounts) while the links keep the programs running.
func (f *Forwarder) PinCounts(path string) error { return f.objs.Counts.Pin(path) }

// Counts are what a forwarder did with the frames it saw.
type Counts struct {
	Forwarded uint64 // redirected, without the kernel's forwarding
	Passed    uint64 // left to the kernel
}

// ReadCounts reads counters pinned by PinCounts.
func ReadCounts(path string) (Counts, error) {
	m, err := ebpf.LoadPinnedMap(path, &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return Counts{}, fmt.Errorf("forwarder counters %s: %w", path, err)
	}
	defer func() { _ = m.Close() }()
	var per []fwdFwdCounts
	if err := m.Lookup(uint32(0), &per); err != nil {
		return Counts{}, fmt.Errorf("forwarder counters %s: %w", path, err)
	}
	var c Counts
	for _, p := range per {
		c.Forwarded += p.Forwarded
		c.Passed += p.Passed
	}
	return c, nil
}
