package bpf

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func affClients(n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)})
	}
	return out
}

func pods(n int, first byte) []Backend {
	out := make([]Backend, n)
	for i := range out {
		out[i] = local(netip.AddrFrom4([4]byte{100, 64, first + byte(i), 2}), 8080)
	}
	return out
}

func synFrom(src netip.Addr, sport, dport uint16) pkt {
	return pkt{src: src, dst: vip4, sport: sport, dport: dport, proto: TCP, tcpFlags: tcpSYN}
}

// TestAffinity: ClientIP session affinity through PROG_TEST_RUN.
func TestAffinity(t *testing.T) {
	d := loadTest(t, Options{})
	k := ServiceKey{vip4, 80, TCP}
	// Same backends, no affinity entries: shows where Maglev alone sends
	// a client (the hash has no VIP or port in it).
	probe := ServiceKey{vip4, 81, TCP}
	four := pods(4, 1)
	mustUpsertCfg(t, d, k, ServiceConfig{Backends: four, Flags: ServiceLocal | ServiceAffinity})
	clients := affClients(40)

	// Every port of a client goes to one backend; clients spread.
	first := map[netip.Addr]netip.Addr{}
	used := map[netip.Addr]bool{}
	for _, c := range clients {
		for port := uint16(1000); port < 1008; port++ {
			be := backendOf(t, d, synFrom(c, port, 80))
			if prev, ok := first[c]; ok && prev != be {
				t.Fatalf("client %s: port %d went to %s, earlier ports to %s", c, port, be, prev)
			}
			first[c] = be
			used[be] = true
		}
	}
	if len(used) < 3 {
		t.Fatalf("40 clients used %d of 4 backends", len(used))
	}
	if n := mapLen(t, d.objs.Affinity); n != len(clients) {
		t.Fatalf("%d affinity entries, want one per client (%d)", n, len(clients))
	}

	// Three more backends: the table changes, clients with a fresh entry
	// stay where they were.
	seven := append(append([]Backend{}, four...), pods(3, 20)...)
	mustUpsertCfg(t, d, k, ServiceConfig{Backends: seven, Flags: ServiceLocal | ServiceAffinity})
	mustUpsertCfg(t, d, probe, ServiceConfig{Backends: seven, Flags: ServiceLocal | ServiceAffinity})
	moved := 0
	for _, c := range clients {
		if backendOf(t, d, synFrom(c, 2000, 81)) != first[c] {
			moved++
		}
		if be := backendOf(t, d, synFrom(c, 2000, 80)); be != first[c] {
			t.Fatalf("client %s moved from %s to %s after backends were added", c, first[c], be)
		}
	}
	if moved == 0 {
		t.Fatal("no client's Maglev choice changed with 4 -> 7 backends; the test proves nothing")
	}
	t.Logf("%d of %d clients kept on their backend by affinity", moved, len(clients))

	// A terminating or removed backend lets its clients choose again.
	victim := first[clients[0]]
	var next []Backend
	for _, b := range seven {
		if b.Addr == victim {
			b.Flags |= BackendTerminating
		}
		next = append(next, b)
	}
	mustUpsertCfg(t, d, k, ServiceConfig{Backends: next, Flags: ServiceLocal | ServiceAffinity})
	be := backendOf(t, d, synFrom(clients[0], 3000, 80))
	if be == victim {
		t.Fatalf("client %s sent to terminating backend %s", clients[0], victim)
	}
	if again := backendOf(t, d, synFrom(clients[0], 3001, 80)); again != be {
		t.Fatalf("after re-choosing, client went to %s then %s", be, again)
	}
	// Existing flows of the terminating backend keep it.
	if got := backendOf(t, d, synFrom(clients[0], 1000, 80)); got != victim {
		t.Fatalf("established flow moved off its terminating backend to %s", got)
	}

	// Deleting the service drops its affinity entries.
	if err := d.DeleteService(k); err != nil {
		t.Fatal(err)
	}
	if n := mapLen(t, d.objs.Affinity); n != len(clients) {
		t.Fatalf("%d affinity entries after delete, want only the probe service's %d", n, len(clients))
	}
}

// TestAffinityTimeout: after the timeout a client follows the current
// table; before it, it stays.
func TestAffinityTimeout(t *testing.T) {
	d := loadTest(t, Options{})
	k := ServiceKey{vip4, 80, TCP}
	probe := ServiceKey{vip4, 81, TCP}
	cfg := ServiceConfig{Backends: pods(2, 1), Flags: ServiceLocal | ServiceAffinity, AffinityTimeout: time.Second}
	mustUpsertCfg(t, d, k, cfg)
	clients := affClients(40)
	first := map[netip.Addr]netip.Addr{}
	for _, c := range clients {
		first[c] = backendOf(t, d, synFrom(c, 1000, 80))
	}
	start := time.Now()
	cfg.Backends = pods(6, 1)
	mustUpsertCfg(t, d, k, cfg)
	mustUpsertCfg(t, d, probe, cfg)
	maglev := map[netip.Addr]netip.Addr{}
	var movers []netip.Addr
	for _, c := range clients {
		maglev[c] = backendOf(t, d, synFrom(c, 1000, 81))
		if maglev[c] != first[c] {
			movers = append(movers, c)
		}
	}
	if len(movers) == 0 {
		t.Fatal("no client's Maglev choice changed with 2 -> 6 backends; the test proves nothing")
	}
	// Within the timeout (checked only while it surely holds) they stay.
	if time.Since(start) < 500*time.Millisecond {
		for _, c := range movers {
			if be := backendOf(t, d, synFrom(c, 1001, 80)); be != first[c] {
				t.Fatalf("client %s moved to %s within the timeout", c, be)
			}
		}
	}
	// Idle for longer than the timeout (bounded sleep): they follow Maglev.
	time.Sleep(1500 * time.Millisecond)
	for _, c := range movers {
		if be := backendOf(t, d, synFrom(c, 1002, 80)); be != maglev[c] {
			t.Fatalf("client %s after the timeout at %s, Maglev says %s", c, be, maglev[c])
		}
	}
}

func TestAffinityValidation(t *testing.T) {
	d := loadTest(t, Options{})
	k := ServiceKey{vip4, 80, TCP}
	for _, to := range []time.Duration{-time.Second, 1 << 62} {
		if err := d.Upsert(k, ServiceConfig{Backends: pods(1, 1), Flags: ServiceLocal | ServiceAffinity, AffinityTimeout: to}); err == nil {
			t.Errorf("timeout %v accepted", to)
		}
	}
	for _, c := range []struct {
		cfg  ServiceConfig
		want uint32
	}{
		{ServiceConfig{Flags: ServiceAffinity}, 10800},
		{ServiceConfig{Flags: ServiceAffinity, AffinityTimeout: 1500 * time.Millisecond}, 2},
		{ServiceConfig{Flags: ServiceAffinity, AffinityTimeout: 60 * time.Second}, 60},
		{ServiceConfig{AffinityTimeout: 60 * time.Second}, 0},
	} {
		if got := affinitySeconds(c.cfg); got != c.want {
			t.Errorf("%s: %d seconds, want %d", fmt.Sprint(c.cfg.Flags, c.cfg.AffinityTimeout), got, c.want)
		}
	}
}
