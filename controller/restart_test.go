package controller_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/zerohop/zerohop/controller"
)

// createServices creates names in ns with a few concurrent writers.
func (e *env) createServices(t testing.TB, ns string, names []string, mut func(i int, svc *corev1.Service)) time.Time {
	return e.createServicesN(t, 8, ns, names, mut)
}

func (e *env) createServicesN(t testing.TB, writers int, ns string, names []string, mut func(i int, svc *corev1.Service)) time.Time {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(names))
	work := make(chan int)
	for range writers {
		wg.Go(func() {
			for i := range work {
				svc := lbService(ns, names[i])
				if mut != nil {
					mut(i, svc)
				}
				if err := e.cli.Create(context.Background(), svc); err != nil {
					errs <- fmt.Errorf("create %s: %w", names[i], err)
				}
			}
		})
	}
	for i := range names {
		work <- i
	}
	close(work)
	wg.Wait()
	last := time.Now()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return last
}

// ipsIn lists every Service in ns with its ingress IPs.
func (e *env) ipsIn(t testing.TB, ns string) map[string][]string {
	t.Helper()
	var list corev1.ServiceList
	if err := e.cli.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for i := range list.Items {
		out[list.Items[i].Name] = ingressIPs(&list.Items[i])
	}
	return out
}

// waitAllAssigned waits until every Service in ns has want IPs.
func (e *env) waitAllAssigned(t testing.TB, ns string, n int, d time.Duration) map[string][]string {
	t.Helper()
	var got map[string][]string
	eventually(t, d, func() string {
		got = e.ipsIn(t, ns)
		done := 0
		for _, ips := range got {
			if len(ips) > 0 {
				done++
			}
		}
		if done != n {
			return fmt.Sprintf("%d of %d Services in %s have IPs", done, n, ns)
		}
		return ""
	})
	return got
}

// TestRestartKeepsIPs allocates 500 Services (single and dual stack, some
// sharing), restarts the controller with Services created while it was
// down and after, and checks that none of the first 500 moved and that no
// IP is held by two Services that may not share.
func TestRestartKeepsIPs(t *testing.T) {
	e := newEnv(t)
	const ns = "zh-restart"
	e.namespace(t, ns, nil)
	e.pool(t, "restart-a", []string{"198.51.100.0/24"})
	e.pool(t, "restart-b", []string{"203.0.113.0/24", "192.0.2.0/25", "2001:db8:1::/120"})

	mut := func(i int, svc *corev1.Service) {
		switch {
		case i%10 == 0:
			pol := corev1.IPFamilyPolicyPreferDualStack
			svc.Spec.IPFamilyPolicy = &pol
			svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
		case i%7 == 0:
			// Pairs that share one IP: distinct ports, same key.
			svc.Annotations[controller.AnnotationShare] = fmt.Sprintf("pair-%d", i/14)
			svc.Spec.Ports[0].Port = int32(1000 + i%14)
		}
	}
	names := func(from, to int) []string {
		var out []string
		for i := from; i < to; i++ {
			out = append(out, fmt.Sprintf("svc-%03d", i))
		}
		return out
	}

	stop := e.startController(t, controller.Options{})
	e.createServices(t, ns, names(0, 500), mut)
	before := e.waitAllAssigned(t, ns, 500, 2*time.Minute)
	stop()

	// Created while no controller runs: the new one must not hand these
	// any of the first 500's addresses.
	e.createServices(t, ns, names(500, 525), func(i int, svc *corev1.Service) { mut(500+i, svc) })
	stop = e.startController(t, controller.Options{})
	defer stop()
	e.createServices(t, ns, names(525, 550), func(i int, svc *corev1.Service) { mut(525+i, svc) })
	after := e.waitAllAssigned(t, ns, 550, 2*time.Minute)

	moved := 0
	for name, ips := range before {
		if !slices.Equal(after[name], ips) {
			moved++
			t.Errorf("%s moved from %v to %v", name, ips, after[name])
		}
	}
	holders := map[string][]string{}
	for name, ips := range after {
		for _, ip := range ips {
			holders[ip] = append(holders[ip], name)
		}
	}
	for ip, hs := range holders {
		if len(hs) == 1 {
			continue
		}
		// Only a sharing pair may hold one IP.
		slices.Sort(hs)
		var keys []string
		for _, h := range hs {
			keys = append(keys, e.getSvc(t, ns, h).Annotations[controller.AnnotationShare])
		}
		if len(hs) > 2 || keys[0] == "" || keys[0] != keys[1] {
			t.Errorf("%s held by %v (keys %v)", ip, hs, keys)
		}
	}
	t.Logf("restart: %d of %d Services moved; %d distinct IPs for 550 Services", moved, len(before), len(holders))
}

// TestFailoverKeepsIPs runs two leader-elected replicas: the standby takes
// over when the leader stops and must keep every assigned IP.
func TestFailoverKeepsIPs(t *testing.T) {
	e := newEnv(t)
	e.namespace(t, "zerohop-system", nil)
	const ns = "zh-failover"
	e.namespace(t, ns, nil)
	e.pool(t, "failover", []string{"198.51.100.0/26"})
	lease := fmt.Sprintf("zh-failover-%d", time.Now().UnixNano())
	opts := controller.Options{LeaderElection: true, LeaderElectionID: lease}
	names := func(from, to int) []string {
		var out []string
		for i := from; i < to; i++ {
			out = append(out, fmt.Sprintf("f-%02d", i))
		}
		return out
	}

	stopA := e.startController(t, opts)
	e.createServices(t, ns, names(0, 20), nil)
	before := e.waitAllAssigned(t, ns, 20, time.Minute)
	stopB := e.startController(t, opts)
	defer stopB()
	// B is standby: it must not write anything while A leads, so the
	// allocations stay A's.
	e.holdIPs(t, 500*time.Millisecond, ns, "f-00", before["f-00"]...)
	stopA()
	e.createServices(t, ns, names(20, 25), nil)
	after := e.waitAllAssigned(t, ns, 25, time.Minute)
	for name, ips := range before {
		if !slices.Equal(after[name], ips) {
			t.Errorf("%s moved from %v to %v on failover", name, ips, after[name])
		}
	}
	seen := map[string]string{}
	for name, ips := range after {
		for _, ip := range ips {
			if prev, dup := seen[ip]; dup {
				t.Errorf("%s held by %s and %s", ip, prev, name)
			}
			seen[ip] = name
		}
	}
}

// TestHandover times the standby's takeover: after the leader stops
// cleanly (SIGTERM in a Pod: ctx cancelled) it must lead within 2 s,
// every time, because the Lease is released on the way out.
func TestHandover(t *testing.T) {
	e := newEnv(t)
	e.namespace(t, "zerohop-system", nil)
	lease := fmt.Sprintf("zh-handover-%d", time.Now().UnixNano())
	opts := controller.Options{LeaderElection: true, LeaderElectionID: lease}
	holder := func() string {
		var l coordinationv1.Lease
		if err := e.cli.Get(context.Background(), types.NamespacedName{Namespace: "zerohop-system", Name: lease}, &l); err != nil || l.Spec.HolderIdentity == nil {
			return ""
		}
		return *l.Spec.HolderIdentity
	}
	const rounds = 5
	var took []time.Duration
	stop := e.startController(t, opts)
	for range rounds {
		eventually(t, 30*time.Second, func() string {
			if holder() == "" {
				return "no leader yet"
			}
			return ""
		})
		leader := holder()
		next := e.startController(t, opts)
		time.Sleep(1500 * time.Millisecond) // the standby is trying
		if h := holder(); h != leader {
			t.Fatalf("the standby took the Lease from a live leader: %q -> %q", leader, h)
		}
		t0 := time.Now()
		stop()
		var d time.Duration
		for time.Since(t0) < 10*time.Second {
			if h := holder(); h != "" && h != leader {
				d = time.Since(t0)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if d == 0 {
			t.Fatalf("no takeover within 10s of a clean stop")
		}
		took = append(took, d)
		stop = next
	}
	t.Logf("takeover after a clean stop, %d rounds: %v", rounds, took)
	for i, d := range took {
		if d >= 2*time.Second {
			t.Errorf("round %d: takeover took %s, want < 2s", i, d)
		}
	}
}
