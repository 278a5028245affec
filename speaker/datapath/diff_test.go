package datapath

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/zerohop/zerohop/bpf"
)

func TestDiff(t *testing.T) {
	ka := key("203.0.113.1", 80, bpf.TCP)
	kb := key("203.0.113.2", 80, bpf.TCP)
	kc := key("2001:db8:f::3", 443, bpf.UDP)
	b1 := lb("100.64.1.1", 8080, bpf.BackendLocal)
	b2 := rb("100.64.2.1", 8080, "198.51.100.2", 0)
	entry := func(f bpf.ServiceFlags, bs ...bpf.Backend) Entry {
		return Entry{Service: "ns/s", Flags: f, Backends: bs}
	}
	base := map[bpf.ServiceKey]Entry{
		ka: entry(bpf.ServiceCluster, b1, b2),
		kb: entry(bpf.ServiceLocal, b1),
	}
	with := func(k bpf.ServiceKey, e Entry) map[bpf.ServiceKey]Entry {
		m := map[bpf.ServiceKey]Entry{}
		for k, v := range base {
			m[k] = v
		}
		m[k] = e
		return m
	}
	without := func(k bpf.ServiceKey) map[bpf.ServiceKey]Entry {
		m := with(k, Entry{})
		delete(m, k)
		return m
	}
	b2term := b2
	b2term.Flags |= bpf.BackendTerminating
	tests := []struct {
		name         string
		current, des map[bpf.ServiceKey]Entry
		upserts      []bpf.ServiceKey
		deletes      []bpf.ServiceKey
	}{
		{name: "nothing changed", current: base, des: base},
		{name: "only the Service name differs", current: base, des: with(ka, Entry{Service: "other/name", Flags: bpf.ServiceCluster, Backends: []bpf.Backend{b1, b2}})},
		{name: "nil and empty backends are the same", current: with(kb, entry(bpf.ServiceLocal)), des: with(kb, Entry{Service: "ns/s", Flags: bpf.ServiceLocal, Backends: []bpf.Backend{}})},
		{name: "backend removed from one service", current: base, des: with(ka, entry(bpf.ServiceCluster, b1)), upserts: []bpf.ServiceKey{ka}},
		{name: "backend turns terminating", current: base, des: with(ka, entry(bpf.ServiceCluster, b1, b2term)), upserts: []bpf.ServiceKey{ka}},
		{name: "service flags change", current: base, des: with(kb, entry(bpf.ServiceLocal|bpf.ServiceAffinity, b1)), upserts: []bpf.ServiceKey{kb}},
		{name: "new key", current: base, des: with(kc, entry(bpf.ServiceCluster)), upserts: []bpf.ServiceKey{kc}},
		{name: "key gone", current: base, des: without(ka), deletes: []bpf.ServiceKey{ka}},
		{name: "empty current: everything upserted, sorted", current: nil, des: base, upserts: []bpf.ServiceKey{ka, kb}},
		{name: "desired empty: everything deleted, sorted", current: with(kc, entry(bpf.ServiceCluster)), des: nil, deletes: []bpf.ServiceKey{ka, kb, kc}},
		{name: "observed keys: wanted ones rewritten, others deleted", current: Observed([]bpf.ServiceKey{kc, kb}), des: base, upserts: []bpf.ServiceKey{ka, kb}, deletes: []bpf.ServiceKey{kc}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ups, dels := Diff(tc.current, tc.des)
			var upKeys []bpf.ServiceKey
			for _, u := range ups {
				upKeys = append(upKeys, u.Key)
				if !reflect.DeepEqual(u.Entry, tc.des[u.Key]) {
					t.Errorf("upsert %s carries %+v, want %+v", u.Key, u.Entry, tc.des[u.Key])
				}
			}
			if !reflect.DeepEqual(upKeys, tc.upserts) {
				t.Errorf("upserts %v, want %v", upKeys, tc.upserts)
			}
			if !reflect.DeepEqual(dels, tc.deletes) {
				t.Errorf("deletes %v, want %v", dels, tc.deletes)
			}
		})
	}
}

// An endpoint change of one Service rewrites that Service's keys only.
func TestTranslateDiffMinimal(t *testing.T) {
	v4 := discoveryv1.AddressTypeIPv4
	svcs := []*corev1.Service{svc("web", []string{"203.0.113.1", "2001:db8:f::1"}), svc("api", []string{"203.0.113.2"}, local)}
	before := []*discoveryv1.EndpointSlice{
		slice("web-a", "web", v4, http8080, readyEP("100.64.1.1", "n1")),
		slice("api-a", "api", v4, http8080, readyEP("100.64.1.2", "n1")),
	}
	after := []*discoveryv1.EndpointSlice{
		before[0],
		slice("api-a", "api", v4, http8080, readyEP("100.64.1.2", "n1"), readyEP("100.64.1.3", "n1")),
	}
	cur, errs := Translate(thisNode, svcs, before, nodes)
	if len(errs) != 0 || len(cur) != 3 {
		t.Fatalf("before: %d entries, errors %v", len(cur), errs)
	}
	des, errs := Translate(thisNode, svcs, after, nodes)
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	ups, dels := Diff(cur, des)
	if len(ups) != 1 || ups[0].Key != key("203.0.113.2", 80, bpf.TCP) || len(dels) != 0 {
		t.Fatalf("upserts %+v deletes %v, want only api's key", ups, dels)
	}
	if got := len(ups[0].Entry.Backends); got != 2 {
		t.Errorf("api has %d backends, want 2", got)
	}
	// The IPv6 VIP of web has no IPv6 endpoints: still an entry, unchanged.
	if e := des[key("2001:db8:f::1", 80, bpf.TCP)]; len(e.Backends) != 0 || e.Flags != bpf.ServiceCluster {
		t.Errorf("web v6 entry %+v", e)
	}
}
