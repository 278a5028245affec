package controller_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/zerohop/zerohop/controller"
	"github.com/zerohop/zerohop/controller/webhookcert"
)

const (
	injectConfig  = "zh-readiness-gate"
	injectSecret  = "zh-webhook-cert"
	injectCtrlNS  = "zerohop-system"
	injectTimeout = 3 // the configuration's timeoutSeconds
)

// injectionWebhook registers the webhook as the chart does, but at a URL
// on loopback: Pod CREATE in namespaces labelled for injection, not the
// controller's own, failurePolicy Ignore.
func (e *env) injectionWebhook(t *testing.T, addr string) {
	t.Helper()
	url := "https://" + addr + controller.InjectionPath
	ignore := admissionregistrationv1.Ignore
	none := admissionregistrationv1.SideEffectClassNone
	timeout := int32(injectTimeout)
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: injectConfig},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "readiness-gate.zerohop.io",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url},
			FailurePolicy:           &ignore,
			SideEffects:             &none,
			TimeoutSeconds:          &timeout,
			AdmissionReviewVersions: []string{"v1"},
			NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: controller.LabelGateInjection, Operator: metav1.LabelSelectorOpIn, Values: []string{controller.GateInjectionEnabled}},
				{Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpNotIn, Values: []string{injectCtrlNS}},
			}},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
		}},
	}
	if err := e.cli.Create(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.cli.Delete(context.Background(), cfg) })
}

func injectionOptions(t *testing.T, addr string) *controller.InjectionOptions {
	t.Helper()
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(p)
	return &controller.InjectionOptions{Host: host, Port: port, Cert: webhookcert.Options{
		Namespace: injectCtrlNS, Secret: injectSecret, Configuration: injectConfig, Hosts: []string{host},
	}}
}

func testPod(ns, name string, labels map[string]string, gates ...corev1.PodReadinessGate) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			Containers:     []corev1.Container{{Name: "echo", Image: "zerohop/echo"}},
			ReadinessGates: gates,
		},
	}
}

func gated(p *corev1.Pod) bool {
	_, labelled := p.Labels[controller.LabelReadinessGate]
	return labelled && slices.ContainsFunc(p.Spec.ReadinessGates, func(g corev1.PodReadinessGate) bool {
		return g.ConditionType == controller.ConditionLoadBalancerReady
	})
}

// servedCert returns the certificate the server at addr presents.
func servedCert(addr string) ([]byte, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // compared with the Secret's below
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Raw, nil
}

func (e *env) secretCert(t *testing.T) (*corev1.Secret, []byte) {
	t.Helper()
	var s corev1.Secret
	if err := e.cli.Get(context.Background(), types.NamespacedName{Namespace: injectCtrlNS, Name: injectSecret}, &s); err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(s.Data[webhookcert.KeyCert])
	if b == nil {
		t.Fatalf("secret %s/%s: no certificate", injectCtrlNS, injectSecret)
	}
	return &s, b.Bytes
}

// waitServing waits until the server at addr presents the Secret's
// certificate and the configuration trusts its CA.
func (e *env) waitServing(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var last error
		var cfg admissionregistrationv1.MutatingWebhookConfiguration
		if err := e.cli.Get(context.Background(), types.NamespacedName{Name: injectConfig}, &cfg); err != nil {
			t.Fatal(err)
		}
		got, err := servedCert(addr)
		switch {
		case err != nil:
			last = err
		case len(cfg.Webhooks[0].ClientConfig.CABundle) == 0:
			last = fmt.Errorf("no caBundle")
		default:
			_, want := e.secretCert(t)
			if bytes.Equal(got, want) {
				return
			}
			last = fmt.Errorf("served certificate is not the Secret's")
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook at %s not serving within 20s: %v", addr, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestInjection registers the controller's webhook with a real API server
// and creates Pods through it: injection in a labelled namespace for a Pod
// a zerohop Service selects, nothing elsewhere, Pods with the gate left
// as they are, one Secret shared by a second replica, and Pod creation
// unhindered once the webhook is down.
func TestInjection(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.namespace(t, injectCtrlNS, nil)
	const on, off = "zh-inject-on", "zh-inject-off"
	e.namespace(t, on, map[string]string{controller.LabelGateInjection: controller.GateInjectionEnabled})
	e.namespace(t, off, nil)
	e.namespace(t, "zh-inject-other", map[string]string{controller.LabelGateInjection: "disabled"})
	// No controller-manager here to make the namespaces' ServiceAccounts.
	for _, ns := range []string{injectCtrlNS, on, off, "zh-inject-other"} {
		if err := e.cli.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"}}); err != nil {
			t.Fatal(err)
		}
	}
	addr := freeLoopbackAddr(t)
	e.injectionWebhook(t, addr)
	// Services exist before the Pods, as the rule needs; no pool: the
	// rule does not wait for an address.
	e.svc(t, on, "web")
	e.svc(t, off, "web")
	e.svc(t, "zh-inject-other", "web")
	e.svc(t, on, "plain", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeClusterIP
		s.Spec.LoadBalancerClass = nil
		s.Spec.AllocateLoadBalancerNodePorts = nil
	})
	e.svc(t, on, "elsewhere", func(s *corev1.Service) {
		other := "example.com/lb"
		s.Spec.LoadBalancerClass = &other
	})

	stop := e.startController(t, controller.Options{LeaderElection: true, LeaderElectionID: fmt.Sprintf("zh-inject-%d", time.Now().UnixNano()),
		Injection: injectionOptions(t, addr)})
	e.waitServing(t, addr)
	secret, _ := e.secretCert(t)

	// The controller's cache may not hold the Services yet when it
	// first serves: dry runs (the webhook has no side effects) until a
	// Pod the Service selects comes back gated.
	deadline := time.Now().Add(20 * time.Second)
	for {
		p := testPod(on, "probe", map[string]string{"app": "web"})
		if err := e.cli.Create(ctx, p, client.DryRunAll); err != nil {
			t.Fatal(err)
		}
		if gated(p) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no injection within 20s of the webhook serving")
		}
		time.Sleep(100 * time.Millisecond)
	}

	other := corev1.PodReadinessGate{ConditionType: "example.com/other"}
	ours := corev1.PodReadinessGate{ConditionType: controller.ConditionLoadBalancerReady}
	tests := []struct {
		name       string
		pod        *corev1.Pod
		wantLabels map[string]string
		wantGates  []corev1.PodReadinessGate
	}{
		{"labelled namespace, selected by a zerohop Service",
			testPod(on, "a", map[string]string{"app": "web"}),
			map[string]string{"app": "web", controller.LabelReadinessGate: "true"}, []corev1.PodReadinessGate{ours}},
		{"other gates kept",
			testPod(on, "b", map[string]string{"app": "web", "tier": "x"}, other),
			map[string]string{"app": "web", "tier": "x", controller.LabelReadinessGate: "true"}, []corev1.PodReadinessGate{other, ours}},
		{"unlabelled namespace",
			testPod(off, "c", map[string]string{"app": "web"}),
			map[string]string{"app": "web"}, nil},
		{"namespace label with another value",
			testPod("zh-inject-other", "d", map[string]string{"app": "web"}),
			map[string]string{"app": "web"}, nil},
		{"the controller's own namespace",
			testPod(injectCtrlNS, "e", map[string]string{"app": "web"}),
			map[string]string{"app": "web"}, nil},
		{"selected by no zerohop Service",
			testPod(on, "f", map[string]string{"app": "plain"}),
			map[string]string{"app": "plain"}, nil},
		{"selected by another class's Service",
			testPod(on, "g", map[string]string{"app": "elsewhere"}),
			map[string]string{"app": "elsewhere"}, nil},
		{"gate already there, without the label: unchanged",
			testPod(on, "h", map[string]string{"app": "web"}, other, ours),
			map[string]string{"app": "web"}, []corev1.PodReadinessGate{other, ours}},
		{"gate and label already there: unchanged",
			testPod(on, "i", map[string]string{"app": "web", controller.LabelReadinessGate: "yes"}, ours),
			map[string]string{"app": "web", controller.LabelReadinessGate: "yes"}, []corev1.PodReadinessGate{ours}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := e.cli.Create(ctx, tc.pod); err != nil {
				t.Fatalf("create pod %s/%s: %v", tc.pod.Namespace, tc.pod.Name, err)
			}
			var got corev1.Pod
			if err := e.cli.Get(ctx, client.ObjectKeyFromObject(tc.pod), &got); err != nil {
				t.Fatal(err)
			}
			if !maps(got.Labels, tc.wantLabels) {
				t.Errorf("labels %v, want %v", got.Labels, tc.wantLabels)
			}
			if !slices.Equal(got.Spec.ReadinessGates, tc.wantGates) {
				t.Errorf("readinessGates %v, want %v", got.Spec.ReadinessGates, tc.wantGates)
			}
		})
	}

	// A second replica (a standby: the first leads) serves the same
	// Secret's certificate and does not rewrite it.
	addr2 := freeLoopbackAddr(t)
	opts2 := controller.Options{LeaderElection: true, LeaderElectionID: "zh-inject-second", Injection: injectionOptions(t, addr2)}
	stop2 := e.startController(t, opts2)
	e.waitServing(t, addr2)
	again, _ := e.secretCert(t)
	if again.UID != secret.UID || again.ResourceVersion != secret.ResourceVersion {
		t.Errorf("second replica replaced the Secret (uid %s→%s, resourceVersion %s→%s)", secret.UID, again.UID, secret.ResourceVersion, again.ResourceVersion)
	}

	// Both down: the API server cannot reach the webhook, and
	// failurePolicy Ignore lets the Pod through unchanged, within the
	// configured timeout.
	stop()
	stop2()
	p := testPod(on, "down", map[string]string{"app": "web"})
	start := time.Now()
	if err := e.cli.Create(ctx, p); err != nil {
		t.Fatalf("create pod with the webhook down: %v", err)
	}
	down := time.Since(start).Round(time.Millisecond)
	if down > injectTimeout*time.Second+time.Second {
		t.Errorf("pod creation with the webhook down took %v, more than the %ds timeout", down, injectTimeout)
	}
	if gated(p) {
		t.Error("pod gated with the webhook down")
	}

	// A webhook that accepts connections and never answers holds the
	// creation for the timeout, no longer.
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				_ = c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	p = testPod(on, "hung", map[string]string{"app": "web"})
	start = time.Now()
	if err := e.cli.Create(ctx, p); err != nil {
		t.Fatalf("create pod with the webhook hung: %v", err)
	}
	took := time.Since(start)
	if took > injectTimeout*time.Second+2*time.Second {
		t.Errorf("pod creation with the webhook hung took %v, more than the %ds timeout", took, injectTimeout)
	}
	if gated(p) {
		t.Error("pod gated with the webhook hung")
	}
	t.Logf("pod creation: webhook down %v, webhook hung %v (timeoutSeconds %d)", down, took.Round(time.Millisecond), injectTimeout)
}

func maps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
