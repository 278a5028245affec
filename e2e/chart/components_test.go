package chart_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/zerohop/zerohop/e2e/lab"
)

// proc is a component process this test started.
type proc struct {
	name string
	ns   string // network namespace it runs in
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	// health is the container's health port from the chart, probed from
	// inside ns; probes are the chart's httpGet paths on it.
	health int
	probes []string
}

// tokenKubeconfig asks the TokenRequest API for a token of the chart's
// ServiceAccount sa and writes a kubeconfig that uses only that token.
func (r *run) tokenKubeconfig(sa string) string {
	expiry := int64(3600)
	tr, err := r.kube().CoreV1().ServiceAccounts(releaseNS).CreateToken(r.ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry},
	}, metav1.CreateOptions{})
	if err != nil {
		r.t.Fatalf("token for %s/%s: %v", releaseNS, sa, err)
	}
	cfg, err := clientcmd.LoadFromFile(r.l.APIServer().Kubeconfig)
	if err != nil {
		r.t.Fatal(err)
	}
	// Keep the cluster (address, CA); drop the admin client certificate.
	cfg.AuthInfos = map[string]*clientcmdapi.AuthInfo{sa: {Token: tr.Status.Token}}
	for _, c := range cfg.Contexts {
		c.AuthInfo = sa
	}
	path := filepath.Join(r.dir, sa+".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		r.t.Fatal(err)
	}
	return path
}

func restConfigFrom(kc string) (*rest.Config, error) {
	return clientcmd.BuildConfigFromFlags("", kc)
}

// container is what kubelet would run for the chart's container: its
// args with $(VAR) expanded and its environment resolved.
type container struct {
	args   []string
	env    []string
	health int
	probes []string
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// resolve does kubelet's part for c on node: the downward API, Secret
// references and $(VAR) expansion in args. Any other kind of reference
// fails the test, so that a chart change that this stand-in for kubelet
// cannot honour is noticed.
func (r *run) resolve(c corev1.Container, node string) container {
	vars := map[string]string{}
	var env []string
	for _, e := range c.Env {
		var v string
		switch {
		case e.ValueFrom == nil:
			v = envRef.ReplaceAllStringFunc(e.Value, func(m string) string { return vars[envRef.FindStringSubmatch(m)[1]] })
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName":
			v = node
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			v = releaseNS
		case e.ValueFrom.ResourceFieldRef != nil && e.ValueFrom.ResourceFieldRef.Resource == "limits.memory":
			// As the kubelet does, in bytes (the chart sets no divisor).
			q, ok := c.Resources.Limits[corev1.ResourceMemory]
			if !ok || !e.ValueFrom.ResourceFieldRef.Divisor.IsZero() {
				r.t.Fatalf("container %s env %s: limits.memory %v, divisor %v: want a limit and no divisor", c.Name, e.Name, c.Resources.Limits, e.ValueFrom.ResourceFieldRef.Divisor)
			}
			v = strconv.FormatInt(q.Value(), 10)
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			s, err := r.kube().CoreV1().Secrets(releaseNS).Get(r.ctx, ref.Name, metav1.GetOptions{})
			if err != nil {
				r.t.Fatalf("container %s env %s: %v", c.Name, e.Name, err)
			}
			b, ok := s.Data[ref.Key]
			if !ok {
				r.t.Fatalf("container %s env %s: Secret %s has no key %q", c.Name, e.Name, ref.Name, ref.Key)
			}
			v = string(b)
		default:
			r.t.Fatalf("container %s env %s: a reference this test does not resolve: %+v", c.Name, e.Name, e.ValueFrom)
		}
		vars[e.Name] = v
		env = append(env, e.Name+"="+v)
	}
	out := container{env: env}
	for _, a := range c.Args {
		out.args = append(out.args, envRef.ReplaceAllStringFunc(a, func(m string) string {
			if v, ok := vars[envRef.FindStringSubmatch(m)[1]]; ok {
				return v
			}
			return m
		}))
	}
	port := func(p corev1.ContainerPort) int { return int(p.ContainerPort) }
	for _, pr := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe} {
		if pr == nil || pr.HTTPGet == nil {
			continue
		}
		out.probes = append(out.probes, pr.HTTPGet.Path)
		for _, p := range c.Ports {
			if p.Name == pr.HTTPGet.Port.String() || int32(port(p)) == pr.HTTPGet.Port.IntVal {
				out.health = port(p)
			}
		}
	}
	return out
}

// startControllers runs the chart's controller Deployment's container,
// one process per replica, each in a lab node's namespace (any network
// namespace that reaches the API server would do; a node's keeps the
// health ports apart). It returns the number of replicas.
func (r *run) startControllers(kc string) int {
	d, err := r.kube().AppsV1().Deployments(releaseNS).Get(r.ctx, "zerohop-controller", metav1.GetOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	replicas := 1
	if d.Spec.Replicas != nil {
		replicas = int(*d.Spec.Replicas)
	}
	if replicas > r.l.Nodes() {
		r.t.Fatalf("%d controller replicas for %d lab nodes", replicas, r.l.Nodes())
	}
	for i := 1; i <= replicas; i++ {
		node := lab.NodeName(i)
		c := r.resolve(d.Spec.Template.Spec.Containers[0], node)
		if len(c.args) == 0 || c.args[0] != "controller" {
			r.t.Fatalf("controller container args %v: want the controller subcommand", c.args)
		}
		argv := append([]string{"ip", "netns", "exec", node, zerohopBin}, c.args...)
		argv = append(argv, "--kubeconfig", kc)
		log := filepath.Join(r.dir, fmt.Sprintf("controller-%d.log", i))
		f, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			r.t.Fatal(err)
		}
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = append(os.Environ(), c.env...)
		cmd.Stdout, cmd.Stderr = f, f
		// Its own process group: a test's ^C reaches it only through
		// the cleanup, which stops it by PID.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		err = cmd.Start()
		_ = f.Close()
		if err != nil {
			r.t.Fatalf("start controller %d: %v", i, err)
		}
		r.track(&proc{name: fmt.Sprintf("controller-%d", i), ns: node, cmd: cmd, log: log, health: c.health, probes: c.probes})
	}
	return replicas
}

// startSpeakers runs the chart's speaker DaemonSet's container on every
// lab node, as that node's Pod would.
func (r *run) startSpeakers(kc string) {
	ds, err := r.kube().AppsV1().DaemonSets(releaseNS).Get(r.ctx, "zerohop-speaker", metav1.GetOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	if !ds.Spec.Template.Spec.HostNetwork {
		r.t.Fatal("the speaker DaemonSet is not on the host network; the lab runs it in the node's namespace")
	}
	for i := 1; i <= r.l.Nodes(); i++ {
		r.startSpeaker(ds, i, kc)
	}
}

// startSpeaker runs node i's speaker with the DaemonSet's args and
// environment and the token kubeconfig kc.
func (r *run) startSpeaker(ds *appsv1.DaemonSet, i int, kc string) *proc {
	node := lab.NodeName(i)
	c := r.resolve(ds.Spec.Template.Spec.Containers[0], node)
	if len(c.args) == 0 || c.args[0] != "speaker" {
		r.t.Fatalf("speaker container args %v: want the speaker subcommand", c.args)
	}
	if want := fmt.Sprintf("--maglev-table-size=%d", labMaglevSize); !slices.Contains(c.args, want) {
		r.t.Fatalf("speaker container args %v: want %s from the install's values", c.args, want)
	}
	log := filepath.Join(r.dir, fmt.Sprintf("speaker-%s.log", node))
	// The chart's args come after the lab's defaults and the token
	// kubeconfig after both: the last flag wins.
	extra := append(c.args[1:], "--kubeconfig", kc)
	cmd, err := r.l.StartSpeaker(r.withCapabilities(ds.Spec.Template.Spec.Containers[0]), i, releaseNS, log, extra, c.env)
	if err != nil {
		r.t.Fatal(err)
	}
	p := &proc{name: "speaker-" + node, ns: node, cmd: cmd, log: log, health: c.health, probes: c.probes}
	r.track(p)
	return p
}

func (r *run) track(p *proc) {
	p.done = make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	r.procs = append(r.procs, p)
}

// stopAll ends the components this test started (SIGTERM, then SIGKILL
// after 10 s), by PID. Safe to call twice.
func (r *run) stopAll() {
	for _, p := range r.procs {
		select {
		case <-p.done:
			continue
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range r.procs {
		r.reap(p)
	}
}

// checkProbes runs the chart's liveness and readiness probes against every
// component process, from inside its network namespace, as kubelet would
// (the speaker is on the host network, so that is the node's).
func (r *run) checkProbes(nCtrl int) {
	for _, p := range r.procs {
		if p.health == 0 || len(p.probes) == 0 {
			r.t.Errorf("%s: the chart gives it no httpGet probe on a named port", p.name)
			continue
		}
		hc := &http.Client{Transport: &http.Transport{DialContext: lab.DialerIn(p.ns)}, Timeout: 2 * time.Second}
		for _, path := range p.probes {
			url := fmt.Sprintf("http://127.0.0.1:%d%s", p.health, path)
			r.eventually(20*time.Second, fmt.Sprintf("%s probe %s", p.name, url), func() (bool, string) {
				resp, err := hc.Get(url)
				if err != nil {
					return false, err.Error()
				}
				body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
				_ = resp.Body.Close()
				return resp.StatusCode == http.StatusOK, fmt.Sprintf("%s: %s", resp.Status, body)
			})
		}
	}
	r.t.Logf("the chart's probes pass against %d controller replicas and %d speakers", nCtrl, len(r.procs)-nCtrl)
}

// refusal matches a refused API request in a component's log: client-go
// and controller-runtime quote the API server's "... is forbidden: User
// ... cannot ..." message.
var refusal = regexp.MustCompile(`(?i)forbidden|\b403 Forbidden\b`)

// forbiddenLogLines returns the lines of the components' logs that show a
// refused request.
func (r *run) forbiddenLogLines() []string {
	var out []string
	for _, p := range r.procs {
		b, err := os.ReadFile(p.log)
		if err != nil {
			r.t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if refusal.MatchString(line) {
				out = append(out, p.name+": "+line)
			}
		}
	}
	return out
}

// dumpLogs shows the tail of each component's log, for a failing test.
func (r *run) dumpLogs() {
	for _, p := range r.procs {
		b, _ := os.ReadFile(p.log)
		if len(b) > 4000 {
			b = b[len(b)-4000:]
		}
		r.t.Logf("%s log (tail):\n%s", p.name, b)
	}
}

// forbiddenCheck is a request a ServiceAccount must be refused.
type forbiddenCheck struct {
	sa, what string
	do       func(ctx context.Context) error
}

// forbiddenChecks makes real requests beyond each ServiceAccount's roles
// with its token and expects 403 Forbidden for each. It returns one
// result line per check.
func (r *run) forbiddenChecks(ctrlKC, spkKC string) []string {
	spk, ctl := newClientset(r.t, spkKC), newClientset(r.t, ctrlKC)
	checks := []forbiddenCheck{
		{speakerSA, "update services/status demo/echo", func(ctx context.Context) error {
			svc, err := r.kube().CoreV1().Services(appNS).Get(ctx, "echo", metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("setup: %w", err)
			}
			svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.99"}}
			_, err = spk.CoreV1().Services(appNS).UpdateStatus(ctx, svc, metav1.UpdateOptions{})
			return err
		}},
		{speakerSA, "list secrets in all namespaces", func(ctx context.Context) error {
			_, err := spk.CoreV1().Secrets("").List(ctx, metav1.ListOptions{})
			return err
		}},
		{speakerSA, "get secret in namespace demo", func(ctx context.Context) error {
			_, err := spk.CoreV1().Secrets(appNS).Get(ctx, "any", metav1.GetOptions{})
			return err
		}},
		{speakerSA, "delete bgppeers router-v4", func(ctx context.Context) error {
			return spk.RESTClient().Delete().AbsPath("/apis/zerohop.io/v1alpha1/bgppeers/router-v4").Do(ctx).Error()
		}},
		{controllerSA, "get secret zerohop-system/zerohop-memberlist", func(ctx context.Context) error {
			_, err := ctl.CoreV1().Secrets(releaseNS).Get(ctx, "zerohop-memberlist", metav1.GetOptions{})
			return err
		}},
		{controllerSA, "get secret zerohop-system/" + md5Secret + " (a BGP password)", func(ctx context.Context) error {
			_, err := ctl.CoreV1().Secrets(releaseNS).Get(ctx, md5Secret, metav1.GetOptions{})
			return err
		}},
		{controllerSA, "create pods in namespace demo", func(ctx context.Context) error {
			_, err := ctl.CoreV1().Pods(appNS).Create(ctx, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "zh-forbidden"},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "x", Image: "zerohop.io/none"}}},
			}, metav1.CreateOptions{})
			return err
		}},
		{controllerSA, "update services demo/echo (spec)", func(ctx context.Context) error {
			svc, err := r.kube().CoreV1().Services(appNS).Get(ctx, "echo", metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("setup: %w", err)
			}
			svc.Spec.Ports[0].Port++
			_, err = ctl.CoreV1().Services(appNS).Update(ctx, svc, metav1.UpdateOptions{})
			return err
		}},
	}
	var out []string
	for _, c := range checks {
		err := c.do(r.ctx)
		switch {
		case err == nil:
			r.t.Errorf("%s may %s: want 403 Forbidden", c.sa, c.what)
			out = append(out, fmt.Sprintf("%s %s: ALLOWED (want 403)", c.sa, c.what))
		case !isForbidden(err):
			r.t.Errorf("%s %s: want 403 Forbidden, got %v", c.sa, c.what, err)
			out = append(out, fmt.Sprintf("%s %s: %v (want 403)", c.sa, c.what, err))
		default:
			out = append(out, fmt.Sprintf("%s %s: 403 Forbidden, as wanted", c.sa, c.what))
		}
	}
	return out
}

// stop ends one component (SIGTERM, SIGKILL after 10 s).
func (r *run) stop(p *proc) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	r.reap(p)
}

// reap waits for a signalled component to exit, killing it (and failing
// the test) after 10 s.
func (r *run) reap(p *proc) {
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		r.t.Errorf("%s (pid %d) ignored SIGTERM for 10s; killing it", p.name, p.cmd.Process.Pid)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// datapathOn reports whether node i has zerohop's pins and an XDP program
// on its uplink.
func (r *run) datapathOn(i int) (pinned, attached bool) {
	_, err := os.Stat(lab.SpeakerPinRoot(i))
	pinned = err == nil
	out, err := exec.CommandContext(r.ctx, "ip", "-n", lab.NodeName(i), "link", "show", lab.UplinkIf).CombinedOutput()
	if err != nil {
		r.t.Fatalf("ip -n %s link show: %v: %s", lab.NodeName(i), err, out)
	}
	return pinned, strings.Contains(string(out), "prog/xdp")
}

// labMaglevSize is the speakers' Maglev table size in this test, set
// through the chart's values (the default is bpf.DefaultMaglevSize).
const labMaglevSize = 4093

// withCapabilities returns an executable that runs zerohop with no other
// capabilities than the container's securityContext grants (as root, the
// bounding set is what a container runtime restricts), so the lab proves
// the chart's list is enough. It fails the test if the container drops
// less than ALL, since the lab could not then tell what is needed.
//
// The script is written once: rewriting it while a speaker started a moment
// earlier is still being exec'd through it fails with ETXTBSY.
func (r *run) withCapabilities(c corev1.Container) string {
	path := filepath.Join(r.dir, "zerohop-with-capabilities")
	if r.capabilities != "" {
		return path
	}
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		r.t.Fatalf("speaker container: want capabilities drop [ALL] and an explicit add list, got %+v", sc)
	}
	set := "-all"
	for _, c := range sc.Capabilities.Add {
		set += ",+" + strings.ToLower(strings.TrimPrefix(string(c), "CAP_"))
	}
	script := fmt.Sprintf("#!/bin/sh\nexec setpriv --bounding-set %s -- %s \"$@\"\n", set, zerohopBin)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		r.t.Fatal(err)
	}
	r.capabilities = set
	return path
}
