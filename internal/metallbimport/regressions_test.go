package metallbimport

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

// TestRegressions pins one case per defect found when importing MetalLB's
// documented configurations (testdata/regressions.yaml): the importer
// narrows or leaves out, never widens, and says so.
func TestRegressions(t *testing.T) {
	res := convertFile(t, "regressions")
	get := outputValues(t, res)
	type value struct {
		obj  string
		path string // dotted
		want any
	}
	type issueWant struct {
		kind, name, field string
		level             Level
		reason            string
	}
	for _, tc := range []struct {
		defect string
		values []value
		issues []issueWant
		absent []string
	}{
		{
			defect: "widening: BGP serviceSelectors are carried, not dropped",
			values: []value{
				{"BGPAdvertisement/gold-only", "spec.serviceSelectors", []any{
					map[string]any{"matchLabels": map[string]any{"tier": "gold"}},
					map[string]any{"matchExpressions": []any{map[string]any{"key": "app.kubernetes.io/part-of", "operator": "In", "values": []any{"checkout"}}}},
				}},
				{"BGPAdvertisement/gold-only", "spec.localPref", 300.0},
			},
		},
		{
			defect: "widening: L2 serviceSelectors are carried",
			values: []value{
				{"L2Advertisement/dns-on-edge-1", "spec.serviceSelectors", []any{
					map[string]any{"matchLabels": map[string]any{"app": "dns-a"}},
					map[string]any{"matchExpressions": []any{map[string]any{"key": "dns-role", "operator": "In", "values": []any{"primary"}}}},
				}},
			},
		},
		{
			defect: "widening: an inexpressible serviceSelector leaves the advertisement out",
			issues: []issueWant{{"BGPAdvertisement", "selector-typo", "spec.serviceSelectors[0]", Untranslated, `operator "Gt"`}},
			absent: []string{"BGPAdvertisement/selector-typo"},
		},
		{
			defect: "serviceSelectors with aggregation: left out, as MetalLB refuses it",
			issues: []issueWant{{"BGPAdvertisement", "gold-aggregated", "spec.serviceSelectors", Untranslated, "aggregation length"}},
			absent: []string{"BGPAdvertisement/gold-aggregated"},
		},
		{
			defect: "L2 preferredNodeSelectors are carried; a bad weight drops only that preference",
			values: []value{{"L2Advertisement/dns-on-edge-1", "spec.preferredNodeSelectors", []any{
				map[string]any{"weight": 100.0, "preference": map[string]any{
					"matchLabels":      map[string]any{"kubernetes.io/hostname": "edge-1"},
					"matchExpressions": []any{map[string]any{"key": "topology.kubernetes.io/zone", "operator": "NotIn", "values": []any{"z9"}}},
				}},
				map[string]any{"weight": 10.0, "preference": map[string]any{}},
			}}},
			issues: []issueWant{{"L2Advertisement", "dns-on-edge-1", "spec.preferredNodeSelectors[1].weight", Untranslated, "outside 1..100"}},
		},
		{
			defect: "wrong AS: localASN is the session's AS, written as myASN",
			values: []value{
				{"BGPPeer/local-as", "spec.myASN", 65010.0},
				{"BGPPeer/local-as", "spec.peerASN", 65000.0},
			},
			issues: []issueWant{{"BGPPeer", "local-as", "spec.localASN", Note, "written as myASN"}},
		},
		{
			defect: "unreadable secret: a passwordSecret in the input is copied to the speaker's namespace",
			values: []value{
				{"BGPPeer/md5-in-input", "spec.passwordSecret", map[string]any{"name": "tor-md5"}},
				{"Secret zerohop-system/tor-md5", "stringData.password", "not-a-real-one"},
				{"Secret zerohop-system/tor-md5", "type", "kubernetes.io/basic-auth"},
				{"Secret zerohop-system/tor-md5", "metadata.uid", nil},
			},
			issues: []issueWant{
				{"BGPPeer", "md5-in-input", "spec.passwordSecret", Note, "copied to zerohop-system/tor-md5"},
				{"Secret", "unrelated", "", Note, "not written"},
			},
			absent: []string{"Secret zerohop-system/unrelated", "Secret lb-system/tor-md5"},
		},
		{
			defect: "unreadable secret: one not in the input is an action for the user, and the reference points to the speaker's namespace",
			values: []value{{"BGPPeer/md5-elsewhere", "spec.passwordSecret", map[string]any{"name": "rack-md5"}}},
			issues: []issueWant{
				{"BGPPeer", "md5-elsewhere", "spec.passwordSecret", Untranslated, "the session stays down"},
				{"BGPPeer", "md5-elsewhere", "spec.passwordSecret.namespace", Note, "not where MetalLB reads the Secret"},
			},
		},
		{
			defect: "timers: keepalive 60s alone holds for 180s, as MetalLB",
			values: []value{
				{"BGPPeer/keepalive-60", "spec.holdTime", "3m0s"},
				{"BGPPeer/keepalive-60", "spec.keepaliveTime", "1m0s"},
			},
			issues: []issueWant{{"BGPPeer", "keepalive-60", "spec.keepaliveTime", Note, "three keepalives"}},
		},
		{
			defect: "timers: keepalive 120s alone is kept, with hold 360s",
			values: []value{
				{"BGPPeer/keepalive-120", "spec.holdTime", "6m0s"},
				{"BGPPeer/keepalive-120", "spec.keepaliveTime", "2m0s"},
			},
		},
		{
			defect: "timers: v1beta1 keepalive alone, too",
			values: []value{
				{"BGPPeer/legacy-keepalive", "spec.holdTime", "1m0s"},
				{"BGPPeer/legacy-keepalive", "spec.keepaliveTime", "20s"},
			},
		},
		{
			defect: "timers: keepaliveTime 0s does not pass through",
			values: []value{
				{"BGPPeer/keepalive-zero", "spec.keepaliveTime", nil},
				{"BGPPeer/keepalive-zero", "spec.holdTime", nil},
				{"BGPPeer/keepalive-zero-hold", "spec.keepaliveTime", nil},
				{"BGPPeer/keepalive-zero-hold", "spec.holdTime", "30s"},
			},
			issues: []issueWant{
				{"BGPPeer", "keepalive-zero", "spec.keepaliveTime", Untranslated, "without a hold timer"},
				{"BGPPeer", "keepalive-zero-hold", "spec.keepaliveTime", Untranslated, "sends no keepalives"},
			},
		},
		{
			defect: "timers: keepalive equal to hold, which zerohop refuses",
			values: []value{
				{"BGPPeer/keepalive-is-hold", "spec.holdTime", "9s"},
				{"BGPPeer/keepalive-is-hold", "spec.keepaliveTime", nil},
			},
			issues: []issueWant{{"BGPPeer", "keepalive-is-hold", "spec.keepaliveTime", Untranslated, "not below the hold time"}},
		},
		{
			defect: "meaning: an L2Advertisement without interfaces gets a note",
			issues: []issueWant{{"L2Advertisement", "every-interface", "spec.interfaces", Note, "every interface"}},
		},
		{
			defect: "meaning: restricted pools first; serviceAllocation kept even when it restricts nothing; ties noted",
			values: []value{
				{"IPAddressPool/reserved", "spec.serviceAllocation", map[string]any{}},
				{"IPAddressPool/payments", "spec.serviceAllocation", map[string]any{"namespaces": []any{"payments"}}},
				{"IPAddressPool/spare-a", "spec.serviceAllocation", nil},
			},
			issues: []issueWant{
				{"IPAddressPool", "reserved", "spec.serviceAllocation", Note, "still tried before the pools without a serviceAllocation"},
				{"IPAddressPool", "spare-b", "spec.serviceAllocation", Note, "random order; zerohop tries them by name: spare-a, spare-b"},
			},
		},
		{
			defect: "meaning: a community alias named like a well-known community stays the alias",
			values: []value{{"BGPAdvertisement/gold-only", "spec.communities", []any{"64512:666", "large:64512:0:1", "64512:10"}}},
			issues: []issueWant{{"BGPAdvertisement", "gold-only", "spec.communities[0]", Note, `alias "no-export" resolved to 64512:666`}},
		},
		{
			defect: "meaning: a well-known name without an alias is not a MetalLB community; the advertisement stays out",
			issues: []issueWant{{"BGPAdvertisement", "literal-well-known", "spec.communities[0]", Untranslated, "no well-known names"}},
			absent: []string{"BGPAdvertisement/literal-well-known"},
		},
		{
			defect: "meaning: ebgpMultiHop on an iBGP session is left out, as MetalLB refuses it",
			values: []value{
				{"BGPPeer/ibgp-multihop", "spec.ebgpMultiHop", nil},
				{"BGPPeer/ibgp-by-local-as", "spec.ebgpMultiHop", nil},
			},
			issues: []issueWant{
				{"BGPPeer", "ibgp-multihop", "spec.ebgpMultiHop", Untranslated, "iBGP"},
				{"BGPPeer", "ibgp-by-local-as", "spec.ebgpMultiHop", Untranslated, "AS 65000 on both ends"},
			},
		},
		{
			defect: "meaning: AS-path prepends cannot be dropped: the advertisement stays out",
			issues: []issueWant{{"BGPAdvertisement", "backup-site", "spec.asPathPrepend", Untranslated, "draw traffic"}},
			absent: []string{"BGPAdvertisement/backup-site"},
		},
		{
			defect: "meaning: a session of one family gets a note when the input has pools of the other",
			issues: []issueWant{
				{"BGPPeer", "v6-session", "spec.peerAddress", Note, "IPv6 prefixes only"},
				{"BGPPeer", "local-as", "spec.dualStackAddressFamily", Note, "both families"},
			},
		},
		{
			defect: "dynamic AS: internal is the session's own AS",
			values: []value{
				{"BGPPeer/dynamic-internal", "spec.peerASN", 64512.0},
				{"BGPPeer/dynamic-internal", "spec.dynamicASN", nil},
			},
		},
		{
			defect: "unnumbered: sourceAddress does not apply",
			values: []value{
				{"BGPPeer/unnumbered-with-source", "spec.interface", "swp3"},
				{"BGPPeer/unnumbered-with-source", "spec.sourceAddress", nil},
			},
			issues: []issueWant{{"BGPPeer", "unnumbered-with-source", "spec.sourceAddress", Untranslated, "link-local"}},
		},
	} {
		t.Run(tc.defect, func(t *testing.T) {
			for _, v := range tc.values {
				if get(v.obj) == nil {
					t.Errorf("%s not in the output", v.obj)
					continue
				}
				if got := get(v.obj, strings.Split(v.path, ".")...); !reflect.DeepEqual(got, v.want) {
					t.Errorf("%s %s = %#v, want %#v", v.obj, v.path, got, v.want)
				}
			}
			for _, w := range tc.issues {
				i, ok := issue(res.Report, w.kind, w.name, w.field)
				if !ok {
					t.Errorf("no issue on %s %s %q", w.kind, w.name, w.field)
					continue
				}
				if i.Level != w.level || !strings.Contains(i.Reason, w.reason) {
					t.Errorf("%s %s %q: got %s %q, want %s containing %q", w.kind, w.name, w.field, i.Level, i.Reason, w.level, w.reason)
				}
			}
			for _, a := range tc.absent {
				if get(a) != nil {
					t.Errorf("%s is in the output; want it left out", a)
				}
			}
		})
	}
	if want := []string{"payments", "reserved", "spare-a", "spare-b"}; !slices.Equal(res.Report.PoolOrder, want) {
		t.Errorf("pool order %v, want %v", res.Report.PoolOrder, want)
	}
}
