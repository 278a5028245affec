package charts

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/controller"
	"github.com/zerohop/zerohop/controller/webhookcert"
	"github.com/zerohop/zerohop/internal/apiserver"
	"github.com/zerohop/zerohop/speaker"
)

// forbiddenRecorder notes every request the API server refuses with 403.
type forbiddenRecorder struct {
	mu   sync.Mutex
	seen []string
}

func (f *forbiddenRecorder) wrap(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(req)
			if err == nil && resp.StatusCode == http.StatusForbidden {
				f.mu.Lock()
				f.seen = append(f.seen, req.Method+" "+req.URL.Path)
				f.mu.Unlock()
			}
			return resp, err
		})
	}
	return cfg
}

func (f *forbiddenRecorder) list() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen...)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestComponentsRunWithChartRBAC installs the chart, then runs the
// controller and a speaker with the tokens of the chart's own
// ServiceAccounts through a normal allocation and announcement, and fails
// on any 403 either of them receives.
func TestComponentsRunWithChartRBAC(t *testing.T) {
	srv := apiserver.ForTest(t)
	ns := "zerohop-system"
	if out, err := helm(t, "install", "zerohop", chartDir, "--kubeconfig", srv.Kubeconfig,
		"--namespace", ns, "--create-namespace"); err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin, err := client.New(srv.Config, client.Options{Scheme: speaker.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(srv.Config)

	// What a user and kubelet would have made.
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "zh-rbac-node"},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: nodeAddr}}},
	}
	must(t, admin.Create(ctx, node))
	node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	must(t, admin.Status().Update(ctx, node))
	must(t, admin.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "bgp-password", Namespace: ns},
		Type:       corev1.SecretTypeBasicAuth,
		StringData: map[string]string{"password": "s3cret"},
	}))
	must(t, admin.Create(ctx, &v1alpha1.IPAddressPool{
		ObjectMeta: metav1.ObjectMeta{Name: "public"},
		Spec:       v1alpha1.IPAddressPoolSpec{Addresses: []v1alpha1.Address{"192.0.2.0/28"}},
	}))
	// The peer is a closed port in the tests' namespace: the session never comes up,
	// but the speaker reads everything it reads in normal operation.
	must(t, admin.Create(ctx, &v1alpha1.BGPPeer{
		ObjectMeta: metav1.ObjectMeta{Name: "router"},
		Spec: v1alpha1.BGPPeerSpec{MyASN: 64512, PeerASN: 64500, PeerAddress: peerAddr, PeerPort: 1,
			PasswordSecret: &v1alpha1.SecretReference{Name: "bgp-password"}},
	}))
	must(t, admin.Create(ctx, &v1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "public"}}))
	must(t, admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "app"}}))
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "app"},
		Spec: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeLoadBalancer,
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyCluster,
			Selector:              map[string]string{"app": "web"},
			Ports:                 []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
		},
	}
	must(t, admin.Create(ctx, svc))
	ready := true
	must(t, admin.Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "web-1", Namespace: "app", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"100.64.1.10"}, NodeName: &node.Name,
			Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
	}))

	ctrlCfg, err := srv.ServiceAccountConfig(ctx, ns, "zerohop-controller")
	if err != nil {
		t.Fatal(err)
	}
	spkCfg, err := srv.ServiceAccountConfig(ctx, ns, "zerohop-speaker")
	if err != nil {
		t.Fatal(err)
	}
	var ctrlDenied, spkDenied forbiddenRecorder
	// The injection webhook as the chart's args configure it, on loopback.
	ctl, err := controller.New(ctrlDenied.wrap(ctrlCfg), controller.Options{
		DefaultClass: true, MetricsAddr: "0", HealthAddr: "0",
		LeaderElection: true, LeaderElectionNamespace: ns, LeaderElectionID: "zerohop-controller",
		Injection: &controller.InjectionOptions{Host: "127.0.0.1", Port: freePort(t), Cert: webhookcert.Options{
			Namespace: ns, Secret: "zerohop-webhook-cert", Configuration: "zerohop-readiness-gate",
			Hosts: []string{"zerohop-webhook." + ns + ".svc"},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	spk, err := speaker.New(spkDenied.wrap(spkCfg), speaker.Options{NodeName: node.Name, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for name, run := range map[string]func(context.Context) error{"controller": ctl.Start, "speaker": spk.Start} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(runCtx); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}()
	}
	defer func() { stop(); wg.Wait() }()

	var ip string
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err := cs.CoreV1().Services("app").Get(ctx, "web", metav1.GetOptions{})
		if err != nil || len(got.Status.LoadBalancer.Ingress) == 0 {
			return false, nil
		}
		ip = got.Status.LoadBalancer.Ingress[0].IP
		return true, nil
	})
	if err != nil {
		t.Fatalf("controller with chart RBAC assigned no IP: %v (403s: %v)", err, ctrlDenied.list())
	}
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		var st v1alpha1.SpeakerStatus
		if err := admin.Get(ctx, client.ObjectKey{Name: node.Name}, &st); err != nil {
			return false, nil
		}
		for _, a := range st.Status.Announcements {
			if a.Service == "app/web" {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("speaker with chart RBAC reported no announcement for app/web (%s): %v (403s: %v)", ip, err, spkDenied.list())
	}
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		cfg, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "zerohop-readiness-gate", metav1.GetOptions{})
		if err != nil || len(cfg.Webhooks) == 0 {
			return false, nil
		}
		sec, err := cs.CoreV1().Secrets(ns).Get(ctx, "zerohop-webhook-cert", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		b := cfg.Webhooks[0].ClientConfig.CABundle
		return len(b) > 0 && string(b) == string(sec.Data[webhookcert.KeyCABundle]), nil
	})
	if err != nil {
		t.Fatalf("controller with chart RBAC wrote no webhook certificate and caBundle: %v (403s: %v)", err, ctrlDenied.list())
	}
	// Let both settle through a few more reconciles and status writes.
	time.Sleep(2 * time.Second)
	for name, rec := range map[string]*forbiddenRecorder{"controller": &ctrlDenied, "speaker": &spkDenied} {
		if denied := rec.list(); len(denied) > 0 {
			t.Errorf("%s got %d forbidden responses with the chart's RBAC: %v", name, len(denied), denied)
		}
	}
	t.Logf("with chart RBAC: IP %s assigned and announced, webhook certificate and caBundle written; no 403 for either component", ip)

	// And real requests beyond the roles are refused.
	spkCS := kubernetes.NewForConfigOrDie(spkCfg)
	got, err := spkCS.CoreV1().Services("app").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.0.2.9"}}
	if _, err := spkCS.CoreV1().Services("app").UpdateStatus(ctx, got, metav1.UpdateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("speaker writing Service status: want Forbidden, got %v", err)
	}
	ctrlCS := kubernetes.NewForConfigOrDie(ctrlCfg)
	if _, err := ctrlCS.CoreV1().Secrets(ns).Get(ctx, "bgp-password", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("controller reading a Secret: want Forbidden, got %v", err)
	}
	if _, err := spkCS.CoreV1().Secrets("app").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("speaker listing Secrets outside its namespace: want Forbidden, got %v", err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(fmt.Errorf("setup: %w", err))
	}
}
