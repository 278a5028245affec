package ipam

import (
	"math/big"
	"net/netip"
	"slices"
	"testing"
)

func TestParseRange(t *testing.T) {
	tests := []struct {
		in          string
		first, last string
		wantErr     bool
	}{
		{in: "192.0.2.0/24", first: "192.0.2.0", last: "192.0.2.255"},
		{in: " 192.0.2.8/29 ", first: "192.0.2.8", last: "192.0.2.15"},
		{in: "192.0.2.7/32", first: "192.0.2.7", last: "192.0.2.7"},
		{in: "0.0.0.0/0", first: "0.0.0.0", last: "255.255.255.255"},
		{in: "2001:db8::/120", first: "2001:db8::", last: "2001:db8::ff"},
		{in: "2001:db8::/64", first: "2001:db8::", last: "2001:db8::ffff:ffff:ffff:ffff"},
		{in: "192.0.2.10-192.0.2.20", first: "192.0.2.10", last: "192.0.2.20"},
		{in: "192.0.2.10 - 192.0.2.10", first: "192.0.2.10", last: "192.0.2.10"},
		{in: "2001:db8::1-2001:db8::ff", first: "2001:db8::1", last: "2001:db8::ff"},
		{in: "", wantErr: true},
		{in: "192.0.2.1", wantErr: true},
		{in: "192.0.2.1/24", wantErr: true},
		{in: "192.0.2.0/33", wantErr: true},
		{in: "192.0.2.20-192.0.2.10", wantErr: true},
		{in: "192.0.2.1-2001:db8::1", wantErr: true},
		{in: "::ffff:192.0.2.0/120", wantErr: true},
		{in: "::ffff:192.0.2.1-::ffff:192.0.2.2", wantErr: true},
		{in: "::/80", wantErr: true},                      // reaches into ::ffff:0:0/96
		{in: "::fffe:ffff:ffff-::1:0:0:0", wantErr: true}, // ends outside, middle mapped
		{in: "::/81", first: "::", last: "::7fff:ffff:ffff"},
		{in: "fe80::1%eth0-fe80::2%eth0", wantErr: true},
		{in: "192.0.2.1-", wantErr: true},
		{in: "banana", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			r, err := ParseRange(tc.in)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("ParseRange(%q) = %v, want error", tc.in, r)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRange(%q): %v", tc.in, err)
			}
			if r.First.String() != tc.first || r.Last.String() != tc.last {
				t.Fatalf("ParseRange(%q) = %s..%s, want %s..%s", tc.in, r.First, r.Last, tc.first, tc.last)
			}
		})
	}
}

func TestRangeSize(t *testing.T) {
	tests := []struct {
		in           string
		total, buggy int64
	}{
		{"192.0.2.0/24", 256, 2},
		{"192.0.2.1-192.0.2.254", 254, 0},
		{"192.0.2.0-192.0.3.0", 257, 3},
		{"192.0.2.255-192.0.3.0", 2, 2},
		{"198.51.100.0/22", 1024, 8},
		{"0.0.0.0/31", 2, 1},
		{"2001:db8::/120", 256, 0},
	}
	for _, tc := range tests {
		r, err := ParseRange(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		total, buggy := r.size()
		if total.Int64() != tc.total || buggy.Int64() != tc.buggy {
			t.Errorf("%s: size %v buggy %v, want %d %d", tc.in, total, buggy, tc.total, tc.buggy)
		}
		// Cross-check the arithmetic by walking small ranges.
		if tc.total <= 1024 {
			var n, b int64
			for a := r.First; ; a = a.Next() {
				n++
				if isBuggy(a) {
					b++
				}
				if a == r.Last {
					break
				}
			}
			if n != tc.total || b != tc.buggy {
				t.Errorf("%s: walk counted %d/%d", tc.in, n, b)
			}
		}
	}
	r, _ := ParseRange("2001:db8::/32")
	total, _ := r.size()
	if clampInt64(total) != int64(^uint64(0)>>1) {
		t.Errorf("clamp of 2^96 = %d", clampInt64(total))
	}
	if clampInt64(big.NewInt(-3)) != 0 {
		t.Error("clamp of negative")
	}
}

func TestRangeOverlaps(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"192.0.2.0/24", "192.0.2.128/25", true},
		{"192.0.2.0-192.0.2.10", "192.0.2.10-192.0.2.20", true},
		{"192.0.2.0-192.0.2.9", "192.0.2.10-192.0.2.20", false},
		{"192.0.2.0/24", "2001:db8::/120", false},
		{"2001:db8::/120", "2001:db8::80-2001:db8::1ff", true},
	}
	for _, tc := range tests {
		a, _ := ParseRange(tc.a)
		b, _ := ParseRange(tc.b)
		if got := a.Overlaps(b); got != tc.want {
			t.Errorf("%s overlaps %s = %v", tc.a, tc.b, got)
		}
		if got := b.Overlaps(a); got != tc.want {
			t.Errorf("%s overlaps %s = %v (reversed)", tc.b, tc.a, got)
		}
	}
	if r, _ := ParseRange("192.0.2.0/24"); r.Contains(netip.MustParseAddr("2001:db8::1")) {
		t.Error("v4 range contains v6 address")
	}
}

func TestMergeSubtract(t *testing.T) {
	rs := func(ss ...string) []Range {
		var out []Range
		for _, s := range ss {
			out = append(out, mustRange(s))
		}
		return out
	}
	tests := []struct {
		name      string
		in, cut   []Range
		want      []Range
		wantMerge []Range
	}{
		{"disjoint", rs("192.0.2.0/30", "198.51.100.0/30"), nil, rs("192.0.2.0/30", "198.51.100.0/30"), rs("192.0.2.0/30", "198.51.100.0/30")},
		{"nested", rs("203.0.113.128/25", "203.0.113.0/24"), nil, rs("203.0.113.0/24"), rs("203.0.113.0/24")},
		{"adjacent", rs("192.0.2.4-192.0.2.7", "192.0.2.0-192.0.2.3"), nil, rs("192.0.2.0/29"), rs("192.0.2.0/29")},
		{"families apart", rs("2001:db8::/126", "192.0.2.0/30"), nil, rs("192.0.2.0/30", "2001:db8::/126"), rs("192.0.2.0/30", "2001:db8::/126")},
		{"cut middle", rs("192.0.2.0/24"), rs("192.0.2.128/26"), rs("192.0.2.0-192.0.2.127", "192.0.2.192-192.0.2.255"), rs("192.0.2.0/24")},
		{"cut all", rs("2001:db8:113::/120"), rs("2001:db8::/32"), nil, rs("2001:db8:113::/120")},
		{"cut edges", rs("192.0.2.0/29"), rs("192.0.2.0/32", "192.0.2.7/32"), rs("192.0.2.1-192.0.2.6"), rs("192.0.2.0/29")},
		{"cut other family", rs("192.0.2.0/30"), rs("2001:db8::/32"), rs("192.0.2.0/30"), rs("192.0.2.0/30")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Merge(tc.in); !slices.Equal(got, tc.wantMerge) {
				t.Errorf("Merge = %v, want %v", got, tc.wantMerge)
			}
			if got := Subtract(tc.in, tc.cut); !slices.Equal(got, tc.want) {
				t.Errorf("Subtract = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestReserved(t *testing.T) {
	tests := []struct {
		r    string
		want string
	}{
		{"203.0.113.0/24", ""},
		{"2001:db8::/32", ""},
		{"126.0.0.0-128.0.0.0", "loopback (127.0.0.0/8)"},
		{"0.0.0.0/0", "unspecified (0.0.0.0/8)"},
		{"223.255.255.0-224.0.0.1", "multicast (224.0.0.0/4)"},
		{"255.255.255.0/24", "broadcast (255.255.255.255)"},
		{"fe80::/64", "link-local (fe80::/10)"},
		{"::/120", "unspecified (::)"},
		{"fd00::/8", ""},
	}
	for _, tc := range tests {
		r, err := ParseRange(tc.r)
		if err != nil {
			t.Fatal(err)
		}
		if got := Reserved(r); got != tc.want {
			t.Errorf("Reserved(%s) = %q, want %q", tc.r, got, tc.want)
		}
	}
}

func TestPrefixes(t *testing.T) {
	tests := []struct {
		r    string
		want []string
	}{
		{"192.0.2.0/24", []string{"192.0.2.0/24"}},
		{"192.0.2.10-192.0.2.20", []string{"192.0.2.10/31", "192.0.2.12/30", "192.0.2.16/30", "192.0.2.20/32"}},
		{"192.0.2.7-192.0.2.7", []string{"192.0.2.7/32"}},
		{"0.0.0.0/0", []string{"0.0.0.0/0"}},
		{"2001:db8::1-2001:db8::3", []string{"2001:db8::1/128", "2001:db8::2/127"}},
	}
	for _, tc := range tests {
		r, err := ParseRange(tc.r)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, p := range r.Prefixes() {
			got = append(got, p.String())
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("Prefixes(%s) = %v, want %v", tc.r, got, tc.want)
		}
	}
}
