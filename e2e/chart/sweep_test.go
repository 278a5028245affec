package chart_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
)

func isForbidden(err error) bool { return apierrors.IsForbidden(err) }

// objRef names one API object.
type objRef struct {
	Group, Kind, Namespace, Name string
}

func (o objRef) String() string {
	k := o.Kind
	if o.Group != "" {
		k += "." + o.Group
	}
	if o.Namespace != "" {
		return k + " " + o.Namespace + "/" + o.Name
	}
	return k + " " + o.Name
}

// parseManifest lists the objects in `helm get manifest` output.
func parseManifest(manifest string) ([]objRef, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(manifest), 4096)
	var out []objRef
	for {
		var doc struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("helm manifest: %w", err)
		}
		if doc.Kind == "" {
			continue
		}
		gv, err := schema.ParseGroupVersion(doc.APIVersion)
		if err != nil {
			return nil, fmt.Errorf("helm manifest: %s %s: %w", doc.Kind, doc.Metadata.Name, err)
		}
		out = append(out, objRef{Group: gv.Group, Kind: doc.Kind, Namespace: doc.Metadata.Namespace, Name: doc.Metadata.Name})
	}
	if len(out) == 0 {
		return nil, errors.New("helm manifest: no objects")
	}
	return out, nil
}

func (r *run) apiext() *apiextensionsclient.Clientset {
	cs, err := apiextensionsclient.NewForConfig(r.l.RESTConfig)
	if err != nil {
		r.t.Fatal(err)
	}
	return cs
}

// zerohopCRDs lists the names of the CRDs of group zerohop.io.
func (r *run) zerohopCRDs() ([]string, error) {
	list, err := r.apiext().ApiextensionsV1().CustomResourceDefinitions().List(r.ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var names []string
	for _, crd := range list.Items {
		if crd.Spec.Group == "zerohop.io" {
			names = append(names, crd.Name)
		}
	}
	sort.Strings(names)
	return names, nil
}

// waitChartCRDs waits until every CRD in the chart's crds/ is established
// and returns their names.
func (r *run) waitChartCRDs() []string {
	files, err := filepath.Glob(filepath.Join(chartDir, "crds", "*.yaml"))
	if err != nil || len(files) == 0 {
		r.t.Fatalf("no CRDs in the chart: %v", err)
	}
	var want []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			r.t.Fatal(err)
		}
		var crd struct {
			Metadata struct{ Name string } `json:"metadata"`
		}
		if err := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096).Decode(&crd); err != nil || crd.Metadata.Name == "" {
			r.t.Fatalf("%s: %v", f, err)
		}
		want = append(want, crd.Metadata.Name)
	}
	sort.Strings(want)
	cs := r.apiext()
	r.eventually(time.Minute, "the chart's CRDs established", func() (bool, string) {
		for _, name := range want {
			crd, err := cs.ApiextensionsV1().CustomResourceDefinitions().Get(r.ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			established := slices.ContainsFunc(crd.Status.Conditions, func(c apiextensionsv1.CustomResourceDefinitionCondition) bool {
				return c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue
			})
			if !established {
				return false, name + " not established"
			}
		}
		return true, ""
	})
	return want
}

// forbidden is the API server's count of requests it answered with 403,
// from its own metrics, by metric line.
type forbidden struct {
	total float64
	by    map[string]float64
}

func (f forbidden) diff(base forbidden) map[string]float64 {
	d := map[string]float64{}
	for k, v := range f.by {
		if v != base.by[k] {
			d[k] = v - base.by[k]
		}
	}
	return d
}

// forbiddenCount reads the API server's /metrics as admin. No client of
// the lab's API server but this test and the components runs, so a change
// in the count is theirs; the forbidden checks show the count does move
// for a refusal.
func (r *run) forbiddenCount() forbidden {
	raw, err := r.kube().CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(r.ctx)
	if err != nil {
		r.t.Fatalf("API server metrics: %v", err)
	}
	f := forbidden{by: map[string]float64{}}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		// A request RBAC refuses never reaches a handler, so it is
		// counted only by the authorization filter (RBAC alone answers
		// "no-opinion" for what no rule allows); any other 403 (admission)
		// is in apiserver_request_total.
		refused := strings.HasPrefix(line, "authorization_attempts_total{") && !strings.Contains(line, `result="allowed"`) ||
			strings.HasPrefix(line, "apiserver_request_total{") && strings.Contains(line, `code="403"`)
		if !refused {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			r.t.Fatalf("metric line %q: %v", line, err)
		}
		f.total += v
		f.by[line[:i]] += v
	}
	if err := sc.Err(); err != nil {
		r.t.Fatal(err)
	}
	return f
}

// object is one API object seen by the sweep.
type object struct {
	ref    objRef
	labels map[string]string
}

// sweep lists every object of every listable resource type, namespaced
// and cluster-scoped, that the API server serves.
func (r *run) sweep() []object {
	// Listing everything touches deprecated APIs; their warnings are noise.
	cfg := rest.CopyConfig(r.l.RESTConfig)
	cfg.WarningHandler = rest.NoWarnings{}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	lists, err := dc.ServerPreferredResources()
	if err != nil && !discovery.IsGroupDiscoveryFailedError(err) {
		r.t.Fatalf("discovery: %v", err)
	}
	mc, err := metadata.NewForConfig(cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	var out []object
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			r.t.Fatal(err)
		}
		for _, res := range l.APIResources {
			if strings.Contains(res.Name, "/") || !slices.Contains(res.Verbs, "list") {
				continue
			}
			items, err := mc.Resource(gv.WithResource(res.Name)).List(r.ctx, metav1.ListOptions{})
			if apierrors.IsNotFound(err) {
				continue // its CRD went between discovery and the list
			}
			if err != nil {
				r.t.Fatalf("list %s %s: %v", l.GroupVersion, res.Name, err)
			}
			for _, it := range items.Items {
				out = append(out, object{
					ref:    objRef{Group: gv.Group, Kind: res.Kind, Namespace: it.Namespace, Name: it.Name},
					labels: it.Labels,
				})
			}
		}
	}
	return out
}

// zerohops picks the objects that are zerohop's by label, name or group.
func zerohops(all []object) []object {
	var out []object
	for _, o := range all {
		if o.labels["app.kubernetes.io/name"] == "zerohop" || o.labels["app.kubernetes.io/instance"] == release ||
			(o.labels["owner"] == "helm" && o.labels["name"] == release) ||
			strings.Contains(o.ref.Name, "zerohop") || o.ref.Group == "zerohop.io" {
			out = append(out, o)
		}
	}
	return out
}

// kept says why an object of zerohop's may remain after `helm uninstall`,
// or "" when it must not. charts/zerohop/README.md documents each.
func kept(o objRef) string {
	switch {
	case o.Group == "apiextensions.k8s.io" && o.Kind == "CustomResourceDefinition" && strings.HasSuffix(o.Name, ".zerohop.io"):
		return "CRD (Helm never deletes crds/)"
	case o.Group == "apiregistration.k8s.io" && o.Kind == "APIService" && strings.HasSuffix(o.Name, ".zerohop.io"):
		return "the API server's APIService for the CRDs' group (goes with the CRDs)"
	case o.Group == "zerohop.io":
		return "custom resource: the user's pools, peers and advertisements and the speakers' SpeakerStatuses (go with the CRDs)"
	case o.Group == "" && o.Kind == "Namespace" && o.Name == releaseNS:
		return "the release namespace (Helm never deletes a namespace)"
	case o.Group == "coordination.k8s.io" && o.Kind == "Lease" && o.Namespace == releaseNS && o.Name == "zerohop-controller":
		return "the controller's leader-election Lease, written at run time (goes with the namespace)"
	case (o.Group == "" || o.Group == "events.k8s.io") && o.Kind == "Event" && o.Namespace == releaseNS:
		return "Events, written at run time (expire after an hour; go with the namespace)"
	}
	return ""
}

// uninstallAndSweep: every object the chart rendered is present before
// `helm uninstall` and gone after it, and nothing of zerohop's remains but
// what kept allows; then deleting the CRDs as the README says removes the
// rest but the namespace and its run-time objects.
func (r *run) uninstallAndSweep(rendered []objRef, chartCRDs []string) {
	before := refs(r.sweep())
	for _, o := range rendered {
		if !before[o] {
			r.t.Fatalf("sweep does not see %s, which the chart rendered: the sweep cannot be trusted", o)
		}
	}
	tUninstall := time.Now()
	if out, err := r.helm("uninstall", release, "--namespace", releaseNS, "--wait"); err != nil {
		r.t.Fatalf("helm uninstall: %v\n%s", err, out)
	}
	dUninstall := time.Since(tUninstall)
	all := r.sweep()
	after := refs(all)
	for _, o := range rendered {
		if after[o] {
			r.t.Errorf("helm uninstall left %s behind", o)
		}
	}
	why := map[string]int{}
	for _, o := range zerohops(all) {
		reason := kept(o.ref)
		if reason == "" {
			r.t.Errorf("helm uninstall left %s (labels %v) behind", o.ref, o.labels)
			continue
		}
		why[reason]++
	}
	for _, name := range chartCRDs {
		if !after[objRef{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition", Name: name}] {
			r.t.Errorf("CRD %s went with helm uninstall; the README says CRDs stay", name)
		}
	}
	for _, reason := range slices.Sorted(maps.Keys(why)) {
		r.t.Logf("after helm uninstall (%s), kept: %d × %s", dUninstall.Round(time.Millisecond), why[reason], reason)
	}

	// The README's way to remove the CRDs (and with them every custom
	// resource).
	cs := r.apiext()
	for _, name := range chartCRDs {
		if err := cs.ApiextensionsV1().CustomResourceDefinitions().Delete(r.ctx, name, metav1.DeleteOptions{}); err != nil {
			r.t.Fatalf("delete CRD %s: %v", name, err)
		}
	}
	r.eventually(time.Minute, "the zerohop CRDs and their resources to go", func() (bool, string) {
		var left []string
		for _, o := range zerohops(r.sweep()) {
			switch kept(o.ref) {
			case kept(objRef{Kind: "Namespace", Name: releaseNS}),
				kept(objRef{Group: "coordination.k8s.io", Kind: "Lease", Namespace: releaseNS, Name: "zerohop-controller"}),
				kept(objRef{Kind: "Event", Namespace: releaseNS}):
			default:
				left = append(left, o.ref.String())
			}
		}
		return len(left) == 0, strings.Join(left, ", ")
	})
	r.t.Logf("after deleting the CRDs: nothing of zerohop's is left but the release namespace, the controller's Lease and Events in it")
}

func refs(objs []object) map[objRef]bool {
	m := map[objRef]bool{}
	for _, o := range objs {
		m[o.ref] = true
	}
	return m
}
