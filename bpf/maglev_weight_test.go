package bpf

import (
	"slices"
	"testing"
)

func TestMaglevWeightedShares(t *testing.T) {
	tests := []struct {
		name    string
		weights []uint32
		m       uint32
	}{
		{"80/20", []uint32{80, 20}, 16381},
		{"70/30/0 as 1", []uint32{70, 30, 0}, 16381},
		{"per Pod 40,40,20", []uint32{40, 40, 20}, 251},
		{"scaled to 2^30", []uint32{1 << 29, 1 << 28, 1 << 28}, 16381},
		{"one heavy among many", append([]uint32{1000}, slices.Repeat([]uint32{1}, 99)...), 16381},
		{"uneven", []uint32{3, 5, 7, 11, 13, 17, 19, 23}, 1021},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			table, err := MaglevWeighted(names(len(tc.weights)), tc.weights, tc.m, 9)
			if err != nil {
				t.Fatal(err)
			}
			if len(table) != int(tc.m) {
				t.Fatalf("table has %d slots, want %d", len(table), tc.m)
			}
			counts := make([]int, len(tc.weights))
			for _, b := range table {
				counts[b]++
			}
			var sum float64
			for _, w := range tc.weights {
				sum += float64(max(w, 1))
			}
			for i, w := range tc.weights {
				want := float64(tc.m) * float64(max(w, 1)) / sum
				// The quotas are the floors plus one for the largest
				// remainders: within one slot of the exact share.
				if d := float64(counts[i]) - want; d <= -1 || d >= 1 {
					t.Errorf("backend %d (weight %d): %d slots, want %.2f", i, w, counts[i], want)
				}
			}
		})
	}
}

func TestMaglevWeightedEqualIsMaglev(t *testing.T) {
	for _, w := range [][]uint32{nil, {5, 5, 5, 5, 5}, {0, 1, 0, 1, 1}} {
		got, err := MaglevWeighted(names(5), w, 251, 3)
		if err != nil {
			t.Fatal(err)
		}
		want, err := Maglev(names(5), 251, 3)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("weights %v: table differs from the unweighted one", w)
		}
	}
}

func TestMaglevWeightedStable(t *testing.T) {
	// The table depends on names, weights, size and seed only, and a
	// weight change moves about the slots whose share changed.
	ns := names(10)
	w := []uint32{10, 10, 10, 10, 10, 10, 10, 10, 10, 30}
	a, err := MaglevWeighted(ns, w, 16381, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := MaglevWeighted(ns, w, 16381, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a, b) {
		t.Fatal("same input, different tables")
	}
	w2 := slices.Clone(w)
	w2[9] = 40 // 25% -> 30.8%: 5.8% of the slots must change hands
	c, err := MaglevWeighted(ns, w2, 16381, 1)
	if err != nil {
		t.Fatal(err)
	}
	moved := 0
	for i := range a {
		if a[i] != c[i] {
			moved++
		}
	}
	if frac := float64(moved) / 16381; frac < 0.05 || frac > 0.25 {
		t.Errorf("a weight change moved %.1f%% of the slots", 100*frac)
	}
}

func TestMaglevWeightedInvalid(t *testing.T) {
	if _, err := MaglevWeighted(names(3), []uint32{1, 2}, 251, 0); err == nil {
		t.Error("2 weights for 3 backends accepted")
	}
}
