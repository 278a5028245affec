// Package ipam is zerohop's address allocator. It knows pools, ranges,
// Services (by key) and sharing rules, and nothing about Kubernetes: the
// controller translates objects into the plain values used here, so every
// allocation rule is tested without an API server.
package ipam

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net/netip"
	"slices"
	"strings"
)

// Family is an IP address family.
type Family int

// The two families. The zero value is deliberately not a family, so a
// forgotten field is caught.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	switch f {
	case IPv4:
		return "IPv4"
	case IPv6:
		return "IPv6"
	}
	return fmt.Sprintf("Family(%d)", int(f))
}

// FamilyOf returns the family of a (IPv4-mapped IPv6 addresses are
// normalised away by the parsers, so they never reach here).
func FamilyOf(a netip.Addr) Family {
	if a.Is4() {
		return IPv4
	}
	return IPv6
}

// Range is an inclusive range of addresses of one family.
type Range struct {
	First, Last netip.Addr
}

// ParseRange parses a CIDR ("192.0.2.0/24", "2001:db8::/120") or an
// explicit range ("192.0.2.10-192.0.2.20", "2001:db8::1-2001:db8::ff").
// A CIDR whose address has host bits set is refused: it almost always hides
// a typo, and silently masking it would hand out addresses the user did not
// write.
func ParseRange(s string) (Range, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Range{}, errors.New("empty address range")
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return Range{}, fmt.Errorf("invalid CIDR %q: %w", s, err)
		}
		if p.Addr().Zone() != "" {
			return Range{}, fmt.Errorf("invalid CIDR %q: zones are not allowed", s)
		}
		if p.Addr().Is4In6() {
			return Range{}, fmt.Errorf("invalid CIDR %q: IPv4-mapped IPv6 is not allowed", s)
		}
		if p.Masked() != p {
			return Range{}, fmt.Errorf("invalid CIDR %q: host bits set (did you mean %s?)", s, p.Masked())
		}
		return checkMapped(s, Range{First: p.Addr(), Last: lastOf(p)})
	}
	lo, hi, ok := strings.Cut(s, "-")
	if !ok {
		return Range{}, fmt.Errorf("invalid address range %q: want a CIDR or first-last", s)
	}
	first, err := parseAddr(strings.TrimSpace(lo))
	if err != nil {
		return Range{}, fmt.Errorf("invalid address range %q: %w", s, err)
	}
	last, err := parseAddr(strings.TrimSpace(hi))
	if err != nil {
		return Range{}, fmt.Errorf("invalid address range %q: %w", s, err)
	}
	if first.Is4() != last.Is4() {
		return Range{}, fmt.Errorf("invalid address range %q: mixes IPv4 and IPv6", s)
	}
	if last.Less(first) {
		return Range{}, fmt.Errorf("invalid address range %q: first address is after last", s)
	}
	return checkMapped(s, Range{First: first, Last: last})
}

// IPv4-mapped IPv6 addresses (::ffff:0:0/96) name IPv4 hosts; a Service
// given one would be IPv6 in the API and IPv4 on the wire, and its string
// form would not parse back as a pool address.
var (
	mappedFirst = netip.MustParseAddr("::ffff:0:0")
	mappedLast  = netip.MustParseAddr("::ffff:ffff:ffff")
)

// checkMapped refuses an IPv6 range that reaches into ::ffff:0:0/96, even
// when its ends lie outside it (::/80, say).
func checkMapped(s string, r Range) (Range, error) {
	if r.First.Is6() && !r.Last.Less(mappedFirst) && !mappedLast.Less(r.First) {
		return Range{}, fmt.Errorf("invalid address range %q: includes IPv4-mapped addresses (::ffff:0:0/96)", s)
	}
	return r, nil
}

func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, err
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("address %q: zones are not allowed", s)
	}
	if a.Is4In6() {
		return netip.Addr{}, fmt.Errorf("address %q: IPv4-mapped IPv6 is not allowed", s)
	}
	return a, nil
}

func lastOf(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	bits := p.Bits()
	for i := range b {
		for j := 0; j < 8; j++ {
			if i*8+j >= bits {
				b[i] |= 0x80 >> j
			}
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Family of the range.
func (r Range) Family() Family { return FamilyOf(r.First) }

// Contains reports whether a is inside the range.
func (r Range) Contains(a netip.Addr) bool {
	return a.BitLen() == r.First.BitLen() && !a.Less(r.First) && !r.Last.Less(a)
}

// Overlaps reports whether the two ranges share an address.
func (r Range) Overlaps(o Range) bool {
	return r.First.BitLen() == o.First.BitLen() && !r.Last.Less(o.First) && !o.Last.Less(r.First)
}

func (r Range) String() string {
	if r.First == r.Last {
		return r.First.String()
	}
	return r.First.String() + "-" + r.Last.String()
}

func toBig(a netip.Addr) *big.Int { return new(big.Int).SetBytes(a.AsSlice()) }

// size returns the number of addresses in r, and how many of them end in
// .0 or .255 (always 0 for IPv6).
func (r Range) size() (total, buggy *big.Int) {
	lo, hi := toBig(r.First), toBig(r.Last)
	total = new(big.Int).Sub(hi, lo)
	total.Add(total, big.NewInt(1))
	buggy = new(big.Int)
	if r.Family() == IPv4 {
		// Addresses x with x%256 == 0 in [lo,hi], then x%256 == 255.
		buggy.Add(countResidue(lo, hi, 0), countResidue(lo, hi, 255))
	}
	return total, buggy
}

// countResidue counts x in [lo,hi] with x mod 256 == res.
func countResidue(lo, hi *big.Int, res int64) *big.Int {
	// floor((hi-res)/256) - floor((lo-1-res)/256), using Euclidean division
	// so the negative lower bound is handled.
	m := big.NewInt(256)
	a := new(big.Int).Sub(hi, big.NewInt(res))
	b := new(big.Int).Sub(lo, big.NewInt(res+1))
	qa := new(big.Int).Div(a, m)
	qb := new(big.Int).Div(b, m)
	return qa.Sub(qa, qb)
}

// isBuggy reports whether a is an IPv4 address ending in .0 or .255, which
// some old client stacks treat as network or broadcast addresses.
func isBuggy(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	last := a.As4()[3]
	return last == 0 || last == 255
}

// clampInt64 saturates n to int64, since a single IPv6 /64 already holds
// more addresses than an int64 can count.
func clampInt64(n *big.Int) int64 {
	if n.Sign() < 0 {
		return 0
	}
	if n.IsInt64() {
		return n.Int64()
	}
	return math.MaxInt64
}

// Merge returns rs sorted by first address, with overlapping and adjacent
// ranges of one family joined, so that every address is counted once.
func Merge(rs []Range) []Range {
	out := slices.Clone(rs)
	slices.SortFunc(out, func(a, b Range) int {
		return cmp.Or(cmp.Compare(a.First.BitLen(), b.First.BitLen()), a.First.Compare(b.First))
	})
	n := 0
	for _, r := range out {
		if n > 0 {
			prev := &out[n-1]
			if prev.First.BitLen() == r.First.BitLen() && (r.First.Compare(prev.Last) <= 0 || prev.Last.Next() == r.First) {
				if prev.Last.Less(r.Last) {
					prev.Last = r.Last
				}
				continue
			}
		}
		out[n] = r
		n++
	}
	return out[:n]
}

// Subtract returns the parts of rs that lie in none of cut, merged.
func Subtract(rs, cut []Range) []Range {
	out := Merge(rs)
	for _, c := range cut {
		var next []Range
		for _, r := range out {
			if !r.Overlaps(c) {
				next = append(next, r)
				continue
			}
			if r.First.Less(c.First) {
				next = append(next, Range{First: r.First, Last: c.First.Prev()})
			}
			if c.Last.Less(r.Last) {
				next = append(next, Range{First: c.Last.Next(), Last: r.Last})
			}
		}
		out = next
	}
	return out
}

// Intersect returns the addresses that r and o share, if any.
func (r Range) Intersect(o Range) (Range, bool) {
	if !r.Overlaps(o) {
		return Range{}, false
	}
	out := r
	if out.First.Less(o.First) {
		out.First = o.First
	}
	if o.Last.Less(out.Last) {
		out.Last = o.Last
	}
	return out, true
}

// reserved are the blocks no LoadBalancer IP may come from: nothing routes
// them to a node (or every host answers them itself). The API schema
// refuses CIDRs and range ends inside them; a range that only spans one
// is caught here.
var reserved = []struct {
	r    Range
	what string
}{
	{cidrRange("0.0.0.0/8"), "unspecified (0.0.0.0/8)"},
	{cidrRange("127.0.0.0/8"), "loopback (127.0.0.0/8)"},
	{cidrRange("169.254.0.0/16"), "link-local (169.254.0.0/16)"},
	{cidrRange("224.0.0.0/4"), "multicast (224.0.0.0/4)"},
	{cidrRange("255.255.255.255/32"), "broadcast (255.255.255.255)"},
	{cidrRange("::/128"), "unspecified (::)"},
	{cidrRange("::1/128"), "loopback (::1)"},
	{Range{First: mappedFirst, Last: mappedLast}, "IPv4-mapped (::ffff:0:0/96)"},
	{cidrRange("fe80::/10"), "link-local (fe80::/10)"},
	{cidrRange("ff00::/8"), "multicast (ff00::/8)"},
}

func cidrRange(s string) Range {
	p := netip.MustParsePrefix(s)
	return Range{First: p.Addr(), Last: lastOf(p)}
}

// Reserved names the first reserved block that r reaches into, or "" when
// every address of r may be a LoadBalancer IP.
func Reserved(r Range) string {
	for _, b := range reserved {
		if r.Overlaps(b.r) {
			return b.what
		}
	}
	return ""
}

// Prefixes returns the fewest CIDRs that together hold exactly r.
func (r Range) Prefixes() []netip.Prefix {
	var out []netip.Prefix
	first := r.First
	for {
		// The longest block starting at first that stays inside r.
		bits := first.BitLen()
		for bits > 0 {
			p := netip.PrefixFrom(first, bits-1)
			if p.Masked().Addr() != first || r.Last.Less(lastOf(p)) {
				break
			}
			bits--
		}
		p := netip.PrefixFrom(first, bits)
		out = append(out, p)
		last := lastOf(p)
		if last == r.Last {
			return out
		}
		first = last.Next()
	}
}
