package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// A podWorker runs one Pod on the stand-in's node, from its start to its
// end, and reports its status. All its state is owned by its goroutine;
// the informer hands it the newest Pod object through update.
type podWorker struct {
	k       *kubelet
	uid     types.UID
	ns      string
	name    string
	updates chan *corev1.Pod // newest object; older ones are dropped
	gone    chan struct{}    // the object was removed (force deletion)
	goneMu  sync.Once
	stop    chan struct{} // node shutdown
	stopMu  sync.Once

	pod        *corev1.Pod
	rec        kubeletPod
	containers []*container
	startTime  metav1.Time
	// conditions' last transitions, kept while their status holds
	transitions map[corev1.PodConditionType]transition
	lastStatus  *corev1.PodStatus

	terminating bool
	deadline    time.Time // SIGKILL at this time while terminating
	byShutdown  bool      // terminated by a node shutdown
}

type transition struct {
	status corev1.ConditionStatus
	at     metav1.Time
}

// container is one running (or restarting) container of a Pod.
type container struct {
	spec     corev1.Container
	proc     Proc
	exited   chan int // exit code of a process this worker started
	running  bool
	started  metav1.Time
	restarts int32
	lastTerm *corev1.ContainerStateTerminated
	waiting  string // reason while not running (ContainerCreating, CrashLoopBackOff, ErrImageNeverPull)
	message  string

	ready      bool
	everReady  bool
	probeOK    int32
	probeFail  int32
	nextProbe  time.Time
	backoff    time.Duration
	restartAt  time.Time
	preStopEnd time.Time
	termSent   bool
}

func newPodWorker(k *kubelet, pod *corev1.Pod) *podWorker {
	return &podWorker{k: k, uid: pod.UID, ns: pod.Namespace, name: pod.Name,
		updates: make(chan *corev1.Pod, 1), gone: make(chan struct{}), stop: make(chan struct{}),
		transitions: map[corev1.PodConditionType]transition{}}
}

func (w *podWorker) update(pod *corev1.Pod) {
	for {
		select {
		case w.updates <- pod:
			return
		default:
			select {
			case <-w.updates:
			default:
			}
		}
	}
}

func (w *podWorker) forget()       { w.goneMu.Do(func() { close(w.gone) }) }
func (w *podWorker) nodeShutdown() { w.stopMu.Do(func() { close(w.stop) }) }

func (w *podWorker) logf(format string, args ...any) {
	w.k.log.Printf("pod %s/%s: "+format, append([]any{w.ns, w.name}, args...)...)
}

// run is the Pod's life on this node.
func (w *podWorker) run(ctx context.Context) {
	w.pod = <-w.updates
	if err := w.setUp(ctx); err != nil {
		w.logf("setup: %v", err)
	}
	tick := time.NewTicker(podStartRetry)
	defer tick.Stop()
	for {
		select {
		case <-w.gone:
			// Deleted with no grace (or by someone else): kill at once.
			w.killAll()
			w.tearDown()
			return
		case <-w.stop:
			if !w.byShutdown {
				w.byShutdown = true
				w.beginTermination(time.Now().Add(min(nodeShutdownGrace, w.graceFromSpec())))
				w.patchDisruption(ctx)
			}
		case pod := <-w.updates:
			w.pod = pod
			if pod.DeletionTimestamp != nil {
				// The grace period counts from now, as kubelet's does
				// (the deletion timestamp has only whole seconds); a
				// later, shorter deletion brings the deadline forward.
				d := time.Now().Add(time.Duration(ptr.Deref(pod.DeletionGracePeriodSeconds, 30)) * time.Second)
				if !w.terminating || d.Before(w.deadline) {
					w.beginTermination(d)
				}
			}
		case <-tick.C:
		}
		for _, c := range w.containers {
			w.step(ctx, c)
		}
		if w.terminating && w.allExited() {
			w.finish(ctx)
			return
		}
		w.report(ctx)
	}
}

// graceFromSpec is the Pod's termination grace period.
func (w *podWorker) graceFromSpec() time.Duration {
	if g := w.pod.Spec.TerminationGracePeriodSeconds; g != nil {
		return time.Duration(*g) * time.Second
	}
	return 30 * time.Second
}

// setUp claims the Pod's addresses, makes and wires its network namespace
// and starts its containers, or adopts what a previous run of the
// stand-in left running.
func (w *podWorker) setUp(ctx context.Context) error {
	rec, adopted, err := w.k.claimPod(w.pod)
	if err != nil {
		return err
	}
	w.rec = rec
	w.startTime = metav1.Now()
	if w.pod.Status.StartTime != nil {
		w.startTime = *w.pod.Status.StartTime
	}
	if !adopted || !nsExists(rec.NetNS) {
		_, _ = run(ctx, "ip", "netns", "del", rec.NetNS) // a half-made one
		if err := addNetns(ctx, rec.NetNS, false); err != nil {
			return err
		}
		if err := wirePod(ctx, rec.NetNS, w.k.name, netip.MustParseAddr(rec.IPv4), netip.MustParseAddr(rec.IPv6)); err != nil {
			return err
		}
	}
	for _, spec := range w.pod.Spec.Containers {
		c := &container{spec: spec, waiting: "ContainerCreating"}
		for _, p := range rec.Procs {
			if p.Name == spec.Name && p.alive() {
				// Adopted: still running since the stand-in's last run.
				c.proc, c.running, c.waiting = p, true, ""
				c.started = w.startTime
				for _, st := range w.pod.Status.ContainerStatuses {
					if st.Name == spec.Name {
						c.restarts = st.RestartCount
						if st.State.Running != nil {
							c.started = st.State.Running.StartedAt
						}
						c.everReady = st.Ready
					}
				}
			}
		}
		w.containers = append(w.containers, c)
	}
	for _, c := range w.containers {
		if !c.running {
			w.start(c)
		}
	}
	return nil
}

// start runs a container's process in the Pod's namespace. It is not a
// child that dies with the stand-in: a stopped kubelet leaves containers
// running.
func (w *podWorker) start(c *container) {
	role, ok := imageRole(c.spec.Image)
	if !ok {
		c.waiting, c.message = "ErrImageNeverPull", fmt.Sprintf("image %q is not in the lab's catalogue", c.spec.Image)
		return
	}
	env := w.env(c.spec)
	argv := append(append([]string{}, w.k.helper...), role)
	for _, a := range c.spec.Args {
		argv = append(argv, expandVars(a, env))
	}
	argv = append([]string{"ip", "netns", "exec", w.rec.NetNS}, argv...)
	logPath := filepath.Join(w.k.logDir, fmt.Sprintf("pod-%s-%s-%s.log", w.ns, w.name, c.spec.Name))
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.waiting, c.message = "RunContainerError", err.Error()
		return
	}
	defer func() { _ = logf.Close() }()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		c.waiting, c.message = "RunContainerError", err.Error()
		return
	}
	exited := make(chan int, 1)
	go func() {
		err := cmd.Wait()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				code = 128 + int(ws.Signal())
			}
		}
		exited <- code
	}()
	p := Proc{Name: c.spec.Name, NS: w.rec.NetNS, PID: cmd.Process.Pid}
	for range 50 {
		if start, _, err := procStart(p.PID); err == nil {
			p.Start = start
			break
		}
		time.Sleep(time.Millisecond)
	}
	c.proc, c.exited, c.running, c.waiting, c.message = p, exited, true, "", ""
	c.started = metav1.Now()
	c.ready, c.probeOK, c.probeFail, c.nextProbe = false, 0, 0, time.Now()
	if err := w.k.setProc(w.uid, p); err != nil {
		w.logf("state: %v", err)
	}
}

// env is a container's environment: its values and the Downward API
// fields the lab's Pods use.
func (w *podWorker) env(spec corev1.Container) map[string]string {
	out := map[string]string{}
	for _, e := range spec.Env {
		v := expandVars(e.Value, out)
		if f := e.ValueFrom; f != nil && f.FieldRef != nil {
			switch f.FieldRef.FieldPath {
			case "metadata.name":
				v = w.pod.Name
			case "metadata.namespace":
				v = w.pod.Namespace
			case "metadata.uid":
				v = string(w.pod.UID)
			case "spec.nodeName":
				v = w.k.name
			case "status.podIP":
				v = w.rec.IPv4
			case "status.podIPs":
				v = w.rec.IPv4 + "," + w.rec.IPv6
			case "status.hostIP":
				n4, _ := NodeAddrs(w.k.node)
				v = n4.String()
			}
		}
		out[e.Name] = v
	}
	return out
}

// expandVars replaces $(NAME) with env's value, as kubelet does in args;
// unknown references stay as written and $$ escapes.
func expandVars(s string, env map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '$' && i+1 < len(s) {
			if s[i+1] == '$' {
				b.WriteByte('$')
				i++
				continue
			}
			if s[i+1] == '(' {
				if j := strings.IndexByte(s[i:], ')'); j > 0 {
					if v, ok := env[s[i+2:i+j]]; ok {
						b.WriteString(v)
						i += j
						continue
					}
				}
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// step advances one container: notices its exit, restarts it after a back
// off, probes it, and walks it through termination.
func (w *podWorker) step(ctx context.Context, c *container) {
	if c.running {
		code, done := -1, false
		select {
		case code = <-c.exited:
			done = true
		default:
			if c.exited == nil && !c.proc.alive() {
				done = true // adopted: its exit code is not ours to read
			}
		}
		if done {
			c.running, c.ready = false, false
			reason := "Error"
			if code == 0 {
				reason = "Completed"
			}
			c.lastTerm = &corev1.ContainerStateTerminated{ExitCode: int32(max(code, 0)), Reason: reason,
				StartedAt: c.started, FinishedAt: metav1.Now(), ContainerID: containerID(c.proc)}
			if code < 0 {
				c.lastTerm.Reason = "Unknown"
			}
			w.logf("container %s exited (%s, code %d)", c.spec.Name, reason, code)
			if !w.terminating && w.restarts(code) {
				if time.Since(c.started.Time) > 10*time.Second {
					c.backoff = 0
				}
				c.backoff = min(max(2*c.backoff, time.Second), 20*time.Second)
				c.restartAt = time.Now().Add(c.backoff)
				c.waiting, c.message = "CrashLoopBackOff", fmt.Sprintf("back-off %s restarting failed container", c.backoff)
			}
		}
	}
	if !c.running && !w.terminating && !c.restartAt.IsZero() && time.Now().After(c.restartAt) {
		c.restartAt = time.Time{}
		c.restarts++
		w.start(c)
	}
	if c.running {
		w.probe(ctx, c)
	}
	if w.terminating && c.running {
		now := time.Now()
		switch {
		case now.After(w.deadline):
			_ = syscall.Kill(c.proc.PID, syscall.SIGKILL)
		case !c.termSent && !now.Before(c.preStopEnd):
			c.termSent = true
			_ = syscall.Kill(c.proc.PID, syscall.SIGTERM)
		}
	}
}

func (w *podWorker) restarts(code int) bool {
	switch w.pod.Spec.RestartPolicy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return code != 0
	}
	return true
}

func containerID(p Proc) string { return fmt.Sprintf("zerohop-lab://%d", p.PID) }

// probe runs a container's readiness probe when it is due: every
// podStartRetry until it first succeeds, then every periodSeconds. A
// container without one is ready once started.
func (w *podWorker) probe(ctx context.Context, c *container) {
	p := c.spec.ReadinessProbe
	if p == nil {
		c.ready, c.everReady = true, true
		return
	}
	now := time.Now()
	if now.Before(c.nextProbe) {
		return
	}
	if !c.everReady && now.Before(c.started.Add(time.Duration(p.InitialDelaySeconds)*time.Second)) {
		return
	}
	err := w.runProbe(ctx, c, p)
	if err == nil {
		c.probeOK, c.probeFail = c.probeOK+1, 0
		if c.probeOK >= max(p.SuccessThreshold, 1) || !c.everReady {
			c.ready, c.everReady = true, true
		}
	} else {
		c.probeOK, c.probeFail = 0, c.probeFail+1
		if c.probeFail >= max(p.FailureThreshold, 1) {
			c.ready = false
		}
	}
	period := time.Duration(max(p.PeriodSeconds, 1)) * time.Second
	if !c.everReady {
		period = podStartRetry
	}
	c.nextProbe = now.Add(period)
}

func (w *podWorker) runProbe(ctx context.Context, c *container, p *corev1.Probe) error {
	timeout := time.Duration(max(p.TimeoutSeconds, 1)) * time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Probes come from the node, as kubelet's do.
	dial := DialerIn(w.k.name)
	switch {
	case p.TCPSocket != nil:
		port, err := containerPort(c.spec, p.TCPSocket.Port)
		if err != nil {
			return err
		}
		conn, err := dial(ctx, "tcp", net.JoinHostPort(w.rec.IPv4, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return conn.Close()
	case p.HTTPGet != nil:
		port, err := containerPort(c.spec, p.HTTPGet.Port)
		if err != nil {
			return err
		}
		client := &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
		url := fmt.Sprintf("http://%s%s", net.JoinHostPort(w.rec.IPv4, strconv.Itoa(port)), p.HTTPGet.Path)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("HTTP probe: %s", resp.Status)
		}
		return nil
	}
	return fmt.Errorf("probe: only tcpSocket and httpGet are supported in the lab")
}

// containerPort resolves a probe's port, by number or by the container
// port's name.
func containerPort(spec corev1.Container, p intstr.IntOrString) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range spec.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("container %s has no port named %q", spec.Name, p.StrVal)
}

// beginTermination starts (or, with an earlier deadline, hurries) the
// Pod's graceful termination: each container's preStop sleep, then
// SIGTERM, then SIGKILL at the deadline.
func (w *podWorker) beginTermination(deadline time.Time) {
	first := !w.terminating
	w.terminating, w.deadline = true, deadline
	if !first {
		return
	}
	w.logf("terminating, grace until %s", deadline.Format(time.RFC3339Nano))
	now := time.Now()
	for _, c := range w.containers {
		c.preStopEnd = now
		if h := c.spec.Lifecycle; h != nil && h.PreStop != nil && h.PreStop.Sleep != nil {
			c.preStopEnd = now.Add(time.Duration(h.PreStop.Sleep.Seconds) * time.Second)
		}
		c.restartAt = time.Time{}
	}
}

func (w *podWorker) allExited() bool {
	for _, c := range w.containers {
		if c.running {
			return false
		}
	}
	return true
}

func (w *podWorker) killAll() {
	for _, c := range w.containers {
		if c.running {
			_ = c.proc.stop(0)
		}
	}
}

// finish ends a terminated Pod: a deleted one's object is removed (kubelet
// confirms the deletion), a node shutdown's is left Failed.
func (w *podWorker) finish(ctx context.Context) {
	w.report(ctx)
	if !w.byShutdown {
		err := w.k.cs.CoreV1().Pods(w.ns).Delete(ctx, w.name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr.To(int64(0)), Preconditions: &metav1.Preconditions{UID: &w.uid}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			w.logf("delete: %v", err)
		}
	}
	w.tearDown()
}

func (w *podWorker) tearDown() {
	if _, err := run(context.Background(), "ip", "netns", "del", w.rec.NetNS); err != nil && nsExists(w.rec.NetNS) {
		w.logf("%v", err)
	}
	w.k.forgetPod(w.uid)
	w.logf("removed")
}

// status is the Pod's status as this stand-in sees it.
func (w *podWorker) status() corev1.PodStatus {
	n4, n6 := NodeAddrs(w.k.node)
	st := corev1.PodStatus{
		Phase:     corev1.PodPending,
		HostIP:    n4.String(),
		HostIPs:   []corev1.HostIP{{IP: n4.String()}, {IP: n6.String()}},
		StartTime: &w.startTime,
	}
	if w.rec.IPv4 != "" {
		st.PodIP = w.rec.IPv4
		st.PodIPs = []corev1.PodIP{{IP: w.rec.IPv4}, {IP: w.rec.IPv6}}
	}
	allRunning, allReady := len(w.containers) > 0, len(w.containers) > 0
	anyRunning := false
	for _, c := range w.containers {
		cs := corev1.ContainerStatus{Name: c.spec.Name, Image: c.spec.Image, ImageID: c.spec.Image,
			RestartCount: c.restarts, LastTerminationState: corev1.ContainerState{Terminated: c.lastTerm},
			Ready: c.running && c.ready, Started: ptr.To(c.running)}
		switch {
		case c.running:
			cs.ContainerID = containerID(c.proc)
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: c.started}
			anyRunning = true
		case w.terminating && c.lastTerm != nil:
			cs.State.Terminated = c.lastTerm
			cs.LastTerminationState = corev1.ContainerState{}
		default:
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: c.waiting, Message: c.message}
		}
		allRunning = allRunning && c.running
		allReady = allReady && c.running && c.ready
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}
	switch {
	case w.byShutdown && !anyRunning:
		st.Phase, st.Reason = corev1.PodFailed, "Terminated"
		st.Message = "Pod was terminated in response to imminent node shutdown."
	case allRunning || (anyRunning && w.everStarted()):
		st.Phase = corev1.PodRunning
	}
	gatesReady := true
	for _, g := range w.pod.Spec.ReadinessGates {
		ok := false
		for _, c := range w.pod.Status.Conditions {
			if c.Type == g.ConditionType && c.Status == corev1.ConditionTrue {
				ok = true
			}
		}
		gatesReady = gatesReady && ok
	}
	cond := func(t corev1.PodConditionType, ok bool, reason string) corev1.PodCondition {
		s := corev1.ConditionFalse
		if ok {
			s, reason = corev1.ConditionTrue, ""
		}
		return corev1.PodCondition{Type: t, Status: s, Reason: reason}
	}
	readyReason := "ContainersNotReady"
	if allReady && !gatesReady {
		readyReason = "ReadinessGatesNotReady"
	}
	st.Conditions = []corev1.PodCondition{
		cond(corev1.PodReadyToStartContainers, nsExists(w.rec.NetNS), ""),
		cond(corev1.PodInitialized, true, ""),
		cond(corev1.ContainersReady, allReady, "ContainersNotReady"),
		cond(corev1.PodReady, allReady && gatesReady, readyReason),
	}
	return st
}

func (w *podWorker) everStarted() bool {
	for _, c := range w.containers {
		if c.restarts > 0 || c.lastTerm != nil {
			return true
		}
	}
	return false
}

// report writes the Pod's status when it changed. It patches only what
// kubelet owns, so the scheduler's PodScheduled and the conditions behind
// readinessGates, which others set, stay as they are.
func (w *podWorker) report(ctx context.Context) {
	st := w.status()
	if w.lastStatus != nil && reflect.DeepEqual(*w.lastStatus, st) && !w.overwritten(st) {
		return
	}
	out := st.DeepCopy()
	now := metav1.Now()
	for i := range out.Conditions {
		c := &out.Conditions[i]
		t, ok := w.transitions[c.Type]
		if !ok || t.status != c.Status {
			t = transition{c.Status, now}
			w.transitions[c.Type] = t
		}
		c.LastTransitionTime = t.at
	}
	patch, err := json.Marshal(map[string]any{"status": out})
	if err != nil {
		return
	}
	_, err = w.k.cs.CoreV1().Pods(w.ns).Patch(ctx, w.name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	switch {
	case err == nil:
		w.lastStatus = &st
	case apierrors.IsNotFound(err):
		w.forget()
	case ctx.Err() == nil:
		w.logf("status: %v", err)
	}
}

// overwritten reports whether someone else changed a condition this
// stand-in owns (the node lifecycle controller marks a Pod not ready when
// it loses the node's heartbeat): kubelet then says again what it sees.
func (w *podWorker) overwritten(st corev1.PodStatus) bool {
	for _, c := range st.Conditions {
		if got := podCondition(w.pod, c.Type); got != "" && got != c.Status {
			return true
		}
	}
	return false
}

// patchDisruption marks the Pod as disrupted by the node's shutdown, as
// kubelet does before it terminates it.
func (w *podWorker) patchDisruption(ctx context.Context) {
	c := corev1.PodCondition{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue,
		Reason: "TerminationByKubelet", Message: "Pod was terminated in response to imminent node shutdown.",
		LastTransitionTime: metav1.Now()}
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.PodCondition{c}}})
	if _, err := w.k.cs.CoreV1().Pods(w.ns).Patch(ctx, w.name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		w.logf("disruption condition: %v", err)
	}
}
