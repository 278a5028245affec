package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/go-logr/logr"
)

// BenchmarkApply measures one Service appearing (a new prefix: export
// policy rebuilt) and one going unready (its prefix leaves the RIB, the
// policy is left as is) with 100 and 10k prefixes announced; compare the
// sizes with each other, in one run. The peer is a closed port on
// loopback, so no session is involved.
func BenchmarkApply(b *testing.B) {
	for _, n := range []int{100, 10000} {
		ctx := context.Background()
		s, err := New(ctx, Options{RouterID: netip.MustParseAddr("192.0.2.1"), Log: logr.Discard()})
		if err != nil {
			b.Fatal(err)
		}
		peer := Peer{Name: "p", Address: netip.MustParseAddr("127.0.0.1"), Port: 1, MyASN: 64512, PeerASN: 64513}
		var paths []Path
		for i := range n {
			a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
			paths = append(paths, Path{Prefix: netip.PrefixFrom(a, 32), Communities: []uint32{uint32(i % 3)}})
		}
		base := map[netip.Addr][]Path{peer.Address: paths}
		if err := s.Apply(ctx, []Peer{peer}, base); err != nil {
			b.Fatal(err)
		}
		more := map[netip.Addr][]Path{peer.Address: append(paths[:n:n], Path{Prefix: netip.MustParsePrefix("11.0.0.1/32")})}
		less := map[netip.Addr][]Path{peer.Address: paths[1:]}
		b.Run(fmt.Sprintf("new-prefix/%d", n), func(b *testing.B) {
			for b.Loop() {
				if err := s.Apply(ctx, []Peer{peer}, more); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				// Back to the base, with the new prefix's statement pruned.
				if err := s.Apply(ctx, []Peer{peer}, base); err != nil {
					b.Fatal(err)
				}
				s.mu.Lock()
				for _, m := range s.applied {
					delete(m, netip.MustParsePrefix("11.0.0.1/32"))
				}
				s.mu.Unlock()
				b.StartTimer()
			}
		})
		b.Run(fmt.Sprintf("withdraw/%d", n), func(b *testing.B) {
			for b.Loop() {
				if err := s.Apply(ctx, []Peer{peer}, less); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := s.Apply(ctx, []Peer{peer}, base); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
		s.Close(false)
	}
}
