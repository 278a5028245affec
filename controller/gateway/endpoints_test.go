package gateway

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/controller"
)

type epState int

const (
	ready epState = iota
	notReady
	terminating
)

type ep struct {
	addr  string
	state epState
}

// backendSlice is a slice as Kubernetes' EndpointSlice controller writes
// it for a Service port named "tcp" whose Pods listen on port.
func backendSlice(ns, svc string, at discoveryv1.AddressType, portName string, port int32, eps ...ep) *discoveryv1.EndpointSlice {
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: svc + "-" + string(at), Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: at,
		Ports:       []discoveryv1.EndpointPort{{Name: new(portName), Port: new(port), Protocol: new(corev1.ProtocolTCP)}},
	}
	for i, e := range eps {
		c := discoveryv1.EndpointConditions{Ready: new(true), Serving: new(true), Terminating: new(false)}
		switch e.state {
		case notReady:
			c.Ready, c.Serving = new(false), new(false)
		case terminating:
			c.Ready, c.Terminating = new(false), new(true)
		}
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{
			Addresses: []string{e.addr}, Conditions: c, NodeName: new(fmt.Sprintf("node%d", i%3+1)),
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: fmt.Sprintf("%s-%d", svc, i)},
		})
	}
	return sl
}

type sliceIndex map[types.NamespacedName][]*discoveryv1.EndpointSlice

func (s sliceIndex) of(k types.NamespacedName) []*discoveryv1.EndpointSlice { return s[k] }

// flat is one endpoint of the Gateway's slices: "listener-port addr:port
// weight (state)", or a reject share: "listener-port family reject w=weight".
func flat(sls []*discoveryv1.EndpointSlice) []string {
	var out []string
	for _, sl := range sls {
		if r, ok := sl.Annotations[v1alpha1.AnnotationRejectWeight]; ok {
			out = append(out, fmt.Sprintf("%s %s reject w=%s", *sl.Ports[0].Name, sl.AddressType, r))
		}
		w := sl.Annotations[v1alpha1.AnnotationEndpointWeight]
		for _, e := range sl.Endpoints {
			state := "ready"
			switch {
			case e.Conditions.Terminating != nil && *e.Conditions.Terminating && e.Conditions.Serving != nil && *e.Conditions.Serving:
				state = "draining"
			case !eligible(e.Conditions):
				state = "not ready"
			}
			out = append(out, fmt.Sprintf("%s %s:%d w=%s %s", *sl.Ports[0].Name, e.Addresses[0], *sl.Ports[0].Port, w, state))
		}
	}
	slices.Sort(out)
	return out
}

func share(w, total, n int) string { return strconv.Itoa(w * weightScale / (total * n)) }

// The families of the addresses a Gateway's Service holds.
var (
	v4only = []corev1.IPFamily{corev1.IPv4Protocol}
	dual   = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
)

func TestEndpointsWeighted(t *testing.T) {
	gw := gateway(listenerSpec("tcp", gatewayv1.TCPProtocolType, 8080), listenerSpec("dns", gatewayv1.UDPProtocolType, 53))
	a := service("infra", "a", svcPort("tcp", 9000, corev1.ProtocolTCP))
	b := service("infra", "b", svcPort("tcp", 9000, corev1.ProtocolTCP))
	named := service("infra", "named", corev1.ServicePort{Name: "tcp", Port: 9000, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("echo")})
	idle := service("infra", "idle", svcPort("tcp", 9000, corev1.ProtocolTCP))
	idx := sliceIndex{
		{Namespace: "infra", Name: "idle"}: {backendSlice("infra", "idle", discoveryv1.AddressTypeIPv4, "tcp", 9000, ep{"100.64.3.4", notReady})},
		{Namespace: "infra", Name: "a"}: {
			backendSlice("infra", "a", discoveryv1.AddressTypeIPv4, "tcp", 9000, ep{"100.64.1.2", ready}, ep{"100.64.2.2", ready}, ep{"100.64.3.2", notReady}, ep{"100.64.3.3", terminating}),
			backendSlice("infra", "a", discoveryv1.AddressTypeIPv6, "tcp", 9000, ep{"2001:db8:64:1::2", ready}),
		},
		{Namespace: "infra", Name: "b"}: {backendSlice("infra", "b", discoveryv1.AddressTypeIPv4, "tcp", 9000, ep{"100.64.1.9", ready})},
		// Two Pods with the named port on different numbers.
		{Namespace: "infra", Name: "named"}: {
			backendSlice("infra", "named", discoveryv1.AddressTypeIPv4, "tcp", 7001, ep{"100.64.1.7", ready}),
			func() *discoveryv1.EndpointSlice {
				sl := backendSlice("infra", "named", discoveryv1.AddressTypeIPv4, "tcp", 7002, ep{"100.64.2.7", ready})
				sl.Name += "-2"
				return sl
			}(),
		},
	}
	tests := []struct {
		name  string
		route *route
		want  []string
	}{{
		name:  "80/20: each backend's share divided among its ready endpoints",
		route: tcp("infra", "r", 0, []parent{{name: "gw", section: "tcp"}}, to("a", 9000, 80), to("b", 9000, 20)),
		want: []string{
			"tcp 100.64.1.2:9000 w=" + share(80, 100, 2) + " ready",
			"tcp 100.64.1.9:9000 w=" + share(20, 100, 1) + " ready",
			"tcp 100.64.2.2:9000 w=" + share(80, 100, 2) + " ready",
			"tcp 100.64.3.2:9000 w= not ready",
			"tcp 100.64.3.3:9000 w= draining", // terminating and serving, as it was
			"tcp 2001:db8:64:1::2:9000 w=" + share(80, 100, 1) + " ready",
			"tcp IPv6 reject w=" + share(20, 100, 1), // b has no IPv6 endpoint
		},
	}, {
		name:  "a missing backend's share is rejected",
		route: tcp("infra", "r", 0, []parent{{name: "gw", section: "tcp"}}, to("b", 9000, 1), to("gone", 9000, 1)),
		want: []string{
			"tcp 100.64.1.9:9000 w=" + share(1, 2, 1) + " ready",
			"tcp IPv4 reject w=" + share(1, 2, 1),
			"tcp IPv6 reject w=" + share(2, 2, 1), // b has no IPv6 endpoint
		},
	}, {
		name:  "a missing port, an unpermitted namespace: their shares add up",
		route: tcp("infra", "r", 0, []parent{{name: "gw", section: "tcp"}}, to("a", 9000, 10), to("b", 9999, 20), toNS("other", "c", 9000), to("b", 9000, 70)),
		want: []string{
			"tcp 100.64.1.2:9000 w=" + share(10, 101, 2) + " ready",
			"tcp 100.64.1.9:9000 w=" + share(70, 101, 1) + " ready",
			"tcp 100.64.2.2:9000 w=" + share(10, 101, 2) + " ready",
			"tcp 100.64.3.2:9000 w= not ready",
			"tcp 100.64.3.3:9000 w= draining",
			"tcp 2001:db8:64:1::2:9000 w=" + share(10, 101, 1) + " ready",
			"tcp IPv4 reject w=" + strconv.Itoa(20*weightScale/101+1*weightScale/101),
			"tcp IPv6 reject w=" + strconv.Itoa(20*weightScale/101+1*weightScale/101+70*weightScale/101),
		},
	}, {
		name:  "a Service without a ready endpoint: its share is rejected",
		route: tcp("infra", "r", 0, []parent{{name: "gw", section: "tcp"}}, to("b", 9000, 3), to("idle", 9000, 1)),
		want: []string{
			"tcp 100.64.1.9:9000 w=" + share(3, 4, 1) + " ready",
			"tcp 100.64.3.4:9000 w= not ready",
			"tcp IPv4 reject w=" + share(1, 4, 1),
			"tcp IPv6 reject w=" + strconv.Itoa(1*weightScale/4+3*weightScale/4),
		},
	}, {
		name:  "every backendRef invalid: all rejected",
		route: tcp("infra", "r", 0, []parent{{name: "gw", section: "tcp"}}, to("gone", 9000, 1), toNS("other", "c", 9000)),
		want:  []string{"tcp IPv4 reject w=" + strconv.Itoa(2*(weightScale/2)), "tcp IPv6 reject w=" + strconv.Itoa(2*(weightScale/2))},
	}, {
		name:  "an invalid backendRef of weight 0 rejects nothing",
		route: tcp("infra", "r", 0, []parent{{name: "gw", section: "tcp"}}, to("b", 9000, 1), to("gone", 9000, 0)),
		want:  []string{"tcp 100.64.1.9:9000 w=" + share(1, 1, 1) + " ready", "tcp IPv6 reject w=" + share(1, 1, 1)},
	}, {
		name:  "weight 0 drains: flows stay, no new ones",
		route: tcp("infra", "r", 0, []parent{{name: "gw", section: "tcp"}}, to("a", 9000, 0), to("b", 9000, 5)),
		want: []string{
			"tcp 100.64.1.2:9000 w= draining",
			"tcp 100.64.1.9:9000 w=" + share(5, 5, 1) + " ready",
			"tcp 100.64.2.2:9000 w= draining",
			"tcp 100.64.3.2:9000 w= not ready",
			"tcp 100.64.3.3:9000 w= draining", // terminating and serving, as it was
			"tcp 2001:db8:64:1::2:9000 w= draining",
			"tcp IPv6 reject w=" + share(5, 5, 1), // a drains, b has no IPv6 endpoint
		},
	}, {
		name:  "one Service twice: the shares add up",
		route: tcp("infra", "r", 0, []parent{{name: "gw", section: "tcp"}}, to("b", 9000, 1), to("b", 9000, 3)),
		want: []string{
			"tcp 100.64.1.9:9000 w=" + strconv.Itoa(weightScale) + " ready",
			"tcp IPv6 reject w=" + strconv.Itoa(weightScale/4+3*weightScale/4),
		},
	}, {
		name:  "a named target port, resolved per Pod",
		route: tcp("infra", "r", 0, []parent{{name: "gw", section: "tcp"}}, to("named", 9000, 1)),
		want: []string{
			"tcp 100.64.1.7:7001 w=" + share(1, 1, 2) + " ready",
			"tcp 100.64.2.7:7002 w=" + share(1, 1, 2) + " ready",
			"tcp IPv6 reject w=" + share(1, 1, 1),
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := makePlan(gw.DeepCopy(), zerohopClass, []*route{tc.route}, worldOf(a, b, named, idle))
			sls := p.endpoints("gw-zerohop", dual, idx.of)
			if got := flat(sls); !slices.Equal(got, tc.want) {
				t.Errorf("endpoints\n got %q\nwant %q", got, tc.want)
			}
			for _, sl := range sls {
				if sl.Labels[discoveryv1.LabelServiceName] != "gw-zerohop" || sl.Labels[discoveryv1.LabelManagedBy] != ManagedBy ||
					sl.Labels[gatewayv1.GatewayNameLabelKey] != "gw" || !strings.HasPrefix(sl.Name, "gw-zerohop-") {
					t.Errorf("slice %s labels %v", sl.Name, sl.Labels)
				}
				for _, e := range sl.Endpoints {
					if e.TargetRef == nil || e.NodeName == nil {
						t.Errorf("slice %s: endpoint %v lost its Pod or node", sl.Name, e.Addresses)
					}
				}
			}
			// The same input, the same slices, names included.
			again := makePlan(gw.DeepCopy(), zerohopClass, []*route{tc.route}, worldOf(a, b, named, idle)).endpoints("gw-zerohop", dual, idx.of)
			if len(again) != len(sls) {
				t.Fatal("not stable")
			}
			for i := range sls {
				if sls[i].Name != again[i].Name {
					t.Errorf("slice names not stable: %s, %s", sls[i].Name, again[i].Name)
				}
			}
		})
	}
}

func TestEndpointsOnlyOldestRouteAndOwnListener(t *testing.T) {
	gw := gateway(listenerSpec("one", gatewayv1.TCPProtocolType, 9310), listenerSpec("two", gatewayv1.TCPProtocolType, 9311))
	a := service("infra", "a", svcPort("tcp", 9000, corev1.ProtocolTCP))
	b := service("infra", "b", svcPort("tcp", 9000, corev1.ProtocolTCP))
	idx := sliceIndex{
		{Namespace: "infra", Name: "a"}: {backendSlice("infra", "a", discoveryv1.AddressTypeIPv4, "tcp", 9000, ep{"100.64.1.2", ready})},
		{Namespace: "infra", Name: "b"}: {backendSlice("infra", "b", discoveryv1.AddressTypeIPv4, "tcp", 9000, ep{"100.64.1.3", ready})},
	}
	older := tcp("infra", "older", 2*time.Hour, []parent{{name: "gw", section: "one"}}, to("a", 9000, 1))
	newer := tcp("infra", "newer", time.Hour, []parent{{name: "gw"}}, to("b", 9000, 1))
	p := makePlan(gw, zerohopClass, []*route{newer, older}, worldOf(a, b))
	got := flat(p.endpoints("gw-zerohop", v4only, idx.of))
	want := []string{"one 100.64.1.2:9000 w=" + strconv.Itoa(weightScale) + " ready", "two 100.64.1.3:9000 w=" + strconv.Itoa(weightScale) + " ready"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestEndpointsChunked(t *testing.T) {
	gw := gateway(listenerSpec("tcp", gatewayv1.TCPProtocolType, 8080))
	a := service("infra", "a", svcPort("tcp", 9000, corev1.ProtocolTCP))
	var eps []ep
	for i := range 250 {
		eps = append(eps, ep{fmt.Sprintf("100.64.%d.%d", i/200+1, i%200+2), ready})
	}
	idx := sliceIndex{{Namespace: "infra", Name: "a"}: {backendSlice("infra", "a", discoveryv1.AddressTypeIPv4, "tcp", 9000, eps...)}}
	p := makePlan(gw, zerohopClass, []*route{tcp("infra", "r", 0, []parent{{name: "gw"}}, to("a", 9000, 1))}, worldOf(a))
	sls := p.endpoints("gw-zerohop", v4only, idx.of)
	if len(sls) != 3 {
		t.Fatalf("%d slices for 250 endpoints, want 3", len(sls))
	}
	names := map[string]bool{}
	n := 0
	for _, sl := range sls {
		names[sl.Name] = true
		n += len(sl.Endpoints)
		if len(sl.Endpoints) > maxEndpointsPerSlice {
			t.Errorf("slice %s holds %d", sl.Name, len(sl.Endpoints))
		}
	}
	if n != 250 || len(names) != 3 {
		t.Errorf("%d endpoints in %d distinct slices", n, len(names))
	}
}

func TestServiceFromGateway(t *testing.T) {
	gw := withAddresses(gateway(listenerSpec("tcp", gatewayv1.TCPProtocolType, 8080), listenerSpec("dns", gatewayv1.UDPProtocolType, 53)),
		gatewayv1.IPAddressType, "203.0.113.7", "2001:db8:113::7")
	gw.Spec.Infrastructure = &gatewayv1.GatewayInfrastructure{
		Labels:      map[gatewayv1.LabelKey]gatewayv1.LabelValue{"team": "infra"},
		Annotations: map[gatewayv1.AnnotationKey]gatewayv1.AnnotationValue{"zerohop.io/address-pool": "gold"},
	}
	svc := makePlan(gw, zerohopClass, nil, worldOf()).service()
	checks := []struct {
		what      string
		got, want any
	}{
		{"name", svc.Name, "gw-zerohop"},
		{"namespace", svc.Namespace, "infra"},
		{"type", svc.Spec.Type, corev1.ServiceTypeLoadBalancer},
		{"class", *svc.Spec.LoadBalancerClass, controller.Class},
		{"node ports", *svc.Spec.AllocateLoadBalancerNodePorts, false},
		{"traffic policy", svc.Spec.ExternalTrafficPolicy, corev1.ServiceExternalTrafficPolicyCluster},
		{"families", fmt.Sprint(svc.Spec.IPFamilies), "[IPv4 IPv6]"},
		{"policy", *svc.Spec.IPFamilyPolicy, corev1.IPFamilyPolicyRequireDualStack},
		{"requested", svc.Annotations[controller.AnnotationIPs], "203.0.113.7,2001:db8:113::7"},
		{"pool", svc.Annotations[controller.AnnotationPool], "gold"},
		{"label", svc.Labels["team"], "infra"},
		{"gateway label", svc.Labels[gatewayv1.GatewayNameLabelKey], "gw"},
		{"class label", svc.Labels[gatewayv1.GatewayClassNameLabelKey], "zerohop"},
		{"owner", svc.OwnerReferences[0].Kind + "/" + svc.OwnerReferences[0].Name + "/" + string(svc.OwnerReferences[0].UID), "Gateway/gw/gw-uid"},
		{"ports", fmt.Sprint(svc.Spec.Ports[0].Name, svc.Spec.Ports[0].Protocol, svc.Spec.Ports[0].Port, svc.Spec.Ports[1].Name, svc.Spec.Ports[1].Protocol, svc.Spec.Ports[1].Port), "tcpTCP8080dnsUDP53"},
		{"target port", svc.Spec.Ports[0].TargetPort.StrVal, targetPortName},
	}
	for _, c := range checks {
		if fmt.Sprint(c.got) != fmt.Sprint(c.want) {
			t.Errorf("%s: %v, want %v", c.what, c.got, c.want)
		}
	}
	plain := makePlan(gateway(listenerSpec("tcp", gatewayv1.TCPProtocolType, 8080)), zerohopClass, nil, worldOf()).service()
	if *plain.Spec.IPFamilyPolicy != corev1.IPFamilyPolicyPreferDualStack || plain.Spec.IPFamilies != nil || plain.Annotations[controller.AnnotationIPs] != "" {
		t.Errorf("no addresses asked: %v %v %v", *plain.Spec.IPFamilyPolicy, plain.Spec.IPFamilies, plain.Annotations)
	}
}

// TestEndpointsRejectSlice: the reject share rides on a slice of its own
// per listener and family the Service has, without endpoints, on the
// listener's port by name and protocol, labelled like the others; a
// family the Service lacks gets none.
func TestEndpointsRejectSlice(t *testing.T) {
	gw := gateway(listenerSpec("tcp", gatewayv1.TCPProtocolType, 8080), listenerSpec("dns", gatewayv1.UDPProtocolType, 53))
	a := service("infra", "a", svcPort("tcp", 9000, corev1.ProtocolTCP), svcPort("dns", 53, corev1.ProtocolUDP))
	idx := sliceIndex{{Namespace: "infra", Name: "a"}: {backendSlice("infra", "a", discoveryv1.AddressTypeIPv4, "tcp", 9000, ep{"100.64.1.2", ready})}}
	routes := []*route{
		tcp("infra", "t", 0, []parent{{name: "gw", section: "tcp"}}, to("a", 9000, 3), to("gone", 9000, 1)),
		udp("infra", "u", 0, []parent{{name: "gw", section: "dns"}}, to("gone", 53, 1)),
	}
	p := makePlan(gw, zerohopClass, routes, worldOf(a))
	sls := p.endpoints("gw-zerohop", v4only, idx.of)
	want := []string{"dns IPv4 reject w=" + share(1, 1, 1), "tcp 100.64.1.2:9000 w=" + share(3, 4, 1) + " ready", "tcp IPv4 reject w=" + share(1, 4, 1)}
	if got := flat(sls); !slices.Equal(got, want) {
		t.Fatalf("slices\n got %q\nwant %q", got, want)
	}
	for _, sl := range sls {
		if _, ok := sl.Annotations[v1alpha1.AnnotationRejectWeight]; !ok {
			continue
		}
		port, proto, listenerPort := *sl.Ports[0].Name, *sl.Ports[0].Protocol, *sl.Ports[0].Port
		wantProto, wantPort := corev1.ProtocolTCP, int32(8080)
		if port == "dns" {
			wantProto, wantPort = corev1.ProtocolUDP, 53
		}
		if len(sl.Endpoints) != 0 || proto != wantProto || listenerPort != wantPort || len(sl.Ports) != 1 ||
			sl.Labels[LabelPort] != port || sl.Labels[discoveryv1.LabelServiceName] != "gw-zerohop" || sl.Labels[discoveryv1.LabelManagedBy] != ManagedBy {
			t.Errorf("reject slice %s: %d endpoints, port %s %s %d, labels %v", sl.Name, len(sl.Endpoints), port, proto, listenerPort, sl.Labels)
		}
		if _, ok := sl.Annotations[v1alpha1.AnnotationEndpointWeight]; ok {
			t.Errorf("reject slice %s carries an endpoint weight", sl.Name)
		}
	}
	// Both families with addresses of both; none before the Service has
	// an address.
	if n := len(p.endpoints("gw-zerohop", dual, idx.of)); n != len(sls)+2 {
		t.Errorf("%d slices with addresses of both families, want %d", n, len(sls)+2)
	}
	if got := flat(p.endpoints("gw-zerohop", nil, idx.of)); !slices.Equal(got, want[1:2]) {
		t.Errorf("slices without an address %q, want %q", got, want[1:2])
	}
	// What the Gateway's status reads: a reject share answers new flows
	// (so the address is announced); a route of weight-0 refs does not.
	if !answers(p.endpoints("gw-zerohop", v4only, sliceIndex{}.of)) {
		t.Error("a Gateway whose backendRefs are all missing does not answer")
	}
	zero := makePlan(gw, zerohopClass, []*route{tcp("infra", "t", 0, []parent{{name: "gw"}}, to("gone", 9000, 0))}, worldOf(a))
	if answers(zero.endpoints("gw-zerohop", v4only, idx.of)) {
		t.Error("a Gateway whose only backendRef weighs 0 answers")
	}
}
