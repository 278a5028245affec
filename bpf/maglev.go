package bpf

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
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
	if !isPrime(m) {
		return nil, fmt.Errorf("maglev table size %d is not prime", m)
	}
	n := len(backends)
	if n == 0 {
		return nil, nil
	}
	if uint64(n) >= uint64(m) {
		return nil, fmt.Errorf("maglev: %d backends do not fit a table of %d", n, m)
	}
	pos := make([]uint64, n)  // current position in each backend's permutation
	skip := make([]uint64, n) // step of each backend's permutation
	for i, name := range backends {
		h := nameHash(name, seed)
		pos[i] = mix64(h^0x9e3779b97f4a7c15) % uint64(m)
		skip[i] = mix64(h^0xc2b2ae3d27d4eb4f)%uint64(m-1) + 1
	}
	const empty = ^uint32(0)
	table := make([]uint32, m)
	for i := range table {
		table[i] = empty
	}
	// Each round gives every backend its next preferred free slot, so
	// shares differ by at most one slot.
	for filled := uint32(0); ; {
		for i := range n {
			for table[pos[i]] != empty {
				pos[i] = (pos[i] + skip[i]) % uint64(m)
			}
			table[pos[i]] = uint32(i)
			pos[i] = (pos[i] + skip[i]) % uint64(m)
			filled++
			if filled == m {
				return table, nil
			}
		}
	}
}

func nameHash(name string, seed uint32) uint64 {
	h := fnv.New64a()
	var s [4]byte
	binary.LittleEndian.PutUint32(s[:], seed)
	_, _ = h.Write(s[:])
	_, _ = h.Write([]byte(name))
	return h.Sum64()
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

func isPrime(m uint32) bool {
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
