package bpf

import (
	"fmt"
)

// DefaultMaglevSize is the default number of slots in a Maglev table. It is
// prime and a little above 100 x the largest backend count we expect, which
// keeps each backend's share within about 1% of even.
const DefaultMaglevSize = 16381

// Maglev builds the lookup table of the Maglev hashing paper (Eisenbud et
// al., NSDI 2016): slot -> index into backends. The table depends only on
// the backend names in the given order, m and seed, so every node that is
// given the same ordered list builds the same table. m must be prime and
// larger than len(backends). An empty list yields an empty table.
func Maglev(backends []string, m uint32, seed uint32) ([]uint32, error) {
	return maglevInto(nil, backends, m, seed)
}

// maglevInto is Maglev writing into dst's storage when it has room, so a
// caller that builds many tables (Upsert) allocates none per table.
func maglevInto(dst []uint32, backends []string, m uint32, seed uint32) ([]uint32, error) {
	if !IsPrime(m) {
		return nil, fmt.Errorf("maglev table size %d is not prime", m)
	}
	n := len(backends)
	if n == 0 {
		return nil, nil
	}
	if uint64(n) >= uint64(m) {
		return nil, fmt.Errorf("maglev: %d backends do not fit a table of %d", n, m)
	}
	table := dst[:0]
	if cap(table) < int(m) {
		table = make([]uint32, m)
	}
	table = table[:m]
	if n == 1 {
		// Every slot is the one backend's: no permutation to walk.
		clear(table)
		return table, nil
	}
	// pos and skip are both below m, so pos+skip is below 2m and one
	// subtraction replaces the modulo of the paper's formulation (a
	// 64-bit division per probe was most of the time).
	mm := uint64(m)
	type perm struct{ pos, skip uint64 }
	var small [16]perm
	ps := small[:0]
	if n > len(small) {
		ps = make([]perm, 0, n)
	}
	for _, name := range backends {
		h := nameHash(name, seed)
		ps = append(ps, perm{
			pos:  mix64(h^0x9e3779b97f4a7c15) % mm,
			skip: mix64(h^0xc2b2ae3d27d4eb4f)%(mm-1) + 1,
		})
	}
	const empty = ^uint32(0)
	for i := range table {
		table[i] = empty
	}
	// Each round gives every backend its next preferred free slot, so
	// shares differ by at most one slot. The probing is almost all of the
	// work: about m*ln(m) probes per table.
	for filled := uint32(0); ; {
		for i := range ps {
			p := &ps[i]
			pos := p.pos
			for table[pos] != empty {
				if pos += p.skip; pos >= mm {
					pos -= mm
				}
			}
			table[pos] = uint32(i)
			if pos += p.skip; pos >= mm {
				pos -= mm
			}
			p.pos = pos
			filled++
			if filled == m {
				return table, nil
			}
		}
	}
}

func nameHash(name string, seed uint32) uint64 {
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	for i := range 4 {
		h ^= uint64(byte(seed >> (8 * i)))
		h *= prime
	}
	for i := 0; i < len(name); i++ {
		h ^= uint64(name[i])
		h *= prime
	}
	return h
}

// mix64 is the splitmix64 finaliser: FNV alone clusters similar names.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// IsPrime reports whether m is prime: a Maglev table size must be.
func IsPrime(m uint32) bool {
	if m < 2 {
		return false
	}
	for d := uint32(2); uint64(d)*uint64(d) <= uint64(m); d++ {
		if m%d == 0 {
			return false
		}
	}
	return true
}
