// Package metricsauth decides how zerohop's components serve /metrics:
// over HTTPS, with every request's bearer token checked by the API server
// (a TokenReview) and its right to GET the path checked too (a
// SubjectAccessReview on the non-resource URL), as controller-runtime's
// metrics filters do. Each speaker's metrics name the cluster's peers,
// VIPs and Services, so anyone who can reach a node must not read them.
// Plain HTTP is there only when asked for by name.
//
// The filter is written here on client-go's review clients rather than
// taken from controller-runtime, whose filter would link k8s.io/apiserver
// (CEL, OpenTelemetry, konnectivity) into the product binary.
package metricsauth

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// Certificate and key file names in Serving.CertDir, as in a
// kubernetes.io/tls Secret mounted as a volume.
const (
	CertName = "tls.crt"
	KeyName  = "tls.key"
)

// Serving says how a component serves its metrics.
type Serving struct {
	// Addr is the listen address; "0" or "" disables the endpoint.
	Addr string
	// PlainHTTP serves without TLS, authentication or authorization.
	PlainHTTP bool
	// CertDir holds tls.crt and tls.key (reloaded when they change);
	// empty: a self-signed certificate made at start.
	CertDir string
}

// Options returns controller-runtime's metrics server options. A CertDir
// without both files is refused: controller-runtime would otherwise fall
// back to a self-signed certificate without a word, and a Prometheus that
// checks the CA would fail to scrape with no clue why.
func (s Serving) Options() (metricsserver.Options, error) {
	if s.Addr == "" {
		s.Addr = "0"
	}
	o := metricsserver.Options{BindAddress: s.Addr}
	if s.PlainHTTP || s.Addr == "0" {
		return o, nil
	}
	o.SecureServing = true
	o.FilterProvider = Filter
	if s.CertDir != "" {
		for _, f := range []string{CertName, KeyName} {
			if _, err := os.Stat(filepath.Join(s.CertDir, f)); err != nil {
				return o, fmt.Errorf("metrics certificate directory %s: %w", s.CertDir, err)
			}
		}
		o.CertDir, o.CertName, o.KeyName = s.CertDir, CertName, KeyName
	}
	return o, nil
}

// Answers are cached so that a scrape every few seconds costs the API
// server two reviews a minute, not two per scrape; a refusal is kept
// shorter so a newly bound role works soon.
const (
	allowTTL  = time.Minute
	denyTTL   = 10 * time.Second
	reviewFor = 10 * time.Second
	maxCached = 1024
)

// Filter is a metricsserver.Options.FilterProvider: it answers 401 to a
// request without a valid bearer token and 403 to a token whose user may
// not GET the path, and passes the rest on.
func Filter(cfg *rest.Config, hc *http.Client) (metricsserver.Filter, error) {
	cs, err := kubernetes.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("metrics authentication: %w", err)
	}
	a := &authorizer{reviews: cs, cache: map[cacheKey]verdict{}}
	return func(log logr.Logger, next http.Handler) (http.Handler, error) {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			token, ok := bearer(req)
			if !ok {
				http.Error(w, "Unauthorized: a bearer token is required", http.StatusUnauthorized)
				return
			}
			v, err := a.decide(req, token)
			if err != nil {
				log.Error(err, "metrics request: review failed")
				http.Error(w, "could not review the token", http.StatusInternalServerError)
				return
			}
			switch {
			case !v.authenticated:
				http.Error(w, "Unauthorized", http.StatusUnauthorized)
			case !v.allowed:
				log.V(4).Info("metrics request refused", "user", v.user, "path", req.URL.Path)
				http.Error(w, fmt.Sprintf("Forbidden: user %s may not get %s", v.user, req.URL.Path), http.StatusForbidden)
			default:
				next.ServeHTTP(w, req)
			}
		}), nil
	}, nil
}

func bearer(req *http.Request) (string, bool) {
	h := req.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

type cacheKey struct {
	token      [sha256.Size]byte
	verb, path string
}

type verdict struct {
	authenticated, allowed bool
	user                   string
	until                  time.Time
}

type authorizer struct {
	reviews kubernetes.Interface
	mu      sync.Mutex
	cache   map[cacheKey]verdict
}

func (a *authorizer) decide(req *http.Request, token string) (verdict, error) {
	key := cacheKey{token: sha256.Sum256([]byte(token)), verb: strings.ToLower(req.Method), path: req.URL.Path}
	now := time.Now()
	a.mu.Lock()
	v, ok := a.cache[key]
	a.mu.Unlock()
	if ok && now.Before(v.until) {
		return v, nil
	}
	v, err := a.review(req, token, key)
	if err != nil {
		return v, err
	}
	v.until = now.Add(denyTTL)
	if v.allowed {
		v.until = now.Add(allowTTL)
	}
	a.mu.Lock()
	if len(a.cache) >= maxCached {
		clear(a.cache)
	}
	a.cache[key] = v
	a.mu.Unlock()
	return v, nil
}

func (a *authorizer) review(req *http.Request, token string, key cacheKey) (verdict, error) {
	ctx, cancel := context.WithTimeout(req.Context(), reviewFor)
	defer cancel()
	tr, err := a.reviews.AuthenticationV1().TokenReviews().Create(ctx,
		&authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return verdict{}, fmt.Errorf("tokenreview: %w", err)
	}
	if !tr.Status.Authenticated {
		return verdict{}, nil
	}
	u := tr.Status.User
	extra := map[string]authzv1.ExtraValue{}
	for k, v := range u.Extra {
		extra[k] = authzv1.ExtraValue(v)
	}
	sar, err := a.reviews.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{
		Spec: authzv1.SubjectAccessReviewSpec{
			User: u.Username, Groups: u.Groups, UID: u.UID, Extra: extra,
			NonResourceAttributes: &authzv1.NonResourceAttributes{Path: key.path, Verb: key.verb},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return verdict{}, fmt.Errorf("subjectaccessreview for %s: %w", u.Username, err)
	}
	return verdict{authenticated: true, allowed: sar.Status.Allowed, user: u.Username}, nil
}
