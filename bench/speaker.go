package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/zerohop/zerohop/bpf"
	"github.com/zerohop/zerohop/e2e/lab"
)

// The speaker's Services live in their own namespace, so that nothing else
// in the lab's API server is mistaken for them.
const (
	// speakerMemoryLimit is the chart's default speaker memory limit
	// (charts/zerohop/values.yaml), which it passes on as GOMEMLIMIT.
	speakerMemoryLimit = 256 << 20
	speakerSvcNS       = "bench-cp"
	speakerNS          = "zerohop-system"
)

// SpeakerSync is the real speaker's initial sync of many Services.
type SpeakerSync struct {
	Services       int     `json:"services"`
	Endpoints      int     `json:"endpoints_per_service"`
	ReadyEndpoints int     `json:"ready_endpoints_per_service"`
	CreateSec      float64 `json:"api_create_s"` // writing the objects (not part of the sync)
	SyncSec        float64 `json:"sync_s"`       // speaker start until every entry is in the maps
	RSSMiB         float64 `json:"rss_mib"`
	PeakMiB        float64 `json:"peak_rss_mib"`
	CPUSec         float64 `json:"cpu_s"` // the speaker's user+system time at that point
	// Go heap after the largest and the last GC (GODEBUG=gctrace=1): what
	// the speaker really holds, against what RSS adds on top.
	LiveHeapMaxMiB  float64 `json:"live_heap_max_mib"`
	LiveHeapLastMiB float64 `json:"live_heap_last_mib"`
	InMaps          int     `json:"in_maps"`
	BackendsInMaps  int     `json:"backends_in_maps"`
}

// buildZerohop builds cmd/zerohop into dir ($GO, default go).
func buildZerohop(ctx context.Context, dir string) (string, error) {
	goBin := os.Getenv("GO")
	if goBin == "" {
		goBin = "go"
	}
	bin := filepath.Join(dir, "zerohop")
	out, err := exec.CommandContext(ctx, goBin, "build", "-o", bin, "github.com/zerohop/zerohop/cmd/zerohop").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build zerohop: %w: %s", err, out)
	}
	return bin, nil
}

// speakerObjects is what the EndpointSlice controller and zerohop's
// controller would have written for one filler Service: a LoadBalancer
// Service (traffic policy Cluster, no node ports) with its VIP in status,
// and one IPv4 slice of endpoints on the benchmark node, of which the
// first ready are ready and the rest neither ready nor serving.
//
// Why not policy Local: a Local LoadBalancer Service takes a health-check
// node port, and the API server's default range has 2,768 of them.
// Endpoints that are not ready (with ready < eps) are translated and left
// out, as a rollout's would be.
func speakerObjects(i int, s Service, ready int) (*corev1.Service, *discoveryv1.EndpointSlice) {
	name := fmt.Sprintf("cp-%d", i)
	port := "tcp"
	proto := corev1.ProtocolTCP
	target := int32(s.Endpoints[0].Port())
	noNodePorts := false
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: speakerSvcNS, Name: name},
		Spec: corev1.ServiceSpec{
			Type:                          corev1.ServiceTypeLoadBalancer,
			AllocateLoadBalancerNodePorts: &noNodePorts,
			Ports: []corev1.ServicePort{{Name: port, Port: int32(s.Port), Protocol: proto,
				TargetPort: intstr.FromInt32(target)}},
		},
	}
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: speakerSvcNS, Name: name + "-bench",
			Labels: map[string]string{discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: "zh-bench"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &port, Port: &target, Protocol: &proto}},
	}
	node := lab.NodeName(benchNode)
	for j, ep := range s.Endpoints {
		ok := j < ready
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{ep.Addr().String()},
			Conditions: discoveryv1.EndpointConditions{Ready: &ok, Serving: &ok},
			NodeName:   &node,
		})
	}
	return svc, es
}

// createSpeakerServices writes n Services (as Fillers) with their slices
// and status through the lab's API server, from many goroutines.
func createSpeakerServices(ctx context.Context, cfg *rest.Config, n, eps, ready int) error {
	c := rest.CopyConfig(cfg)
	// The objects are written once, as fast as the API server takes them.
	c.QPS, c.Burst = 1e6, 1e6
	cs, err := kubernetes.NewForConfig(c)
	if err != nil {
		return err
	}
	for _, ns := range []string{speakerSvcNS, speakerNS} {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("namespace %s: %w", ns, err)
		}
	}
	fillers := Fillers(n, eps)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				svc, es := speakerObjects(i, fillers[i], ready)
				got, err := cs.CoreV1().Services(speakerSvcNS).Create(ctx, svc, metav1.CreateOptions{})
				if err == nil {
					_, err = cs.DiscoveryV1().EndpointSlices(speakerSvcNS).Create(ctx, es, metav1.CreateOptions{})
				}
				if err == nil {
					got.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: fillers[i].VIP.String()}}
					_, err = cs.CoreV1().Services(speakerSvcNS).UpdateStatus(ctx, got, metav1.UpdateOptions{})
				}
				if err != nil {
					errs <- fmt.Errorf("service %s/%s: %w", speakerSvcNS, svc.Name, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// RunSpeakerSync writes n Services of eps endpoints (ready of them ready)
// into the API, then starts a real `zerohop speaker` on the node and
// times it until its maps hold every Service, and reads its memory. With
// heapOut it also saves the speaker's heap profile there, to see what the
// memory is.
func (t *Topology) RunSpeakerSync(ctx context.Context, n, eps, ready int, logDir, heapOut string) (*SpeakerSync, error) {
	if t.Lab.APIServer() == nil || t.Lab.RESTConfig == nil {
		return nil, errors.New("the lab has no API server")
	}
	ready = min(ready, eps)
	bin := t.Zerohop
	if bin == "" {
		var err error
		if bin, err = buildZerohop(ctx, logDir); err != nil {
			return nil, err
		}
	}
	r := &SpeakerSync{Services: n, Endpoints: eps, ReadyEndpoints: ready}
	t0 := time.Now()
	if err := createSpeakerServices(ctx, t.Lab.RESTConfig, n, eps, ready); err != nil {
		return nil, err
	}
	r.CreateSec = time.Since(t0).Seconds()

	root := lab.SpeakerPinRoot(benchNode)
	logPath := filepath.Join(logDir, "speaker.log")
	start := time.Now()
	// Only the Services' uplink: the bench's measured VIP is not in the
	// API, so the speaker never competes with the datapath contenders.
	// Sized as a user would size it (the chart's speaker.datapathLimits)
	// when n*ready outgrows the default 65,536 backends, and with the
	// GOMEMLIMIT the chart derives from its default memory limit.
	args := []string{"--uplink", lab.UplinkIf,
		"--max-backends", strconv.Itoa(max(65536, n*ready+n*ready/4)),
		"--max-services", strconv.Itoa(max(16384, n+n/4))}
	const pprofAddr = "127.0.0.1:7479" // in the node's namespace
	if heapOut != "" {
		args = append(args, "--pprof-bind-address", pprofAddr)
	}
	cmd, err := t.Lab.StartSpeaker(bin, benchNode, speakerNS, logPath, args,
		[]string{"GODEBUG=gctrace=1", "GOMEMLIMIT=" + strconv.Itoa(speakerMemoryLimit)})
	if err != nil {
		return nil, err
	}
	// exited is closed when the speaker has exited, with waitErr set.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		// The pins outlive the speaker by design; the next contender
		// must not find them on the uplink.
		if out, err := exec.Command(bin, "speaker", "--cleanup", "--bpf-pin-root", root).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: speaker cleanup: %v: %s\n", err, out)
		}
	}()

	deadline := time.Now().Add(5 * time.Minute)
	for {
		select {
		case <-exited:
			return nil, fmt.Errorf("speaker exited after %s: %v; log: %s", time.Since(start).Round(time.Millisecond), waitErr, logTail(logPath))
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
		snap, err := bpf.Inspect(root)
		if err == nil && len(snap.Services) >= n {
			r.SyncSec = time.Since(start).Seconds()
			r.InMaps = len(snap.Services)
			for _, s := range snap.Services {
				r.BackendsInMaps += len(s.Backends)
			}
			break
		}
		if time.Now().After(deadline) {
			got := 0
			if snap != nil {
				got = len(snap.Services)
			}
			return nil, fmt.Errorf("speaker: %d of %d services in its maps after %s (inspect: %v); log: %s",
				got, n, time.Since(start).Round(time.Second), err, logTail(logPath))
		}
	}
	rss, hwm, err := pidMem(cmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	r.RSSMiB, r.PeakMiB = float64(rss)/(1<<20), float64(hwm)/(1<<20)
	if r.CPUSec, err = pidCPU(cmd.Process.Pid); err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(logPath); err == nil {
		r.LiveHeapMaxMiB, r.LiveHeapLastMiB = liveHeap(string(b))
	}
	if heapOut != "" {
		argv := append(lab.NetnsCommand(lab.NodeName(benchNode)), "curl", "-sSf", "-o", heapOut, "http://"+pprofAddr+"/debug/pprof/heap?gc=1")
		if out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput(); err != nil {
			return r, fmt.Errorf("speaker heap profile: %w: %s", err, out)
		}
		fmt.Fprintf(os.Stderr, "bench: speaker heap profile in %s (go tool pprof -top %s)\n", heapOut, heapOut)
	}
	if want := n * ready; r.BackendsInMaps != want {
		return r, fmt.Errorf("speaker: %d backends in its maps, want %d", r.BackendsInMaps, want)
	}
	return r, nil
}

// pidCPU is a process's user+system time in seconds (/proc/<pid>/stat).
func pidCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14, stime 15.
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	var ticks uint64
	for _, s := range f[11:13] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, err
		}
		ticks += v
	}
	return float64(ticks) / 100, nil // USER_HZ
}

// logTail is the end of a log file, for errors.
func logTail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// liveHeap reads gctrace lines ("gc 7 @1.2s 3%: ..., 40->42->21 MB, 44 MB
// goal, ...") and returns the largest and the last heap left after a GC.
func liveHeap(log string) (maxMiB, lastMiB float64) {
	for line := range strings.SplitSeq(log, "\n") {
		if !strings.HasPrefix(line, "gc ") {
			continue
		}
		for f := range strings.SplitSeq(line, ", ") {
			v, ok := strings.CutSuffix(f, " MB")
			if !ok || strings.Count(v, "->") != 2 {
				continue
			}
			live, err := strconv.ParseFloat(v[strings.LastIndex(v, "->")+2:], 64)
			if err != nil {
				continue
			}
			// gctrace's MB are MiB (the runtime divides by 1<<20).
			lastMiB = live
			maxMiB = max(maxMiB, live)
		}
	}
	return maxMiB, lastMiB
}
