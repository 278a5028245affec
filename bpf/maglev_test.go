package bpf

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"slices"
	"testing"
)

func names(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("100.64.%d.%d:8080", i/250, i%250+1)
	}
	return out
}

func TestMaglevDeterministic(t *testing.T) {
	a, err := Maglev(names(7), 251, 42)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Maglev(names(7), 251, 42)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a, b) {
		t.Fatal("same input gave different tables")
	}
	c, err := Maglev(names(7), 251, 43)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(a, c) {
		t.Fatal("seed does not change the table")
	}
}

func TestMaglevDistribution(t *testing.T) {
	const m = DefaultMaglevSize
	for _, n := range []int{1, 2, 3, 10, 33, 64, 100} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			table, err := Maglev(names(n), m, 7)
			if err != nil {
				t.Fatal(err)
			}
			if len(table) != m {
				t.Fatalf("table has %d slots, want %d", len(table), m)
			}
			count := make([]int, n)
			for _, b := range table {
				if int(b) >= n {
					t.Fatalf("slot holds backend %d of %d", b, n)
				}
				count[b]++
			}
			even := float64(m) / float64(n)
			for i, c := range count {
				if dev := (float64(c) - even) / even; dev > 0.05 || dev < -0.05 {
					t.Errorf("backend %d has %d slots, even is %.1f (%.1f%%)", i, c, even, 100*dev)
				}
			}
		})
	}
}

func TestMaglevDisruption(t *testing.T) {
	const m = DefaultMaglevSize
	for _, n := range []int{2, 5, 10, 50, 100} {
		for _, drop := range []int{0, n / 2, n - 1} {
			t.Run(fmt.Sprintf("n=%d/drop=%d", n, drop), func(t *testing.T) {
				all := names(n)
				before, err := Maglev(all, m, 1)
				if err != nil {
					t.Fatal(err)
				}
				rest := slices.Delete(slices.Clone(all), drop, drop+1)
				after, err := Maglev(rest, m, 1)
				if err != nil {
					t.Fatal(err)
				}
				moved := 0
				for i := range before {
					if all[before[i]] != rest[after[i]] {
						moved++
					}
				}
				limit := float64(m) * (1/float64(n) + 0.02)
				if float64(moved) > limit {
					t.Errorf("%d of %d slots moved, limit %.0f", moved, m, limit)
				}
			})
		}
	}
}

func TestMaglevInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    int
		m    uint32
	}{
		{"not prime", 3, 16380},
		{"too many backends", 12, 11},
		{"zero size", 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Maglev(names(tc.n), tc.m, 0); err == nil {
				t.Fatal("want error")
			}
		})
	}
	table, err := Maglev(nil, 251, 0)
	if err != nil || len(table) != 0 {
		t.Fatalf("empty backends: table %v, err %v", table, err)
	}
}

// maglevRef is the paper's formulation, written plainly (modulo per probe,
// hash/fnv): Maglev must build exactly the same tables, since nodes running
// different versions during an upgrade must agree on every slot.
func maglevRef(backends []string, m, seed uint32) []uint32 {
	n := len(backends)
	pos := make([]uint64, n)
	skip := make([]uint64, n)
	for i, name := range backends {
		h := fnv.New64a()
		var s [4]byte
		binary.LittleEndian.PutUint32(s[:], seed)
		_, _ = h.Write(s[:])
		_, _ = h.Write([]byte(name))
		x := h.Sum64()
		pos[i] = mix64(x^0x9e3779b97f4a7c15) % uint64(m)
		skip[i] = mix64(x^0xc2b2ae3d27d4eb4f)%uint64(m-1) + 1
	}
	table := make([]uint32, m)
	for i := range table {
		table[i] = ^uint32(0)
	}
	for filled := uint32(0); ; {
		for i := range n {
			for table[pos[i]] != ^uint32(0) {
				pos[i] = (pos[i] + skip[i]) % uint64(m)
			}
			table[pos[i]] = uint32(i)
			pos[i] = (pos[i] + skip[i]) % uint64(m)
			if filled++; filled == m {
				return table
			}
		}
	}
}

func TestMaglevMatchesReference(t *testing.T) {
	tests := []struct {
		n    int
		m    uint32
		seed uint32
	}{
		{1, 251, 0}, {2, 251, 7}, {7, 251, 42}, {10, DefaultMaglevSize, 0},
		{10, DefaultMaglevSize, 0xdeadbeef}, {33, 1021, 3}, {250, 251, 1}, {100, DefaultMaglevSize, 9},
	}
	for _, tc := range tests {
		want := maglevRef(names(tc.n), tc.m, tc.seed)
		got, err := Maglev(names(tc.n), tc.m, tc.seed)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("n=%d m=%d seed=%d: table differs from the reference", tc.n, tc.m, tc.seed)
		}
		// Into a dirty, larger buffer: same table.
		buf := make([]uint32, tc.m+5)
		for i := range buf {
			buf[i] = 12345
		}
		got, err = maglevInto(buf, names(tc.n), tc.m, tc.seed)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("n=%d m=%d seed=%d: table into a reused buffer differs", tc.n, tc.m, tc.seed)
		}
	}
}
