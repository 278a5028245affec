package bpf

import (
	"net/netip"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// TestInspect: a snapshot of a loaded, attached datapath after known
// traffic matches the counts exactly, and reading it changes nothing.
func TestInspect(t *testing.T) {
	root := testPinRoot(t)
	d := loadTest(t, Options{PinRoot: root})

	ns := "zh-insp-" + netnsSuffix()
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	sh(t, "ip", "-n", ns, "link", "add", "zh-i0", "type", "veth", "peer", "name", "zh-i1")
	if err := inNS(ns, func() error { return d.Attach("zh-i0") }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inNS(ns, func() error { return d.Detach("zh-i0") }) })

	k4 := ServiceKey{vip4, 80, TCP}
	k6 := ServiceKey{vip6, 53, UDP}
	kc := ServiceKey{vip4, 8000, TCP}
	mustUpsertCfg(t, d, k4, ServiceConfig{
		Backends:     []Backend{local(podA4, 8080), local(podB4, 8080), {Addr: podC4, Port: 8080, Flags: BackendLocal | BackendTerminating}},
		Flags:        ServiceLocal | ServiceSourceRanges | ServiceAffinity,
		SourceRanges: prefixes("198.51.100.0/24", "192.0.2.0/25"),
	})
	mustUpsertCfg(t, d, k6, ServiceConfig{Backends: []Backend{local(podA6, 5353)}, Flags: ServiceLocal})
	rb := remote(netip.MustParseAddr("100.64.9.2"), 8000, netip.MustParseAddr("198.51.100.200"))
	mustUpsertCfg(t, d, kc, ServiceConfig{Backends: []Backend{rb}, Flags: ServiceCluster})

	// Traffic: 3 flows of 2 packets each to k4, 2 denied packets, 1 UDP
	// flow of 3 packets to k6.
	var bytes4 uint64
	for sport := uint16(1); sport <= 3; sport++ {
		for _, p := range []pkt{
			{src: client4, dst: vip4, sport: sport, dport: 80, proto: TCP, tcpFlags: tcpSYN},
			{src: client4, dst: vip4, sport: sport, dport: 80, proto: TCP, payload: []byte("abc")},
		} {
			bytes4 += uint64(len(p.bytes()) - 14)
			runProg(t, d.objs.ZhXdp, p.bytes())
		}
	}
	for sport := uint16(1); sport <= 2; sport++ {
		expectDrop(t, d, pkt{src: netip.MustParseAddr("203.0.113.99"), dst: vip4, sport: sport, dport: 80, proto: TCP, tcpFlags: tcpSYN})
	}
	for range 3 {
		runProg(t, d.objs.ZhXdp, pkt{src: client6, dst: vip6, sport: 7, dport: 53, proto: UDP, payload: []byte("q")}.bytes())
	}

	snap, err := Inspect(root)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(snap.Attached, []string{"zh-i0"}) {
		t.Errorf("attached %v, want [zh-i0]", snap.Attached)
	}
	if snap.Flows != 4 {
		t.Errorf("%d flows, want 4", snap.Flows)
	}
	if ev, _ := d.Events(); snap.Events != ev {
		t.Errorf("events %+v, datapath says %+v", snap.Events, ev)
	}
	want := []ServiceKey{k4, kc, k6} // sorted: v4 before v6, port order
	var got []ServiceKey
	for _, s := range snap.Services {
		got = append(got, s.Key)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("services %v, want %v", got, want)
	}
	s4 := snap.Services[0]
	if s4.Flags != ServiceLocal|ServiceSourceRanges|ServiceAffinity {
		t.Errorf("flags %v", s4.Flags)
	}
	if !slices.Equal(s4.SourceRanges, prefixes("192.0.2.0/25", "198.51.100.0/24")) {
		t.Errorf("source ranges %v", s4.SourceRanges)
	}
	wantC := Counters{Packets: 6, Bytes: bytes4, Flows: 3, Denied: 2}
	if s4.Counters != wantC {
		t.Errorf("counters %+v, want %+v", s4.Counters, wantC)
	}
	if len(s4.Backends) != 3 || s4.Backends[2].Addr != podC4 || s4.Backends[2].Flags != BackendLocal|BackendTerminating || s4.Backends[0].Node.IsValid() {
		t.Fatalf("backends %+v", s4.Backends)
	}
	var sum Counters
	for _, b := range s4.Backends {
		sum.add(b.Counters)
	}
	if sum.Packets != 6 || sum.Flows != 3 || sum.Bytes != bytes4 {
		t.Errorf("backend counters sum to %+v", sum)
	}
	// Per backend, exactly what Stats reports.
	st, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range snap.Services {
		for _, b := range s.Backends {
			if c := st[s.Key].Backends[b.AddrPort()]; c != b.Counters {
				t.Errorf("%s backend %s: snapshot %+v, Stats %+v", s.Key, b.AddrPort(), b.Counters, c)
			}
		}
		if st[s.Key].Counters != s.Counters {
			t.Errorf("%s: snapshot %+v, Stats %+v", s.Key, s.Counters, st[s.Key].Counters)
		}
	}
	if sc := snap.Services[1]; len(sc.Backends) != 1 || !reflect.DeepEqual(sc.Backends[0].Backend, rb) {
		t.Errorf("cluster service backends %+v, want %+v", sc.Backends, rb)
	}
	if s6 := snap.Services[2]; s6.Counters.Packets != 3 || s6.Counters.Flows != 1 || len(s6.SourceRanges) != 0 {
		t.Errorf("v6 service %+v", s6)
	}

	// Reading twice gives the same: nothing was changed.
	again, err := Inspect(root)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(snap, again) {
		t.Errorf("second snapshot differs:\n%+v\n%+v", snap, again)
	}

	// Detached: no longer listed.
	if err := inNS(ns, func() error { return d.Detach("zh-i0") }); err != nil {
		t.Fatal(err)
	}
	if snap, err = Inspect(root); err != nil || len(snap.Attached) != 0 {
		t.Errorf("after detach: attached %v, %v", snap.Attached, err)
	}
}

func TestInspectNothingPinned(t *testing.T) {
	requireRoot(t)
	root := testPinRoot(t)
	_, err := Inspect(root)
	if err == nil || !strings.Contains(err.Error(), root) {
		t.Fatalf("error %v, want one naming %s", err, root)
	}
}
