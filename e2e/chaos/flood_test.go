package chaos_test

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zerohop/zerohop/e2e/echo"
	"github.com/zerohop/zerohop/e2e/lab"
)

// A hostile flood: hand-built IPv4 and IPv6 packets written with raw
// sockets in the client namespace, to the VIPs only. Sources are the
// client's own addresses and spoofed ones from the client's documentation
// subnets (replies to those go nowhere, so SYNs stay half-open). The mix,
// by packet index modulo 10:
//
//	0-4 TCP SYN to the Service port, random source port and sequence
//	5   TCP with random non-SYN flags (ACK, FIN, RST, PSH) and payload
//	6   TCP truncated: 0-19 bytes where the header should be
//	7   TCP with a random data offset (0-15 words, usually wrong)
//	8   fragments (IPv4 MF/offset, IPv6 fragment header) of TCP and UDP,
//	    and IPv4 SYNs with NOP options (IHL > 5)
//	9   other protocols: UDP with a wrong length, ICMP garbage, GRE, SCTP,
//	    experimental 253, random payload
//
// Checksums are right for SYNs (so Pods really see them) and random
// elsewhere. The router drops IP headers it cannot forward; what reaches
// the nodes' XDP programs is what a router on the internet would pass.
type flood struct {
	r      *rand.Rand
	c4, c6 netip.Addr
	vips   []netip.Addr
	port   uint16
}

func newFlood(seed uint64, vips []netip.Addr) *flood {
	c4, c6 := lab.ClientAddrs()
	return &flood{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), c4: c4, c6: c6, vips: vips, port: echo.DefaultTCPPort}
}

// src is the client's address or a spoofed one in its subnet (.100-.250).
func (f *flood) src(v6 bool) netip.Addr {
	own := f.r.IntN(4) == 0
	if !v6 {
		if own {
			return f.c4
		}
		b := lab.ClientNet4.Addr().As4()
		b[3] = byte(100 + f.r.IntN(151))
		return netip.AddrFrom4(b)
	}
	if own {
		return f.c6
	}
	b := lab.ClientNet6.Addr().As16()
	b[14], b[15] = 0x01, byte(f.r.IntN(256))
	return netip.AddrFrom16(b)
}

func (f *flood) bytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(f.r.Uint32())
	}
	return b
}

// tcp builds a TCP segment; with sum the checksum is right.
func (f *flood) tcp(src, dst netip.Addr, flags byte, doff int, payload []byte, sum bool) []byte {
	h := make([]byte, 20)
	binary.BigEndian.PutUint16(h[0:], uint16(1024+f.r.IntN(60000)))
	binary.BigEndian.PutUint16(h[2:], f.port)
	binary.BigEndian.PutUint32(h[4:], f.r.Uint32())
	if flags&0x10 != 0 {
		binary.BigEndian.PutUint32(h[8:], f.r.Uint32())
	}
	h[12] = byte(doff << 4)
	h[13] = flags
	binary.BigEndian.PutUint16(h[14:], 64240)
	seg := append(h, payload...)
	if sum {
		binary.BigEndian.PutUint16(seg[16:], l4sum(src, dst, unix.IPPROTO_TCP, seg))
	} else {
		binary.BigEndian.PutUint16(seg[16:], uint16(f.r.Uint32()))
	}
	return seg
}

// l4sum is the Internet checksum of seg with its pseudo header.
func l4sum(src, dst netip.Addr, proto byte, seg []byte) uint16 {
	var s uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			s += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			s += uint32(b[len(b)-1]) << 8
		}
	}
	add(src.AsSlice())
	add(dst.AsSlice())
	s += uint32(proto) + uint32(len(seg))
	add(seg)
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// ip4 wraps payload; the kernel fills in total length and header checksum.
func ip4(src, dst netip.Addr, proto byte, frag uint16, opts []byte, payload []byte) []byte {
	h := make([]byte, 20+len(opts))
	h[0] = 0x40 | byte(len(h)/4)
	binary.BigEndian.PutUint16(h[6:], frag)
	h[8], h[9] = 64, proto
	s, d := src.As4(), dst.As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	copy(h[20:], opts)
	return append(h, payload...)
}

// ip6 wraps payload in an IPv6 header with the right payload length.
func ip6(src, dst netip.Addr, next byte, payload []byte) []byte {
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
	h[6], h[7] = next, 64
	s, d := src.As16(), dst.As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return append(h, payload...)
}

// packet returns the i-th packet of the flood and its destination.
func (f *flood) packet(i int) (netip.Addr, []byte) {
	dst := f.vips[(i/10)%len(f.vips)]
	v6 := dst.Is6()
	src := f.src(v6)
	var proto byte = unix.IPPROTO_TCP
	var l4 []byte
	var frag uint16
	var opts []byte
	switch i % 10 {
	case 0, 1, 2, 3, 4:
		l4 = f.tcp(src, dst, 0x02, 5, nil, true)
	case 5:
		flags := []byte{0x10, 0x01, 0x04, 0x18, 0x11, 0x14, 0x3f}[f.r.IntN(7)]
		l4 = f.tcp(src, dst, flags, 5, f.bytes(f.r.IntN(200)), false)
	case 6:
		l4 = f.bytes(f.r.IntN(20))
	case 7:
		l4 = f.tcp(src, dst, byte(f.r.IntN(256)), f.r.IntN(16), f.bytes(f.r.IntN(40)), false)
	case 8:
		if f.r.IntN(3) == 0 && !v6 {
			opts = []byte{1, 1, 1, 1, 1, 1, 1, 0} // NOPs then end of options
			l4 = f.tcp(src, dst, 0x02, 5, nil, true)
			break
		}
		if f.r.IntN(2) == 0 {
			proto = unix.IPPROTO_UDP
		}
		l4 = f.bytes(8 + f.r.IntN(64))
		binary.BigEndian.PutUint16(l4[2:], f.port)
		frag = uint16(f.r.IntN(0x2000)) | 0x2000*uint16(f.r.IntN(2)) // offset, maybe MF
		if frag == 0 {
			frag = 0x2000
		}
		if v6 {
			fh := make([]byte, 8)
			fh[0] = proto
			binary.BigEndian.PutUint16(fh[2:], frag<<3|frag>>13&1)
			binary.BigEndian.PutUint32(fh[4:], f.r.Uint32())
			l4, proto = append(fh, l4...), unix.IPPROTO_FRAGMENT
		}
	case 9:
		proto = []byte{unix.IPPROTO_UDP, unix.IPPROTO_ICMP, 47, 132, 253}[f.r.IntN(5)]
		if v6 && proto == unix.IPPROTO_ICMP {
			proto = unix.IPPROTO_ICMPV6
		}
		l4 = f.bytes(f.r.IntN(120))
		if proto == unix.IPPROTO_UDP && len(l4) >= 8 {
			binary.BigEndian.PutUint16(l4[2:], f.port)
			binary.BigEndian.PutUint16(l4[4:], uint16(f.r.IntN(2000)))
		}
	}
	if v6 {
		return dst, ip6(src, dst, proto, l4)
	}
	return dst, ip4(src, dst, proto, frag, opts, l4)
}

// floodStats is what a flood sent.
type floodStats struct {
	sent, errs int
	took       time.Duration
}

// run sends n packets at about rate a second from the client namespace.
func (f *flood) run(n, rate int) (floodStats, error) {
	var fd4, fd6 int
	err := lab.InNetns(lab.ClientNS, func() error {
		var err error
		if fd4, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW); err != nil {
			return fmt.Errorf("raw ipv4 socket: %w", err)
		}
		if fd6, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_RAW); err != nil {
			_ = unix.Close(fd4)
			return fmt.Errorf("raw ipv6 socket: %w", err)
		}
		return nil
	})
	if err != nil {
		return floodStats{}, err
	}
	defer func() { _ = unix.Close(fd4); _ = unix.Close(fd6) }()
	var st floodStats
	t0 := time.Now()
	const batch = 10
	for i := 0; i < n; i++ {
		if i%batch == 0 {
			// Pace: packet i is due at t0 + i/rate.
			if d := time.Until(t0.Add(time.Duration(i) * time.Second / time.Duration(rate))); d > 0 {
				time.Sleep(d)
			}
		}
		dst, pkt := f.packet(i)
		var serr error
		if dst.Is4() {
			serr = unix.Sendto(fd4, pkt, 0, &unix.SockaddrInet4{Addr: dst.As4()})
		} else {
			serr = unix.Sendto(fd6, pkt, 0, &unix.SockaddrInet6{Addr: dst.As16()})
		}
		if serr != nil {
			st.errs++
			continue
		}
		st.sent++
	}
	st.took = time.Since(t0)
	return st, nil
}
