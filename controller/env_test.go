package controller_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2/textlogger"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/controller"
	"github.com/zerohop/zerohop/internal/apiserver"
)

func TestMain(m *testing.M) {
	// ZEROHOP_TEST_LOG=1 shows the controller's log.
	if os.Getenv("ZEROHOP_TEST_LOG") != "" {
		ctrl.SetLogger(textlogger.NewLogger(textlogger.NewConfig(textlogger.Verbosity(4))))
	} else {
		ctrl.SetLogger(logr.Discard())
	}
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	os.Exit(m.Run())
}

// env is one API server shared by the subtests of a test.
type env struct {
	srv *apiserver.Server
	cfg *rest.Config
	cli client.Client // uncached: tests read what the API server has
	// running counts controllers started and not yet stopped.
	running atomic.Int32
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := apiserver.ForTest(t)
	cfg := rest.CopyConfig(srv.Config)
	cfg.QPS, cfg.Burst = 1000, 2000
	cli, err := client.New(cfg, client.Options{Scheme: controller.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return &env{srv: srv, cfg: cfg, cli: cli}
}

// startController runs a controller in-process until the returned stop is
// called (also at cleanup).
func (e *env) startController(t testing.TB, opts controller.Options) (stop func()) {
	t.Helper()
	c, err := controller.New(e.cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Start(ctx) }()
	e.running.Add(1)
	var once sync.Once
	stop = func() {
		once.Do(func() {
			e.running.Add(-1)
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("controller stopped with error: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("controller did not stop within 30s")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func (e *env) namespace(t testing.TB, name string, labels map[string]string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if err := e.cli.Create(context.Background(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

func (e *env) pool(t testing.TB, name string, addrs []string, mut ...func(*v1alpha1.IPAddressPool)) *v1alpha1.IPAddressPool {
	t.Helper()
	p := &v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for _, a := range addrs {
		p.Spec.Addresses = append(p.Spec.Addresses, v1alpha1.Address(a))
	}
	for _, m := range mut {
		m(p)
	}
	if err := e.cli.Create(context.Background(), p); err != nil {
		t.Fatalf("create pool %s: %v", name, err)
	}
	t.Cleanup(func() { _ = e.cli.Delete(context.Background(), p) })
	// With a controller running, wait until it has taken the pool in (it
	// writes the pool's conditions), so that a Service created next is
	// allocated with this pool known, as a user who applied the pool
	// first expects.
	if e.running.Load() == 0 {
		return p
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var got v1alpha1.IPAddressPool
		if err := e.cli.Get(context.Background(), client.ObjectKeyFromObject(p), &got); err == nil && len(got.Status.Conditions) > 0 {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool %s: controller wrote no status within 20s", name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func lbService(ns, name string, mut ...func(*corev1.Service)) *corev1.Service {
	class := controller.Class
	no := false
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{}},
		Spec: corev1.ServiceSpec{
			Type:              corev1.ServiceTypeLoadBalancer,
			LoadBalancerClass: &class,
			// NodePorts are a scarce range and irrelevant to zerohop.
			AllocateLoadBalancerNodePorts: &no,
			Selector:                      map[string]string{"app": name},
			Ports:                         []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}},
		},
	}
	for _, m := range mut {
		m(svc)
	}
	return svc
}

func (e *env) svc(t testing.TB, ns, name string, mut ...func(*corev1.Service)) *corev1.Service {
	t.Helper()
	svc := lbService(ns, name, mut...)
	if err := e.cli.Create(context.Background(), svc); err != nil {
		t.Fatalf("create service %s/%s: %v", ns, name, err)
	}
	return svc
}

func (e *env) update(t testing.TB, ns, name string, mut func(*corev1.Service)) {
	t.Helper()
	for range 20 {
		var svc corev1.Service
		if err := e.cli.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &svc); err != nil {
			t.Fatal(err)
		}
		mut(&svc)
		err := e.cli.Update(context.Background(), &svc)
		if err == nil {
			return
		}
		if !apierrors.IsConflict(err) {
			t.Fatalf("update %s/%s: %v", ns, name, err)
		}
	}
	t.Fatalf("update %s/%s: too many conflicts", ns, name)
}

func (e *env) getSvc(t testing.TB, ns, name string) *corev1.Service {
	t.Helper()
	var svc corev1.Service
	if err := e.cli.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &svc); err != nil {
		t.Fatal(err)
	}
	return &svc
}

func ingressIPs(svc *corev1.Service) []string {
	var out []string
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		out = append(out, ing.IP)
	}
	return out
}

const waitFor = 20 * time.Second

// eventually polls f until it returns "" (success) or the time is up, and
// then fails with f's last complaint.
func eventually(t testing.TB, d time.Duration, f func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		msg := f()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitIPs waits until the Service's status lists exactly want (in order),
// each with ipMode VIP.
func (e *env) waitIPs(t testing.TB, ns, name string, want ...string) {
	t.Helper()
	eventually(t, waitFor, func() string {
		svc := e.getSvc(t, ns, name)
		got := ingressIPs(svc)
		if !slices.Equal(got, want) {
			return fmt.Sprintf("%s/%s ingress %v, want %v", ns, name, got, want)
		}
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			if ing.IPMode == nil || *ing.IPMode != corev1.LoadBalancerIPModeVIP {
				return fmt.Sprintf("%s/%s ingress %s without ipMode VIP", ns, name, ing.IP)
			}
		}
		return ""
	})
}

// holdIPs checks the Service keeps exactly want for d: used to assert
// that nothing happens (no allocation, no move).
func (e *env) holdIPs(t testing.TB, d time.Duration, ns, name string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if got := ingressIPs(e.getSvc(t, ns, name)); !slices.Equal(got, want) {
			t.Fatalf("%s/%s ingress changed to %v, want it to stay %v", ns, name, got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (e *env) events(t testing.TB, ns, name string) []eventsv1.Event {
	t.Helper()
	var list eventsv1.EventList
	if err := e.cli.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var out []eventsv1.Event
	for _, ev := range list.Items {
		if ev.Regarding.Name == name {
			out = append(out, ev)
		}
	}
	return out
}

// waitEvent waits for an Event on object ns/name with the reason whose
// note contains every one of parts.
func (e *env) waitEvent(t testing.TB, ns, name, reason string, parts ...string) {
	t.Helper()
	eventually(t, waitFor, func() string {
		evs := e.events(t, ns, name)
		var seen []string
		for _, ev := range evs {
			seen = append(seen, ev.Reason+": "+ev.Note)
			if ev.Reason != reason {
				continue
			}
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(ev.Note, p)
			}
			if ok {
				return ""
			}
		}
		return fmt.Sprintf("no %s event on %s/%s containing %q; events: %q", reason, ns, name, parts, seen)
	})
}

func (e *env) noEvents(t testing.TB, ns, name string) {
	t.Helper()
	if evs := e.events(t, ns, name); len(evs) > 0 {
		t.Fatalf("unexpected events on %s/%s: %s: %s", ns, name, evs[0].Reason, evs[0].Note)
	}
}

func (e *env) getPool(t testing.TB, name string) *v1alpha1.IPAddressPool {
	t.Helper()
	var p v1alpha1.IPAddressPool
	if err := e.cli.Get(context.Background(), types.NamespacedName{Name: name}, &p); err != nil {
		t.Fatal(err)
	}
	return &p
}

func (e *env) waitPool(t testing.TB, name string, check func(*v1alpha1.IPAddressPool) string) {
	t.Helper()
	eventually(t, waitFor, func() string { return check(e.getPool(t, name)) })
}

func poolCondition(p *v1alpha1.IPAddressPool, typ string) *metav1.Condition {
	return meta.FindStatusCondition(p.Status.Conditions, typ)
}

func (e *env) deleteSvc(t testing.TB, ns, name string) {
	t.Helper()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if err := e.cli.Delete(context.Background(), svc); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
}

// deleteAllServices removes every Service in ns (namespaces are not
// garbage-collected without kube-controller-manager).
func (e *env) deleteAllServices(t testing.TB, ns string) {
	t.Helper()
	// Services have no deletecollection verb: one by one.
	var list corev1.ServiceList
	if err := e.cli.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatalf("list services in %s: %v", ns, err)
	}
	for i := range list.Items {
		if err := e.cli.Delete(context.Background(), &list.Items[i]); err != nil && !apierrors.IsNotFound(err) {
			t.Fatalf("delete service: %v", err)
		}
	}
}

func clientKey(name string) types.NamespacedName { return types.NamespacedName{Name: name} }

// create makes a cluster-scoped object for one scenario and deletes it at
// the end.
func create(t testing.TB, e *env, obj client.Object) {
	t.Helper()
	if err := e.cli.Create(context.Background(), obj); err != nil {
		t.Fatalf("create %s: %v", obj.GetName(), err)
	}
	t.Cleanup(func() { _ = e.cli.Delete(context.Background(), obj) })
}

// waitAccepted waits until the object's Accepted condition has status and
// returns the condition.
func (e *env) waitAccepted(t testing.TB, obj client.Object, name string, status metav1.ConditionStatus) metav1.Condition {
	t.Helper()
	var got metav1.Condition
	eventually(t, waitFor, func() string {
		if err := e.cli.Get(context.Background(), client.ObjectKey{Name: name}, obj); err != nil {
			return err.Error()
		}
		var conds []metav1.Condition
		switch o := obj.(type) {
		case *v1alpha1.BGPPeer:
			conds = o.Status.Conditions
		case *v1alpha1.BGPAdvertisement:
			conds = o.Status.Conditions
		}
		c := meta.FindStatusCondition(conds, v1alpha1.ConditionAccepted)
		if c == nil || c.Status != status {
			return fmt.Sprintf("%s conditions %+v, want Accepted=%s", name, conds, status)
		}
		got = *c
		return ""
	})
	return got
}
