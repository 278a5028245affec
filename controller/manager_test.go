package controller_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/zerohop/zerohop/controller"
)

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

func httpGet(url string) (int, string, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestManagerEndpoints runs the controller as deployed: leader election
// on, health probes and metrics served; checks the Lease, /readyz and the
// zerohop_ series after one allocation.
func TestManagerEndpoints(t *testing.T) {
	e := newEnv(t)
	e.namespace(t, "zerohop-system", nil)
	const ns = "zh-mgr"
	e.namespace(t, ns, nil)
	metrics, health := freeLoopbackAddr(t), freeLoopbackAddr(t)
	lease := fmt.Sprintf("zh-test-%d", time.Now().UnixNano())
	stop := e.startController(t, controller.Options{
		LeaderElection:   true,
		LeaderElectionID: lease,
		MetricsAddr:      metrics,
		MetricsPlainHTTP: true,
		HealthAddr:       health,
	})
	defer stop()
	// Ready without any Service or pool: the leader loads on election.
	eventually(t, waitFor, func() string {
		code, body, err := httpGet("http://" + health + "/readyz")
		if err != nil || code != http.StatusOK {
			return fmt.Sprintf("/readyz before any object: %d %q %v", code, body, err)
		}
		return ""
	})
	e.pool(t, "mgr-pool", []string{"192.0.2.64/29", "2001:db8:64::/125"})
	e.svc(t, ns, "web")
	e.waitIPs(t, ns, "web", "192.0.2.64")

	var l coordinationv1.Lease
	if err := e.cli.Get(t.Context(), types.NamespacedName{Namespace: "zerohop-system", Name: lease}, &l); err != nil {
		t.Fatalf("leader-election lease: %v", err)
	}
	if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
		t.Fatalf("lease without holder: %+v", l.Spec)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		eventually(t, waitFor, func() string {
			code, body, err := httpGet("http://" + health + path)
			if err != nil || code != http.StatusOK {
				return fmt.Sprintf("%s: %d %q %v", path, code, body, err)
			}
			return ""
		})
	}
	eventually(t, waitFor, func() string {
		_, body, err := httpGet("http://" + metrics + "/metrics")
		if err != nil {
			return err.Error()
		}
		for _, want := range []string{
			`zerohop_allocations_total{pool="mgr-pool"}`,
			`zerohop_pool_addresses{family="IPv4",pool="mgr-pool"} 8`,
			`zerohop_pool_addresses{family="IPv6",pool="mgr-pool"} 8`,
			`zerohop_pool_addresses_assigned{family="IPv4",pool="mgr-pool"} 1`,
			`zerohop_service_reconcile_seconds_count`,
		} {
			if !strings.Contains(body, want) {
				return "metrics lack " + want
			}
		}
		return ""
	})
}
