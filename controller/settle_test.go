package controller_test

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/zerohop/zerohop/config/v1alpha1"
)

// settleScenarios are the scenarios for the pool order and the settled
// view of the pools; TestScenarios runs them with the others.
func settleScenarios() []scenario {
	return []scenario{
		// A pool whose serviceAllocation admits the Service is tried
		// before a pool open to every Service, without a priority and
		// whatever the names, as in MetalLB; a Service the restricted pool
		// does not admit gets the open pool.
		{name: "restricted pools come before pools open to every Service", run: func(t *testing.T, e *env, s *sc) {
			other := s.ns + "-x"
			e.namespace(t, other, nil)
			t.Cleanup(func() { e.deleteAllServices(t, other) })
			e.pool(t, s.pool("aa-open"), []string{"192.0.2.0/30"})
			e.pool(t, s.pool("zz-team"), []string{"198.51.100.0/30"}, alloc(v1alpha1.ServiceAllocation{Namespaces: []string{s.ns}}))
			e.svc(t, s.ns, "web")
			e.svc(t, other, "web")
			e.waitIPs(t, s.ns, "web", "198.51.100.0")
			e.waitIPs(t, other, "web", "192.0.2.0")
			if got := e.getSvc(t, s.ns, "web").Annotations[v1alpha1.AnnotationAllocatedFrom]; got != s.pool("zz-team") {
				t.Errorf("recorded pool %q, want %s", got, s.pool("zz-team"))
			}
		}},
		{name: "a Service and its pool applied together: the Service gets that pool", run: settledPoolView},
		{name: "pools applied one after the other while a Service waits: it gets the best", run: settleAfterPoolChange},
	}
}

// settledPoolView creates a Service and the higher-priority pool meant for
// it in the same instant, many times over, next to an open pool that
// admits every Service: whichever object the API server or the watches
// deliver first, the Service must get its address from its own pool, never
// the open pool (an address, once given, does not move). Then the same
// with the Service created just before its pool, as tools that apply
// Services before custom resources do (Helm's install order, for one).
func settledPoolView(t *testing.T, e *env, s *sc) {
	e.pool(t, s.pool("open"), []string{"203.0.113.0/24"})
	const concurrent, serviceFirst = 24, 8
	pairs := concurrent + serviceFirst
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 2*pairs)
	try := func(what string, err error) {
		if err != nil {
			errs <- fmt.Errorf("create %s: %w", what, err)
		}
	}
	for i := range pairs {
		p := &v1alpha1.IPAddressPool{
			ObjectMeta: metav1.ObjectMeta{Name: s.pool(fmt.Sprintf("pair-%02d", i))},
			Spec: v1alpha1.IPAddressPoolSpec{
				Addresses: []v1alpha1.Address{v1alpha1.Address(fmt.Sprintf("198.51.100.%d/32", i))},
				ServiceAllocation: &v1alpha1.ServiceAllocation{Priority: 1, ServiceSelectors: []v1alpha1.LabelSelector{
					{MatchLabels: map[string]string{"pair": fmt.Sprint(i)}},
				}},
			},
		}
		svc := lbService(s.ns, fmt.Sprintf("s%02d", i), func(svc *corev1.Service) {
			svc.Labels = map[string]string{"pair": fmt.Sprint(i)}
		})
		t.Cleanup(func() { _ = e.cli.Delete(ctx, p) })
		if i < concurrent {
			// Both requests leave together.
			start := make(chan struct{})
			wg.Add(2)
			go func() { defer wg.Done(); <-start; try(p.Name, e.cli.Create(ctx, p)) }()
			go func() { defer wg.Done(); <-start; try(svc.Name, e.cli.Create(ctx, svc)) }()
			close(start)
			continue
		}
		// The Service first, its pool a moment later.
		wg.Add(1)
		go func() {
			defer wg.Done()
			try(svc.Name, e.cli.Create(ctx, svc))
			time.Sleep(100 * time.Millisecond)
			try(p.Name, e.cli.Create(ctx, p))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	open := netip.MustParsePrefix("203.0.113.0/24")
	for i := range pairs {
		name := fmt.Sprintf("s%02d", i)
		how := "created together"
		if i >= concurrent {
			how = "Service first"
		}
		var got []string
		eventually(t, waitFor, func() string {
			got = ingressIPs(e.getSvc(t, s.ns, name))
			if len(got) == 0 {
				return fmt.Sprintf("%s has no address yet", name)
			}
			return ""
		})
		want := fmt.Sprintf("198.51.100.%d", i)
		if len(got) != 1 || got[0] != want {
			if ip, err := netip.ParseAddr(got[0]); err == nil && open.Contains(ip) {
				t.Errorf("%s (%s) got %v from the open pool: its own pool was not in the view; want %s", name, how, got, want)
				continue
			}
			t.Errorf("%s (%s) got %v, want %s", name, how, got, want)
			continue
		}
		if from := e.getSvc(t, s.ns, name).Annotations[v1alpha1.AnnotationAllocatedFrom]; from != s.pool(fmt.Sprintf("pair-%02d", i)) {
			t.Errorf("%s records pool %q", name, from)
		}
	}
}

// settleAfterPoolChange: a Service waits for a pool; two pools that admit
// it are applied one after the other, the better one second. The Service
// gets the better one: allocation waits for the pool changes to settle
// instead of taking the first pool it hears of.
func settleAfterPoolChange(t *testing.T, e *env, s *sc) {
	e.svc(t, s.ns, "waiting", func(svc *corev1.Service) { svc.Labels = map[string]string{"wants": "gold"} })
	e.waitEvent(t, s.ns, "waiting", "NoPool")
	gold := []v1alpha1.LabelSelector{{MatchLabels: map[string]string{"wants": "gold"}}}
	for _, p := range []*v1alpha1.IPAddressPool{
		{ObjectMeta: metav1.ObjectMeta{Name: s.pool("second-best")}, Spec: v1alpha1.IPAddressPoolSpec{
			Addresses:         []v1alpha1.Address{"192.0.2.0/30"},
			ServiceAllocation: &v1alpha1.ServiceAllocation{Priority: 20, ServiceSelectors: gold}}},
		{ObjectMeta: metav1.ObjectMeta{Name: s.pool("best")}, Spec: v1alpha1.IPAddressPoolSpec{
			Addresses:         []v1alpha1.Address{"198.51.100.0/30"},
			ServiceAllocation: &v1alpha1.ServiceAllocation{Priority: 10, ServiceSelectors: gold}}},
	} {
		create(t, e, p)
		time.Sleep(100 * time.Millisecond)
	}
	e.waitIPs(t, s.ns, "waiting", "198.51.100.0")
	e.holdIPs(t, 500*time.Millisecond, s.ns, "waiting", "198.51.100.0")
}
