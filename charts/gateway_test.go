package charts

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/controller"
	"github.com/zerohop/zerohop/controller/gateway"
	"github.com/zerohop/zerohop/internal/apiserver"
	"github.com/zerohop/zerohop/speaker"
)

const gatewayFiles = chartDir + "/files/gateway-api"

// docs splits a YAML stream into its documents, without helm's "# Source"
// lines.
func docs(s string) []string {
	var out []string
	for _, d := range strings.Split("\n"+s, "\n---\n") {
		var lines []string
		for _, l := range strings.Split(d, "\n") {
			if !strings.HasPrefix(l, "# Source: ") {
				lines = append(lines, l)
			}
		}
		if d := strings.TrimSpace(strings.Join(lines, "\n")); d != "" {
			out = append(out, d)
		}
	}
	return out
}

// TestGatewayAPICRDs renders the chart's copy of the Gateway API's
// standard channel and checks it is the module's files with only
// helm.sh/resource-policy: keep added, of the release zerohop is built
// with, and holding the kinds zerohop serves.
func TestGatewayAPICRDs(t *testing.T) {
	out, err := helm(t, "template", "zerohop", chartDir, "--kube-version", "v1.37.0",
		"--set", "gatewayAPI.enabled=true", "--show-only", "templates/gateway-api-crds.yaml")
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	files, err := filepath.Glob(gatewayFiles + "/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	crds, err := filepath.Glob(gatewayFiles + "/crds/*.yaml")
	if err != nil || len(crds) < 5 {
		t.Fatalf("CRDs %v: %v (run make generate)", crds, err)
	}
	files = append(files, crds...)
	slices.Sort(files) // as Helm ranges over .Files.Glob
	var want []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		if !strings.Contains(s, "gateway.networking.k8s.io/bundle-version: "+gateway.BundleVersion+"\n") {
			t.Errorf("%s is not of Gateway API %s, the release zerohop is built with: run make generate", f, gateway.BundleVersion)
		}
		for _, d := range docs(s) {
			want = append(want, strings.Replace(d, "\nmetadata:\n  annotations:\n", "\nmetadata:\n  annotations:\n    helm.sh/resource-policy: keep\n", 1))
		}
	}
	got := docs(out)
	if len(got) != len(want) {
		t.Fatalf("%d documents rendered, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("document %d differs from %s with the keep annotation", i, files[min(i, len(files)-1)])
		}
	}
	for _, kind := range []string{"GatewayClass", "Gateway", "TCPRoute", "UDPRoute", "ReferenceGrant"} {
		if !strings.Contains(out, "\n    kind: "+kind+"\n") {
			t.Errorf("no CRD for %s", kind)
		}
	}
	// Off, or on with the cluster's own CRDs: nothing rendered.
	for _, set := range []string{"gatewayAPI.enabled=false", "gatewayAPI.installCRDs=false"} {
		out, err := helm(t, "template", "zerohop", chartDir, "--kube-version", "v1.37.0", "--set", "gatewayAPI.enabled=true", "--set", set)
		if err != nil {
			t.Fatalf("helm template: %v\n%s", err, out)
		}
		if strings.Contains(out, "gateway.networking.k8s.io_") || strings.Contains(out, "kind: CustomResourceDefinition\n") && strings.Contains(out, "gateway.networking.k8s.io\n") {
			t.Errorf("--set %s rendered Gateway API CRDs", set)
		}
	}
}

// TestGatewayAPIWithChartRBAC installs the chart with the Gateway API on
// (its CRDs with it) into a real API server, checks what the controller's
// ServiceAccount may now do, runs the controller with that account's
// token through a Gateway's life (Service, slices, statuses) without a
// 403, and checks that uninstalling keeps the Gateway API's CRDs.
func TestGatewayAPIWithChartRBAC(t *testing.T) {
	srv := apiserver.ForTest(t)
	ns := "zerohop-system"
	out, err := helm(t, "install", "zerohop", chartDir, "--kubeconfig", srv.Kubeconfig,
		"--namespace", ns, "--create-namespace", "--set", "gatewayAPI.enabled=true")
	if err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}
	if !strings.Contains(out, "controllerName: zerohop.io/gateway-controller") {
		t.Errorf("NOTES do not show the GatewayClass to create:\n%s", out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	cfg, err := srv.ServiceAccountConfig(ctx, ns, "zerohop-controller")
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	for _, c := range []struct {
		verb, group, resource, subresource string
		allowed                            bool
	}{
		{"watch", "gateway.networking.k8s.io", "gateways", "", true},
		{"update", "gateway.networking.k8s.io", "gateways", "status", true},
		{"update", "gateway.networking.k8s.io", "gateways", "", false},
		{"update", "gateway.networking.k8s.io", "tcproutes", "status", true},
		{"update", "gateway.networking.k8s.io", "udproutes", "status", true},
		{"update", "gateway.networking.k8s.io", "gatewayclasses", "status", true},
		{"create", "gateway.networking.k8s.io", "gatewayclasses", "", false},
		{"patch", "gateway.networking.k8s.io", "gatewayclasses", "", true},
		{"patch", "gateway.networking.k8s.io", "gateways", "", false},
		{"list", "gateway.networking.k8s.io", "referencegrants", "", true},
		{"update", "gateway.networking.k8s.io", "referencegrants", "", false},
		{"list", "gateway.networking.k8s.io", "httproutes", "", false},
		{"create", "", "services", "", true},
		{"delete", "", "services", "", true},
		{"update", "", "services", "", false},
		{"patch", "discovery.k8s.io", "endpointslices", "", true},
		{"delete", "discovery.k8s.io", "endpointslices", "", true},
		{"update", "", "pods", "", false},
		{"list", "", "secrets", "", false},
	} {
		got, err := selfCheck(ctx, cs, c.verb, c.group, c.resource, c.subresource, "default")
		if err != nil {
			t.Fatal(err)
		}
		if got != c.allowed {
			t.Errorf("controller %s %s/%s %s: allowed=%v, want %v", c.verb, c.group, c.resource, c.subresource, got, c.allowed)
		}
	}

	scheme := speaker.Scheme()
	if err := gatewayv1.Install(scheme); err != nil {
		t.Fatal(err)
	}
	admin, err := client.New(srv.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	must(t, admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "app"}}))
	must(t, admin.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "echo"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "echo"}, Ports: []corev1.ServicePort{{Name: "tcp", Port: 9000, Protocol: corev1.ProtocolTCP}}}}))
	must(t, admin.Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "app", Name: "echo-1", Labels: map[string]string{discoveryv1.LabelServiceName: "echo"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: new("tcp"), Port: new(int32(9000)), Protocol: new(corev1.ProtocolTCP)}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"100.64.1.10"}, Conditions: discoveryv1.EndpointConditions{Ready: new(true)}}},
	}))
	must(t, admin.Create(ctx, &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "zerohop"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: gateway.ControllerName}}))
	must(t, admin.Create(ctx, &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "edge"},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: "zerohop", Listeners: []gatewayv1.Listener{{Name: "tcp", Protocol: gatewayv1.TCPProtocolType, Port: 8080}}}}))
	must(t, admin.Create(ctx, &gatewayv1.TCPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "echo"},
		Spec: gatewayv1.TCPRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "edge"}}},
			Rules: []gatewayv1.TCPRouteRule{{BackendRefs: []gatewayv1.BackendRef{{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "echo", Port: new(int32(9000))}}}}}}}))

	var denied forbiddenRecorder
	ctl, err := controller.New(denied.wrap(cfg), controller.Options{MetricsAddr: "0", HealthAddr: "0",
		LeaderElection: true, LeaderElectionNamespace: ns, LeaderElectionID: "zerohop-controller"})
	if err != nil {
		t.Fatal(err)
	}
	if err := gateway.Setup(ctl.Manager(), gateway.Options{}); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ctl.Start(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
	}()
	must(t, admin.Create(ctx, &v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "public"},
		Spec: v1alpha1.IPAddressPoolSpec{Addresses: []v1alpha1.Address{"192.0.2.0/28"}}}))

	svcName := gateway.ServiceName("edge", "zerohop")
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		var gw gatewayv1.Gateway
		if err := admin.Get(ctx, client.ObjectKey{Namespace: "app", Name: "edge"}, &gw); err != nil {
			return false, nil
		}
		var sl discoveryv1.EndpointSliceList
		if err := admin.List(ctx, &sl, client.InNamespace("app"), client.MatchingLabels{discoveryv1.LabelServiceName: svcName}); err != nil {
			return false, nil
		}
		var route gatewayv1.TCPRoute
		if err := admin.Get(ctx, client.ObjectKey{Namespace: "app", Name: "echo"}, &route); err != nil {
			return false, nil
		}
		var class gatewayv1.GatewayClass
		if err := admin.Get(ctx, client.ObjectKey{Name: "zerohop"}, &class); err != nil {
			return false, nil
		}
		return meta.IsStatusConditionTrue(gw.Status.Conditions, "Accepted") && len(gw.Status.Addresses) == 1 && len(sl.Items) == 1 &&
			len(route.Status.Parents) == 1 && meta.IsStatusConditionTrue(class.Status.Conditions, "Accepted"), nil
	})
	if err != nil {
		t.Fatalf("with the chart's RBAC the Gateway did not get its Service, address, slices and statuses: %v (403s: %v)", err, denied.list())
	}
	time.Sleep(time.Second)
	if d := denied.list(); len(d) > 0 {
		t.Errorf("the controller got %d forbidden responses with the chart's RBAC: %v", len(d), d)
	}

	if out, err := helm(t, "uninstall", "zerohop", "--kubeconfig", srv.Kubeconfig, "--namespace", ns, "--wait"); err != nil {
		t.Fatalf("helm uninstall: %v\n%s", err, out)
	}
	res, err := kubernetes.NewForConfigOrDie(srv.Config).Discovery().ServerResourcesForGroupVersion("gateway.networking.k8s.io/v1")
	if err != nil || len(res.APIResources) == 0 {
		t.Fatalf("the Gateway API's CRDs must stay after uninstall: %v", err)
	}
}
