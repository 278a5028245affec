package metricsauth_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/zerohop/zerohop/internal/apiserver"
	"github.com/zerohop/zerohop/internal/metricsauth"
)

// TestFilter serves a handler behind the filter, with a real API server
// reviewing the tokens: no token and a forged one are 401, a
// ServiceAccount without the scrape role is 403, and one bound to a
// ClusterRole allowing GET on /metrics reads it (and only with GET).
func TestFilter(t *testing.T) {
	srv := apiserver.ForTest(t)
	ctx := t.Context()
	cs, err := kubernetes.NewForConfig(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := rest.HTTPClientFor(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	filter, err := metricsauth.Filter(srv.Config, hc)
	if err != nil {
		t.Fatal(err)
	}
	h, err := filter(logr.Discard(), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "zerohop_up 1\n")
	}))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	defer ts.Close()

	token := func(name string) string {
		cfg, err := srv.ServiceAccountConfig(ctx, "zh-metrics", name)
		if err != nil {
			t.Fatal(err)
		}
		return cfg.BearerToken
	}
	reader, stranger := token("scraper"), token("stranger")
	bindMetricsReader(t, ctx, cs, "zh-metrics", "scraper")

	tests := []struct {
		name, method, path, token string
		want                      int
	}{
		{"no token", http.MethodGet, "/metrics", "", http.StatusUnauthorized},
		{"forged token", http.MethodGet, "/metrics", "not-a-token", http.StatusUnauthorized},
		{"no role", http.MethodGet, "/metrics", stranger, http.StatusForbidden},
		{"scrape role", http.MethodGet, "/metrics", reader, http.StatusOK},
		{"scrape role, again (cached)", http.MethodGet, "/metrics", reader, http.StatusOK},
		{"scrape role, other verb", http.MethodPost, "/metrics", reader, http.StatusForbidden},
		{"scrape role, other path", http.MethodGet, "/debug", reader, http.StatusForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(ctx, tc.method, ts.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("%s %s: HTTP %d %q, want %d", tc.method, tc.path, resp.StatusCode, body, tc.want)
			}
			if tc.want == http.StatusOK && !strings.Contains(string(body), "zerohop_up 1") {
				t.Fatalf("body %q: the handler did not run", body)
			}
			if tc.want != http.StatusOK && strings.Contains(string(body), "zerohop_up") {
				t.Fatalf("refused request got the metrics: %q", body)
			}
		})
	}
}

// bindMetricsReader grants namespace/name what the chart's metrics-reader
// ClusterRole grants.
func bindMetricsReader(t *testing.T, ctx context.Context, cs kubernetes.Interface, namespace, name string) {
	t.Helper()
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "zh-metrics-reader"},
		Rules: []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	b := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "zh-metrics-reader"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: namespace, Name: name}}}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, b, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestServingOptions(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, metricsauth.CertName), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	full := t.TempDir()
	for _, f := range []string{metricsauth.CertName, metricsauth.KeyName} {
		if err := os.WriteFile(filepath.Join(full, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name             string
		in               metricsauth.Serving
		secure, filtered bool
		certDir          string
		wantErr          string
	}{
		{name: "default is secure", in: metricsauth.Serving{Addr: ":7472"}, secure: true, filtered: true},
		{name: "plain by choice", in: metricsauth.Serving{Addr: ":7472", PlainHTTP: true}},
		{name: "disabled", in: metricsauth.Serving{Addr: "0"}},
		{name: "empty is disabled", in: metricsauth.Serving{}},
		{name: "user certificate", in: metricsauth.Serving{Addr: ":7472", CertDir: full}, secure: true, filtered: true, certDir: full},
		{name: "certificate without key", in: metricsauth.Serving{Addr: ":7472", CertDir: dir}, wantErr: metricsauth.KeyName},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := tc.in.Options()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o.SecureServing != tc.secure || (o.FilterProvider != nil) != tc.filtered || o.CertDir != tc.certDir {
				t.Fatalf("secure %v filtered %v certDir %q; want %v %v %q", o.SecureServing, o.FilterProvider != nil, o.CertDir, tc.secure, tc.filtered, tc.certDir)
			}
		})
	}
}
