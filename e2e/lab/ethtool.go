package lab

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// disableTxChecksum turns off a veth's transmit checksum offload, so its
// packets carry full checksums as they would arriving from a physical NIC.
// With the offload on, a packet that the client sends keeps only the
// pseudo-header sum (CHECKSUM_PARTIAL) all the way through the router's
// forwarding to a node; once XDP sends it on as a raw frame
// (encapsulation), nothing is left to finish that sum and the Pod drops
// it. Real uplinks never deliver such packets. No ethtool binary is
// needed: this is its ETHTOOL_STXCSUM ioctl.
func disableTxChecksum(ifname string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer func() { _ = unix.Close(fd) }()
	val := struct{ cmd, data uint32 }{cmd: 0x17} // ETHTOOL_STXCSUM, data 0 = off
	var ifr struct {
		name [unix.IFNAMSIZ]byte
		data unsafe.Pointer
		_    [16]byte
	}
	copy(ifr.name[:], ifname)
	ifr.data = unsafe.Pointer(&val)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return fmt.Errorf("ethtool -K %s tx off: %w", ifname, errno)
	}
	runtime.KeepAlive(&val)
	return nil
}
