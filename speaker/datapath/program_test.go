package datapath

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/zerohop/zerohop/bpf"
)

// TestApplyToDatapath drives a real, pinned (but not attached) datapath
// through Translate, Diff and Apply: creation, a one-service change, a
// failed upsert and its retry, removal, and a restart from the pins.
// It needs root (bpf(2) and bpffs).
func TestApplyToDatapath(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: loads BPF maps and pins them under /sys/fs/bpf")
	}
	opts := bpf.Options{
		PinRoot:     fmt.Sprintf("/sys/fs/bpf/zh-dptest-%d", os.Getpid()),
		MaglevSize:  251,
		MaxServices: 16,
		MaxBackends: 64,
		MaxFlows:    1024,
	}
	d, err := bpf.Load(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Remove(); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(opts.PinRoot); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind: %v", opts.PinRoot, err)
		}
	})
	ctx := context.Background()
	v4, v6 := discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6
	svcs := []*corev1.Service{
		svc("web", []string{"203.0.113.1", "2001:db8:f::1"}),
		svc("api", []string{"203.0.113.2"}, local),
	}
	sls := []*discoveryv1.EndpointSlice{
		slice("web-4", "web", v4, http8080, readyEP("100.64.1.1", "n1"), readyEP("100.64.2.1", "n2")),
		slice("web-6", "web", v6, http8080, readyEP("fd00::1:1", "n1"), readyEP("fd00::2:1", "n2")),
		slice("api-4", "api", v4, http8080, readyEP("100.64.1.2", "n1")),
	}
	sync := func(current map[bpf.ServiceKey]Entry, svcs []*corev1.Service, sls []*discoveryv1.EndpointSlice) (map[bpf.ServiceKey]Entry, []Upsert, []bpf.ServiceKey) {
		t.Helper()
		desired, errs := Translate(thisNode, svcs, sls, nodes, nil)
		if len(errs) != 0 {
			t.Fatal(errs)
		}
		ups, dels := Diff(current, desired)
		if err := Apply(ctx, d, current, ups, dels); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(current, desired) {
			t.Fatalf("current after Apply:%s\nwant%s", dump(current), dump(desired))
		}
		checkDatapath(t, d, desired)
		return desired, ups, dels
	}

	current := Observed(d.Services())
	if len(current) != 0 {
		t.Fatalf("fresh datapath holds %v", d.Services())
	}
	_, ups, _ := sync(current, svcs, sls)
	if len(ups) != 3 {
		t.Fatalf("first sync: %d upserts, want 3", len(ups))
	}

	// One endpoint of api turns terminating: one upsert, nothing else.
	sls[2] = slice("api-4", "api", v4, http8080, ep{addr: "100.64.1.2", node: "n1", ready: no, serving: yes, terminating: yes}, readyEP("100.64.1.3", "n1"))
	_, ups, dels := sync(current, svcs, sls)
	if len(ups) != 1 || ups[0].Key != key("203.0.113.2", 80, bpf.TCP) || len(dels) != 0 {
		t.Fatalf("api change: upserts %+v deletes %v", ups, dels)
	}

	// A failed upsert (the bpf package refuses a backend of the wrong
	// family) is recorded as unknown and retried by the next Diff.
	bad := key("203.0.113.9", 80, bpf.TCP)
	badEntry := Entry{Service: "ns/bad", Flags: bpf.ServiceCluster, Backends: []bpf.Backend{lb("fd00::9", 80, bpf.BackendLocal)}}
	if err := Apply(ctx, d, current, []Upsert{{Key: bad, Entry: badEntry}}, nil); err == nil {
		t.Fatal("upsert of a v6 backend under a v4 VIP succeeded")
	}
	if e, ok := current[bad]; !ok || e.known() {
		t.Fatalf("failed upsert recorded as %+v, %v; want an unknown entry", e, ok)
	}
	_, ups, dels = sync(current, svcs, sls)
	if len(ups) != 0 || !slices.Equal(dels, []bpf.ServiceKey{bad}) {
		t.Fatalf("after failed upsert: upserts %+v deletes %v, want only the delete of %s", ups, dels, bad)
	}

	// A cancelled context applies nothing.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := Apply(cctx, d, current, []Upsert{{Key: bad, Entry: Entry{Flags: bpf.ServiceCluster}}}, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Apply: %v", err)
	}
	if slices.Contains(d.Services(), bad) {
		t.Fatal("cancelled Apply upserted")
	}

	// web goes away: its two keys are deleted.
	_, ups, dels = sync(current, svcs[1:], sls)
	if len(ups) != 0 || len(dels) != 2 {
		t.Fatalf("web removed: upserts %+v deletes %v", ups, dels)
	}

	// A new process finds the pinned services: everything wanted is
	// rewritten once, anything left over is deleted.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if d, err = bpf.Load(opts); err != nil {
		t.Fatal(err)
	}
	current = Observed(d.Services())
	_, ups, dels = sync(current, svcs, sls)
	if len(ups) != 3 || len(dels) != 0 {
		t.Fatalf("after restart: upserts %+v deletes %v", ups, dels)
	}
}

// checkDatapath compares the datapath's services and their backends (as
// far as the bpf package shows them) with want.
func checkDatapath(t *testing.T, d *bpf.Datapath, want map[bpf.ServiceKey]Entry) {
	t.Helper()
	got := d.Services()
	slices.SortFunc(got, compareKeys)
	keys := slices.SortedFunc(maps.Keys(want), compareKeys)
	if !slices.Equal(got, keys) {
		t.Fatalf("datapath services %v, want %v", got, keys)
	}
	stats, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	for k, e := range want {
		var aps []netip.AddrPort
		for _, b := range e.Backends {
			aps = append(aps, b.AddrPort())
		}
		have := slices.SortedFunc(maps.Keys(stats[k].Backends), netip.AddrPort.Compare)
		if !slices.Equal(have, aps) {
			t.Errorf("%s: datapath backends %v, want %v", k, have, aps)
		}
	}
}
