package metallbimport

import (
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// metallbSpecs are MetalLB's own spec types for the kinds the importer
// reads, from the MetalLB module (a test dependency only).
var metallbSpecs = []struct {
	apiVersion, kind string
	spec             any
}{
	{"metallb.io/v1beta1", "IPAddressPool", metallbv1beta1.IPAddressPoolSpec{}},
	{"metallb.io/v1beta1", "L2Advertisement", metallbv1beta1.L2AdvertisementSpec{}},
	{"metallb.io/v1beta1", "BGPAdvertisement", metallbv1beta1.BGPAdvertisementSpec{}},
	{"metallb.io/v1beta1", "BGPPeer", metallbv1beta1.BGPPeerSpec{}},
	{"metallb.io/v1beta2", "BGPPeer", metallbv1beta2.BGPPeerSpec{}},
	{"metallb.io/v1beta1", "BFDProfile", metallbv1beta1.BFDProfileSpec{}},
	{"metallb.io/v1beta1", "Community", metallbv1beta1.CommunitySpec{}},
}

var jsonMarshaler = reflect.TypeFor[json.Marshaler]()

// apiPaths lists the JSON paths of a spec type. selectorsWhole counts a
// label selector as one field (the unit the handling table speaks of);
// otherwise the walk goes into it. Types with their own JSON form
// (durations) are leaves.
func apiPaths(prefix string, t reflect.Type, selectorsWhole bool) []string {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t.Implements(jsonMarshaler) || reflect.PointerTo(t).Implements(jsonMarshaler) {
		return nil
	}
	if selectorsWhole && (t == reflect.TypeFor[metav1.LabelSelector]() || t == reflect.TypeFor[metallbv1beta1.NodeSelector]() || t == reflect.TypeFor[selector]()) {
		return nil
	}
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		p := join(prefix, name)
		sub := apiPaths(p, f.Type, selectorsWhole)
		if len(sub) == 0 {
			out = append(out, p)
		}
		out = append(out, sub...)
	}
	sort.Strings(out)
	return out
}

// TestFieldsMatchMetalLB holds the importer against MetalLB's API types:
// the importer's input structs have exactly MetalLB's fields, every field
// has a line in the handling table and the table names no field MetalLB
// lacks, and every MetalLB kind is read or listed as not translated. A
// field or kind MetalLB adds fails here until the importer handles it.
func TestFieldsMatchMetalLB(t *testing.T) {
	for _, k := range metallbSpecs {
		key := k.apiVersion + " " + k.kind
		t.Run(key, func(t *testing.T) {
			ours := specType(k.apiVersion, k.kind)
			if ours == nil {
				t.Fatalf("the importer does not read %s", key)
			}
			want := apiPaths("spec", reflect.TypeOf(k.spec), false)
			got := apiPaths("spec", reflect.TypeOf(ours), false)
			for _, p := range want {
				if !slices.Contains(got, p) {
					t.Errorf("MetalLB's %s has %s; the importer's struct does not read it", key, p)
				}
			}
			for _, p := range got {
				if !slices.Contains(want, p) {
					t.Errorf("the importer reads %s, which MetalLB's %s does not have", p, key)
				}
			}
			table := handling[key]
			units := apiPaths("spec", reflect.TypeOf(k.spec), true)
			for _, p := range units {
				if table[p] == "" {
					t.Errorf("%s: no line in the handling table (fields.go) says what becomes of %s", key, p)
				}
			}
			for p := range table {
				if !slices.Contains(units, p) {
					t.Errorf("%s: the handling table names %s, which MetalLB does not have", key, p)
				}
			}
		})
	}
	for _, gv := range []struct {
		version string
		add     func(*runtime.Scheme) error
	}{
		{"v1beta1", metallbv1beta1.AddToScheme},
		{"v1beta2", metallbv1beta2.AddToScheme},
	} {
		s := runtime.NewScheme()
		if err := gv.add(s); err != nil {
			t.Fatal(err)
		}
		apiVersion := "metallb.io/" + gv.version
		for kind, typ := range s.KnownTypes(schema.GroupVersion{Group: "metallb.io", Version: gv.version}) {
			if !strings.HasPrefix(typ.PkgPath(), "go.universe.tf/metallb/") || strings.HasSuffix(kind, "List") {
				continue
			}
			_, known := handling[apiVersion+" "+kind]
			if !known && notTranslated[kind] == "" {
				t.Errorf("MetalLB kind %s %s is neither translated (handling) nor listed as not translated", apiVersion, kind)
			}
		}
	}
}

// TestDocsNameEveryField: docs/import-metallb.md names every spec field of
// every kind the importer reads, so the page cannot fall behind the table.
func TestDocsNameEveryField(t *testing.T) {
	doc, err := os.ReadFile("../../docs/import-metallb.md")
	if err != nil {
		t.Fatal(err)
	}
	for key, table := range handling {
		for p := range table {
			top, _, _ := strings.Cut(strings.TrimPrefix(p, "spec."), ".")
			if !strings.Contains(string(doc), "`"+top+"`") {
				t.Errorf("docs/import-metallb.md does not name %s's `%s`", key, top)
			}
		}
	}
	for kind := range notTranslated {
		if !strings.Contains(string(doc), kind) {
			t.Errorf("docs/import-metallb.md does not name the MetalLB kind %s", kind)
		}
	}
}
