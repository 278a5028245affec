package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/zerohop/zerohop/bpf"
	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/controller/gateway"
	"github.com/zerohop/zerohop/e2e/echo"
	"github.com/zerohop/zerohop/e2e/lab"
	"github.com/zerohop/zerohop/internal/apiserver"
	"github.com/zerohop/zerohop/speaker"
)

const (
	ns        = "gw"
	speakerNS = "zerohop-system"
	// requests per weighted route: a share of 0.8 is then measured to
	// about 0.9 points (one standard deviation), well inside 5.
	requests = 2000
	// tolerance is how far, in points, a Service's share may be from
	// its weight's.
	tolerance = 5.0
)

type env struct {
	t   *testing.T
	ctx context.Context
	l   *lab.Lab
	c   client.Client
}

func (e *env) create(objs ...client.Object) {
	e.t.Helper()
	for _, o := range objs {
		if err := e.c.Create(e.ctx, o); err != nil {
			e.t.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
	}
}

// gatewayCRDs is the chart's copy of the Gateway API's standard CRDs.
func gatewayCRDs(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for ; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "charts", "zerohop", "files", "gateway-api", "crds")
		}
		if dir == filepath.Dir(dir) {
			t.Fatal("go.mod not found")
		}
	}
}

// testDeadline is when the test's own waits must give up: within d, and
// early enough before go test's -timeout that the lab's cleanups (a minute
// for lab down) still run, since that timeout panics and skips them all.
func testDeadline(t *testing.T, d time.Duration) time.Time {
	dl := time.Now().Add(d)
	if end, ok := t.Deadline(); ok && end.Add(-90*time.Second).Before(dl) {
		dl = end.Add(-90 * time.Second)
	}
	return dl
}

// TestGatewayL4 is the acceptance test of the Gateway API: see the
// package comment.
func TestGatewayL4(t *testing.T) {
	start := time.Now()
	l := lab.Up(t, lab.Options{Nodes: 3})
	ctx, cancel := context.WithDeadline(context.Background(), testDeadline(t, 3*time.Minute))
	defer cancel()
	ctrllog.SetLogger(logr.Discard())
	if err := apiserver.InstallCRDs(ctx, l.RESTConfig, gatewayCRDs(t)); err != nil {
		t.Fatal(err)
	}
	scheme := speaker.Scheme()
	if err := gatewayv1.Install(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(l.RESTConfig, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ctx: ctx, l: l, c: c}
	e.bgp()
	l.Controller(t, zerohopBin, "--gateway-api")
	speakers := l.Speakers(t, zerohopBin, speakerNS, nil, []string{"ZEROHOP_MEMBERLIST_KEY=zh-gateway-e2e-key00"})
	for i := 1; i <= l.Nodes(); i++ {
		speakers.Start(i)
	}

	// Backends: Service a on nodes 1 and 2, b on node 3, the UDP Service
	// dns on node 1, and apps/web on node 2.
	for _, p := range []lab.PodSpec{
		{Name: "a1", Namespace: ns, Node: 1, Labels: map[string]string{"app": "a"}},
		{Name: "a2", Namespace: ns, Node: 2, Labels: map[string]string{"app": "a"}},
		{Name: "b1", Namespace: ns, Node: 3, Labels: map[string]string{"app": "b"}},
		{Name: "dns1", Namespace: ns, Node: 1, Labels: map[string]string{"app": "dns"}},
		{Name: "web1", Namespace: "apps", Node: 2, Labels: map[string]string{"app": "web"}},
	} {
		if _, err := l.AddPod(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	e.backend(ns, "a", corev1.ProtocolTCP)
	e.backend(ns, "b", corev1.ProtocolTCP)
	e.backend(ns, "dns", corev1.ProtocolUDP)
	e.backend("apps", "web", corev1.ProtocolTCP)
	t.Logf("lab, zerohop and 5 backend Pods up in %s", time.Since(start).Round(100*time.Millisecond))

	created := time.Now()
	e.create(
		&gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "zerohop"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: gateway.ControllerName}},
		&gatewayv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "edge"},
			Spec: gatewayv1.GatewaySpec{
				GatewayClassName: "zerohop",
				Infrastructure:   &gatewayv1.GatewayInfrastructure{Annotations: map[gatewayv1.AnnotationKey]gatewayv1.AnnotationValue{"zerohop.io/address-pool": "lab"}},
				Listeners: []gatewayv1.Listener{
					{Name: "split-a", Protocol: gatewayv1.TCPProtocolType, Port: 8080},
					{Name: "split-b", Protocol: gatewayv1.TCPProtocolType, Port: 8081},
					{Name: "dns", Protocol: gatewayv1.UDPProtocolType, Port: 5353},
					{Name: "missing", Protocol: gatewayv1.TCPProtocolType, Port: 8082},
					{Name: "xns", Protocol: gatewayv1.TCPProtocolType, Port: 8083},
					{Name: "partial", Protocol: gatewayv1.TCPProtocolType, Port: 8084},
				},
			},
		},
		tcpRoute("split-a", backendRef("a", 80), backendRef("b", 20)),
		tcpRoute("split-b", backendRef("a", 20), backendRef("b", 80)),
		tcpRoute("missing", backendRef("gone", 1)),
		tcpRoute("xns", withNamespace(backendRef("web", 1), "apps")),
		tcpRoute("partial", backendRef("a", 70), backendRef("gone", 30)),
		&gatewayv1.UDPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "dns"},
			Spec: gatewayv1.UDPRouteSpec{CommonRouteSpec: parents("dns"), Rules: []gatewayv1.UDPRouteRule{{BackendRefs: []gatewayv1.BackendRef{backendRef("dns", 1)}}}}},
	)

	var gw gatewayv1.Gateway
	lab.Eventually(t, time.Minute, "Gateway edge Programmed", func() (bool, string) {
		if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "edge"}, &gw); err != nil {
			return false, err.Error()
		}
		p := meta.FindStatusCondition(gw.Status.Conditions, "Programmed")
		return p != nil && p.Status == metav1.ConditionTrue && p.ObservedGeneration == gw.Generation, fmt.Sprintf("%+v", gw.Status.Conditions)
	})
	t.Logf("Gateway Programmed %s after it was created: %s", time.Since(created).Round(10*time.Millisecond), cond(gw.Status.Conditions, "Programmed").Message)

	var vip4, vip6 netip.Addr
	for _, a := range gw.Status.Addresses {
		ip := netip.MustParseAddr(a.Value)
		if ip.Is4() {
			vip4 = ip
		} else {
			vip6 = ip
		}
	}
	if !vip4.IsValid() || !vip6.IsValid() {
		t.Fatalf("addresses %+v: want one IPv4 and one IPv6 from pool lab", gw.Status.Addresses)
	}

	t.Run("status as the spec defines it", func(t *testing.T) {
		want := map[string]string{"Accepted": "True/Accepted", "Programmed": "True/Programmed"}
		for typ, w := range want {
			if got := condStr(cond(gw.Status.Conditions, typ)); got != w {
				t.Errorf("Gateway %s=%s, want %s", typ, got, w)
			}
		}
		for _, ls := range gw.Status.Listeners {
			kind := "TCPRoute"
			if ls.Name == "dns" {
				kind = "UDPRoute"
			}
			if ls.AttachedRoutes != 1 || len(ls.SupportedKinds) != 1 || string(ls.SupportedKinds[0].Kind) != kind {
				t.Errorf("listener %s: attachedRoutes %d, supportedKinds %v", ls.Name, ls.AttachedRoutes, ls.SupportedKinds)
			}
			for _, typ := range []string{"Accepted", "ResolvedRefs", "Programmed"} {
				if got := condStr(cond(ls.Conditions, typ)); got != "True/"+typ {
					t.Errorf("listener %s: %s=%s", ls.Name, typ, got)
				}
			}
		}
		routes := []struct {
			obj      client.Object
			resolved string
		}{
			{&gatewayv1.TCPRoute{}, "split-a True/ResolvedRefs"},
			{&gatewayv1.TCPRoute{}, "split-b True/ResolvedRefs"},
			{&gatewayv1.UDPRoute{}, "dns True/ResolvedRefs"},
			{&gatewayv1.TCPRoute{}, "missing False/BackendNotFound"},
			{&gatewayv1.TCPRoute{}, "xns False/RefNotPermitted"},
			{&gatewayv1.TCPRoute{}, "partial False/BackendNotFound"},
		}
		for _, r := range routes {
			name, want, _ := strings.Cut(r.resolved, " ")
			got := e.routeConds(r.obj, name)
			t.Logf("%s %s: Accepted=%s (%s), ResolvedRefs=%s (%s)", r.obj.GetObjectKind().GroupVersionKind().Kind, name,
				condStr(cond(got, "Accepted")), cond(got, "Accepted").Message, condStr(cond(got, "ResolvedRefs")), cond(got, "ResolvedRefs").Message)
			if s := condStr(cond(got, "Accepted")); s != "True/Accepted" {
				t.Errorf("route %s: Accepted=%s", name, s)
			}
			if s := condStr(cond(got, "ResolvedRefs")); s != want {
				t.Errorf("route %s: ResolvedRefs=%s, want %s", name, s, want)
			}
		}
	})

	t.Run("announced like any Service: one route, every node a next hop", func(t *testing.T) {
		for _, vip := range []netip.Addr{vip4, vip6} {
			pfx := netip.PrefixFrom(vip, vip.BitLen())
			lab.Eventually(t, 30*time.Second, "route for "+pfx.String(), func() (bool, string) {
				rs, err := lab.RIB(ctx, pfx)
				if err != nil || len(rs) == 0 {
					return false, fmt.Sprint(rs, err)
				}
				return rs[0].Protocol == "bgp" && rs[0].Installed && len(rs[0].NextHops) == l.Nodes(), fmt.Sprintf("%+v", rs[0])
			})
		}
	})

	// The weighted routes, as the client sees them through the router
	// and the three nodes' XDP programs.
	shares := func(t *testing.T, port int, wantA float64) {
		t.Helper()
		addr := net.JoinHostPort(vip4.String(), fmt.Sprint(port))
		before := flows(t, l.Nodes(), bpf.ServiceKey{Addr: vip4, Port: uint16(port), Proto: bpf.TCP})
		t0 := time.Now()
		per := e.requests(t, "tcp", addr, requests)
		took := time.Since(t0)
		a := per["a1"] + per["a2"]
		b := per["b1"]
		if a+b != requests {
			t.Fatalf("answers %v: %d of %d from a or b", per, a+b, requests)
		}
		pa, pb := 100*float64(a)/requests, 100*float64(b)/requests
		t.Logf("%s: %d connections in %s: a %.1f%% (a1 %.1f%%, a2 %.1f%%), b %.1f%%; weights a %.0f, b %.0f",
			addr, requests, took.Round(10*time.Millisecond), pa, 100*float64(per["a1"])/requests, 100*float64(per["a2"])/requests, pb, wantA, 100-wantA)
		if pa < wantA-tolerance || pa > wantA+tolerance {
			t.Errorf("a took %.1f%% of the connections, want %.0f%% ± %.0f", pa, wantA, tolerance)
		}
		// Each of a's two Pods has half of a's weight.
		for _, p := range []string{"a1", "a2"} {
			if s := 100 * float64(per[p]) / requests; s < wantA/2-tolerance || s > wantA/2+tolerance {
				t.Errorf("%s took %.1f%%, want %.0f%% ± %.0f", p, s, wantA/2, tolerance)
			}
		}
		// Every connection was a new flow in some node's datapath, on
		// the backend that answered it.
		after := flows(t, l.Nodes(), bpf.ServiceKey{Addr: vip4, Port: uint16(port), Proto: bpf.TCP})
		var total uint64
		for be, n := range after {
			total += n - before[be]
		}
		if total < requests {
			t.Errorf("the datapath counted %d new flows for %s, want at least %d", total, addr, requests)
		}
	}
	t.Run("split-a: 80/20 between Services a and b", func(t *testing.T) { shares(t, 8080, 80) })
	t.Run("split-b: 20/80 between Services a and b", func(t *testing.T) { shares(t, 8081, 20) })

	t.Run("UDPRoute", func(t *testing.T) {
		for _, vip := range []netip.Addr{vip4, vip6} {
			per := e.requests(t, "udp", net.JoinHostPort(vip.String(), "5353"), 20)
			if per["dns1"] != 20 {
				t.Errorf("%s: answers %v, want all 20 from dns1", vip, per)
			}
		}
	})

	t.Run("IPv6 takes the same routes", func(t *testing.T) {
		per := e.requests(t, "tcp", net.JoinHostPort(vip6.String(), "8080"), 50)
		if per["a1"]+per["a2"]+per["b1"] != 50 {
			t.Errorf("answers %v", per)
		}
	})

	t.Run("a missing backend: its listener resets every connection, the others do not notice", func(t *testing.T) {
		for _, vip := range []netip.Addr{vip4, vip6} {
			e.refused(t, net.JoinHostPort(vip.String(), "8082"), 20)
		}
		// The weighted routes above ran with this route in place and
		// lost no connection; one more round on each, interleaved.
		for range 20 {
			for _, port := range []string{"8080", "8081"} {
				e.requests(t, "tcp", net.JoinHostPort(vip4.String(), port), 1)
			}
		}
	})

	// A route split 70/30 between Service a and a missing one: the
	// missing one's share of the connections is reset, the rest answered
	// by a's Pods, and nothing is lost, on this route or the one whose
	// connections are interleaved with it.
	t.Run("partial: a missing backend's 30% reset, a's 70% answered", func(t *testing.T) {
		key := bpf.ServiceKey{Addr: vip4, Port: 8084, Proto: bpf.TCP}
		before := rejects(t, l.Nodes(), key)
		addr, other := net.JoinHostPort(vip4.String(), "8084"), net.JoinHostPort(vip4.String(), "8080")
		t0 := time.Now()
		per, reset := e.partial(t, addr, requests, func() { e.requests(t, "tcp", other, 1) })
		took := time.Since(t0)
		pr := 100 * float64(reset) / requests
		t.Logf("%s: %d connections (and as many to %s, all answered) in %s: %.1f%% reset, answers %v; weights a 70, missing 30",
			addr, requests, other, took.Round(10*time.Millisecond), pr, per)
		// The share of resets is a binomial proportion: with 2000
		// connections and p 0.3 its standard deviation is 1.0 point,
		// so 5 points is 4.9 deviations, the bound the weighted
		// routes use.
		if pr < 30-tolerance || pr > 30+tolerance {
			t.Errorf("%.1f%% of the connections reset, want 30%% ± %.0f", pr, tolerance)
		}
		if per["a1"]+per["a2"]+reset != requests {
			t.Errorf("answers %v and %d resets for %d connections", per, reset, requests)
		}
		if got := rejects(t, l.Nodes(), key) - before; got < uint64(reset) {
			t.Errorf("the datapaths counted %d rejected flows, want at least the %d resets", got, reset)
		}
		per6, reset6 := e.partial(t, net.JoinHostPort(vip6.String(), "8084"), 200, nil)
		t.Logf("IPv6: %d of 200 reset, answers %v", reset6, per6)
		if reset6 == 0 || reset6 == 200 {
			t.Errorf("IPv6: %d of 200 reset, want about 60", reset6)
		}
	})

	t.Run("cross-namespace backend: reset, then allowed by a ReferenceGrant", func(t *testing.T) {
		addr := net.JoinHostPort(vip4.String(), "8083")
		e.refused(t, addr, 5)
		grant := &gatewayv1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "gw-routes"},
			Spec: gatewayv1.ReferenceGrantSpec{
				From: []gatewayv1.ReferenceGrantFrom{{Group: gatewayv1.GroupName, Kind: "TCPRoute", Namespace: ns}},
				To:   []gatewayv1.ReferenceGrantTo{{Kind: "Service", Name: new(gatewayv1.ObjectName("web"))}},
			}}
		granted := time.Now()
		e.create(grant)
		lab.Eventually(t, 30*time.Second, "xns ResolvedRefs", func() (bool, string) {
			c := cond(e.routeConds(&gatewayv1.TCPRoute{}, "xns"), "ResolvedRefs")
			return condStr(c) == "True/ResolvedRefs", condStr(c)
		})
		lab.Eventually(t, 30*time.Second, "web1 answering on "+addr, func() (bool, string) {
			rctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			rep, err := l.Request(rctx, "tcp", addr)
			return err == nil && l.Workload(rep.Pod) == "web1", fmt.Sprint(rep.Pod, err)
		})
		t.Logf("ReferenceGrant created: %s answered by web1 after %s", addr, time.Since(granted).Round(10*time.Millisecond))
		if per := e.requests(t, "tcp", addr, 20); per["web1"] != 20 {
			t.Errorf("answers %v", per)
		}
	})

	// A Gateway whose only route has no valid backendRef is announced
	// all the same (its slices carry a reject share), so its clients
	// get resets rather than silence.
	t.Run("a Gateway with no valid backend: announced, every connection reset", func(t *testing.T) {
		e.create(
			&gatewayv1.Gateway{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "dead"},
				Spec: gatewayv1.GatewaySpec{
					GatewayClassName: "zerohop",
					Infrastructure:   &gatewayv1.GatewayInfrastructure{Annotations: map[gatewayv1.AnnotationKey]gatewayv1.AnnotationValue{"zerohop.io/address-pool": "lab"}},
					Listeners:        []gatewayv1.Listener{{Name: "dead", Protocol: gatewayv1.TCPProtocolType, Port: 9090}},
				},
			},
			&gatewayv1.TCPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "dead"},
				Spec: gatewayv1.TCPRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "dead"}}},
					Rules: []gatewayv1.TCPRouteRule{{BackendRefs: []gatewayv1.BackendRef{backendRef("gone", 1)}}}}},
		)
		var dead gatewayv1.Gateway
		lab.Eventually(t, time.Minute, "Gateway dead Programmed and announced", func() (bool, string) {
			if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "dead"}, &dead); err != nil {
				return false, err.Error()
			}
			p := cond(dead.Status.Conditions, "Programmed")
			return condStr(p) == "True/Programmed" && strings.Contains(p.Message, "BGP") && len(dead.Status.Addresses) == 2, p.Message
		})
		t.Logf("Gateway dead: %s", cond(dead.Status.Conditions, "Programmed").Message)
		for _, a := range dead.Status.Addresses {
			e.refused(t, net.JoinHostPort(a.Value, "9090"), 10)
		}
	})
}

// bgp creates the pool (IPv4 and IPv6), the router's peers and an
// advertisement, and lets the router spread its ECMP by ports.
func (e *env) bgp() {
	e.t.Helper()
	r4, r6 := lab.RouterNodeAddrs()
	e.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: speakerNS}},
		&v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "lab"},
			Spec: v1alpha1.IPAddressPoolSpec{Addresses: []v1alpha1.Address{"203.0.113.0/28", "2001:db8:113::/124"}}},
		&v1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "lab"}, Spec: v1alpha1.BGPAdvertisementSpec{IPAddressPools: []string{"lab"}}})
	for name, addr := range map[string]netip.Addr{"router-v4": r4, "router-v6": r6} {
		e.create(&v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.BGPPeerSpec{
			MyASN: lab.DefaultNodeASN, PeerASN: lab.DefaultRouterASN, PeerAddress: addr.String(),
			HoldTime: &metav1.Duration{Duration: 9 * time.Second}, ConnectTime: &metav1.Duration{Duration: time.Second}}})
	}
	for _, s := range []string{"net.ipv4.fib_multipath_hash_policy=1", "net.ipv6.fib_multipath_hash_policy=1"} {
		if out, err := exec.CommandContext(e.ctx, "ip", "netns", "exec", lab.RouterNS, "sysctl", "-qw", s).CombinedOutput(); err != nil {
			e.t.Fatalf("sysctl %s: %v: %s", s, err, out)
		}
	}
}

// backend is a dual-stack ClusterIP Service on the echo server's port for
// the Pods labelled app=name; Kubernetes' EndpointSlice controller writes
// its slices.
func (e *env) backend(namespace, name string, proto corev1.Protocol) {
	e.t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name},
			// Both families: the Gateway has an address of each.
			IPFamilyPolicy: new(corev1.IPFamilyPolicyPreferDualStack),
			Ports:          []corev1.ServicePort{{Name: "echo", Port: echo.DefaultTCPPort, Protocol: proto, TargetPort: intstr.FromInt32(echo.DefaultTCPPort)}}},
	}
	if err := e.l.AddService(e.ctx, svc); err != nil {
		e.t.Fatal(err)
	}
}

func backendRef(name string, weight int32) gatewayv1.BackendRef {
	return gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name), Port: new(int32(echo.DefaultTCPPort))}, Weight: new(weight)}
}

func withNamespace(r gatewayv1.BackendRef, namespace string) gatewayv1.BackendRef {
	r.Namespace = new(gatewayv1.Namespace(namespace))
	return r
}

func parents(listener string) gatewayv1.CommonRouteSpec {
	return gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "edge", SectionName: new(gatewayv1.SectionName(listener))}}}
}

// tcpRoute is a TCPRoute named after the listener it attaches to.
func tcpRoute(listener string, refs ...gatewayv1.BackendRef) *gatewayv1.TCPRoute {
	return &gatewayv1.TCPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: listener},
		Spec: gatewayv1.TCPRouteSpec{CommonRouteSpec: parents(listener), Rules: []gatewayv1.TCPRouteRule{{BackendRefs: refs}}}}
}

func cond(conds []metav1.Condition, typ string) metav1.Condition {
	if c := meta.FindStatusCondition(conds, typ); c != nil {
		return *c
	}
	return metav1.Condition{Type: typ, Status: "<none>"}
}

func condStr(c metav1.Condition) string { return fmt.Sprintf("%s/%s", c.Status, c.Reason) }

// routeConds reads a route and returns zerohop's conditions for it.
func (e *env) routeConds(obj client.Object, name string) []metav1.Condition {
	e.t.Helper()
	if err := e.c.Get(e.ctx, types.NamespacedName{Namespace: ns, Name: name}, obj); err != nil {
		e.t.Fatal(err)
	}
	var ps []gatewayv1.RouteParentStatus
	switch r := obj.(type) {
	case *gatewayv1.TCPRoute:
		ps = r.Status.Parents
		r.Kind = "TCPRoute"
	case *gatewayv1.UDPRoute:
		ps = r.Status.Parents
		r.Kind = "UDPRoute"
	}
	for _, p := range ps {
		if p.ControllerName == gateway.ControllerName {
			return p.Conditions
		}
	}
	return nil
}

// requests sends n requests from the client and counts the answers per
// workload, failing on any error or a client address not preserved.
func (e *env) requests(t *testing.T, proto, addr string, n int) map[string]int {
	t.Helper()
	per, err := e.l.Requests(e.ctx, proto, addr, n)
	if err != nil {
		t.Fatal(err)
	}
	return per
}

// refused checks that n TCP connections to addr are each refused with a
// reset, at once: no answer and no timeout.
func (e *env) refused(t *testing.T, addr string, n int) {
	t.Helper()
	for i := range n {
		ctx, cancel := context.WithTimeout(e.ctx, 2*time.Second)
		rep, err := e.l.Request(ctx, "tcp", addr)
		cancel()
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("connection %d to %s: answered by %q, error %v; want a reset (connection refused)", i+1, addr, rep.Pod, err)
		}
	}
}

// partial sends n TCP connections to addr, calling between (if set)
// after each, and counts the answers per workload and the resets; any
// other failure (a timeout: a rejected connection dropped, or a lost one)
// fails the test.
func (e *env) partial(t *testing.T, addr string, n int, between func()) (map[string]int, int) {
	t.Helper()
	per, reset := map[string]int{}, 0
	for i := range n {
		ctx, cancel := context.WithTimeout(e.ctx, 3*time.Second)
		rep, err := e.l.Request(ctx, "tcp", addr)
		cancel()
		switch {
		case err == nil:
			per[e.l.Workload(rep.Pod)]++
		case errors.Is(err, syscall.ECONNREFUSED):
			reset++
		default:
			t.Fatalf("connection %d to %s: %v; want an answer or a reset", i+1, addr, err)
		}
		if between != nil {
			between()
		}
	}
	return per, reset
}

// rejects sums, over the nodes' datapaths, the new flows of key that
// fell in its reject share.
func rejects(t *testing.T, nodes int, key bpf.ServiceKey) uint64 {
	t.Helper()
	var n uint64
	for i := 1; i <= nodes; i++ {
		snap, err := bpf.Inspect(lab.SpeakerPinRoot(i))
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		for _, s := range snap.Services {
			if s.Key == key {
				n += s.Counters.Rejects
			}
		}
	}
	return n
}

// flows sums, over the nodes' datapaths, the flows each backend of key
// took.
func flows(t *testing.T, nodes int, key bpf.ServiceKey) map[netip.AddrPort]uint64 {
	t.Helper()
	out := map[netip.AddrPort]uint64{}
	for i := 1; i <= nodes; i++ {
		snap, err := bpf.Inspect(lab.SpeakerPinRoot(i))
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		for _, s := range snap.Services {
			if s.Key != key {
				continue
			}
			for _, b := range s.Backends {
				out[b.AddrPort()] += b.Counters.Flows
			}
		}
	}
	return out
}
