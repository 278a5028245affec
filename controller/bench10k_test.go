//go:build bench

package controller_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/controller"
)

// peakRSS reads VmHWM (peak resident set) of pid in KiB.
func peakRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmHWM for pid %d", pid)
}

// TestBench10k is `make bench-controller`, which sets the build tag bench
// so that it runs only there: 10,000 Services across three
// pools, a controller in its own process. It prints the time from the last
// create to the last status write seen, and the controller's peak RSS. It
// asserts only correctness (every Service gets a distinct IP); the numbers
// are for the report.
func TestBench10k(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("ZEROHOP_BENCH_SERVICES"))
	if n == 0 {
		n = 10000
	}
	e := newEnv(t)
	const ns = "zh-bench"
	e.namespace(t, ns, nil)
	// Each pool holds 65,536 IPv6 and some IPv4 documentation addresses;
	// the Services are IPv6 single stack because the IPv4 documentation
	// ranges hold only 768 addresses.
	pools := []string{"bench-a", "bench-b", "bench-c"}
	for i, p := range pools {
		e.pool(t, p, []string{fmt.Sprintf("2001:db8:%x::/112", 0xa+i)}, func(p *v1alpha1.IPAddressPool) {
			p.Spec.ServiceAllocation = &v1alpha1.ServiceAllocation{Priority: int32(i + 1)}
		})
	}

	// Watch statuses from this process: the time a status is seen is the
	// time it was written, give or take the watch latency.
	cs, err := kubernetes.NewForConfig(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		assigned = map[string]string{}
		lastSeen time.Time
		count    atomic.Int64
	)
	observe := func(obj any) {
		svc, ok := obj.(*corev1.Service)
		if !ok || len(svc.Status.LoadBalancer.Ingress) == 0 {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if _, seen := assigned[svc.Name]; !seen {
			assigned[svc.Name] = svc.Status.LoadBalancer.Ingress[0].IP
			lastSeen = time.Now()
			count.Add(1)
		}
	}
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns))
	inf := factory.Core().V1().Services().Informer()
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    observe,
		UpdateFunc: func(_, o any) { observe(o) },
	}); err != nil {
		t.Fatal(err)
	}
	stopInf := make(chan struct{})
	defer close(stopInf)
	factory.Start(stopInf)
	factory.WaitForCacheSync(stopInf)

	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("b-%05d", i)
	}
	// All Services exist before the controller starts, so the measured
	// time covers its whole job: start, load, 10k allocations, status
	// writes and Events, without Service creation (which on a shared
	// 2-core machine is limited by etcd) hiding its cost.
	start := time.Now()
	e.createServicesN(t, 32, ns, names, func(i int, svc *corev1.Service) {
		pol := corev1.IPFamilyPolicySingleStack
		svc.Spec.IPFamilyPolicy = &pol
		svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
		if i%3 != 0 {
			svc.Annotations[controller.AnnotationPool] = pools[i%3]
		}
	})
	created := time.Since(start)
	lastCreate := time.Now()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+e.srv.Kubeconfig)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var rssKiB int64
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			t.Logf("controller exit: %v", err)
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Logf("controller killed after 30s: %v", <-exited)
		}
	})

	deadline := time.Now().Add(10 * time.Minute)
	for count.Load() < int64(n) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d Services got an IP within 10 minutes", count.Load(), n)
		}
		select {
		case err := <-exited:
			t.Fatalf("controller exited: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
		if r, err := peakRSS(cmd.Process.Pid); err == nil && r > rssKiB {
			rssKiB = r
		}
	}
	if r, err := peakRSS(cmd.Process.Pid); err == nil && r > rssKiB {
		rssKiB = r
	}
	mu.Lock()
	converge := lastSeen.Sub(lastCreate)
	distinct := map[string]bool{}
	for _, ip := range assigned {
		distinct[ip] = true
	}
	mu.Unlock()
	if len(distinct) != n {
		t.Errorf("%d distinct IPs for %d Services", len(distinct), n)
	}
	t.Logf("bench: %d Services across %d pools", n, len(pools))
	fmt.Printf("bench-controller: services=%d create_s=%.1f last_create_to_last_status_s=%.1f controller_peak_rss_MiB=%.1f\n",
		n, created.Seconds(), converge.Seconds(), float64(rssKiB)/1024)
}
