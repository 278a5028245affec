package metallbimport

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/zerohop/zerohop/internal/apiserver"
)

// The real-world-shaped inputs; malformed.yaml is tested on its own.
var goldenInputs = []string{
	"bgp-communities-bfd",
	"l2-interfaces",
	"peers-v1beta1-v1beta2",
	"services",
	"kubectl-list",
	"regressions",
}

func convertFile(t *testing.T, name string) *Result {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := Convert(f, Options{})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return res
}

// golden compares got with testdata/golden/file; ZEROHOP_UPDATE_GOLDEN=1
// rewrites it.
func golden(t *testing.T, file string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", file)
	if os.Getenv("ZEROHOP_UPDATE_GOLDEN") != "" {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with ZEROHOP_UPDATE_GOLDEN=1 to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (ZEROHOP_UPDATE_GOLDEN=1 rewrites it):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// TestGolden converts each input and compares the YAML, the text report
// and the JSON report with their golden files.
func TestGolden(t *testing.T) {
	for _, name := range goldenInputs {
		t.Run(name, func(t *testing.T) {
			res := convertFile(t, name)
			var y, txt, js bytes.Buffer
			if err := res.WriteYAML(&y); err != nil {
				t.Fatal(err)
			}
			if err := res.Report.WriteText(&txt); err != nil {
				t.Fatal(err)
			}
			if err := res.Report.WriteJSON(&js); err != nil {
				t.Fatal(err)
			}
			golden(t, name+".yaml", y.Bytes())
			golden(t, name+".report.txt", txt.Bytes())
			golden(t, name+".report.json", js.Bytes())
			// Every input object has exactly one report entry.
			if got, want := len(res.Report.Entries), res.Report.Objects; got != want {
				t.Errorf("%d report entries for %d objects", got, want)
			}
			var back Report
			if err := json.Unmarshal(js.Bytes(), &back); err != nil {
				t.Fatalf("JSON report does not parse: %v", err)
			}
			if !reflect.DeepEqual(back, res.Report) {
				t.Errorf("JSON report does not round-trip")
			}
		})
	}
}

// issue finds the issue on field of the object kind/name.
func issue(r Report, kind, name, field string) (Issue, bool) {
	for _, e := range r.Entries {
		if e.Source.Kind != kind || e.Source.Name != name {
			continue
		}
		for _, i := range e.Issues {
			if i.Field == field {
				return i, true
			}
		}
	}
	return Issue{}, false
}

// TestReportedFields pins the decisions that matter most: what is refused
// (and at which level) and why. The golden files hold the full picture.
func TestReportedFields(t *testing.T) {
	all := Report{}
	for _, name := range goldenInputs {
		all.Entries = append(all.Entries, convertFile(t, name).Report.Entries...)
	}
	for _, tc := range []struct {
		kind, name, field string
		level             Level
		reason            string
	}{
		{"BFDProfile", "echo", "spec.echoMode", Untranslated, "does not implement BFD echo"},
		{"BFDProfile", "echo", "spec.echoInterval", Untranslated, "echo"},
		{"BGPPeer", "tor-b", "spec.holdTime", Untranslated, "neither 0 nor at least 3s"},
		{"BGPPeer", "tor-b", "spec.keepaliveTime", Untranslated, "left out with the hold time"},
		{"BGPPeer", "tor-b", "spec.connectTime", Untranslated, "outside 1s..65535s"},
		{"BGPPeer", "tor-b", "spec.routerID", Untranslated, "not an IPv4 address"},
		{"BGPPeer", "tor-b", "spec.sourceAddress", Untranslated, "family"},
		{"BGPPeer", "tor-b", "spec.dualStackAddressFamily", Note, "both families"},
		{"BGPPeer", "tor-a", "spec.passwordSecret", Untranslated, "Secret metallb-system/tor-a-md5 is not in the input, so copy it there"},
		{"BGPPeer", "legacy", "spec.password", Note, "Secret zerohop-system/legacy-bgp-password"},
		{"BGPPeer", "legacy", "spec.bfdProfile", Note, "not in the input"},
		{"BGPPeer", "in-vrf", "spec.vrf", Untranslated, "main routing table only"},
		{"BGPPeer", "both-passwords", "spec.dynamicASN", Untranslated, "peerASN used"},
		{"BGPPeer", "both-passwords", "spec.disableMP", Note, "both families on one session"},
		{"BGPPeer", "both-passwords", "spec.password", Untranslated, "passwordSecret used"},
		{"BGPPeer", "both-passwords", "spec.newFieldFromTheFuture", Untranslated, "not a field"},
		{"BGPPeer", "both-passwords", "metadata.finalizers", Untranslated, "finalizers"},
		{"BGPPeer", "no-asn", "spec.myASN", Untranslated, "peer not written"},
		{"BGPPeer", "legacy-timers", "metadata.name", Untranslated, "cluster-scoped"},
		{"BGPPeer", "bad-address", "spec.peerAddress", Untranslated, "not an IP address"},
		{"BGPPeer", "legacy-bad-selector", "spec.nodeSelectors[0]", Untranslated, `operator "Lt"`},
		{"BGPAdvertisement", "public-tor", "spec.communities[0]", Note, "resolved to 65535:65281"},
		{"BGPAdvertisement", "public-tor", "spec.communities[4]", Note, "duplicate 64512:200"},
		{"BGPAdvertisement", "leaky", "spec.communities[1]", Untranslated, "not a community"},
		{"BGPAdvertisement", "leaky", "spec.communities[2]", Untranslated, "nor the name of an alias"},
		{"BGPAdvertisement", "leaky", "", Untranslated, "may travel further"},
		{"BGPAdvertisement", "aggregated", "spec.aggregationLength", Untranslated, "outside 0..32"},
		{"BGPAdvertisement", "aggregated", "spec.aggregationLengthV6", Untranslated, "outside 0..128"},
		{"IPAddressPool", "lan", "spec.addresses[1]", Note, "host bits"},
		{"IPAddressPool", "lan", "spec.addresses[4]", Untranslated, "first address is after last"},
		{"IPAddressPool", "dev", "spec.serviceAllocation.namespaceSelectors[0]", Untranslated, `operator "Gt"`},
		{"IPAddressPool", "default", "metadata.ownerReferences", Untranslated, "not carried over"},
		{"L2Advertisement", "lan", "spec.interfaces[3]", Untranslated, "not a Linux interface name"},
		{"L2Advertisement", "bad-interfaces", "", Untranslated, "every interface"},
		{"L2Advertisement", "everywhere", "spec.interfaces", Note, "a pool outside the nodes' subnets"},
		{"Service", "web", "metadata.annotations.metallb.universe.tf/ip-allocated-from-pool", Note, "written by MetalLB"},
		{"Service", "dns", "metadata.annotations.metallb.universe.tf/allow-shared-ip", Untranslated, "conflicts"},
		{"Service", "dns", "metadata.annotations.metallb.universe.tf/loadBalancerIPs", Note, "written once"},
		{"Service", "classed", "spec.loadBalancerClass", Untranslated, "immutable"},
		{"Service", "classed", "metadata.annotations.metallb.io/some-future-knob", Untranslated, "no zerohop equivalent"},
		{"Service", "was-lb", "metadata.annotations.metallb.universe.tf/loadBalancerIPs", Untranslated, "kept"},
		{"ServiceL2Status", "l2-abcde", "", Untranslated, "no zerohop equivalent"},
		{"AddressPool", "old-style", "", Untranslated, "no zerohop equivalent"},
		{"ConfigMap", "config", "", Untranslated, "configmaptocrs"},
		{"Deployment", "controller", "", Untranslated, "not a MetalLB configuration object"},
	} {
		t.Run(tc.kind+"/"+tc.name+"/"+tc.field, func(t *testing.T) {
			i, ok := issue(all, tc.kind, tc.name, tc.field)
			if !ok {
				t.Fatalf("no issue reported on %s %s %q", tc.kind, tc.name, tc.field)
			}
			if i.Level != tc.level || !strings.Contains(i.Reason, tc.reason) {
				t.Errorf("got %s %q, want %s containing %q", i.Level, i.Reason, tc.level, tc.reason)
			}
		})
	}
}

// TestOutputValues checks translated values against the input, so that a
// golden file rewritten with a regression in it does not go unnoticed.
func TestOutputValues(t *testing.T) {
	var results []*Result
	for _, name := range goldenInputs {
		results = append(results, convertFile(t, name))
	}
	get := outputValues(t, results...)
	for _, tc := range []struct {
		obj  string
		path []string
		want any
	}{
		{"IPAddressPool/public", []string{"spec", "addresses"}, []any{"198.51.100.0/26", "203.0.113.10-203.0.113.20", "2001:db8:100::/120"}},
		{"IPAddressPool/public", []string{"spec", "serviceAllocation", "priority"}, 10.0},
		{"IPAddressPool/public", []string{"metadata", "labels", "exposure"}, "public"},
		{"IPAddressPool/lan", []string{"spec", "addresses"}, []any{"192.0.2.128/25", "192.0.2.0/24", "192.0.2.99/32", "192.0.2.200-192.0.2.210"}},
		{"IPAddressPool/lan", []string{"spec", "autoAssign"}, false},
		{"IPAddressPool/lan", []string{"spec", "avoidBuggyIPs"}, true},
		{"IPAddressPool/lan", []string{"metadata", "annotations"}, map[string]any{"team": "infra"}},
		{"BGPPeer/tor-a", []string{"spec", "holdTime"}, "9s"},
		{"BGPPeer/tor-a", []string{"spec", "keepaliveTime"}, "3s"},
		{"BGPPeer/tor-a", []string{"spec", "connectTime"}, "5s"},
		{"BGPPeer/tor-a", []string{"spec", "peerPort"}, 1179.0},
		{"BGPPeer/tor-a", []string{"spec", "ebgpMultiHop"}, true},
		{"BGPPeer/tor-a", []string{"spec", "enableGracefulRestart"}, true},
		{"BGPPeer/tor-b", []string{"spec", "myASN"}, 4200000001.0},
		{"BGPPeer/tor-b", []string{"spec", "holdTime"}, nil},
		{"BGPPeer/legacy", []string{"spec", "holdTime"}, nil}, // v1beta1 "0s" is unset
		{"BGPPeer/legacy", []string{"spec", "peerPort"}, nil},
		{"BGPPeer/legacy", []string{"spec", "passwordSecret", "name"}, "legacy-bgp-password"},
		{"BGPPeer/legacy", []string{"spec", "nodeSelectors"}, []any{map[string]any{
			"matchLabels":      map[string]any{"bgp": "true"},
			"matchExpressions": []any{map[string]any{"key": "kubernetes.io/hostname", "operator": "In", "values": []any{"node-1", "node-2"}}},
		}}},
		{"Secret zerohop-system/legacy-bgp-password", []string{"stringData", "password"}, "s3cret-md5"},
		{"BGPAdvertisement/public-tor", []string{"spec", "communities"}, []any{"65535:65281", "64512:200", "large:64512:1:2", "large:64512:100:1"}},
		{"BGPAdvertisement/public-tor", []string{"spec", "localPref"}, 150.0},
		{"BGPAdvertisement/public-tor", []string{"spec", "aggregationLengthV6"}, 124.0},
		{"BGPAdvertisement/public-tor", []string{"spec", "peers"}, []any{"tor-a", "tor-b"}},
		{"BGPPeer/dynamic", []string{"spec", "dynamicASN"}, "external"},
		{"BGPPeer/dynamic", []string{"spec", "peerASN"}, nil},
		{"BGPPeer/unnumbered", []string{"spec", "interface"}, "eth2"},
		{"BGPPeer/unnumbered", []string{"spec", "peerAddress"}, nil},
		{"BGPAdvertisement/aggregated", []string{"spec", "aggregationLength"}, nil},
		{"L2Advertisement/lan", []string{"spec", "interfaces"}, []any{"eth1.100", "bond0"}},
		{"BFDProfile/fast", []string{"spec", "receiveInterval"}, 100.0},
		{"BFDProfile/fast", []string{"spec", "minimumTtl"}, 254.0},
		{"BFDProfile/echo", []string{"spec", "passiveMode"}, true},
		{"BFDProfile/echo", []string{"spec", "echoMode"}, nil},
		{"Service shop/web", []string{"metadata", "annotations"}, map[string]any{
			"prometheus.io/scrape": "true", "zerohop.io/address-pool": "public", "zerohop.io/allow-shared-ip": "shop-frontend"}},
		{"Service shop/web", []string{"status"}, nil},
		{"Service shop/web", []string{"metadata", "uid"}, nil},
		{"Service shop/dns", []string{"metadata", "annotations"}, map[string]any{
			"zerohop.io/allow-shared-ip": "dns", "zerohop.io/loadBalancerIPs": "198.51.100.53,2001:db8:100::53"}},
		{"Service shop/was-lb", []string{"metadata", "annotations"}, map[string]any{"zerohop.io/loadBalancerIPs": "198.51.100.8"}},
	} {
		t.Run(tc.obj+"/"+strings.Join(tc.path, "."), func(t *testing.T) {
			if get(tc.obj) == nil {
				t.Fatalf("%s not in the output", tc.obj)
			}
			if got := get(tc.obj, tc.path...); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %#v, want %#v", got, tc.want)
			}
		})
	}
	for _, absent := range []string{"IPAddressPool/dev", "BGPPeer/in-vrf", "BGPAdvertisement/leaky",
		"BGPPeer/no-asn", "BGPPeer/bad-address", "BGPPeer/legacy-bad-selector", "L2Advertisement/bad-interfaces", "Service shop/internal"} {
		if get(absent) != nil {
			t.Errorf("%s is in the output; want it left out", absent)
		}
	}
}

// TestMalformed: malformed input fails, and the error names the document,
// the object and the field; nothing is converted.
func TestMalformed(t *testing.T) {
	file, err := os.ReadFile(filepath.Join("testdata", "malformed.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		input string
		want  []string
	}{
		{"testdata file", string(file), []string{
			"document 2 (BGPPeer metallb-system/tor-a): spec.peerASN: want an integer, got string",
			"document 3 (L2Advertisement metallb-system/(no name)): metadata.name: missing",
			"document 4 (BFDProfile no-api-version): apiVersion: missing",
			"document 5 (BGPAdvertisement metallb-system/lists): spec.communities: want a list, got string",
		}},
		{"yaml syntax", "apiVersion: v1\nkind: [\n", []string{"document 1:"}},
		{"not an object", "- a\n- b\n", []string{"document 1: not an object"}},
		{"no kind", "apiVersion: metallb.io/v1beta1\nmetadata: {name: x}\n", []string{"document 1 ( x): kind: missing"}},
		{"labels not a map", "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: x, labels: [a]}\nspec: {addresses: [192.0.2.0/24]}\n",
			[]string{"document 1 (IPAddressPool x): metadata.labels: want an object"}},
		{"selector operator not a string", "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: x}\nspec: {nodeSelectors: [{matchExpressions: [{key: a, operator: 1}]}]}\n",
			[]string{"spec.nodeSelectors.matchExpressions.operator: want a string, got number"}},
		{"community alias without name", "apiVersion: metallb.io/v1beta1\nkind: Community\nmetadata: {name: c}\nspec: {communities: [{value: '1:1'}]}\n",
			[]string{"document 1 (Community c): spec.communities[0].name: missing"}},
		{"list item not an object", "apiVersion: v1\nkind: List\nitems: [3]\n", []string{"document 1 (List): items[0]: want an object"}},
		{"second document", "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: b}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: c, namespace: d}\nspec: {ports: 80}\n",
			[]string{"document 2 (Service d/c): spec.ports: want a list"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Convert(strings.NewReader(tc.input), Options{})
			if err == nil {
				t.Fatalf("no error; converted %d objects", len(res.Objects))
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// TestEmptyInput: no documents is not an error, and nothing is written.
func TestEmptyInput(t *testing.T) {
	for _, in := range []string{"", "---\n", "# just a comment\n---\n---\n"} {
		res, err := Convert(strings.NewReader(in), Options{})
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if len(res.Objects) != 0 || len(res.Report.Entries) != 0 {
			t.Errorf("%q: %d objects, %d entries", in, len(res.Objects), len(res.Report.Entries))
		}
	}
}

// fieldPaths lists the json paths of a struct type ("spec.a.b"), without
// list indices.
func fieldPaths(prefix string, t reflect.Type) []string {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		p := join(prefix, name)
		out = append(out, p)
		out = append(out, fieldPaths(p, f.Type)...)
	}
	return out
}

func seenPaths(prefix string, v any, into map[string]bool) {
	switch x := v.(type) {
	case map[string]any:
		for k, sub := range x {
			p := join(prefix, k)
			into[p] = true
			seenPaths(p, sub, into)
		}
	case []any:
		for _, sub := range x {
			seenPaths(prefix, sub, into)
		}
	}
}

// TestTestdataCoversEveryField proves the testdata exercises every field
// of every MetalLB kind and version the importer reads, and every MetalLB
// Service annotation under both prefixes: a field added to the input
// structs without a test case fails here.
func TestTestdataCoversEveryField(t *testing.T) {
	seen := map[string]map[string]bool{} // apiVersion/kind -> paths
	annotations := map[string]bool{}
	for _, name := range goldenInputs {
		f, err := os.Open(filepath.Join("testdata", name+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		docs, err := readDocuments(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range docs {
			key := d.src.APIVersion + " " + d.src.Kind
			if seen[key] == nil {
				seen[key] = map[string]bool{}
			}
			seenPaths("spec", d.raw["spec"], seen[key])
			if d.src.Kind == "Service" {
				for k := range d.meta.Annotations {
					annotations[k] = true
				}
			}
		}
	}
	kinds := []struct{ apiVersion, kind string }{
		{"metallb.io/v1beta1", "IPAddressPool"},
		{"metallb.io/v1beta1", "L2Advertisement"},
		{"metallb.io/v1beta1", "BGPAdvertisement"},
		{"metallb.io/v1beta1", "BGPPeer"},
		{"metallb.io/v1beta2", "BGPPeer"},
		{"metallb.io/v1beta1", "BFDProfile"},
		{"metallb.io/v1beta1", "Community"},
	}
	for _, k := range kinds {
		spec := specType(k.apiVersion, k.kind)
		if spec == nil {
			t.Fatalf("%s %s: not a kind the importer reads", k.apiVersion, k.kind)
		}
		for _, p := range fieldPaths("spec", reflect.TypeOf(spec)) {
			if !seen[k.apiVersion+" "+k.kind][p] {
				t.Errorf("%s %s: no testdata sets %s", k.apiVersion, k.kind, p)
			}
		}
	}
	for suffix := range annotationMap {
		found := false
		for a := range annotations {
			found = found || strings.HasSuffix(a, "/"+suffix)
		}
		if !found {
			t.Errorf("no testdata Service has a MetalLB %s annotation", suffix)
		}
	}
	for _, p := range metallbPrefixes {
		found := false
		for a := range annotations {
			found = found || strings.HasPrefix(a, p)
		}
		if !found {
			t.Errorf("no testdata Service has an annotation under %s", p)
		}
	}
}

// TestSecretNamespace: the Secret made from a plain password goes to the
// namespace asked for.
func TestSecretNamespace(t *testing.T) {
	in := `apiVersion: metallb.io/v1beta1
kind: BGPPeer
metadata: {name: p, namespace: metallb-system}
spec: {myASN: 64512, peerASN: 64513, peerAddress: 192.0.2.1, password: pw}
`
	res, err := Convert(strings.NewReader(in), Options{SecretNamespace: "lb"})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Report.Entries[0].Outputs; !slices.Equal(got, []string{"Secret lb/p-bgp-password", "BGPPeer/p"}) {
		t.Errorf("outputs %q", got)
	}
}

// TestOutputAcceptedByAPIServer creates every object of every golden
// output in a real kube-apiserver with zerohop's CRDs, so the importer's
// output passes the CRDs' OpenAPI and CEL validation (and the Services and
// Secrets core validation).
func TestOutputAcceptedByAPIServer(t *testing.T) {
	srv := apiserver.ForTest(t)
	cli, err := client.New(srv.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	created, written := 0, 0
	namespaces := map[string]bool{}
	for _, name := range goldenInputs {
		res := convertFile(t, name)
		var y bytes.Buffer
		if err := res.WriteYAML(&y); err != nil {
			t.Fatal(err)
		}
		// Round-trip through the YAML the user gets, not the Go values.
		docs, err := readDocuments(&y)
		if err != nil {
			t.Fatalf("%s: output does not parse back: %v", name, err)
		}
		if len(docs) != len(res.Objects) {
			t.Fatalf("%s: %d objects written, %d read back", name, len(res.Objects), len(docs))
		}
		written += len(docs)
		for _, d := range docs {
			if ns := d.src.Namespace; ns != "" && !namespaces[ns] {
				nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}
				if err := cli.Create(ctx, nsObj); err != nil {
					t.Fatalf("namespace %s: %v", ns, err)
				}
				namespaces[ns] = true
			}
			u := &unstructured.Unstructured{Object: runtime.DeepCopyJSON(d.raw)}
			if err := cli.Create(ctx, u); err != nil {
				t.Errorf("%s: %s %s refused: %v", name, d.src.Kind, qualified(d.src), err)
				continue
			}
			created++
		}
	}
	if created != written || created < 20 {
		t.Errorf("%d of %d objects created; want all, and at least 20", created, written)
	}
	// The zerohop group is what the objects landed in.
	var pools unstructured.UnstructuredList
	pools.SetAPIVersion("zerohop.io/v1alpha1")
	pools.SetKind("IPAddressPoolList")
	if err := cli.List(ctx, &pools); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pools.Items {
		names = append(names, p.GetName())
	}
	slices.Sort(names)
	if want := []string{"default", "lan", "payments", "public", "reserved", "spare-a", "spare-b"}; !slices.Equal(names, want) {
		t.Errorf("pools in the API server %v, want %v", names, want)
	}
}

// TestPinIPs: with PinIPs a LoadBalancer Service without a requested IP
// asks for the IPs in its status; one that requests IPs keeps its request.
func TestPinIPs(t *testing.T) {
	f, err := os.ReadFile(filepath.Join("testdata", "services.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		pin  bool
		want map[string]string // Service -> zerohop.io/loadBalancerIPs
	}{
		{false, map[string]string{"Service shop/web": "", "Service shop/dns": "198.51.100.53,2001:db8:100::53"}},
		{true, map[string]string{"Service shop/web": "198.51.100.1", "Service shop/dns": "198.51.100.53,2001:db8:100::53"}},
	} {
		res, err := Convert(bytes.NewReader(f), Options{PinIPs: tc.pin})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range res.Objects {
			want, ok := tc.want[outputName(o)]
			if !ok {
				continue
			}
			md, _ := o.(serviceObject)["metadata"].(map[string]any)
			ann, _ := md["annotations"].(map[string]any)
			got, _ := ann["zerohop.io/loadBalancerIPs"].(string)
			if got != want {
				t.Errorf("pin=%v %s: loadBalancerIPs %q, want %q", tc.pin, outputName(o), got, want)
			}
		}
	}
}

// outputValues indexes the objects of results by name and returns a
// lookup of the value at a path of maps in one of them; no path gives the
// object; nil when absent.
func outputValues(t *testing.T, results ...*Result) func(obj string, path ...string) any {
	t.Helper()
	objs := map[string]map[string]any{}
	for _, res := range results {
		for _, o := range res.Objects {
			m, err := toMap(o)
			if err != nil {
				t.Fatal(err)
			}
			objs[outputName(o)] = m
		}
	}
	return func(obj string, path ...string) any {
		o, ok := objs[obj]
		if !ok {
			return nil
		}
		var v any = o
		for _, p := range path {
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[p]
		}
		return v
	}
}
