// Package charts tests the Helm chart: lint, golden renderings, the values
// schema, and an install into a real API server whose RBAC the chart's
// ServiceAccounts are then held to.
package charts

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/zerohop/zerohop/internal/apiserver"
)

const chartDir = "zerohop"

func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(apiserver.BinDir(), "helm"), args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	err := cmd.Run()
	return out.String(), err
}

func TestLint(t *testing.T) {
	for _, values := range []string{"", "zerohop/testdata/full-values.yaml"} {
		args := []string{"lint", "--strict", chartDir}
		if values != "" {
			args = append(args, "-f", values)
		}
		if out, err := helm(t, args...); err != nil {
			t.Fatalf("helm %v: %v\n%s", args, err, out)
		}
	}
}

// The memberlist key is random on a fresh install; mask it so renderings
// compare.
var memberlistKey = regexp.MustCompile(`(?m)^(  key: ).*$`)

// TestGolden renders the chart with the default values and a full values
// file and compares with testdata/*.golden. Run with ZEROHOP_UPDATE_GOLDEN=1
// to rewrite them after an intended change.
func TestGolden(t *testing.T) {
	tests := []struct{ name, values string }{
		{"default", ""},
		{"full", "zerohop/testdata/full-values.yaml"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"template", "zerohop", chartDir, "--namespace", "zerohop-system", "--include-crds", "--kube-version", "v1.37.0"}
			if tc.values != "" {
				args = append(args, "-f", tc.values)
			}
			out, err := helm(t, args...)
			if err != nil {
				t.Fatalf("helm template: %v\n%s", err, out)
			}
			got := memberlistKey.ReplaceAllString(out, "${1}MASKED")
			golden := filepath.Join(chartDir, "testdata", tc.name+".golden")
			if os.Getenv("ZEROHOP_UPDATE_GOLDEN") != "" {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with ZEROHOP_UPDATE_GOLDEN=1 to create it)", err)
			}
			if got != string(want) {
				t.Fatalf("rendering differs from %s; if intended, rerun with ZEROHOP_UPDATE_GOLDEN=1 and review the diff", golden)
			}
		})
	}
}

// TestSchemaRejectsBadValues checks that values.schema.json refuses bad
// values at template time, naming the value.
func TestSchemaRejectsBadValues(t *testing.T) {
	tests := []struct{ set, want string }{
		{"controller.replicas=0", "replicas"},
		{"controller.replicas=many", "replicas"},
		{"speaker.uplinkInterfaces[0]=eth/0", "uplinkInterfaces"},
		{"speaker.metricsPort=70000", "metricsPort"},
		{"speaker.datapathLimits.backends=0", "backends"},
		{"speaker.datapathLimits.services=2000000", "services"},
		{"speaker.maglevTableSize=100", "maglevTableSize"},
		{"logLevel=verbose", "logLevel"},
		{"image.pullPolicy=Sometimes", "pullPolicy"},
		{"defaultClass=maybe", "defaultClass"},
		{"controller.typo=1", "typo"},
		{"prometheus.serviceMonitor.interval=soon", "interval"},
		{"metrics.secure=sometimes", "secure"},
		{"metrics.readers[0].name=prometheus", "namespace"},
		{"prometheus.podMonitor.enabled=true", "podMonitor"},
		{"grafana.dashboard.labels.grafana_dashboard=1", "grafana_dashboard"},
		{"readinessGate.injection.timeoutSeconds=60", "timeoutSeconds"},
		{"readinessGate.injection.port=0", "port"},
		{"readinessGate.injection.enabled=yes", "enabled"},
	}
	for _, tc := range tests {
		t.Run(tc.set, func(t *testing.T) {
			out, err := helm(t, "template", "zerohop", chartDir, "--kube-version", "v1.37.0", "--set", tc.set)
			if err == nil {
				t.Fatalf("--set %s accepted", tc.set)
			}
			if !strings.Contains(out, "values don't meet the specifications of the schema") || !strings.Contains(out, tc.want) {
				t.Fatalf("--set %s: refusal does not name %s:\n%s", tc.set, tc.want, out)
			}
		})
	}
}

// TestInjectionOff checks that readinessGate.injection.enabled=false
// leaves out the webhook, its Secret, Service and rights, and the flag.
func TestInjectionOff(t *testing.T) {
	out, err := helm(t, "template", "zerohop", chartDir, "--namespace", "zerohop-system", "--kube-version", "v1.37.0",
		"--set", "readinessGate.injection.enabled=false")
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	for _, s := range []string{"kind: MutatingWebhookConfiguration", "zerohop-webhook", "--readiness-gate-injection", "admissionregistration.k8s.io", "resources: [secrets]\n    resourceNames"} {
		if strings.Contains(out, s) {
			t.Errorf("rendering with injection off contains %q", s)
		}
	}
	if !strings.Contains(out, "kind: Deployment") {
		t.Error("rendering with injection off has no Deployment")
	}
}

// TestCRDsInSync checks that the chart ships the CRDs generated from
// config/ (make generate copies them).
func TestCRDsInSync(t *testing.T) {
	src, err := filepath.Glob("../config/crd/*.yaml")
	if err != nil || len(src) == 0 {
		t.Fatalf("no CRDs in config/crd: %v", err)
	}
	for _, f := range src {
		want, _ := os.ReadFile(f)
		got, err := os.ReadFile(filepath.Join(chartDir, "crds", filepath.Base(f)))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: chart copy missing or stale; run make generate", filepath.Base(f))
		}
	}
}

// TestInstallRBAC installs the chart into a real API server, checks what
// each ServiceAccount may and may not do, and that uninstall leaves nothing
// of zerohop but the CRDs.
func TestInstallRBAC(t *testing.T) {
	srv := apiserver.ForTest(t)
	ctx := context.Background()
	ns := "zerohop-system"
	out, err := helm(t, "install", "zerohop", chartDir, "--kubeconfig", srv.Kubeconfig,
		"--namespace", ns, "--create-namespace", "--wait=false")
	if err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}
	if !strings.Contains(out, "zerohop.io/v1alpha1") {
		t.Errorf("NOTES do not show what to apply next:\n%s", out)
	}
	admin := kubernetes.NewForConfigOrDie(srv.Config)

	type check struct {
		verb, group, resource, subresource, namespace string
		allowed                                       bool
	}
	tests := []struct {
		sa     string
		checks []check
	}{
		{"zerohop-controller", []check{
			{"list", "", "services", "", "", true},
			{"update", "", "services", "status", "default", true},
			{"update", "", "services", "", "default", false},
			{"patch", "", "services", "", "default", true},
			{"delete", "", "services", "", "default", false},
			// The Gateway API's rights come with gatewayAPI.enabled only.
			{"create", "", "services", "", "default", false},
			{"patch", "discovery.k8s.io", "endpointslices", "", "default", false},
			{"list", "gateway.networking.k8s.io", "gateways", "", "", false},
			{"create", "", "events", "", "default", true},
			{"list", "zerohop.io", "ipaddresspools", "", "", true},
			{"patch", "zerohop.io", "ipaddresspools", "status", "", true},
			{"update", "zerohop.io", "ipaddresspools", "", "", false},
			{"update", "coordination.k8s.io", "leases", "", ns, true},
			{"update", "coordination.k8s.io", "leases", "", "default", false},
			{"list", "", "secrets", "", ns, false},
			{"list", "", "secrets", "", "", false},
			// The readiness gate reads Pods and writes only their status.
			{"list", "", "pods", "", "", true},
			{"patch", "", "pods", "status", "default", true},
			{"update", "", "pods", "", "default", false},
			{"delete", "", "pods", "", "default", false},
			{"list", "zerohop.io", "bgppeers", "", "", true},
			{"patch", "zerohop.io", "bgppeers", "status", "", true},
			{"patch", "zerohop.io", "bgpadvertisements", "status", "", true},
			{"update", "zerohop.io", "bgppeers", "", "", false},
			{"list", "zerohop.io", "l2advertisements", "", "", false},
			{"list", "", "nodes", "", "", true},
			{"update", "", "nodes", "", "", false},
			{"watch", "zerohop.io", "speakerstatuses", "", "", true},
			{"update", "zerohop.io", "speakerstatuses", "status", "", false},
			{"create", "authentication.k8s.io", "tokenreviews", "", "", true},
			{"create", "authorization.k8s.io", "subjectaccessreviews", "", "", true},
		}},
		{"zerohop-speaker", []check{
			{"list", "", "services", "", "", true},
			{"list", "discovery.k8s.io", "endpointslices", "", "", true},
			{"list", "", "nodes", "", "", true},
			{"list", "zerohop.io", "bgppeers", "", "", true},
			{"list", "zerohop.io", "bfdprofiles", "", "", true},
			{"list", "zerohop.io", "l2advertisements", "", "", true},
			{"get", "", "secrets", "", ns, true},
			{"get", "", "secrets", "", "default", false},
			{"update", "", "services", "status", "default", false},
			{"update", "zerohop.io", "ipaddresspools", "status", "", false},
			{"create", "zerohop.io", "bgppeers", "", "", false},
			{"update", "", "nodes", "", "", false},
			{"create", "zerohop.io", "speakerstatuses", "", "", true},
			{"update", "zerohop.io", "speakerstatuses", "status", "", true},
			{"delete", "zerohop.io", "speakerstatuses", "", "", false},
			{"create", "authentication.k8s.io", "tokenreviews", "", "", true},
			{"create", "authorization.k8s.io", "subjectaccessreviews", "", "", true},
		}},
	}
	for _, tc := range tests {
		cfg, err := srv.ServiceAccountConfig(ctx, ns, tc.sa)
		if err != nil {
			t.Fatal(err)
		}
		cs := kubernetes.NewForConfigOrDie(cfg)
		for _, c := range tc.checks {
			got, err := selfCheck(ctx, cs, c.verb, c.group, c.resource, c.subresource, c.namespace)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.allowed {
				t.Errorf("%s %s %s/%s %s in %q: allowed=%v, want %v", tc.sa, c.verb, c.group, c.resource, c.subresource, c.namespace, got, c.allowed)
			}
		}
	}

	// The injection webhook's certificate and caBundle: the one Secret
	// and the one configuration, by name, nothing more.
	ctrlCfg, err := srv.ServiceAccountConfig(ctx, ns, "zerohop-controller")
	if err != nil {
		t.Fatal(err)
	}
	ctrlCS := kubernetes.NewForConfigOrDie(ctrlCfg)
	for _, c := range []struct {
		verb, group, resource, namespace, name string
		allowed                                bool
	}{
		{"get", "", "secrets", ns, "zerohop-webhook-cert", true},
		{"update", "", "secrets", ns, "zerohop-webhook-cert", true},
		{"get", "", "secrets", ns, "zerohop-memberlist", false},
		{"update", "", "secrets", ns, "zerohop-memberlist", false},
		{"create", "", "secrets", ns, "", false},
		{"delete", "", "secrets", ns, "zerohop-webhook-cert", false},
		{"get", "", "secrets", "default", "zerohop-webhook-cert", false},
		{"get", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "zerohop-readiness-gate", true},
		{"update", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "zerohop-readiness-gate", true},
		{"update", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "other", false},
		{"list", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "", false},
		{"delete", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "zerohop-readiness-gate", false},
		{"update", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", "zerohop-readiness-gate", false},
	} {
		got, err := selfCheckNamed(ctx, ctrlCS, c.verb, c.group, c.resource, c.namespace, c.name)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.allowed {
			t.Errorf("zerohop-controller %s %s/%s %q in %q: allowed=%v, want %v", c.verb, c.group, c.resource, c.name, c.namespace, got, c.allowed)
		}
	}
	// What the controller writes survives an upgrade: the chart renders
	// neither the Secret's data nor the caBundle.
	whSecret, err := admin.CoreV1().Secrets(ns).Get(ctx, "zerohop-webhook-cert", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("webhook certificate secret: %v", err)
	}
	whSecret.Data = map[string][]byte{"tls.crt": []byte("written by the controller")}
	if _, err := ctrlCS.CoreV1().Secrets(ns).Update(ctx, whSecret, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("controller updating its webhook secret: %v", err)
	}
	whCfg, err := ctrlCS.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "zerohop-readiness-gate", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("controller reading its webhook configuration: %v", err)
	}
	whCfg.Webhooks[0].ClientConfig.CABundle = []byte("bundle")
	if _, err := ctrlCS.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, whCfg, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("controller writing its caBundle: %v", err)
	}

	secret, err := admin.CoreV1().Secrets(ns).Get(ctx, "zerohop-memberlist", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("memberlist secret: %v", err)
	}
	key := string(secret.Data["key"])
	if len(key) != 32 {
		t.Fatalf("memberlist key has %d bytes, want 32", len(key))
	}
	if out, err := helm(t, "upgrade", "zerohop", chartDir, "--kubeconfig", srv.Kubeconfig, "--namespace", ns); err != nil {
		t.Fatalf("helm upgrade: %v\n%s", err, out)
	}
	secret, err = admin.CoreV1().Secrets(ns).Get(ctx, "zerohop-memberlist", metav1.GetOptions{})
	if err != nil || string(secret.Data["key"]) != key {
		t.Fatalf("memberlist key changed on upgrade (err %v)", err)
	}
	whSecret, err = admin.CoreV1().Secrets(ns).Get(ctx, "zerohop-webhook-cert", metav1.GetOptions{})
	if err != nil || string(whSecret.Data["tls.crt"]) != "written by the controller" {
		t.Fatalf("webhook certificate lost on upgrade (err %v)", err)
	}
	whCfg, err = admin.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "zerohop-readiness-gate", metav1.GetOptions{})
	if err != nil || string(whCfg.Webhooks[0].ClientConfig.CABundle) != "bundle" {
		t.Fatalf("caBundle lost on upgrade (err %v)", err)
	}

	if out, err := helm(t, "uninstall", "zerohop", "--kubeconfig", srv.Kubeconfig, "--namespace", ns, "--wait"); err != nil {
		t.Fatalf("helm uninstall: %v\n%s", err, out)
	}
	left := leftovers(ctx, t, admin, ns)
	if len(left) > 0 {
		t.Fatalf("after uninstall, left behind: %v", left)
	}
	crds, err := admin.Discovery().ServerResourcesForGroupVersion("zerohop.io/v1alpha1")
	if err != nil || len(crds.APIResources) == 0 {
		t.Fatalf("CRDs should stay after uninstall (documented): %v", err)
	}
}

func leftovers(ctx context.Context, t *testing.T, cs *kubernetes.Clientset, ns string) []string {
	t.Helper()
	sel := metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=zerohop"}
	var left []string
	add := func(kind string, n int, err error) {
		if err != nil && !apierrors.IsNotFound(err) {
			t.Fatalf("list %s: %v", kind, err)
		}
		if n > 0 {
			left = append(left, kind)
		}
	}
	d, err := cs.AppsV1().Deployments(ns).List(ctx, sel)
	add("deployments", len(d.Items), err)
	ds, err := cs.AppsV1().DaemonSets(ns).List(ctx, sel)
	add("daemonsets", len(ds.Items), err)
	sa, err := cs.CoreV1().ServiceAccounts(ns).List(ctx, sel)
	add("serviceaccounts", len(sa.Items), err)
	sec, err := cs.CoreV1().Secrets(ns).List(ctx, sel)
	add("secrets", len(sec.Items), err)
	cr, err := cs.RbacV1().ClusterRoles().List(ctx, sel)
	add("clusterroles", len(cr.Items), err)
	crb, err := cs.RbacV1().ClusterRoleBindings().List(ctx, sel)
	add("clusterrolebindings", len(crb.Items), err)
	r, err := cs.RbacV1().Roles(ns).List(ctx, sel)
	add("roles", len(r.Items), err)
	pdb, err := cs.PolicyV1().PodDisruptionBudgets(ns).List(ctx, sel)
	add("poddisruptionbudgets", len(pdb.Items), err)
	svc, err := cs.CoreV1().Services(ns).List(ctx, sel)
	add("services", len(svc.Items), err)
	mwc, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().List(ctx, sel)
	add("mutatingwebhookconfigurations", len(mwc.Items), err)
	return left
}
