package gateway_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2/textlogger"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/controller"
	"github.com/zerohop/zerohop/controller/gateway"
	"github.com/zerohop/zerohop/internal/apiserver"
)

func TestMain(m *testing.M) {
	// ZEROHOP_TEST_LOG=1 shows the controller's log.
	if os.Getenv("ZEROHOP_TEST_LOG") != "" {
		ctrl.SetLogger(textlogger.NewLogger(textlogger.NewConfig(textlogger.Verbosity(4))))
	} else {
		ctrl.SetLogger(logr.Discard())
	}
	os.Exit(m.Run())
}

const waitFor = 20 * time.Second

// CRDDir is where the chart keeps the Gateway API's standard CRDs.
func crdDir(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "charts", "zerohop", "files", "gateway-api", "crds")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the working directory")
		}
		dir = parent
	}
}

type env struct {
	cli client.Client
	cfg *rest.Config
	// writes counts the controller's writes of Services' and
	// EndpointSlices' metadata and spec (not status).
	writes atomic.Int64
}

// newEnv starts an API server with zerohop's and the Gateway API's CRDs
// and zerohop's controller with the Gateway API on.
func newEnv(t *testing.T) *env {
	t.Helper()
	srv := apiserver.ForTest(t)
	cfg := rest.CopyConfig(srv.Config)
	if err := apiserver.InstallCRDs(context.Background(), cfg, crdDir(t)); err != nil {
		t.Fatal(err)
	}
	e := &env{cfg: cfg}
	counted := rest.CopyConfig(cfg)
	counted.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTrip(func(req *http.Request) (*http.Response, error) {
			p := req.URL.Path
			if req.Method != http.MethodGet && !strings.HasSuffix(p, "/status") &&
				(strings.Contains(p, "/services/") || strings.HasSuffix(p, "/services") || strings.Contains(p, "/endpointslices")) {
				e.writes.Add(1)
			}
			return rt.RoundTrip(req)
		})
	}
	c, err := controller.New(counted, controller.Options{ConditionInterval: 200 * time.Millisecond, SettleTime: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := gateway.Setup(c.Manager(), gateway.Options{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
	})
	cli, err := client.New(cfg, client.Options{Scheme: c.Manager().GetScheme()})
	if err != nil {
		t.Fatal(err)
	}
	e.cli = cli
	return e
}

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func (e *env) create(t *testing.T, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := e.cli.Create(context.Background(), o); err != nil {
			t.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
	}
}

func eventually(t *testing.T, f func() string) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		msg := f()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", waitFor, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func backend(ns, name string, proto corev1.Protocol, addrs ...string) (*corev1.Service, *discoveryv1.EndpointSlice) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{{Name: "p", Port: 9000, Protocol: proto}}},
	}
	// As Kubernetes' EndpointSlice controller would write it.
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name + "-abcde", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: new("p"), Port: new(int32(9000)), Protocol: new(proto)}},
	}
	for i, a := range addrs {
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}, Conditions: discoveryv1.EndpointConditions{Ready: new(true)},
			NodeName: new("n1"), TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: fmt.Sprintf("%s-%d", name, i)}})
	}
	return svc, sl
}

func ref(name string, weight int32) gatewayv1.BackendRef {
	return gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name), Port: new(int32(9000))}, Weight: new(weight)}
}

func parentRef(gw, section string) gatewayv1.ParentReference {
	return gatewayv1.ParentReference{Name: gatewayv1.ObjectName(gw), SectionName: new(gatewayv1.SectionName(section))}
}

func tcpRoute(ns, name string, parent gatewayv1.ParentReference, refs ...gatewayv1.BackendRef) *gatewayv1.TCPRoute {
	return &gatewayv1.TCPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: gatewayv1.TCPRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{parent}},
			Rules: []gatewayv1.TCPRouteRule{{BackendRefs: refs}}}}
}

func cond(conds []metav1.Condition, typ string) string {
	c := meta.FindStatusCondition(conds, typ)
	if c == nil {
		return typ + "=<none>"
	}
	return fmt.Sprintf("%s=%s/%s", c.Type, c.Status, c.Reason)
}

func (e *env) gateway(t *testing.T, ns, name string) *gatewayv1.Gateway {
	t.Helper()
	var gw gatewayv1.Gateway
	if err := e.cli.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &gw); err != nil {
		t.Fatal(err)
	}
	return &gw
}

// routeConds is the route's zerohop conditions towards its first parent.
func (e *env) routeConds(t *testing.T, obj client.Object) []metav1.Condition {
	t.Helper()
	if err := e.cli.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
		t.Fatal(err)
	}
	var parents []gatewayv1.RouteParentStatus
	switch r := obj.(type) {
	case *gatewayv1.TCPRoute:
		parents = r.Status.Parents
	case *gatewayv1.UDPRoute:
		parents = r.Status.Parents
	}
	for _, p := range parents {
		if p.ControllerName == gateway.ControllerName {
			return p.Conditions
		}
	}
	return nil
}

func (e *env) waitRoute(t *testing.T, obj client.Object, want ...string) {
	t.Helper()
	eventually(t, func() string {
		conds := e.routeConds(t, obj)
		for _, w := range want {
			typ, _, _ := strings.Cut(w, "=")
			if got := cond(conds, typ); got != w {
				return fmt.Sprintf("%s: %s, want %s (%v)", obj.GetName(), got, w, conds)
			}
		}
		return ""
	})
}

func (e *env) waitGateway(t *testing.T, ns, name string, want ...string) *gatewayv1.Gateway {
	t.Helper()
	var gw *gatewayv1.Gateway
	eventually(t, func() string {
		gw = e.gateway(t, ns, name)
		for _, w := range want {
			typ, _, _ := strings.Cut(w, "=")
			if got := cond(gw.Status.Conditions, typ); got != w {
				return fmt.Sprintf("gateway %s: %s, want %s (%v)", name, got, w, gw.Status.Conditions)
			}
			for _, c := range gw.Status.Conditions {
				if c.ObservedGeneration != gw.Generation {
					return fmt.Sprintf("%s observedGeneration %d, generation %d", c.Type, c.ObservedGeneration, gw.Generation)
				}
			}
		}
		return ""
	})
	return gw
}

// slices is the weights of the Gateway's Service's endpoints per port:
// "port addr weight".
func (e *env) slices(t *testing.T, ns, svc string) []string {
	t.Helper()
	var l discoveryv1.EndpointSliceList
	if err := e.cli.List(context.Background(), &l, client.InNamespace(ns), client.MatchingLabels{discoveryv1.LabelServiceName: svc}); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, sl := range l.Items {
		if sl.Labels[discoveryv1.LabelManagedBy] != gateway.ManagedBy {
			out = append(out, "foreign slice "+sl.Name)
		}
		if w, ok := sl.Annotations[v1alpha1.AnnotationRejectWeight]; ok {
			out = append(out, fmt.Sprintf("%s %s reject %s %d", *sl.Ports[0].Name, sl.AddressType, w, len(sl.Endpoints)))
		}
		for _, ep := range sl.Endpoints {
			out = append(out, fmt.Sprintf("%s %s %s", *sl.Ports[0].Name, ep.Addresses[0], sl.Annotations[v1alpha1.AnnotationEndpointWeight]))
		}
	}
	slices.Sort(out)
	return out
}

// TestGateway drives a Gateway through the controller against a real API
// server: the GatewayClass accepted, the Service and weighted slices made,
// the conditions of the Gateway, its listeners and its routes as the
// spec defines them, Programmed only once a (simulated) speaker reports
// the datapath and the announcement, ReferenceGrant given and taken away,
// a requested address, and the Service taken back when the Gateway moves
// to another class.
func TestGateway(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, ns := range []string{"infra", "apps"} {
		e.create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	e.create(t, &v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "gw-pool"}, Spec: v1alpha1.IPAddressPoolSpec{Addresses: []v1alpha1.Address{"203.0.113.0/28"}}})
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
	e.create(t, node)
	node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now()}}
	if err := e.cli.Status().Update(ctx, node); err != nil {
		t.Fatal(err)
	}
	e.create(t,
		&gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "zerohop"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: gateway.ControllerName}},
		&gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "other"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: "example.com/other"}},
	)
	eventually(t, func() string {
		var c gatewayv1.GatewayClass
		if err := e.cli.Get(ctx, types.NamespacedName{Name: "zerohop"}, &c); err != nil {
			return err.Error()
		}
		if got := cond(c.Status.Conditions, "Accepted"); got != "Accepted=True/Accepted" || len(c.Status.SupportedFeatures) != 4 {
			return fmt.Sprintf("class: %s, features %v", got, c.Status.SupportedFeatures)
		}
		return ""
	})

	for _, b := range [][]string{{"a", "TCP", "100.64.1.2", "100.64.1.3"}, {"b", "TCP", "100.64.2.2"}, {"dns", "UDP", "100.64.3.2"}} {
		svc, sl := backend("infra", b[0], corev1.Protocol(b[1]), b[2:]...)
		e.create(t, svc, sl)
	}
	web, webSlice := backend("apps", "web", corev1.ProtocolTCP, "100.64.2.9")
	e.create(t, web, webSlice)

	gw := &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: "edge"},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: "zerohop", Listeners: []gatewayv1.Listener{
			{Name: "split", Protocol: gatewayv1.TCPProtocolType, Port: 8080},
			{Name: "broken", Protocol: gatewayv1.TCPProtocolType, Port: 8081},
			{Name: "xns", Protocol: gatewayv1.TCPProtocolType, Port: 8082},
			{Name: "dns", Protocol: gatewayv1.UDPProtocolType, Port: 5353},
			{Name: "web", Protocol: gatewayv1.HTTPProtocolType, Port: 80},
		}},
	}
	split := tcpRoute("infra", "split", parentRef("edge", "split"), ref("a", 80), ref("b", 20))
	broken := tcpRoute("infra", "broken", parentRef("edge", "broken"), ref("gone", 1))
	xns := tcpRoute("infra", "xns", parentRef("edge", "xns"), ref("web", 1))
	xns.Spec.Rules[0].BackendRefs[0].Namespace = new(gatewayv1.Namespace("apps"))
	dns := &gatewayv1.UDPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: "dns"},
		Spec: gatewayv1.UDPRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{parentRef("edge", "dns")}},
			Rules: []gatewayv1.UDPRouteRule{{BackendRefs: []gatewayv1.BackendRef{ref("dns", 1)}}}}}
	e.create(t, gw, split, broken, xns, dns)

	svcName := gateway.ServiceName("edge", "zerohop")
	t.Run("the Gateway becomes a Service of zerohop's class", func(t *testing.T) {
		var svc corev1.Service
		eventually(t, func() string {
			if err := e.cli.Get(ctx, types.NamespacedName{Namespace: "infra", Name: svcName}, &svc); err != nil {
				return err.Error()
			}
			if len(svc.Status.LoadBalancer.Ingress) == 0 {
				return "no address yet"
			}
			return ""
		})
		var ports []string
		for _, p := range svc.Spec.Ports {
			ports = append(ports, fmt.Sprintf("%s/%s/%d", p.Name, p.Protocol, p.Port))
		}
		if got, want := strings.Join(ports, " "), "split/TCP/8080 broken/TCP/8081 xns/TCP/8082 dns/UDP/5353"; got != want {
			t.Errorf("ports %s, want %s", got, want)
		}
		if !metav1.IsControlledBy(&svc, e.gateway(t, "infra", "edge")) || *svc.Spec.LoadBalancerClass != controller.Class {
			t.Errorf("service owners %v, class %v", svc.OwnerReferences, *svc.Spec.LoadBalancerClass)
		}
		if svc.Annotations[v1alpha1.AnnotationAllocatedFrom] != "gw-pool" {
			t.Errorf("pool record %v", svc.Annotations)
		}
	})

	t.Run("weighted slices per listener", func(t *testing.T) {
		w := func(num, den int) string { return strconv.Itoa(num * (1 << 30) / den) }
		want := []string{
			"broken IPv4 reject " + w(1, 1) + " 0", // its one backendRef is missing
			"dns 100.64.3.2 " + w(1, 1),
			"split 100.64.1.2 " + w(80, 200),
			"split 100.64.1.3 " + w(80, 200),
			"split 100.64.2.2 " + w(20, 100),
			"xns IPv4 reject " + w(1, 1) + " 0", // not permitted
		}
		eventually(t, func() string {
			if got := e.slices(t, "infra", svcName); !slices.Equal(got, want) {
				return fmt.Sprintf("slices %q, want %q", got, want)
			}
			return ""
		})
	})

	t.Run("route conditions", func(t *testing.T) {
		e.waitRoute(t, split, "Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs")
		e.waitRoute(t, broken, "Accepted=True/Accepted", "ResolvedRefs=False/BackendNotFound")
		e.waitRoute(t, xns, "Accepted=True/Accepted", "ResolvedRefs=False/RefNotPermitted")
		e.waitRoute(t, dns, "Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs")
	})

	t.Run("not Programmed before the speakers report", func(t *testing.T) {
		gw := e.waitGateway(t, "infra", "edge", "Accepted=True/ListenersNotValid", "Programmed=False/Pending")
		if len(gw.Status.Addresses) != 1 || !strings.HasPrefix(gw.Status.Addresses[0].Value, "203.0.113.") {
			t.Errorf("addresses %+v", gw.Status.Addresses)
		}
		attached := map[string]int32{}
		for _, l := range gw.Status.Listeners {
			attached[string(l.Name)] = l.AttachedRoutes
		}
		if fmt.Sprint(attached) != "map[broken:1 dns:1 split:1 web:0 xns:1]" {
			t.Errorf("attached routes %v", attached)
		}
	})

	t.Run("Programmed once the datapath and the announcement are in place", func(t *testing.T) {
		ip := e.gateway(t, "infra", "edge").Status.Addresses[0].Value
		key := "infra/" + svcName
		sp := &v1alpha1.SpeakerStatus{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
		e.create(t, sp)
		sp.Status = v1alpha1.SpeakerStatusStatus{Node: "n1",
			Sessions:      []v1alpha1.BGPSessionStatus{{Peer: "router", State: "established"}},
			Datapath:      &v1alpha1.DatapathStatus{Programmed: []string{key}},
			Announcements: []v1alpha1.ServiceAnnouncement{{Service: key, Prefixes: []string{ip + "/32"}, Peers: []string{"router"}}},
		}
		if err := e.cli.Status().Update(ctx, sp); err != nil {
			t.Fatal(err)
		}
		gw := e.waitGateway(t, "infra", "edge", "Programmed=True/Programmed")
		for _, l := range gw.Status.Listeners {
			want := "Programmed=True/Programmed"
			if l.Name == "web" {
				want = "Programmed=False/Invalid"
			}
			if got := cond(l.Conditions, "Programmed"); got != want {
				t.Errorf("listener %s: %s, want %s", l.Name, got, want)
			}
		}
	})

	t.Run("settled: nothing is written again", func(t *testing.T) {
		// Backend endpoints, Services and the Gateway's own Service's
		// status keep changing events flowing; none of them may cost a
		// write once the objects are as wanted.
		time.Sleep(time.Second)
		before := e.writes.Load()
		if before == 0 {
			t.Fatal("no write counted while the Gateway was built: the counter sees nothing")
		}
		_, sl := backend("infra", "a", corev1.ProtocolTCP)
		var have discoveryv1.EndpointSlice
		if err := e.cli.Get(ctx, client.ObjectKeyFromObject(sl), &have); err != nil {
			t.Fatal(err)
		}
		have.Labels["touched"] = "yes" // an event, no change to the endpoints
		if err := e.cli.Update(ctx, &have); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		if n := e.writes.Load() - before; n != 0 {
			t.Errorf("%d Service or EndpointSlice writes with nothing to change", n)
		}
	})

	t.Run("a ReferenceGrant allows the cross-namespace backend, and its removal stops it", func(t *testing.T) {
		g := &gatewayv1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "from-infra"},
			Spec: gatewayv1.ReferenceGrantSpec{
				From: []gatewayv1.ReferenceGrantFrom{{Group: gatewayv1.GroupName, Kind: "TCPRoute", Namespace: "infra"}},
				To:   []gatewayv1.ReferenceGrantTo{{Kind: "Service", Name: new(gatewayv1.ObjectName("web"))}},
			}}
		e.create(t, g)
		e.waitRoute(t, xns, "ResolvedRefs=True/ResolvedRefs")
		eventually(t, func() string {
			if got := e.slices(t, "infra", svcName); !slices.Contains(got, "xns 100.64.2.9 "+strconv.Itoa(1<<30)) ||
				slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, "xns IPv4 reject") }) {
				return fmt.Sprintf("slices %q lack the granted backend or still reject for it", got)
			}
			return ""
		})
		if err := e.cli.Delete(ctx, g); err != nil {
			t.Fatal(err)
		}
		e.waitRoute(t, xns, "ResolvedRefs=False/RefNotPermitted")
		eventually(t, func() string {
			var got []string
			for _, s := range e.slices(t, "infra", svcName) {
				if strings.HasPrefix(s, "xns ") {
					got = append(got, s)
				}
			}
			if want := []string{"xns IPv4 reject " + strconv.Itoa(1<<30) + " 0"}; !slices.Equal(got, want) {
				return fmt.Sprintf("the refused backend's slices %q, want %q", got, want)
			}
			return ""
		})
	})

	t.Run("a route to a TCP listener by a UDPRoute is not allowed", func(t *testing.T) {
		bad := &gatewayv1.UDPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: "bad"},
			Spec: gatewayv1.UDPRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{parentRef("edge", "split")}},
				Rules: []gatewayv1.UDPRouteRule{{BackendRefs: []gatewayv1.BackendRef{ref("dns", 1)}}}}}
		e.create(t, bad)
		e.waitRoute(t, bad, "Accepted=False/NotAllowedByListeners")
	})

	t.Run("requested addresses", func(t *testing.T) {
		gw := &gatewayv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: "fixed"},
			Spec: gatewayv1.GatewaySpec{GatewayClassName: "zerohop",
				Addresses: []gatewayv1.GatewaySpecAddress{{Value: "198.51.100.7"}},
				Listeners: []gatewayv1.Listener{{Name: "tcp", Protocol: gatewayv1.TCPProtocolType, Port: 8080}}},
		}
		e.create(t, gw)
		e.waitGateway(t, "infra", "fixed", "Accepted=True/Accepted", "Programmed=False/AddressNotUsable")
		eventually(t, func() string {
			gw := e.gateway(t, "infra", "fixed")
			gw.Spec.Addresses[0].Value = "203.0.113.9"
			if err := e.cli.Update(ctx, gw); err != nil {
				return err.Error()
			}
			return ""
		})
		eventually(t, func() string {
			gw := e.gateway(t, "infra", "fixed")
			if len(gw.Status.Addresses) != 1 || gw.Status.Addresses[0].Value != "203.0.113.9" {
				return fmt.Sprintf("addresses %+v (%v)", gw.Status.Addresses, gw.Status.Conditions)
			}
			return ""
		})
		// The datapath entries in place, but no route and so no ready
		// backend: nothing to announce, and Programmed.
		e.waitGateway(t, "infra", "fixed", "Programmed=False/Pending")
		var sp v1alpha1.SpeakerStatus
		if err := e.cli.Get(ctx, types.NamespacedName{Name: "n1"}, &sp); err != nil {
			t.Fatal(err)
		}
		sp.Status.Datapath.Programmed = append(sp.Status.Datapath.Programmed, "infra/"+gateway.ServiceName("fixed", "zerohop"))
		if err := e.cli.Status().Update(ctx, &sp); err != nil {
			t.Fatal(err)
		}
		e.waitGateway(t, "infra", "fixed", "Programmed=True/Programmed")

		hostname := &gatewayv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: "named"},
			Spec: gatewayv1.GatewaySpec{GatewayClassName: "zerohop",
				Addresses: []gatewayv1.GatewaySpecAddress{{Type: new(gatewayv1.HostnameAddressType), Value: "lb.example.com"}},
				Listeners: []gatewayv1.Listener{{Name: "tcp", Protocol: gatewayv1.TCPProtocolType, Port: 8080}}},
		}
		e.create(t, hostname)
		e.waitGateway(t, "infra", "named", "Accepted=False/UnsupportedAddress", "Programmed=False/Invalid")
	})

	t.Run("a class in use is held by the gateway-exists finalizer", func(t *testing.T) {
		class := &gatewayv1.GatewayClass{}
		getClass := func() error { return e.cli.Get(ctx, types.NamespacedName{Name: "zerohop"}, class) }
		eventually(t, func() string {
			if err := getClass(); err != nil {
				return err.Error()
			}
			if !slices.Contains(class.Finalizers, gatewayv1.GatewayClassFinalizerGatewaysExist) {
				return fmt.Sprintf("finalizers %v", class.Finalizers)
			}
			return ""
		})
		if err := e.cli.Delete(ctx, class); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		if err := getClass(); err != nil || class.DeletionTimestamp == nil {
			t.Fatalf("class in use: %v, deletionTimestamp %v", err, class.DeletionTimestamp)
		}
		// Its Gateways go on being served meanwhile.
		e.waitGateway(t, "infra", "fixed", "Programmed=True/Programmed")
	})

	t.Run("moved to another class: the Service and the route entries go", func(t *testing.T) {
		eventually(t, func() string {
			gw := e.gateway(t, "infra", "edge")
			gw.Spec.GatewayClassName = "other"
			if err := e.cli.Update(ctx, gw); err != nil {
				return err.Error()
			}
			return ""
		})
		eventually(t, func() string {
			var svc corev1.Service
			err := e.cli.Get(ctx, types.NamespacedName{Namespace: "infra", Name: svcName}, &svc)
			if !apierrors.IsNotFound(err) {
				return fmt.Sprintf("service still there (%v)", err)
			}
			if conds := e.routeConds(t, split); conds != nil {
				return fmt.Sprintf("route still has zerohop's entry: %v", conds)
			}
			return ""
		})
	})

	t.Run("the class goes with its last Gateway", func(t *testing.T) {
		for _, name := range []string{"fixed", "named"} {
			if err := e.cli.Delete(ctx, e.gateway(t, "infra", name)); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, func() string {
			var c gatewayv1.GatewayClass
			if err := e.cli.Get(ctx, types.NamespacedName{Name: "zerohop"}, &c); !apierrors.IsNotFound(err) {
				return fmt.Sprintf("class still there: finalizers %v (%v)", c.Finalizers, err)
			}
			return ""
		})
	})
}

// TestSetupWithoutCRDs: a controller told to serve the Gateway API where
// its CRDs are not installed refuses to start, and says what to do.
func TestSetupWithoutCRDs(t *testing.T) {
	srv := apiserver.ForTest(t)
	c, err := controller.New(srv.Config, controller.Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = gateway.Setup(c.Manager(), gateway.Options{})
	if err == nil || !strings.Contains(err.Error(), "does not serve GatewayClass") || !strings.Contains(err.Error(), "install the Gateway API CRDs (standard channel v1.6.3)") {
		t.Fatalf("Setup without the CRDs: %v", err)
	}
}
