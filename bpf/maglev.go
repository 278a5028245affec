package bpf

import (
	"cmp"
	"fmt"
	"slices"
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

// MaglevWeighted is Maglev with each backend's share of the slots in
// proportion to its weight (0 counts as 1): backend i takes its turn in a
// round only until it holds m*w[i]/sum(w) slots, the remainder going to
// the largest fractions. Equal weights give Maglev's table.
func MaglevWeighted(backends []string, weights []uint32, m uint32, seed uint32) ([]uint32, error) {
	return maglevWeightedInto(nil, backends, weights, m, seed)
}

// maglevInto is Maglev writing into dst's storage when it has room, so a
// caller that builds many tables (Upsert) allocates none per table.
func maglevInto(dst []uint32, backends []string, m uint32, seed uint32) ([]uint32, error) {
	return maglevWeightedInto(dst, backends, nil, m, seed)
}

func maglevWeightedInto(dst []uint32, backends []string, weights []uint32, m uint32, seed uint32) ([]uint32, error) {
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
	if weights != nil {
		if len(weights) != n {
			return nil, fmt.Errorf("maglev: %d weights for %d backends", len(weights), n)
		}
		if quota := quotas(weights, m); quota != nil {
			// A backend takes its turns only until it holds its quota;
			// it then leaves the rounds.
			live := make([]int, 0, n)
			for i, q := range quota {
				if q > 0 {
					live = append(live, i)
				}
			}
			for len(live) > 0 {
				next := live[:0]
				for _, i := range live {
					p := &ps[i]
					for table[p.pos] != empty {
						if p.pos += p.skip; p.pos >= mm {
							p.pos -= mm
						}
					}
					table[p.pos] = uint32(i)
					if quota[i]--; quota[i] > 0 {
						next = append(next, i)
					}
				}
				live = next
			}
			return table, nil
		}
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

// quotas returns each backend's number of slots in proportion to its
// weight, summing to m, or nil when the weights are all equal (every
// backend then takes a slot in every round).
func quotas(weights []uint32, m uint32) []uint32 {
	equal := true
	for _, w := range weights {
		equal = equal && max(w, 1) == max(weights[0], 1)
	}
	if equal {
		return nil
	}
	var sum uint64
	for _, w := range weights {
		sum += uint64(max(w, 1))
	}
	q := make([]uint32, len(weights))
	rest := make([]uint64, len(weights))
	left := m
	for i, w := range weights {
		share := uint64(m) * uint64(max(w, 1))
		q[i], rest[i] = uint32(share/sum), share%sum
		left -= q[i]
	}
	// The slots the floors leave (fewer than n) go to the largest
	// remainders, the first backend first among equals.
	order := make([]int, len(weights))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(rest[b], rest[a]) })
	for _, i := range order[:left] {
		q[i]++
	}
	return q
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
