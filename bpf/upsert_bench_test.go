package bpf

import (
	"fmt"
	"net/netip"
	"testing"
)

// upsertSet is n services of eps local backends each, like the control-plane
// benchmark's (bench/): VIPs in 203.0.113.0/24, backends in 100.80.0.0/12.
func upsertSet(n, eps int) ([]ServiceKey, [][]Backend) {
	keys := make([]ServiceKey, n)
	bes := make([][]Backend, n)
	e := 0
	for i := range n {
		keys[i] = ServiceKey{Addr: netip.AddrFrom4([4]byte{203, 0, 113, byte(1 + i%250)}), Port: uint16(10000 + i/250), Proto: TCP}
		for range eps {
			a := netip.AddrFrom4([4]byte{100, byte(80 + e>>16), byte(e >> 8), byte(e)})
			bes[i] = append(bes[i], local(a, 8080))
			e++
		}
	}
	return keys, bes
}

// BenchmarkUpsertService is the cost of creating one service of 10 local
// backends with the default Maglev size, maps and syscalls included.
func BenchmarkUpsertService(b *testing.B) {
	const n = 2000
	keys, bes := upsertSet(n, 10)
	d, err := Load(Options{MaxServices: n + n/4, MaxBackends: 10*n + 1024, noPin: true})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = d.Close() }()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i == n {
			b.StopTimer()
			for _, k := range keys {
				if err := d.DeleteService(k); err != nil {
					b.Fatal(err)
				}
			}
			i = 0
			b.StartTimer()
		}
		if err := d.UpsertService(keys[i], bes[i], ServiceLocal); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkMaglev is the table computation alone.
func BenchmarkMaglev(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			ns := names(n)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Maglev(ns, DefaultMaglevSize, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
