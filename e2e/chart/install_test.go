package chart_test

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/e2e/echo"
	"github.com/zerohop/zerohop/e2e/lab"
	"github.com/zerohop/zerohop/internal/apiserver"
	"github.com/zerohop/zerohop/speaker"
)

const (
	chartDir  = "../../charts/zerohop"
	release   = "zerohop"
	releaseNS = "zerohop-system"
	// The chart's ServiceAccounts for release "zerohop".
	controllerSA = "zerohop-controller"
	speakerSA    = "zerohop-speaker"
	appNS        = "demo"
	md5Secret    = "router-md5"
	md5Password  = "zh-chart-md5"
	// The demo's Service class (controller.Class).
	lbClass = "zerohop.io/lb"
)

// TestChartInLab is the chart's end-to-end test: install, run the demo
// path with the chart's RBAC, check refusals, uninstall. Its steps depend
// on each other, so they run in order in one test.
func TestChartInLab(t *testing.T) {
	t0 := time.Now()
	l := lab.Up(t, lab.Options{Nodes: 3})
	tLab := time.Since(t0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ctrllog.SetLogger(logr.Discard())
	admin, err := client.New(l.RESTConfig, client.Options{Scheme: speaker.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	r := &run{t: t, ctx: ctx, l: l, admin: admin, dir: t.TempDir()}
	// Registered after lab.Up, so it runs before the lab goes down.
	t.Cleanup(r.stopAll)

	// The lab's API server comes with zerohop's CRDs from config/crd;
	// remove them so that the CRDs the cluster serves are the chart's.
	r.removeCRDs()
	tInstall := time.Now()
	// A Maglev table size other than the default, as a user would set
	// it: the speakers must take it from the chart and serve with it.
	if out, err := r.helm("install", release, chartDir, "--namespace", releaseNS, "--create-namespace", "--wait=false",
		"--set", "speaker.maglevTableSize="+strconv.Itoa(labMaglevSize)); err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}
	chartCRDs := r.waitChartCRDs()
	manifest, err := r.helm("get", "manifest", release, "--namespace", releaseNS)
	if err != nil {
		t.Fatalf("helm get manifest: %v\n%s", err, manifest)
	}
	rendered, err := parseManifest(manifest)
	if err != nil {
		t.Fatal(err)
	}
	for _, sa := range []string{controllerSA, speakerSA} {
		if !slices.Contains(rendered, objRef{Kind: "ServiceAccount", Namespace: releaseNS, Name: sa}) {
			t.Fatalf("the chart renders no ServiceAccount %s/%s; rendered: %v", releaseNS, sa, rendered)
		}
	}
	t.Logf("helm install: %d objects and %d CRDs in %s (the Deployment and DaemonSet get no Pods: the lab has no kubelet; their containers run below as processes)",
		len(rendered), len(chartCRDs), time.Since(tInstall).Round(time.Millisecond))

	// Tokens of the chart's own ServiceAccounts, as kubelet would mount
	// them: no ServiceAccount is created here, so a chart without them
	// fails right at the TokenRequest.
	ctrlKC := r.tokenKubeconfig(controllerSA)
	spkKC := r.tokenKubeconfig(speakerSA)
	base := r.forbiddenCount()

	// The demo path, as a user would apply it after the NOTES.
	r.configureRouterMD5()
	r.applyDemo()
	tStart := time.Now()
	nCtrl := r.startControllers(ctrlKC)
	r.startSpeakers(spkKC)
	if _, err := l.AddPod(ctx, lab.PodSpec{Name: "echo-1", Namespace: appNS, Node: 1, Labels: map[string]string{"app": "echo"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.AddPod(ctx, lab.PodSpec{Name: "echo-2", Namespace: appNS, Node: 2, Labels: map[string]string{"app": "echo"}}); err != nil {
		t.Fatal(err)
	}
	if err := l.AddService(ctx, demoService()); err != nil {
		t.Fatal(err)
	}
	vips := r.waitVIPs()
	tVIP := time.Since(tStart)
	// externalTrafficPolicy Local: only nodes 1 and 2 (with a Pod) announce.
	for _, v := range vips {
		r.waitRoute(v, 1, 2)
	}
	tRoute := time.Since(tStart)
	r.checkSpeakerStatuses(vips, 1, 2)
	r.checkPoolStatus()
	r.checkProbes(nCtrl)
	r.checkRequests(vips)

	// Normal operation is over: nothing may have been refused, by the API
	// server's count and by the components' own logs.
	normal := r.forbiddenCount()
	if d := normal.total - base.total; d != 0 {
		t.Errorf("the API server refused %v requests (403) during normal operation: %v", d, normal.diff(base))
	}
	normalLogRefusals := len(r.forbiddenLogLines())
	if lines := r.forbiddenLogLines(); len(lines) > 0 {
		t.Errorf("components logged %d refusals during normal operation:\n%s", len(lines), strings.Join(lines, "\n"))
	}

	results := r.forbiddenChecks(ctrlKC, spkKC)
	after := r.forbiddenCount()
	if d := after.total - normal.total; d != float64(len(results)) {
		t.Errorf("the API server counted %v refusals for the %d forbidden checks (want one each): %v", d, len(results), after.diff(normal))
	}

	// Stop the components before the RBAC they run with goes away.
	r.stopAll()
	if lines := r.forbiddenLogLines(); len(lines) > 0 {
		t.Errorf("components logged %d refusals:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	final := r.forbiddenCount()
	if d := final.total - after.total; d != 0 {
		t.Errorf("the API server refused %v more requests while the components stopped: %v", d, final.diff(after))
	}

	// A speaker that stops while its DaemonSet exists (a restart, an
	// upgrade) leaves the datapath pinned and attached: it keeps serving.
	for i := 1; i <= l.Nodes(); i++ {
		if pinned, attached := r.datapathOn(i); !pinned || !attached {
			t.Errorf("node %d after its speaker stopped: pinned %v, XDP attached %v; want both", i, pinned, attached)
		}
	}
	// Node 1's speaker runs through the uninstall: when it stops after
	// that, its DaemonSet is gone and it removes the datapath.
	ds, err := r.kube().AppsV1().DaemonSets(releaseNS).Get(r.ctx, "zerohop-speaker", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	last := r.startSpeaker(ds, 1, spkKC)
	r.eventually(30*time.Second, "node 1's speaker ready again", func() (bool, string) {
		b, _ := os.ReadFile(last.log)
		return strings.Contains(string(b), "datapath attached") || strings.Contains(string(b), "Starting workers"), "log"
	})

	r.uninstallAndSweep(rendered, chartCRDs)

	r.stop(last)
	if pinned, attached := r.datapathOn(1); pinned || attached {
		t.Errorf("node 1 after helm uninstall and its speaker's exit: pinned %v, XDP attached %v; want neither", pinned, attached)
	} else {
		t.Logf("uninstall: node 1's speaker removed its datapath on exit (no pins, no XDP); nodes 2 and 3, stopped before, kept theirs")
	}

	t.Logf("MEASURED: lab up %s (with any wait for the lab lock); helm install to VIP %s (components started to VIP %s, to routes in the router's RIB %s); whole test %s",
		tLab.Round(time.Millisecond), tStart.Add(tVIP).Sub(tInstall).Round(time.Millisecond), tVIP.Round(time.Millisecond),
		tRoute.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	t.Logf("MEASURED: 403s in normal operation: %v (API server count) and %d (component logs), with %d controller replicas and %d speakers",
		normal.total-base.total, normalLogRefusals, nCtrl, l.Nodes())
	t.Logf("MEASURED: speakers ran with capabilities %s only (the DaemonSet's list) and the values' Maglev table size %d, datapath attached and VIPs served", r.capabilities, labMaglevSize)
	for _, res := range results {
		t.Logf("FORBIDDEN CHECK %s", res)
	}
}

func demoService() *corev1.Service {
	dual := corev1.IPFamilyPolicyPreferDualStack
	class := lbClass
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: appNS},
		Spec: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeLoadBalancer,
			LoadBalancerClass:     &class,
			Selector:              map[string]string{"app": "echo"},
			IPFamilyPolicy:        &dual,
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			Ports: []corev1.ServicePort{
				{Name: "tcp", Port: echo.DefaultTCPPort, TargetPort: intstr.FromInt32(echo.DefaultTCPPort), Protocol: corev1.ProtocolTCP},
				{Name: "http", Port: 80, TargetPort: intstr.FromInt32(echo.DefaultHTTPPort), Protocol: corev1.ProtocolTCP},
			},
		},
	}
}

// run is the state of one TestChartInLab.
type run struct {
	t     *testing.T
	ctx   context.Context
	l     *lab.Lab
	admin client.Client
	dir   string // kubeconfigs and component logs
	procs []*proc
	// capabilities is the speakers' bounding set, from the DaemonSet.
	capabilities string
}

func (r *run) helm(args ...string) (string, error) {
	r.t.Helper()
	cmd := exec.CommandContext(r.ctx, filepath.Join(apiserver.BinDir(), "helm"),
		append(args, "--kubeconfig", r.l.APIServer().Kubeconfig)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	home := filepath.Join(r.dir, "helm")
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home+"/cache", "HELM_CONFIG_HOME="+home+"/config", "HELM_DATA_HOME="+home+"/data")
	err := cmd.Run()
	return out.String(), err
}

// applyDemo creates what a user applies after installing: a pool, BGP
// peers to the lab router (the IPv4 one with a TCP MD5 password from a
// Secret in the release namespace, so the speaker reads Secrets as in
// production) and an advertisement.
func (r *run) applyDemo() {
	r4, r6 := lab.RouterNodeAddrs()
	dur := func(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }
	objs := []client.Object{
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: md5Secret, Namespace: releaseNS},
			Type: corev1.SecretTypeBasicAuth, StringData: map[string]string{"password": md5Password}},
		&v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "demo-pool"},
			Spec: v1alpha1.IPAddressPoolSpec{Addresses: []v1alpha1.Address{"203.0.113.0/24", "2001:db8:113::/120"}, AvoidBuggyIPs: true}},
		&v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "router-v4"},
			Spec: v1alpha1.BGPPeerSpec{MyASN: lab.DefaultNodeASN, PeerASN: lab.DefaultRouterASN, PeerAddress: r4.String(),
				HoldTime: dur(9 * time.Second), ConnectTime: dur(time.Second), PasswordSecret: &v1alpha1.SecretReference{Name: md5Secret}}},
		&v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "router-v6"},
			Spec: v1alpha1.BGPPeerSpec{MyASN: lab.DefaultNodeASN, PeerASN: lab.DefaultRouterASN, PeerAddress: r6.String(),
				HoldTime: dur(9 * time.Second), ConnectTime: dur(time.Second)}},
		&v1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "demo"},
			Spec: v1alpha1.BGPAdvertisementSpec{IPAddressPools: []string{"demo-pool"}}},
	}
	for _, o := range objs {
		if err := r.admin.Create(r.ctx, o); err != nil {
			r.t.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
	}
}

// configureRouterMD5 sets the password on the router's IPv4 neighbors.
func (r *run) configureRouterMD5() {
	args := []string{"-N", lab.RouterNS, "-c", "configure terminal", "-c", fmt.Sprintf("router bgp %d", lab.DefaultRouterASN)}
	for i := 1; i <= r.l.Nodes(); i++ {
		n4, _ := lab.NodeAddrs(i)
		args = append(args, "-c", fmt.Sprintf("neighbor %s password %s", n4, md5Password))
	}
	if out, err := exec.CommandContext(r.ctx, "vtysh", args...).CombinedOutput(); err != nil {
		r.t.Fatalf("vtysh %v: %v: %s", args, err, out)
	}
}

// waitVIPs waits (bounded) for the controller to write both families'
// addresses into the Service's status.
func (r *run) waitVIPs() []netip.Addr {
	var vips []netip.Addr
	r.eventually(30*time.Second, "an IPv4 and an IPv6 VIP for demo/echo", func() (bool, string) {
		var svc corev1.Service
		if err := r.admin.Get(r.ctx, client.ObjectKey{Namespace: appNS, Name: "echo"}, &svc); err != nil {
			return false, err.Error()
		}
		vips = vips[:0]
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			if a, err := netip.ParseAddr(ing.IP); err == nil {
				vips = append(vips, a)
			}
		}
		return len(vips) == 2 && vips[0].Is4() != vips[1].Is4(), fmt.Sprint(svc.Status.LoadBalancer.Ingress)
	})
	for _, v := range vips {
		pool := netip.MustParsePrefix("203.0.113.0/24")
		if v.Is6() {
			pool = netip.MustParsePrefix("2001:db8:113::/120")
		}
		if !pool.Contains(v) {
			r.t.Fatalf("VIP %s is not from demo-pool", v)
		}
	}
	r.t.Logf("VIPs assigned by the controller with the chart's RBAC: %v", vips)
	return vips
}

// waitRoute waits for the router's selected BGP route to vip whose next
// hops are exactly the given nodes' addresses of vip's family.
func (r *run) waitRoute(vip netip.Addr, nodes ...int) {
	r.t.Helper()
	lab.WaitBGPRoute(r.t, r.ctx, vip, 45*time.Second, nodes...)
	r.t.Logf("router RIB: %s via %s (the nodes with Pods)", vip, lab.NodeNextHops(vip, nodes...))
}

// checkSpeakerStatuses: each speaker wrote its node's SpeakerStatus with
// its own token (create + status update), sessions up, and only nodes
// with a Pod announce the Service.
func (r *run) checkSpeakerStatuses(vips []netip.Addr, withPods ...int) {
	for i := 1; i <= r.l.Nodes(); i++ {
		node := lab.NodeName(i)
		r.eventually(30*time.Second, "SpeakerStatus "+node, func() (bool, string) {
			var st v1alpha1.SpeakerStatus
			if err := r.admin.Get(r.ctx, client.ObjectKey{Name: node}, &st); err != nil {
				return false, err.Error()
			}
			up := 0
			for _, s := range st.Status.Sessions {
				if strings.EqualFold(s.State, "established") {
					up++
				}
			}
			announces := slices.ContainsFunc(st.Status.Announcements, func(a v1alpha1.ServiceAnnouncement) bool {
				return a.Service == appNS+"/echo"
			})
			got := fmt.Sprintf("%d of 2 sessions established, announces %s/echo: %v", up, appNS, announces)
			return up == 2 && announces == slices.Contains(withPods, i), got
		})
	}
}

// checkPoolStatus: the controller wrote the pool's status subresource.
func (r *run) checkPoolStatus() {
	r.eventually(30*time.Second, "demo-pool status counts", func() (bool, string) {
		var p v1alpha1.IPAddressPool
		if err := r.admin.Get(r.ctx, client.ObjectKey{Name: "demo-pool"}, &p); err != nil {
			return false, err.Error()
		}
		return p.Status.AssignedIPv4 == 1 && p.Status.AssignedIPv6 == 1, fmt.Sprintf("%+v", p.Status)
	})
}

// checkRequests asks the VIPs from the client, through the speakers' XDP
// datapath.
func (r *run) checkRequests(vips []netip.Addr) {
	c4, c6 := lab.ClientAddrs()
	var failures []string
	seen := map[string]bool{}
	for _, v := range vips {
		from := c4
		if v.Is6() {
			from = c6
		}
		for range 6 {
			rctx, cancel := context.WithTimeout(r.ctx, 2*time.Second)
			rep, err := r.l.Request(rctx, "tcp", netip.AddrPortFrom(v, echo.DefaultTCPPort).String())
			cancel()
			switch {
			case err != nil:
				failures = append(failures, fmt.Sprintf("%s: %v", v, err))
			case r.l.Workload(rep.Pod) != "echo-1" && r.l.Workload(rep.Pod) != "echo-2":
				failures = append(failures, fmt.Sprintf("%s: answered by %q", v, rep.Pod))
			case rep.ClientIP() != from.String():
				failures = append(failures, fmt.Sprintf("%s: %s saw client %s, want %s (source not preserved)", v, rep.Pod, rep.ClientIP(), from))
			default:
				seen[rep.Pod] = true
			}
		}
	}
	if len(failures) == 0 {
		r.t.Logf("requests to %v from the client: all served, by %v, client address preserved", vips, seen)
		return
	}
	r.t.Errorf("requests to the VIPs failed (%d of %d):\n%s", len(failures), 6*len(vips), strings.Join(failures, "\n"))
}

// eventually polls cond every 100ms for at most d.
func (r *run) eventually(d time.Duration, what string, cond func() (bool, string)) {
	r.t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, got := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) || r.ctx.Err() != nil {
			r.dumpLogs()
			r.t.Fatalf("timed out after %s waiting for %s; last: %s", d, what, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removeCRDs deletes the zerohop.io CRDs the lab installed and waits until
// they are gone.
func (r *run) removeCRDs() {
	cs := r.apiext()
	list, err := cs.ApiextensionsV1().CustomResourceDefinitions().List(r.ctx, metav1.ListOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	for _, crd := range list.Items {
		if crd.Spec.Group != "zerohop.io" {
			continue
		}
		if err := cs.ApiextensionsV1().CustomResourceDefinitions().Delete(r.ctx, crd.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			r.t.Fatal(err)
		}
	}
	r.eventually(time.Minute, "the lab's zerohop CRDs to go", func() (bool, string) {
		names, err := r.zerohopCRDs()
		return err == nil && len(names) == 0, fmt.Sprint(names, err)
	})
}

func (r *run) kube() kubernetes.Interface { return r.l.Kube }

// newClientset is a client of the lab's API server authenticated by kc.
func newClientset(t *testing.T, kc string) *kubernetes.Clientset {
	t.Helper()
	cfg, err := restConfigFrom(kc)
	if err != nil {
		t.Fatal(err)
	}
	return kubernetes.NewForConfigOrDie(cfg)
}
