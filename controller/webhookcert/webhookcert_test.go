package webhookcert_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/zerohop/zerohop/controller/webhookcert"
	"github.com/zerohop/zerohop/internal/apiserver"
	"github.com/zerohop/zerohop/internal/kubescheme"
)

const ns = "zh-cert"

type clock struct{ t atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.t.Load()) }
func (c *clock) advance(d time.Duration) { c.t.Add(int64(d)) }
func newClock(t time.Time) *clock        { c := &clock{}; c.t.Store(t.UnixNano()); return c }
func pemCerts(t *testing.T, p []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, p = pem.Decode(p)
		if b == nil {
			return out
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

func setup(t *testing.T) client.Client {
	t.Helper()
	srv := apiserver.ForTest(t)
	cli, err := client.New(srv.Config, client.Options{Scheme: kubescheme.New()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := cli.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	none := admissionregistrationv1.SideEffectClassNone
	url := "https://127.0.0.1:1/x"
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "zh-cert-test"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{
			{Name: "a.zerohop.io", SideEffects: &none, AdmissionReviewVersions: []string{"v1"}, ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url}},
			{Name: "b.zerohop.io", SideEffects: &none, AdmissionReviewVersions: []string{"v1"}, ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url}},
		},
	}
	if err := cli.Create(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	return cli
}

func secret(t *testing.T, cli client.Client, name string) *corev1.Secret {
	t.Helper()
	var s corev1.Secret
	if err := cli.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &s); err != nil {
		t.Fatal(err)
	}
	return &s
}

func caBundles(t *testing.T, cli client.Client) [][]byte {
	t.Helper()
	var cfg admissionregistrationv1.MutatingWebhookConfiguration
	if err := cli.Get(context.Background(), types.NamespacedName{Name: "zh-cert-test"}, &cfg); err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, w := range cfg.Webhooks {
		out = append(out, w.ClientConfig.CABundle)
	}
	return out
}

func served(t *testing.T, k *webhookcert.Keeper) []byte {
	t.Helper()
	c, err := k.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	return c.Certificate[0]
}

// TestKeeper runs the certificate keeping against a real API server:
// replicas racing to create the Secret end up serving one certificate,
// the CA lands in every webhook's caBundle, and the serving certificate
// and then the CA are renewed as the clock nears their expiry, the old CA
// staying trusted while it is valid.
func TestKeeper(t *testing.T) {
	cli := setup(t)
	ctx := context.Background()
	clk := newClock(time.Now())
	const validity = 30 * 24 * time.Hour
	opts := webhookcert.Options{Namespace: ns, Secret: "zh-webhook-cert", Configuration: "zh-cert-test",
		Hosts: []string{"zerohop-webhook.zerohop-system.svc", "127.0.0.1"}, Validity: validity, Now: clk.now}

	var keepers []*webhookcert.Keeper
	for range 4 {
		keepers = append(keepers, webhookcert.New(cli, opts))
	}
	if _, err := keepers[0].GetCertificate(nil); err == nil {
		t.Fatal("a Keeper that has not read the Secret serves a certificate")
	}
	var wg sync.WaitGroup
	errs := make([]error, len(keepers))
	for i, k := range keepers {
		wg.Add(1)
		go func() { defer wg.Done(); _, errs[i] = k.Sync(ctx) }()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
	}
	sec := secret(t, cli, opts.Secret)
	leaf := pemCerts(t, sec.Data[webhookcert.KeyCert])[0]
	for i, k := range keepers {
		if !bytes.Equal(served(t, k), leaf.Raw) {
			t.Errorf("replica %d serves another certificate than the Secret's", i)
		}
	}
	cas := pemCerts(t, sec.Data[webhookcert.KeyCABundle])
	if len(cas) != 1 {
		t.Fatalf("fresh CA bundle holds %d certificates, want 1", len(cas))
	}
	if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("serving key is %v, want ECDSA P-256", leaf.PublicKeyAlgorithm)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cas[0])
	for _, h := range opts.Hosts {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: h, CurrentTime: clk.now()}); err != nil {
			t.Errorf("serving certificate for %s: %v", h, err)
		}
	}
	for i, b := range caBundles(t, cli) {
		if !bytes.Equal(b, sec.Data[webhookcert.KeyCABundle]) {
			t.Errorf("webhook %d: caBundle is not the Secret's CA", i)
		}
	}

	// Not yet due: a sync changes nothing.
	clk.advance(validity / 2)
	next, err := keepers[1].Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rv := secret(t, cli, opts.Secret).ResourceVersion; rv != sec.ResourceVersion {
		t.Errorf("Secret written (resourceVersion %s → %s) before renewal was due", sec.ResourceVersion, rv)
	}
	if next > webhookcert.DefaultCheck {
		t.Errorf("next check in %v, want at most %v", next, webhookcert.DefaultCheck)
	}

	// Two thirds of the serving certificate's life: renewed under the
	// same CA, and every replica picks it up at its next check.
	clk.advance(validity/6 + time.Minute)
	if _, err := keepers[2].Sync(ctx); err != nil {
		t.Fatal(err)
	}
	sec2 := secret(t, cli, opts.Secret)
	leaf2 := pemCerts(t, sec2.Data[webhookcert.KeyCert])[0]
	if leaf2.Equal(leaf) {
		t.Fatal("serving certificate not renewed after two thirds of its life")
	}
	if !leaf2.NotAfter.After(leaf.NotAfter) {
		t.Errorf("renewed certificate expires %v, not after the old one's %v", leaf2.NotAfter, leaf.NotAfter)
	}
	if !bytes.Equal(sec2.Data[webhookcert.KeyCABundle], sec.Data[webhookcert.KeyCABundle]) {
		t.Error("CA replaced although it was not due")
	}
	for i, k := range keepers {
		if _, err := k.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(served(t, k), leaf2.Raw) {
			t.Errorf("replica %d does not serve the renewed certificate", i)
		}
	}
	if rv := secret(t, cli, opts.Secret).ResourceVersion; rv != sec2.ResourceVersion {
		t.Errorf("replicas rewrote the renewed Secret (resourceVersion %s → %s)", sec2.ResourceVersion, rv)
	}

	// Two thirds of the CA's life: a new CA, the old one kept in the
	// bundle (it is still valid), the serving certificate under the new.
	clk.advance(10*validity*2/3 - validity*2/3)
	if _, err := keepers[3].Sync(ctx); err != nil {
		t.Fatal(err)
	}
	sec3 := secret(t, cli, opts.Secret)
	cas3 := pemCerts(t, sec3.Data[webhookcert.KeyCABundle])
	if len(cas3) != 2 || cas3[0].Equal(cas[0]) || !cas3[1].Equal(cas[0]) {
		t.Fatalf("CA bundle after the CA's renewal: %d certificates, want the new CA then the old", len(cas3))
	}
	leaf3 := pemCerts(t, sec3.Data[webhookcert.KeyCert])[0]
	if err := leaf3.CheckSignatureFrom(cas3[0]); err != nil {
		t.Errorf("serving certificate not signed by the new CA: %v", err)
	}
	for i, b := range caBundles(t, cli) {
		if !bytes.Equal(b, sec3.Data[webhookcert.KeyCABundle]) {
			t.Errorf("webhook %d: caBundle not updated to the renewed bundle", i)
		}
	}
	// Replicas serve the previous certificate until their next check,
	// which the old CA in the bundle keeps trusted; then the new one.
	if !bytes.Equal(served(t, keepers[0]), leaf2.Raw) {
		t.Fatal("replica 0 changed its certificate without a check")
	}
	if _, err := keepers[0].Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(served(t, keepers[0]), leaf3.Raw) {
		t.Error("replica 0 does not serve the certificate of the new CA after its check")
	}
	if !bytes.Equal(caBundles(t, cli)[0], sec3.Data[webhookcert.KeyCABundle]) {
		t.Error("a replica's check changed the renewed caBundle")
	}

	// A Secret that does not parse is replaced.
	sec3.Data[webhookcert.KeyCert] = []byte("garbage")
	if err := cli.Update(ctx, sec3); err != nil {
		t.Fatal(err)
	}
	if _, err := keepers[0].Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := pemCerts(t, secret(t, cli, opts.Secret).Data[webhookcert.KeyCert]); len(got) != 1 || !bytes.Equal(served(t, keepers[0]), got[0].Raw) {
		t.Error("a damaged Secret was not replaced by a served certificate")
	}
}

// TestKeeperRenewsOnTime runs Start with a serving certificate of a few
// seconds: it is renewed, without any other trigger, once two thirds of
// its life have passed, and the new one is served.
func TestKeeperRenewsOnTime(t *testing.T) {
	cli := setup(t)
	const validity = 3 * time.Second
	k := webhookcert.New(cli, webhookcert.Options{Namespace: ns, Secret: "zh-short", Configuration: "zh-cert-test",
		Hosts: []string{"127.0.0.1"}, Validity: validity})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	var first *x509.Certificate
	deadline := time.Now().Add(10 * time.Second)
	for first == nil {
		if c, err := k.GetCertificate(nil); err == nil {
			first, _ = x509.ParseCertificate(c.Certificate[0])
		}
		if time.Now().After(deadline) {
			t.Fatal("no certificate served within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for {
		c, err := k.GetCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(c.Certificate[0], first.Raw) {
			now := time.Now()
			// x509 times have whole seconds: allow one either side.
			due := first.NotAfter.Add(-validity / 3)
			if now.Before(due.Add(-time.Second)) {
				t.Errorf("renewed at %v, before two thirds of the life (%v)", now, due)
			}
			if !bytes.Equal(c.Certificate[0], pemCerts(t, secret(t, cli, "zh-short").Data[webhookcert.KeyCert])[0].Raw) {
				t.Error("served certificate is not the Secret's")
			}
			return
		}
		if time.Now().After(first.NotAfter.Add(time.Second)) {
			t.Fatalf("certificate expiring %v not renewed by %v", first.NotAfter, time.Now())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
