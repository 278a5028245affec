package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// clearForeignXDP runs before zerohop attaches XDP to an interface that
// has no zerohop link pinned: another tool's program there is left alone
// (an error says which) unless Options.ReplaceXDP, in which case it is
// detached, whether it was attached by a bpf_link or by netlink.
func (d *Datapath) clearForeignXDP(ifname string, ifindex int) error {
	id, err := xdpProgID(ifindex)
	if err != nil {
		return fmt.Errorf("query XDP on %s: %w", ifname, err)
	}
	if id == 0 {
		return nil
	}
	name := "?"
	if p, err := ebpf.NewProgramFromID(ebpf.ProgramID(id)); err == nil {
		if info, err := p.Info(); err == nil {
			name = info.Name
		}
		_ = p.Close()
	}
	if !d.opts.ReplaceXDP {
		return fmt.Errorf("%s already runs XDP program %d (%q), attached by another tool; refusing to replace it (set ReplaceXDP to take the interface over)", ifname, id, name)
	}
	if err := detachXDPLinks(ifindex); err != nil {
		return fmt.Errorf("replace XDP program %d on %s: %w", id, ifname, err)
	}
	for _, mode := range []uint32{unix.XDP_FLAGS_SKB_MODE, unix.XDP_FLAGS_DRV_MODE, unix.XDP_FLAGS_HW_MODE} {
		_ = xdpNetlinkDetach(ifindex, mode) // only the mode in use succeeds
	}
	if id, err := xdpProgID(ifindex); err != nil || id != 0 {
		return fmt.Errorf("replace XDP program on %s: still attached (id %d, %v)", ifname, id, err)
	}
	return nil
}

// detachXDPLinks detaches every XDP bpf_link on the interface.
func detachXDPLinks(ifindex int) error {
	it := new(link.Iterator)
	defer it.Close()
	for it.Next() {
		l := it.Take()
		info, err := l.Info()
		if err == nil && info.XDP() != nil && int(info.XDP().Ifindex) == ifindex {
			if err := l.Detach(); err != nil {
				_ = l.Close()
				return err
			}
		}
		_ = l.Close()
	}
	return it.Err()
}

// xdpProgID returns the id of the XDP program attached to an interface in
// the calling thread's network namespace, 0 for none (RTM_GETLINK,
// IFLA_XDP / IFLA_XDP_PROG_ID).
func xdpProgID(ifindex int) (uint32, error) {
	b, err := syscall.NetlinkRIB(unix.RTM_GETLINK, unix.AF_UNSPEC)
	if err != nil {
		return 0, err
	}
	msgs, err := syscall.ParseNetlinkMessage(b)
	if err != nil {
		return 0, err
	}
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWLINK || len(m.Data) < unix.SizeofIfInfomsg {
			continue
		}
		if int(int32(binary.NativeEndian.Uint32(m.Data[4:8]))) != ifindex {
			continue
		}
		attrs, err := syscall.ParseNetlinkRouteAttr(&m)
		if err != nil {
			return 0, err
		}
		for _, a := range attrs {
			if a.Attr.Type&^unix.NLA_F_NESTED != unix.IFLA_XDP {
				continue
			}
			for v := a.Value; len(v) >= 4; {
				l := int(binary.NativeEndian.Uint16(v[0:2]))
				t := binary.NativeEndian.Uint16(v[2:4])
				if l < 4 || l > len(v) {
					break
				}
				if t == unix.IFLA_XDP_PROG_ID && l >= 8 {
					return binary.NativeEndian.Uint32(v[4:8]), nil
				}
				v = v[min((l+3)&^3, len(v)):]
			}
			return 0, nil
		}
		return 0, nil
	}
	return 0, fmt.Errorf("interface %d not found", ifindex)
}

// xdpNetlinkDetach removes a netlink-attached XDP program in one mode.
func xdpNetlinkDetach(ifindex int, mode uint32) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	attr := func(t uint16, v []byte) []byte {
		b := make([]byte, 4, 4+len(v)+3)
		binary.NativeEndian.PutUint16(b[0:], uint16(4+len(v)))
		binary.NativeEndian.PutUint16(b[2:], t)
		b = append(b, v...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		return b
	}
	u32 := func(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }
	xdp := append(attr(unix.IFLA_XDP_FD, u32(^uint32(0))), attr(unix.IFLA_XDP_FLAGS, u32(mode))...)
	body := make([]byte, unix.SizeofIfInfomsg)
	binary.NativeEndian.PutUint32(body[4:], uint32(ifindex))
	body = append(body, attr(unix.IFLA_XDP|unix.NLA_F_NESTED, xdp)...)
	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	binary.NativeEndian.PutUint32(msg[0:], uint32(unix.SizeofNlMsghdr+len(body)))
	binary.NativeEndian.PutUint16(msg[4:], unix.RTM_SETLINK)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:], 1)
	msg = append(msg, body...)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return err
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if m.Header.Type == unix.NLMSG_ERROR && len(m.Data) >= 4 {
			if e := int32(binary.NativeEndian.Uint32(m.Data[0:4])); e != 0 {
				return syscall.Errno(-e)
			}
			return nil
		}
	}
	return errors.New("no netlink ack")
}
