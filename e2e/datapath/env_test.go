package datapath_test

import (
	"bufio"
	"context"
	"fmt"
	discoveryv1 "k8s.io/api/discovery/v1"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/zerohop/zerohop/bpf"
	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/e2e/echo"
	"github.com/zerohop/zerohop/e2e/lab"
	"github.com/zerohop/zerohop/speaker"
)

const speakerNS = "zerohop-system"

type env struct {
	t        *testing.T
	ctx      context.Context
	l        *lab.Lab
	c        client.Client
	nodes    int
	speakers *lab.Speakers
}

// upEnv brings a lab up for t, with a client of its API server and a
// context bounded by d.
func upEnv(t *testing.T, nodes int, d time.Duration) *env {
	return upEnvWith(t, lab.Options{Nodes: nodes}, d)
}

// upEnvWith is upEnv for a lab of opts.
func upEnvWith(t *testing.T, opts lab.Options, d time.Duration) *env {
	nodes := opts.Nodes
	l := lab.Up(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	ctrllog.SetLogger(logr.Discard())
	c, err := client.New(l.RESTConfig, client.Options{Scheme: speaker.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	// zerohop's controller assigns the Services' addresses.
	l.Controller(t, zerohopBin)
	return &env{t: t, ctx: ctx, l: l, c: c, nodes: nodes,
		speakers: l.Speakers(t, zerohopBin, speakerNS, nil, []string{"ZEROHOP_MEMBERLIST_KEY=zh-datapath-e2e-key0"})}
}

func (e *env) startSpeaker(i int) { e.t.Helper(); e.speakers.Start(i) }

func (e *env) create(obj client.Object) {
	e.t.Helper()
	if err := e.c.Create(e.ctx, obj); err != nil {
		e.t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
}

func (e *env) pod(name, app string, node int) lab.Pod {
	e.t.Helper()
	p, err := e.l.AddPod(e.ctx, lab.PodSpec{Name: name, Node: node, Labels: map[string]string{"app": app}})
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// svcSpec is a test Service: TCP and UDP echo ports for the Pods labelled
// app=name.
type svcSpec struct {
	name         string
	local        bool
	ips          []string
	sourceRanges []string
}

func (e *env) service(s svcSpec) {
	e.t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: s.name},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": s.name},
			Ports: []corev1.ServicePort{
				{Name: "tcp", Port: echo.DefaultTCPPort, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(echo.DefaultTCPPort)},
				{Name: "udp", Port: echo.DefaultUDPPort, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(echo.DefaultUDPPort)},
			},
			LoadBalancerSourceRanges: s.sourceRanges,
		},
	}
	if s.local {
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}
	lab.LoadBalancerFor(svc, s.ips...)
	if err := e.l.AddService(e.ctx, svc); err != nil {
		e.t.Fatal(err)
	}
	if err := e.l.WaitIngress(e.ctx, svc.Namespace, svc.Name, s.ips...); err != nil {
		e.t.Fatal(err)
	}
}

// setSourceRanges replaces a Service's loadBalancerSourceRanges.
func (e *env) setSourceRanges(name string, ranges ...string) {
	e.t.Helper()
	var svc corev1.Service
	if err := e.c.Get(e.ctx, client.ObjectKey{Namespace: "default", Name: name}, &svc); err != nil {
		e.t.Fatal(err)
	}
	svc.Spec.LoadBalancerSourceRanges = ranges
	if err := e.c.Update(e.ctx, &svc); err != nil {
		e.t.Fatalf("service %s: %v", name, err)
	}
}

// bgpSetup creates the pool, the router's peers (v4 and v6) and an
// advertisement, and spreads the router's ECMP by ports.
func (e *env) bgpSetup() {
	e.t.Helper()
	r4, r6 := lab.RouterNodeAddrs()
	e.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: speakerNS}})
	e.create(&v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "lab"},
		Spec: v1alpha1.IPAddressPoolSpec{Addresses: []v1alpha1.Address{"203.0.113.0/26", "2001:db8:113::/120"}}})
	e.create(&v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "edge"},
		Spec: v1alpha1.IPAddressPoolSpec{Addresses: []v1alpha1.Address{"203.0.113.64/28", "2001:db8:113::100/124"}}})
	for name, addr := range map[string]netip.Addr{"router-v4": r4, "router-v6": r6} {
		e.create(&v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.BGPPeerSpec{
			MyASN: lab.DefaultNodeASN, PeerASN: lab.DefaultRouterASN, PeerAddress: addr.String(),
			HoldTime: &metav1.Duration{Duration: 9 * time.Second}, ConnectTime: &metav1.Duration{Duration: time.Second},
			EnableGracefulRestart: true}})
	}
	e.create(&v1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "lab"},
		Spec: v1alpha1.BGPAdvertisementSpec{IPAddressPools: []string{"lab"}}})
	// The edge pool is announced by node 1 only: its Services' Pods run
	// elsewhere and are reached through Cluster mode's encapsulation.
	e.create(&v1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "edge"},
		Spec: v1alpha1.BGPAdvertisementSpec{IPAddressPools: []string{"edge"},
			NodeSelectors: []v1alpha1.LabelSelector{{MatchLabels: map[string]string{"kubernetes.io/hostname": lab.NodeName(1)}}}}})
	for _, s := range []string{"net.ipv4.fib_multipath_hash_policy=1", "net.ipv6.fib_multipath_hash_policy=1"} {
		if out, err := exec.CommandContext(e.ctx, "ip", "netns", "exec", lab.RouterNS, "sysctl", "-qw", s).CombinedOutput(); err != nil {
			e.t.Fatalf("sysctl %s: %v: %s", s, err, out)
		}
	}
}

// l2Owner waits until every speaker reports, and then until exactly one
// of them owns vip in L2 mode for a second on end (ownership moves while
// speakers join), and returns its node index.
func (e *env) l2Owner(vip string) int {
	e.t.Helper()
	eventually(e.t, 30*time.Second, "every speaker's SpeakerStatus", func() (bool, string) {
		var list v1alpha1.SpeakerStatusList
		if err := e.c.List(e.ctx, &list); err != nil {
			return false, err.Error()
		}
		return len(list.Items) == e.nodes, fmt.Sprint(len(list.Items))
	})
	// Speakers write their status at most once a second, so an owner
	// that moved as the Pods turned ready can still be reported for a
	// second: the owner counts once three reads over 2 s agree.
	owner, same := e.soleL2Owner(vip), 0
	for range 30 {
		time.Sleep(time.Second)
		again := e.soleL2Owner(vip)
		if again != owner {
			owner, same = again, 0
			continue
		}
		if same++; same == 2 {
			return owner
		}
	}
	e.t.Fatalf("%s: L2 owner still moving after 30s", vip)
	return 0
}

// readyEndpoints waits until Service name's EndpointSlices list n ready
// endpoints.
func (e *env) readyEndpoints(name string, n int) {
	e.t.Helper()
	eventually(e.t, 30*time.Second, fmt.Sprintf("%d ready endpoints of %s", n, name), func() (bool, string) {
		var list discoveryv1.EndpointSliceList
		if err := e.c.List(e.ctx, &list, client.InNamespace("default"), client.MatchingLabels{discoveryv1.LabelServiceName: name}); err != nil {
			return false, err.Error()
		}
		ready := map[string]bool{}
		for _, sl := range list.Items {
			for _, ep := range sl.Endpoints {
				if (ep.Conditions.Ready == nil || *ep.Conditions.Ready) && ep.TargetRef != nil {
					ready[ep.TargetRef.Name] = true
				}
			}
		}
		return len(ready) == n, fmt.Sprint(ready)
	})
}

func (e *env) soleL2Owner(vip string) int {
	e.t.Helper()
	owner := 0
	eventually(e.t, 30*time.Second, "one L2 owner of "+vip, func() (bool, string) {
		var list v1alpha1.SpeakerStatusList
		if err := e.c.List(e.ctx, &list); err != nil {
			return false, err.Error()
		}
		var got []string
		for _, s := range list.Items {
			for _, o := range s.Status.L2 {
				if o.IP == vip {
					got = append(got, s.Name)
				}
			}
		}
		if len(got) != 1 {
			return false, fmt.Sprint(got)
		}
		for i := 1; i <= e.nodes; i++ {
			if got[0] == lab.NodeName(i) {
				owner = i
			}
		}
		return owner != 0, got[0]
	})
	return owner
}

// waitRoute waits until the router's selected route for vip has exactly
// the given nodes as next hops.
func (e *env) waitRoute(vip string, nodes ...int) {
	e.t.Helper()
	lab.WaitBGPRoute(e.t, e.ctx, netip.MustParseAddr(vip), 30*time.Second, nodes...)
}

func eventually(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	lab.Eventually(t, d, what, cond)
}

// requests sends n requests to addr over proto from the client and
// returns the answers per workload (AddPod's name), failing on any error or on a Pod seeing
// another client address than the client's own.
func (e *env) requests(t *testing.T, proto, addr string, n int) map[string]int {
	t.Helper()
	per, err := e.l.Requests(e.ctx, proto, addr, n)
	if err != nil {
		t.Fatal(err)
	}
	return per
}

// refused checks that a TCP connection to addr from the client fails.
func (e *env) refused(t *testing.T, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, time.Second)
	defer cancel()
	if rep, err := e.l.Request(ctx, "tcp", addr); err == nil {
		t.Fatalf("request to %s answered by %s, want it refused", addr, rep.Pod)
	}
}

// stats reads node i's datapath for key from its pins, as `zerohop
// status` does; the zero value when the node does not hold the key.
func stats(t *testing.T, i int, key bpf.ServiceKey) bpf.ServiceSnapshot {
	t.Helper()
	snap, err := bpf.Inspect(lab.SpeakerPinRoot(i))
	if err != nil {
		t.Fatalf("node %d: %v", i, err)
	}
	for _, s := range snap.Services {
		if s.Key == key {
			return s
		}
	}
	return bpf.ServiceSnapshot{}
}

// takingNewFlows counts node i's backends of key that take new flows: a
// Pod not ready yet, or terminating, stays in the map as a standby that
// keeps its flows only (docs/datapath.md).
func takingNewFlows(t *testing.T, i int, key bpf.ServiceKey) int {
	t.Helper()
	n := 0
	for _, b := range stats(t, i, key).Backends {
		if b.Flags&bpf.BackendTerminating == 0 {
			n++
		}
	}
	return n
}

func events(t *testing.T, i int) bpf.Events {
	t.Helper()
	snap, err := bpf.Inspect(lab.SpeakerPinRoot(i))
	if err != nil {
		t.Fatalf("node %d: %v", i, err)
	}
	return snap.Events
}

func tcpKey(vip string) bpf.ServiceKey {
	return bpf.ServiceKey{Addr: netip.MustParseAddr(vip), Port: echo.DefaultTCPPort, Proto: bpf.TCP}
}

func hostPort(vip string, port int) string { return net.JoinHostPort(vip, fmt.Sprint(port)) }

// conn is a long-lived TCP connection through the VIP that echoes a probe
// on demand: a reset or a lost flow shows as a failed probe.
type conn struct {
	pod string // the workload that answered
	c   net.Conn
	r   *bufio.Reader
}

func (e *env) dial(t *testing.T, addr string) *conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 3*time.Second)
	defer cancel()
	c, err := lab.DialerIn(lab.ClientNS)(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	r := bufio.NewReader(c)
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := r.ReadString('\n')
	if err != nil {
		_ = c.Close()
		t.Fatalf("greeting from %s: %v", addr, err)
	}
	pod := line
	if i := strings.Index(line, `"pod":"`); i >= 0 {
		pod = line[i+7:]
		pod = pod[:strings.IndexByte(pod, '"')]
	}
	t.Cleanup(func() { _ = c.Close() })
	return &conn{pod: e.l.Workload(pod), c: c, r: r}
}

// probe sends a line and expects it back within a second.
func (c *conn) probe(msg string) error {
	_ = c.c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.c.Write([]byte(msg + "\n")); err != nil {
		return err
	}
	got, err := c.r.ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(got) != msg {
		return fmt.Errorf("echoed %q, want %q", got, msg)
	}
	return nil
}
