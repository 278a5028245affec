package gateway

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Builders for the tables.

func listenerSpec(name string, proto gatewayv1.ProtocolType, port int32, opts ...func(*gatewayv1.Listener)) gatewayv1.Listener {
	l := gatewayv1.Listener{Name: gatewayv1.SectionName(name), Protocol: proto, Port: port}
	for _, o := range opts {
		o(&l)
	}
	return l
}

func fromNamespaces(from gatewayv1.FromNamespaces, sel map[string]string) func(*gatewayv1.Listener) {
	return func(l *gatewayv1.Listener) {
		if l.AllowedRoutes == nil {
			l.AllowedRoutes = &gatewayv1.AllowedRoutes{}
		}
		l.AllowedRoutes.Namespaces = &gatewayv1.RouteNamespaces{From: &from}
		if sel != nil {
			l.AllowedRoutes.Namespaces.Selector = &metav1.LabelSelector{MatchLabels: sel}
		}
	}
}

func kinds(ks ...string) func(*gatewayv1.Listener) {
	return func(l *gatewayv1.Listener) {
		if l.AllowedRoutes == nil {
			l.AllowedRoutes = &gatewayv1.AllowedRoutes{}
		}
		for _, k := range ks {
			l.AllowedRoutes.Kinds = append(l.AllowedRoutes.Kinds, gatewayv1.RouteGroupKind{Kind: gatewayv1.Kind(k)})
		}
	}
}

func gateway(listeners ...gatewayv1.Listener) *gatewayv1.Gateway {
	return &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: "gw", Generation: 3, UID: "gw-uid"},
		Spec:       gatewayv1.GatewaySpec{GatewayClassName: "zerohop", Listeners: listeners},
	}
}

var zerohopClass = classState{name: "zerohop", accepted: true}

type parent struct {
	ns, name, section string
	port              int32
}

func tcp(ns, name string, age time.Duration, parents []parent, backends ...gatewayv1.BackendRef) *route {
	return mkRoute(tcpRoute, ns, name, age, parents, backends)
}

func udp(ns, name string, age time.Duration, parents []parent, backends ...gatewayv1.BackendRef) *route {
	return mkRoute(udpRoute, ns, name, age, parents, backends)
}

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func mkRoute(k routeKind, ns, name string, age time.Duration, parents []parent, backends []gatewayv1.BackendRef) *route {
	r := &route{kind: k, namespace: ns, name: name, created: epoch.Add(-age), generation: 2, backends: backends}
	for _, p := range parents {
		ref := gatewayv1.ParentReference{Name: gatewayv1.ObjectName(p.name)}
		if p.ns != "" {
			ref.Namespace = new(gatewayv1.Namespace(p.ns))
		}
		if p.section != "" {
			ref.SectionName = new(gatewayv1.SectionName(p.section))
		}
		if p.port != 0 {
			ref.Port = new(p.port)
		}
		r.parents = append(r.parents, ref)
	}
	return r
}

func to(name string, port int32, weight int32) gatewayv1.BackendRef {
	return gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name), Port: new(port)}, Weight: new(weight)}
}

func toNS(ns, name string, port int32) gatewayv1.BackendRef {
	b := to(name, port, 1)
	b.Namespace = new(gatewayv1.Namespace(ns))
	return b
}

func service(ns, name string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + "-" + name)}, Spec: corev1.ServiceSpec{Ports: ports}}
}

func svcPort(name string, port int32, proto corev1.Protocol) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, Protocol: proto}
}

func worldOf(svcs ...*corev1.Service) world {
	w := world{namespaces: map[string]labels.Set{"infra": {"team": "infra"}, "apps": {"team": "apps"}, "other": {}},
		services: map[types.NamespacedName]*corev1.Service{}, grants: map[string][]*gatewayv1.ReferenceGrant{}}
	for _, s := range svcs {
		w.services[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}] = s
	}
	return w
}

func grant(ns string, fromKind, fromNS string, toName string) *gatewayv1.ReferenceGrant {
	g := &gatewayv1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "g"},
		Spec: gatewayv1.ReferenceGrantSpec{
			From: []gatewayv1.ReferenceGrantFrom{{Group: groupName, Kind: gatewayv1.Kind(fromKind), Namespace: gatewayv1.Namespace(fromNS)}},
			To:   []gatewayv1.ReferenceGrantTo{{Group: "", Kind: "Service"}},
		}}
	if toName != "" {
		g.Spec.To[0].Name = new(gatewayv1.ObjectName(toName))
	}
	return g
}

func condString(c metav1.Condition) string {
	return fmt.Sprintf("%s=%s/%s", c.Type, c.Status, c.Reason)
}

func TestGatewayAccepted(t *testing.T) {
	tcpL := listenerSpec("tcp", gatewayv1.TCPProtocolType, 8080)
	tests := []struct {
		name      string
		gw        *gatewayv1.Gateway
		class     classState
		want      string
		wantMsg   string
		wantPorts []string
		problem   string
	}{
		{name: "TCP and UDP listeners", gw: gateway(tcpL, listenerSpec("dns", gatewayv1.UDPProtocolType, 53)),
			class: zerohopClass, want: "Accepted=True/Accepted", wantPorts: []string{"tcp", "dns"}},
		{name: "an HTTP listener is refused, the others served", gw: gateway(tcpL, listenerSpec("web", gatewayv1.HTTPProtocolType, 80)),
			class: zerohopClass, want: "Accepted=True/ListenersNotValid", wantMsg: "web (protocol HTTP", wantPorts: []string{"tcp"}},
		{name: "no listener zerohop serves", gw: gateway(listenerSpec("web", gatewayv1.HTTPProtocolType, 80), listenerSpec("tls", gatewayv1.TLSProtocolType, 443)),
			class: zerohopClass, want: "Accepted=False/ListenersNotValid"},
		{name: "class not accepted", gw: gateway(tcpL), class: classState{name: "zerohop", message: "bad"}, want: "Accepted=False/Invalid", wantMsg: "GatewayClass zerohop is not accepted: bad"},
		{name: "hostname address", gw: withAddresses(gateway(tcpL), gatewayv1.HostnameAddressType, "lb.example.com"),
			class: zerohopClass, want: "Accepted=False/UnsupportedAddress", wantMsg: "spec.addresses[0]: type Hostname"},
		{name: "named address", gw: withAddresses(gateway(tcpL), gatewayv1.NamedAddressType, "gold"),
			class: zerohopClass, want: "Accepted=False/UnsupportedAddress"},
		{name: "two IPv4 addresses: accepted, not usable", gw: withAddresses(gateway(tcpL), gatewayv1.IPAddressType, "203.0.113.5", "203.0.113.6"),
			class: zerohopClass, want: "Accepted=True/Accepted", wantPorts: []string{"tcp"}, problem: "at most one address per family"},
		{name: "parametersRef", gw: withParams(gateway(tcpL)), class: zerohopClass, want: "Accepted=False/InvalidParameters"},
		{name: "listener name that is no port name", gw: gateway(listenerSpec("tcp.v1", gatewayv1.TCPProtocolType, 81)),
			class: zerohopClass, want: "Accepted=True/Accepted", wantPorts: []string{"listener-"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := makePlan(tc.gw, tc.class, nil, worldOf())
			if got := condString(p.accepted); got != tc.want {
				t.Errorf("accepted %s (%s), want %s", got, p.accepted.Message, tc.want)
			}
			if !strings.Contains(p.accepted.Message, tc.wantMsg) {
				t.Errorf("message %q lacks %q", p.accepted.Message, tc.wantMsg)
			}
			if p.accepted.ObservedGeneration != 3 {
				t.Errorf("observedGeneration %d", p.accepted.ObservedGeneration)
			}
			svc := p.service()
			if (svc == nil) != (len(tc.wantPorts) == 0) {
				t.Fatalf("service %v, want ports %v", svc, tc.wantPorts)
			}
			if svc != nil {
				if len(svc.Spec.Ports) != len(tc.wantPorts) {
					t.Fatalf("ports %v, want %v", svc.Spec.Ports, tc.wantPorts)
				}
				for i, sp := range svc.Spec.Ports {
					if !strings.HasPrefix(sp.Name, tc.wantPorts[i]) {
						t.Errorf("port %d named %q, want %q", i, sp.Name, tc.wantPorts[i])
					}
				}
			}
			if !strings.Contains(p.addressProblem, tc.problem) || (tc.problem == "") != (p.addressProblem == "") {
				t.Errorf("address problem %q, want %q", p.addressProblem, tc.problem)
			}
		})
	}
}

func withAddresses(gw *gatewayv1.Gateway, typ gatewayv1.AddressType, values ...string) *gatewayv1.Gateway {
	for _, v := range values {
		gw.Spec.Addresses = append(gw.Spec.Addresses, gatewayv1.GatewaySpecAddress{Type: new(typ), Value: v})
	}
	return gw
}

func withParams(gw *gatewayv1.Gateway) *gatewayv1.Gateway {
	gw.Spec.Infrastructure = &gatewayv1.GatewayInfrastructure{ParametersRef: &gatewayv1.LocalParametersReference{Group: "zerohop.io", Kind: "IPAddressPool", Name: "gold"}}
	return gw
}

func TestRouteAttachment(t *testing.T) {
	gw := gateway(
		listenerSpec("tcp-a", gatewayv1.TCPProtocolType, 8080),
		listenerSpec("tcp-b", gatewayv1.TCPProtocolType, 8081, fromNamespaces(gatewayv1.NamespacesFromAll, nil)),
		listenerSpec("tcp-sel", gatewayv1.TCPProtocolType, 8082, fromNamespaces(gatewayv1.NamespacesFromSelector, map[string]string{"team": "apps"})),
		listenerSpec("dns", gatewayv1.UDPProtocolType, 5353),
		listenerSpec("udp-only-tcp", gatewayv1.UDPProtocolType, 5354, kinds("TCPRoute")),
		listenerSpec("web", gatewayv1.HTTPProtocolType, 80),
	)
	same := []parent{{name: "gw", section: "tcp-a"}}
	tests := []struct {
		name   string
		route  *route
		want   string
		msg    string
		onto   []string // listeners it is attached to
		active []string // listeners whose traffic it carries
	}{
		{name: "by section name", route: tcp("infra", "r", time.Hour, same), want: "Accepted=True/Accepted", onto: []string{"tcp-a"}, active: []string{"tcp-a"}},
		{name: "by port", route: tcp("infra", "r", time.Hour, []parent{{name: "gw", port: 8081}}), want: "Accepted=True/Accepted", onto: []string{"tcp-b"}, active: []string{"tcp-b"}},
		{name: "by section and port", route: tcp("infra", "r", time.Hour, []parent{{name: "gw", section: "tcp-b", port: 8081}}), want: "Accepted=True/Accepted", onto: []string{"tcp-b"}},
		{name: "section and port disagree", route: tcp("infra", "r", time.Hour, []parent{{name: "gw", section: "tcp-b", port: 8080}}), want: "Accepted=False/NoMatchingParent", msg: "no listener named tcp-b on port 8080"},
		{name: "whole Gateway: every TCP listener that admits it", route: tcp("infra", "r", time.Hour, []parent{{name: "gw"}}), want: "Accepted=True/Accepted", onto: []string{"tcp-a", "tcp-b"}},
		{name: "UDPRoute on the whole Gateway", route: udp("infra", "r", time.Hour, []parent{{name: "gw"}}), want: "Accepted=True/Accepted", onto: []string{"dns"}},
		{name: "no such listener", route: tcp("infra", "r", time.Hour, []parent{{name: "gw", section: "nope"}}), want: "Accepted=False/NoMatchingParent"},
		{name: "TCPRoute on a UDP listener", route: tcp("infra", "r", time.Hour, []parent{{name: "gw", section: "dns"}}), want: "Accepted=False/NotAllowedByListeners", msg: "does not take TCPRoutes"},
		{name: "TCPRoute on an HTTP listener", route: tcp("infra", "r", time.Hour, []parent{{name: "gw", section: "web"}}), want: "Accepted=False/NotAllowedByListeners", msg: "protocol HTTP"},
		{name: "kinds that do not fit the protocol", route: tcp("infra", "r", time.Hour, []parent{{name: "gw", section: "udp-only-tcp"}}), want: "Accepted=False/NotAllowedByListeners"},
		{name: "other namespace, listener takes Same", route: tcp("apps", "r", time.Hour, []parent{{ns: "infra", name: "gw", section: "tcp-a"}}), want: "Accepted=False/NotAllowedByListeners", msg: "from namespace apps"},
		{name: "other namespace, listener takes All", route: tcp("apps", "r", time.Hour, []parent{{ns: "infra", name: "gw", section: "tcp-b"}}), want: "Accepted=True/Accepted", onto: []string{"tcp-b"}},
		{name: "selector matches", route: tcp("apps", "r", time.Hour, []parent{{ns: "infra", name: "gw", section: "tcp-sel"}}), want: "Accepted=True/Accepted", onto: []string{"tcp-sel"}},
		{name: "selector does not match", route: tcp("other", "r", time.Hour, []parent{{ns: "infra", name: "gw", section: "tcp-sel"}}), want: "Accepted=False/NotAllowedByListeners"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := makePlan(gw.DeepCopy(), zerohopClass, []*route{tc.route}, worldOf())
			res := p.routes[tc.route]
			if len(res) != 1 {
				t.Fatalf("%d results", len(res))
			}
			if got := condString(res[0].accepted); got != tc.want {
				t.Errorf("got %s (%s), want %s", got, res[0].accepted.Message, tc.want)
			}
			if !strings.Contains(res[0].accepted.Message, tc.msg) {
				t.Errorf("message %q lacks %q", res[0].accepted.Message, tc.msg)
			}
			if res[0].accepted.ObservedGeneration != 2 {
				t.Errorf("observedGeneration %d, want the route's 2", res[0].accepted.ObservedGeneration)
			}
			var onto []string
			for _, l := range p.listeners {
				if len(l.attached) > 0 {
					onto = append(onto, string(l.spec.Name))
				}
			}
			if strings.Join(onto, ",") != strings.Join(tc.onto, ",") {
				t.Errorf("attached to %v, want %v", onto, tc.onto)
			}
		})
	}
}

func TestOldestRouteCarriesTraffic(t *testing.T) {
	gw := gateway(listenerSpec("tcp", gatewayv1.TCPProtocolType, 9310))
	older := tcp("infra", "older", 2*time.Hour, []parent{{name: "gw", section: "tcp"}}, to("b1", 3000, 1))
	newer := tcp("infra", "newer", time.Hour, []parent{{name: "gw", section: "tcp"}}, to("b2", 3000, 1))
	// Same age: the name decides.
	twin := tcp("infra", "a-twin", time.Hour, []parent{{name: "gw", section: "tcp"}}, to("b3", 3000, 1))
	p := makePlan(gw, zerohopClass, []*route{newer, older, twin}, worldOf())
	for _, r := range []*route{older, newer, twin} {
		if got := condString(p.routes[r][0].accepted); got != "Accepted=True/Accepted" {
			t.Errorf("%s: %s", r, got)
		}
	}
	l := p.listeners[0]
	if len(l.attached) != 3 || l.active() != older || l.attached[1] != twin {
		t.Fatalf("attached %v, want older, a-twin, newer", l.attached)
	}
	if msg := p.routes[newer][0].accepted.Message; !strings.Contains(msg, "go to the older TCPRoute infra/older") {
		t.Errorf("newer route's message %q does not say where the connections go", msg)
	}
	st := p.status(gatewayv1.GatewayStatus{}, observed{})
	if st.Listeners[0].AttachedRoutes != 3 {
		t.Errorf("attachedRoutes %d, want 3", st.Listeners[0].AttachedRoutes)
	}
}

func TestResolvedRefs(t *testing.T) {
	web := service("apps", "web", svcPort("tcp", 9000, corev1.ProtocolTCP), svcPort("udp", 9000, corev1.ProtocolUDP))
	local := service("infra", "echo", svcPort("tcp", 9000, corev1.ProtocolTCP))
	gw := gateway(listenerSpec("tcp", gatewayv1.TCPProtocolType, 8080), listenerSpec("udp", gatewayv1.UDPProtocolType, 8080))
	attached := []parent{{name: "gw"}}
	badKind := to("web", 9000, 1)
	badKind.Kind = new(gatewayv1.Kind("Pod"))
	tests := []struct {
		name   string
		route  *route
		grants []*gatewayv1.ReferenceGrant
		want   string
		msg    string
	}{
		{name: "same namespace", route: tcp("infra", "r", 0, attached, to("echo", 9000, 1)), want: "ResolvedRefs=True/ResolvedRefs"},
		{name: "missing Service", route: tcp("infra", "r", 0, attached, to("echo", 9000, 1), to("gone", 9000, 1)), want: "ResolvedRefs=False/BackendNotFound", msg: "backendRefs[1]: Service infra/gone not found"},
		{name: "no such port", route: tcp("infra", "r", 0, attached, to("echo", 9001, 1)), want: "ResolvedRefs=False/BackendNotFound", msg: "no TCP port 9001"},
		{name: "UDPRoute to a TCP-only port", route: udp("infra", "r", 0, attached, to("echo", 9000, 1)), want: "ResolvedRefs=False/BackendNotFound", msg: "no UDP port 9000"},
		{name: "another kind", route: tcp("infra", "r", 0, attached, badKind), want: "ResolvedRefs=False/InvalidKind"},
		{name: "cross-namespace without a grant", route: tcp("infra", "r", 0, attached, toNS("apps", "web", 9000)), want: "ResolvedRefs=False/RefNotPermitted", msg: "no ReferenceGrant in apps"},
		{name: "grant for the Service", route: tcp("infra", "r", 0, attached, toNS("apps", "web", 9000)), grants: []*gatewayv1.ReferenceGrant{grant("apps", "TCPRoute", "infra", "web")}, want: "ResolvedRefs=True/ResolvedRefs"},
		{name: "grant for every Service", route: udp("infra", "r", 0, attached, toNS("apps", "web", 9000)), grants: []*gatewayv1.ReferenceGrant{grant("apps", "UDPRoute", "infra", "")}, want: "ResolvedRefs=True/ResolvedRefs"},
		{name: "grant for another kind", route: tcp("infra", "r", 0, attached, toNS("apps", "web", 9000)), grants: []*gatewayv1.ReferenceGrant{grant("apps", "UDPRoute", "infra", "")}, want: "ResolvedRefs=False/RefNotPermitted"},
		{name: "grant for another Service", route: tcp("infra", "r", 0, attached, toNS("apps", "web", 9000)), grants: []*gatewayv1.ReferenceGrant{grant("apps", "TCPRoute", "infra", "db")}, want: "ResolvedRefs=False/RefNotPermitted"},
		{name: "grant from another namespace", route: tcp("infra", "r", 0, attached, toNS("apps", "web", 9000)), grants: []*gatewayv1.ReferenceGrant{grant("apps", "TCPRoute", "other", "")}, want: "ResolvedRefs=False/RefNotPermitted"},
		{name: "first problem's reason", route: tcp("infra", "r", 0, attached, toNS("apps", "web", 9000), to("gone", 1, 1)), want: "ResolvedRefs=False/RefNotPermitted", msg: "backendRefs[1]: Service infra/gone not found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := worldOf(web, local)
			w.grants["apps"] = tc.grants
			p := makePlan(gw.DeepCopy(), zerohopClass, []*route{tc.route}, w)
			res := p.routes[tc.route][0]
			if got := condString(res.resolved); got != tc.want {
				t.Errorf("got %s (%s), want %s", got, res.resolved.Message, tc.want)
			}
			if !strings.Contains(res.resolved.Message, tc.msg) {
				t.Errorf("message %q lacks %q", res.resolved.Message, tc.msg)
			}
			// Unresolved backends do not stop attachment.
			if got := condString(res.accepted); got != "Accepted=True/Accepted" {
				t.Errorf("accepted %s", got)
			}
		})
	}
}

func TestServiceName(t *testing.T) {
	tests := []struct{ gw, class, want string }{
		{"web", "zerohop", "web-zerohop"},
		{"1st", "zerohop", "gw-st-"},
		{"tcp.gateway", "zerohop", "gw-tcp-gateway-"},
		{strings.Repeat("a", 60), "zerohop", "gw-" + strings.Repeat("a", 48) + "-"},
	}
	for _, tc := range tests {
		got := ServiceName(tc.gw, tc.class)
		if !strings.HasPrefix(got, tc.want) || len(got) > 63 {
			t.Errorf("ServiceName(%q, %q) = %q, want %q...", tc.gw, tc.class, got, tc.want)
		}
		if got != ServiceName(tc.gw, tc.class) {
			t.Errorf("not stable")
		}
	}
	if ServiceName("a.b", "zerohop") == ServiceName("a-b", "zerohop.x") {
		t.Error("two Gateways share a Service name")
	}
}
