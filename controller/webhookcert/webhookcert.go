// Package webhookcert keeps the serving certificate of the controller's
// admission webhook without cert-manager: a CA and a serving certificate
// (ECDSA P-256) held in one Secret, which every controller replica serves
// from; the CA is written into the webhook configuration's caBundle, and
// both are renewed before they expire (docs/readiness-gate.md).
package webhookcert

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Keys of the Secret.
const (
	// KeyCABundle holds the current CA first, then older CAs that have
	// not expired: a replica still serving a certificate of the previous
	// CA stays trusted until it has read the new one.
	KeyCABundle = "ca.crt"
	KeyCAKey    = "ca.key"
	KeyCert     = "tls.crt"
	KeyKey      = "tls.key"
)

// DefaultValidity is the serving certificate's lifetime; the CA lives
// caLifetimes times longer.
const DefaultValidity = 365 * 24 * time.Hour

const caLifetimes = 10

// DefaultCheck is how often a replica re-reads the Secret, so that it
// serves what another replica renewed.
const DefaultCheck = time.Minute

// Options name the objects and the certificate's contents.
type Options struct {
	// Namespace and Secret name the Secret that holds the certificates.
	Namespace, Secret string
	// Configuration is the MutatingWebhookConfiguration whose webhooks
	// get the CA as caBundle; empty: none is written.
	Configuration string
	// Hosts are the DNS names and IP addresses the serving certificate
	// is valid for (the webhook Service's name, or 127.0.0.1 in tests).
	Hosts []string
	// Validity is the serving certificate's lifetime; 0 means
	// DefaultValidity. Each is renewed once two thirds of its life have
	// passed.
	Validity time.Duration
	// Check is how often the Secret is re-read; 0 means DefaultCheck.
	Check time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	Log logr.Logger
}

// Keeper creates, renews and serves the certificate. Every replica runs
// one; they agree through the Secret's resourceVersion.
type Keeper struct {
	opts Options
	cli  client.Client
	cert atomic.Pointer[tls.Certificate]
}

// New returns a Keeper that reads and writes through cli, which should
// not be a cache (the Secret is read by name only, the one right the
// controller has on Secrets besides create).
func New(cli client.Client, opts Options) *Keeper {
	if opts.Validity <= 0 {
		opts.Validity = DefaultValidity
	}
	if opts.Check <= 0 {
		opts.Check = DefaultCheck
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Keeper{opts: opts, cli: cli}
}

// GetCertificate serves the Secret's certificate (tls.Config's
// GetCertificate). Until the Secret has been read the handshake fails,
// which the webhook's failurePolicy Ignore turns into an unmutated Pod.
func (k *Keeper) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := k.cert.Load()
	if c == nil {
		return nil, fmt.Errorf("webhook certificate: secret %s/%s not loaded yet", k.opts.Namespace, k.opts.Secret)
	}
	return c, nil
}

// NeedLeaderElection is false: every replica serves the webhook.
func (k *Keeper) NeedLeaderElection() bool { return false }

// Start keeps the certificate until ctx ends.
func (k *Keeper) Start(ctx context.Context) error {
	for {
		next, err := k.Sync(ctx)
		if err != nil {
			k.opts.Log.Error(err, "webhook certificate")
			next = min(next, 5*time.Second)
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// Sync makes sure the Secret holds a current certificate, serves it and
// writes the CA into the webhook configuration. It returns when to look
// again.
func (k *Keeper) Sync(ctx context.Context) (time.Duration, error) {
	b, err := k.ensureSecret(ctx)
	if err != nil {
		return k.opts.Check, err
	}
	pair, err := tls.X509KeyPair(b.cert, b.key)
	if err != nil {
		return k.opts.Check, fmt.Errorf("secret %s/%s: %w", k.opts.Namespace, k.opts.Secret, err)
	}
	k.cert.Store(&pair)
	next := min(k.opts.Check, max(b.renewAt(k.opts.Validity).Sub(k.opts.Now()), 0)+10*time.Millisecond)
	if err := k.writeCABundle(ctx, b.caBundle); err != nil {
		return next, err
	}
	return next, nil
}

// bundle is the Secret's contents, parsed.
type bundle struct {
	caBundle, caKey, cert, key []byte
	ca                         *x509.Certificate // the current CA
	caSigner                   *ecdsa.PrivateKey
	leaf                       *x509.Certificate
}

// ensureSecret reads the Secret and creates or renews it when needed. A
// create or update that loses to another replica (AlreadyExists,
// Conflict) reads again and takes what that replica wrote.
func (k *Keeper) ensureSecret(ctx context.Context) (*bundle, error) {
	key := types.NamespacedName{Namespace: k.opts.Namespace, Name: k.opts.Secret}
	for range 5 {
		var sec corev1.Secret
		err := k.cli.Get(ctx, key, &sec)
		if apierrors.IsNotFound(err) {
			b, err := k.issue(nil)
			if err != nil {
				return nil, fmt.Errorf("secret %s: %w", key, err)
			}
			sec = corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}, Type: corev1.SecretTypeOpaque, Data: b.data()}
			err = k.cli.Create(ctx, &sec)
			if apierrors.IsAlreadyExists(err) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("create secret %s: %w", key, err)
			}
			k.opts.Log.Info("webhook certificate created", "secret", key.String(), "notAfter", b.leaf.NotAfter)
			return b, nil
		}
		if err != nil {
			return nil, fmt.Errorf("get secret %s: %w", key, err)
		}
		old, perr := parse(sec.Data)
		if perr == nil && !old.due(k.opts.Now(), k.opts.Validity, k.opts.Hosts) {
			return old, nil
		}
		why := "renewal due"
		if perr != nil {
			why, old = perr.Error(), nil
		}
		b, err := k.issue(old)
		if err != nil {
			return nil, fmt.Errorf("secret %s: %w", key, err)
		}
		sec.Data = b.data()
		err = k.cli.Update(ctx, &sec)
		if apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("update secret %s: %w", key, err)
		}
		k.opts.Log.Info("webhook certificate renewed", "secret", key.String(), "why", why, "notAfter", b.leaf.NotAfter)
		return b, nil
	}
	return nil, fmt.Errorf("secret %s: still conflicting after 5 attempts", key)
}

// renewAt is when the serving certificate or the CA has lived two thirds
// of its life, whichever comes first.
func (b *bundle) renewAt(validity time.Duration) time.Time {
	leaf := b.leaf.NotAfter.Add(-validity / 3)
	ca := b.ca.NotAfter.Add(-caLifetimes * validity / 3)
	if ca.Before(leaf) {
		return ca
	}
	return leaf
}

// due reports whether the bundle must be renewed: near expiry, or the
// serving certificate does not name every host.
func (b *bundle) due(now time.Time, validity time.Duration, hosts []string) bool {
	if !now.Before(b.renewAt(validity)) {
		return true
	}
	for _, h := range hosts {
		if b.leaf.VerifyHostname(h) != nil {
			return true
		}
	}
	return false
}

func (b *bundle) data() map[string][]byte {
	return map[string][]byte{KeyCABundle: b.caBundle, KeyCAKey: b.caKey, KeyCert: b.cert, KeyKey: b.key}
}

// parse reads a Secret's data and checks that the serving certificate
// belongs to its key and is signed by the current CA.
func parse(data map[string][]byte) (*bundle, error) {
	b := &bundle{caBundle: data[KeyCABundle], caKey: data[KeyCAKey], cert: data[KeyCert], key: data[KeyKey]}
	cas, err := certs(b.caBundle)
	if err != nil || len(cas) == 0 {
		return nil, fmt.Errorf("%s: no certificate (%v)", KeyCABundle, err)
	}
	b.ca = cas[0]
	if b.caSigner, err = parseKey(b.caKey); err != nil {
		return nil, fmt.Errorf("%s: %w", KeyCAKey, err)
	}
	if !b.caSigner.PublicKey.Equal(b.ca.PublicKey) {
		return nil, fmt.Errorf("%s does not belong to the first certificate of %s", KeyCAKey, KeyCABundle)
	}
	leaves, err := certs(b.cert)
	if err != nil || len(leaves) == 0 {
		return nil, fmt.Errorf("%s: no certificate (%v)", KeyCert, err)
	}
	b.leaf = leaves[0]
	if _, err := tls.X509KeyPair(b.cert, b.key); err != nil {
		return nil, fmt.Errorf("%s and %s: %w", KeyCert, KeyKey, err)
	}
	if err := b.leaf.CheckSignatureFrom(b.ca); err != nil {
		return nil, fmt.Errorf("%s not signed by the current CA: %w", KeyCert, err)
	}
	return b, nil
}

// issue makes a serving certificate, under old's CA when that CA is not
// due itself, otherwise under a new CA; the bundle keeps the old CAs that
// are still valid.
func (k *Keeper) issue(old *bundle) (*bundle, error) {
	now := k.opts.Now()
	b := &bundle{}
	if old != nil && now.Before(old.ca.NotAfter.Add(-caLifetimes*k.opts.Validity/3)) {
		b.ca, b.caSigner, b.caKey, b.caBundle = old.ca, old.caSigner, old.caKey, old.caBundle
	} else {
		var err error
		if b.caSigner, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, fmt.Errorf("CA key: %w", err)
		}
		tmpl := &x509.Certificate{
			Subject:               pkix.Name{CommonName: "zerohop-webhook-ca"},
			NotBefore:             now.Add(-time.Hour),
			NotAfter:              now.Add(caLifetimes * k.opts.Validity),
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
			BasicConstraintsValid: true,
			IsCA:                  true,
		}
		if b.ca, err = sign(tmpl, tmpl, &b.caSigner.PublicKey, b.caSigner); err != nil {
			return nil, fmt.Errorf("CA: %w", err)
		}
		if b.caKey, err = encodeKey(b.caSigner); err != nil {
			return nil, err
		}
		b.caBundle = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.ca.Raw})
		if old != nil {
			prev, _ := certs(old.caBundle)
			for _, c := range prev {
				if now.Before(c.NotAfter) {
					b.caBundle = append(b.caBundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
				}
			}
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("serving key: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "zerohop-webhook"},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(k.opts.Validity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if tmpl.NotAfter.After(b.ca.NotAfter) {
		tmpl.NotAfter = b.ca.NotAfter
	}
	for _, h := range k.opts.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if b.leaf, err = sign(tmpl, b.ca, &key.PublicKey, b.caSigner); err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	b.cert = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.leaf.Raw})
	if b.key, err = encodeKey(key); err != nil {
		return nil, err
	}
	return b, nil
}

func sign(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func encodeKey(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

func parseKey(p []byte) (*ecdsa.PrivateKey, error) {
	blk, _ := pem.Decode(p)
	if blk == nil {
		return nil, errors.New("no PEM block")
	}
	return x509.ParseECPrivateKey(blk.Bytes)
}

func certs(p []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, p = pem.Decode(p)
		if blk == nil {
			return out, nil
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
}

// writeCABundle sets the CA bundle on every webhook of the configuration
// that lacks it. A configuration not installed yet is not an error: the
// next check writes it. Replicas writing the same bundle at once conflict;
// the loser reads again and finds it written.
func (k *Keeper) writeCABundle(ctx context.Context, caBundle []byte) error {
	if k.opts.Configuration == "" {
		return nil
	}
	mine, err := certs(caBundle)
	if err != nil || len(mine) == 0 {
		return fmt.Errorf("secret %s/%s: %s: no certificate (%v)", k.opts.Namespace, k.opts.Secret, KeyCABundle, err)
	}
	for range 5 {
		var cfg admissionregistrationv1.MutatingWebhookConfiguration
		if err := k.cli.Get(ctx, types.NamespacedName{Name: k.opts.Configuration}, &cfg); err != nil {
			if apierrors.IsNotFound(err) {
				k.opts.Log.V(1).Info("webhook configuration not found", "name", k.opts.Configuration)
				return nil
			}
			return fmt.Errorf("get mutatingwebhookconfiguration %s: %w", k.opts.Configuration, err)
		}
		if !slices.ContainsFunc(cfg.Webhooks, func(w admissionregistrationv1.MutatingWebhook) bool {
			return !bytes.Equal(w.ClientConfig.CABundle, caBundle)
		}) {
			return nil
		}
		// A replica that read the Secret just before another renewed
		// the CA must not put the older bundle back: a bundle written
		// there that holds a CA younger than ours is left alone until
		// our next read of the Secret.
		for _, w := range cfg.Webhooks {
			there, _ := certs(w.ClientConfig.CABundle)
			if slices.ContainsFunc(there, func(c *x509.Certificate) bool { return c.NotBefore.After(mine[0].NotBefore) }) {
				return fmt.Errorf("mutatingwebhookconfiguration %s: holds a CA younger than secret %s/%s as read; reading again",
					k.opts.Configuration, k.opts.Namespace, k.opts.Secret)
			}
		}
		for i := range cfg.Webhooks {
			cfg.Webhooks[i].ClientConfig.CABundle = caBundle
		}
		// The update carries the resourceVersion read, so that the
		// check above holds for what it replaces.
		err := k.cli.Update(ctx, &cfg)
		if apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("update mutatingwebhookconfiguration %s: %w", k.opts.Configuration, err)
		}
		k.opts.Log.Info("webhook CA bundle written", "configuration", k.opts.Configuration)
		return nil
	}
	return fmt.Errorf("mutatingwebhookconfiguration %s: still conflicting after 5 attempts", k.opts.Configuration)
}
