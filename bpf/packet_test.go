package bpf

// Independent packet construction and checking for the tests: checksums are
// computed from scratch here (RFC 1071 over the whole header/segment), never
// with the program's incremental logic.

import (
	"bytes"
	"encoding/binary"
	"net/netip"
)

var (
	macDst = []byte{0x02, 0, 0, 0, 0, 0x01}
	macSrc = []byte{0x02, 0, 0, 0, 0, 0x02}
)

type pkt struct {
	vlan       uint16 // VLAN id; 0 = untagged
	src, dst   netip.Addr
	sport      uint16
	dport      uint16
	proto      Proto
	tcpFlags   uint8 // TCP flags byte; 0 means ACK
	payload    []byte
	udpNoCsum  bool // IPv4 UDP with checksum 0 ("none")
	ipOptions  []byte
	ethPadding int // trailing bytes after the IP packet
	tcpOptions []byte
	ext        []ext6 // IPv6 extension headers, in order
}

const (
	tcpSYN = 0x02
	tcpACK = 0x10
	tcpPSH = 0x08
)

func sum16(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = (s & 0xffff) + (s >> 16)
	}
	return uint16(s)
}

func checksum(parts ...[]byte) uint16 {
	var s uint32
	for _, p := range parts {
		s += sum16(p)
	}
	return ^fold(s)
}

func pseudo(src, dst netip.Addr, proto Proto, l4len int) []byte {
	var b []byte
	if src.Is4() {
		s, d := src.As4(), dst.As4()
		b = append(b, s[:]...)
		b = append(b, d[:]...)
		b = append(b, 0, byte(proto), byte(l4len>>8), byte(l4len))
		return b
	}
	s, d := src.As16(), dst.As16()
	b = append(b, s[:]...)
	b = append(b, d[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(l4len))
	return append(b, 0, 0, 0, byte(proto))
}

func (p pkt) l4() []byte {
	var h []byte
	if p.proto == TCP {
		h = make([]byte, 20, 20+len(p.tcpOptions))
		binary.BigEndian.PutUint16(h[0:], p.sport)
		binary.BigEndian.PutUint16(h[2:], p.dport)
		binary.BigEndian.PutUint32(h[4:], 0x01020304)
		binary.BigEndian.PutUint32(h[8:], 0x0a0b0c0d)
		h[12] = byte(5+len(p.tcpOptions)/4) << 4
		h[13] = p.tcpFlags
		if h[13] == 0 {
			h[13] = tcpACK
		}
		binary.BigEndian.PutUint16(h[14:], 64240)
		h = append(h, p.tcpOptions...)
	} else {
		h = make([]byte, 8)
		binary.BigEndian.PutUint16(h[0:], p.sport)
		binary.BigEndian.PutUint16(h[2:], p.dport)
		binary.BigEndian.PutUint16(h[4:], uint16(8+len(p.payload)))
	}
	seg := append(h, p.payload...)
	csumAt := 16
	if p.proto == UDP {
		csumAt = 6
	}
	if p.proto == UDP && p.udpNoCsum && p.src.Is4() {
		return seg
	}
	c := checksum(pseudo(p.src, p.dst, p.proto, len(seg)), seg)
	if p.proto == UDP && c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(seg[csumAt:], c)
	return seg
}

func (p pkt) bytes() []byte {
	b := append([]byte{}, macDst...)
	b = append(b, macSrc...)
	if p.vlan != 0 {
		b = append(b, 0x81, 0x00, byte(p.vlan>>8), byte(p.vlan))
	}
	seg := p.l4()
	if p.src.Is4() {
		b = append(b, 0x08, 0x00)
		hl := 20 + len(p.ipOptions)
		ip := make([]byte, 20, hl)
		ip[0] = 0x40 | byte(hl/4)
		binary.BigEndian.PutUint16(ip[2:], uint16(hl+len(seg)))
		binary.BigEndian.PutUint16(ip[4:], 0x1234)
		binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
		ip[8] = 64
		ip[9] = byte(p.proto)
		s, d := p.src.As4(), p.dst.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		ip = append(ip, p.ipOptions...)
		binary.BigEndian.PutUint16(ip[10:], checksum(ip))
		b = append(b, ip...)
	} else {
		b = append(b, 0x86, 0xdd)
		ip := make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(len(seg)))
		ip[6] = byte(p.proto)
		ip[7] = 64
		s, d := p.src.As16(), p.dst.As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
		// The L4 checksum above covers the destination in the fixed
		// header: the final one, as long as no segments are left.
		b = append(b, withExt(append(ip, seg...), p.ext...)...)
		return append(b, make([]byte, p.ethPadding)...)
	}
	b = append(b, seg...)
	return append(b, make([]byte, p.ethPadding)...)
}

// ext6 is one IPv6 extension header: its type and what follows its next
// header and length bytes (the length is derived from it).
type ext6 struct {
	typ  byte
	body []byte
}

// padN fills n bytes of options with one PadN option.
func padN(n int) []byte {
	b := make([]byte, n)
	b[0], b[1] = 1, byte(n-2)
	return b
}

// hopByHop and dstOpts are option headers of n bytes (a multiple of 8).
func hopByHop(n int) ext6 { return ext6{0, padN(n - 2)} }
func dstOpts(n int) ext6  { return ext6{60, padN(n - 2)} }

// srh is a segment routing header (routing type 4) over segs, segsLeft of
// them still to be visited.
func srh(segsLeft byte, segs ...netip.Addr) ext6 {
	body := []byte{4, segsLeft, byte(len(segs) - 1), 0, 0, 0}
	for _, a := range segs {
		b := a.As16()
		body = append(body, b[:]...)
	}
	return ext6{43, body}
}

// frag6Hdr is a fragment header: offset in bytes (a multiple of 8), more
// fragments, identification.
func frag6Hdr(off uint16, more bool, id uint32) ext6 {
	body := make([]byte, 6)
	fo := off
	if more {
		fo |= 1
	}
	binary.BigEndian.PutUint16(body, fo)
	binary.BigEndian.PutUint32(body[2:], id)
	return ext6{44, body}
}

// withExt puts extension headers between an IPv6 packet's fixed header
// and its payload.
func withExt(l3 []byte, ext ...ext6) []byte {
	if len(ext) == 0 {
		return l3
	}
	h := bytes.Clone(l3[:40])
	var chain []byte
	for i, e := range ext {
		next := l3[6]
		if i+1 < len(ext) {
			next = ext[i+1].typ
		}
		chain = append(chain, next, byte((2+len(e.body))/8-1))
		chain = append(chain, e.body...)
	}
	h[6] = ext[0].typ
	binary.BigEndian.PutUint16(h[4:], binary.BigEndian.Uint16(h[4:])+uint16(len(chain)))
	return append(append(h, chain...), l3[40:]...)
}

// chain6 is what walk6 finds in an IPv6 packet.
type chain6 struct {
	ok    bool
	upper Proto // after the extension headers and a fragment header
	l4    int   // where that header starts, from the IPv6 header
	frag  int   // where the fragment header is; -1: none
}

// walk6 reads an IPv6 packet's extension headers as docs/datapath.md
// defines it, written apart from the program: at most four hop-by-hop
// (first only), destination options and routing headers without segments
// left, each within the payload, then perhaps a fragment header, which
// TCP or UDP must follow; ICMPv6 only without extension headers. Not ok:
// the datapath passes the packet.
func walk6(l3 []byte) chain6 {
	c := chain6{frag: -1}
	if len(l3) < 40 {
		return c
	}
	if n := 40 + int(binary.BigEndian.Uint16(l3[4:])); n < len(l3) {
		l3 = l3[:n]
	}
	nh, at := l3[6], 40
	for i := 0; nh == 0 || nh == 43 || nh == 60; i++ {
		if i == 4 || nh == 0 && i > 0 || len(l3) < at+8 || nh == 43 && l3[at+3] != 0 {
			return c
		}
		n := (int(l3[at+1]) + 1) * 8
		if at+n > len(l3) {
			return c
		}
		nh, at = l3[at], at+n
	}
	if nh == 44 {
		if len(l3) < at+8 || l3[at] != 6 && l3[at] != 17 {
			return c
		}
		c.frag = at
		nh, at = l3[at], at+8
	}
	if nh == 58 && at != 40 {
		return c
	}
	c.ok, c.upper, c.l4 = true, Proto(nh), at
	return c
}

// fragmented: the fragment header of a walked packet says it is one part
// of several (an atomic fragment, offset 0 and no M, is a whole datagram).
func (c chain6) fragmented(l3 []byte) bool {
	return c.frag >= 0 && binary.BigEndian.Uint16(l3[c.frag+2:])&0xfff9 != 0
}

// parsed is what the tests' own parser makes of a frame.
type parsed struct {
	ok           bool
	src, dst     netip.Addr
	sport, dport uint16
	proto        Proto
	l3, l4       int // offsets
	l3len        int
}

// parseFrame accepts exactly what the datapath should balance: Ethernet
// (+ one tag), IPv4 without fragmentation or IPv6 with the extension
// headers walk6 steps over and no fragmentation, and a complete TCP or
// UDP header inside the IP length.
func parseFrame(b []byte) parsed {
	var p parsed
	if len(b) < 14 {
		return p
	}
	off := 12
	et := binary.BigEndian.Uint16(b[off:])
	off += 2
	if et == 0x8100 || et == 0x88a8 {
		if len(b) < off+4 {
			return p
		}
		et = binary.BigEndian.Uint16(b[off+2:])
		off += 4
	}
	p.l3 = off
	var l4len int
	switch et {
	case 0x0800:
		if len(b) < off+20 || b[off]>>4 != 4 {
			return p
		}
		hl := int(b[off]&0xf) * 4
		tot := int(binary.BigEndian.Uint16(b[off+2:]))
		if hl < 20 || tot < hl || len(b) < off+tot {
			return p
		}
		if binary.BigEndian.Uint16(b[off+6:])&0x3fff != 0 {
			return p
		}
		p.proto = Proto(b[off+9])
		p.src = netip.AddrFrom4([4]byte(b[off+12 : off+16]))
		p.dst = netip.AddrFrom4([4]byte(b[off+16 : off+20]))
		p.l4 = off + hl
		p.l3len = tot
		l4len = tot - hl
	case 0x86dd:
		if len(b) < off+40 || b[off]>>4 != 6 {
			return p
		}
		pl := int(binary.BigEndian.Uint16(b[off+4:]))
		if pl == 0 || len(b) < off+40+pl {
			return p
		}
		c := walk6(b[off : off+40+pl])
		if !c.ok || c.fragmented(b[off:]) {
			return p
		}
		p.proto = c.upper
		p.src = netip.AddrFrom16([16]byte(b[off+8 : off+24]))
		p.dst = netip.AddrFrom16([16]byte(b[off+24 : off+40]))
		p.l4 = off + c.l4
		p.l3len = 40 + pl
		l4len = 40 + pl - c.l4
	default:
		return p
	}
	switch p.proto {
	case TCP:
		if l4len < 20 || len(b) < p.l4+20 {
			return p
		}
		doff := int(b[p.l4+12]>>4) * 4
		if doff < 20 || doff > l4len {
			return p
		}
	case UDP:
		if l4len < 8 || len(b) < p.l4+8 {
			return p
		}
		ul := int(binary.BigEndian.Uint16(b[p.l4+4:]))
		if ul < 8 || ul > l4len {
			return p
		}
	default:
		return p
	}
	p.sport = binary.BigEndian.Uint16(b[p.l4:])
	p.dport = binary.BigEndian.Uint16(b[p.l4+2:])
	p.ok = true
	return p
}

// checksumsOK verifies the IPv4 header and L4 checksums of a parsed frame
// by summing everything, checksum field included.
func checksumsOK(b []byte, p parsed) (ipOK, l4OK bool) {
	ipOK = true
	if p.src.Is4() {
		hl := int(b[p.l3]&0xf) * 4
		ipOK = fold(sum16(b[p.l3:p.l3+hl])) == 0xffff
	}
	seg := b[p.l4 : p.l3+p.l3len]
	if p.proto == UDP && p.src.Is4() && binary.BigEndian.Uint16(seg[6:]) == 0 {
		return ipOK, true
	}
	s := sum16(pseudo(p.src, p.dst, p.proto, len(seg))) + sum16(seg)
	return ipOK, fold(s) == 0xffff
}
