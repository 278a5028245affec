package gateway

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/zerohop/zerohop/controller"
)

func svcWith(ips []string, conds ...metav1.Condition) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: "gw-zerohop"}}
	for _, ip := range ips {
		s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
	}
	s.Status.Conditions = conds
	return s
}

func sc(typ string, ok bool, reason, msg string) metav1.Condition {
	st := metav1.ConditionFalse
	if ok {
		st = metav1.ConditionTrue
	}
	return metav1.Condition{Type: typ, Status: st, Reason: reason, Message: msg}
}

func TestProgrammed(t *testing.T) {
	assigned := sc(controller.ConditionAddressAssigned, true, "Assigned", "203.0.113.1 from pool lab")
	announced := sc(controller.ConditionAnnounced, true, "Announced", "203.0.113.1 by zh-node1 (BGP to router)")
	notAnnounced := sc(controller.ConditionAnnounced, false, "NotAnnounced", "no ready node announces 203.0.113.1")
	dp := sc(controller.ConditionDatapathProgrammed, true, "Programmed", "programmed on 3 of 3 nodes")
	dpPartly := sc(controller.ConditionDatapathProgrammed, false, "NotProgrammed", "programmed on 2 of 3 nodes; zh-node3: not yet")
	gw := gateway(listenerSpec("tcp", gatewayv1.TCPProtocolType, 8080))
	withIP := withAddresses(gateway(listenerSpec("tcp", gatewayv1.TCPProtocolType, 8080)), gatewayv1.IPAddressType, "203.0.113.9")
	tests := []struct {
		name string
		gw   *gatewayv1.Gateway
		o    observed
		want string
		msg  string
	}{
		{name: "no Service yet", gw: gw, o: observed{}, want: "Programmed=False/Pending"},
		{name: "a foreign Service in the way", gw: gw, o: observed{blocked: "Service infra/gw-zerohop exists and is not this Gateway's"}, want: "Programmed=False/Invalid"},
		{name: "no address yet", gw: gw, o: observed{svc: svcWith(nil)}, want: "Programmed=False/AddressNotAssigned"},
		{name: "pools exhausted", gw: gw, o: observed{svc: svcWith(nil, sc(controller.ConditionAddressAssigned, false, "PoolExhausted", "pool lab exhausted"))}, want: "Programmed=False/AddressNotAssigned", msg: "pool lab exhausted"},
		{name: "requested address outside the pools", gw: withIP, o: observed{svc: svcWith(nil, sc(controller.ConditionAddressAssigned, false, "IPNotInPool", "203.0.113.9 is outside every pool"))}, want: "Programmed=False/AddressNotUsable", msg: "203.0.113.9 not assigned"},
		{name: "requested address held elsewhere, another kept", gw: withIP, o: observed{svc: svcWith([]string{"203.0.113.1"}, assigned, announced)}, want: "Programmed=False/AddressNotUsable"},
		{name: "datapath not everywhere", gw: gw, o: observed{svc: svcWith([]string{"203.0.113.1"}, assigned, announced, dpPartly), answers: true}, want: "Programmed=False/Pending", msg: "2 of 3"},
		{name: "not announced with ready backends", gw: gw, o: observed{svc: svcWith([]string{"203.0.113.1"}, assigned, notAnnounced, dp), answers: true}, want: "Programmed=False/Pending", msg: "NotAnnounced"},
		{name: "announcement not reported yet", gw: gw, o: observed{svc: svcWith([]string{"203.0.113.1"}, assigned, dp), answers: true}, want: "Programmed=False/Pending"},
		{name: "in place", gw: gw, o: observed{svc: svcWith([]string{"203.0.113.1"}, assigned, announced, dp), answers: true}, want: "Programmed=True/Programmed", msg: "by zh-node1"},
		{name: "in place without a datapath", gw: gw, o: observed{svc: svcWith([]string{"203.0.113.1"}, assigned, announced), answers: true}, want: "Programmed=True/Programmed"},
		{name: "nothing to send to: programmed, not announced", gw: gw, o: observed{svc: svcWith([]string{"203.0.113.1"}, assigned, notAnnounced, dp)}, want: "Programmed=True/Programmed", msg: "no route has a ready backend"},
		{name: "requested address held", gw: withIP, o: observed{svc: svcWith([]string{"203.0.113.9"}, assigned, announced, dp), answers: true}, want: "Programmed=True/Programmed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := makePlan(tc.gw, zerohopClass, nil, worldOf())
			c := p.programmed(tc.o)
			if got := condString(c); got != tc.want {
				t.Errorf("got %s (%s), want %s", got, c.Message, tc.want)
			}
			if !strings.Contains(c.Message, tc.msg) {
				t.Errorf("message %q lacks %q", c.Message, tc.msg)
			}
			st := p.status(gatewayv1.GatewayStatus{}, tc.o)
			lp := st.Listeners[0].Conditions
			if got := condString(lp[len(lp)-1]); strings.HasSuffix(tc.want, "True/Programmed") != (got == "Programmed=True/Programmed") {
				t.Errorf("listener %s while the Gateway is %s", got, tc.want)
			}
		})
	}
}

func TestGatewayStatus(t *testing.T) {
	gw := gateway(
		listenerSpec("tcp", gatewayv1.TCPProtocolType, 8080),
		listenerSpec("udp", gatewayv1.UDPProtocolType, 8080, kinds("UDPRoute", "HTTPRoute")),
		listenerSpec("web", gatewayv1.HTTPProtocolType, 80),
	)
	r := tcp("infra", "r", time.Hour, []parent{{name: "gw"}})
	p := makePlan(gw, zerohopClass, []*route{r}, worldOf())
	o := observed{svc: svcWith([]string{"203.0.113.1", "2001:db8:113::1"},
		sc(controller.ConditionAddressAssigned, true, "Assigned", ""), sc(controller.ConditionAnnounced, true, "Announced", ""))}
	// Conditions of other types, written by someone else, stay.
	have := gatewayv1.GatewayStatus{Conditions: []metav1.Condition{{Type: "example.com/Audited", Status: metav1.ConditionTrue, Reason: "Audited"}}}
	st := p.status(have, o)
	var conds []string
	for _, c := range st.Conditions {
		conds = append(conds, condString(c))
		if c.Type != "example.com/Audited" && c.ObservedGeneration != 3 {
			t.Errorf("%s: observedGeneration %d", c.Type, c.ObservedGeneration)
		}
	}
	if got, want := strings.Join(conds, " "), "example.com/Audited=True/Audited Accepted=True/ListenersNotValid Programmed=True/Programmed"; got != want {
		t.Errorf("conditions %s, want %s", got, want)
	}
	if len(st.Addresses) != 2 || st.Addresses[0].Value != "203.0.113.1" || *st.Addresses[0].Type != gatewayv1.IPAddressType {
		t.Errorf("addresses %+v", st.Addresses)
	}
	want := map[string]struct {
		kinds    string
		attached int32
		conds    string
	}{
		"tcp": {"TCPRoute", 1, "Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs Programmed=True/Programmed"},
		"udp": {"UDPRoute", 0, "Accepted=True/Accepted ResolvedRefs=False/InvalidRouteKinds Programmed=True/Programmed"},
		"web": {"", 0, "Accepted=False/UnsupportedProtocol ResolvedRefs=True/ResolvedRefs Programmed=False/Invalid"},
	}
	if len(st.Listeners) != 3 {
		t.Fatalf("%d listeners", len(st.Listeners))
	}
	for _, ls := range st.Listeners {
		w := want[string(ls.Name)]
		var ks, cs []string
		for _, k := range ls.SupportedKinds {
			ks = append(ks, string(k.Kind))
			if k.Group == nil || *k.Group != groupName {
				t.Errorf("%s: kind %s without the group", ls.Name, k.Kind)
			}
		}
		for _, c := range ls.Conditions {
			cs = append(cs, condString(c))
		}
		if strings.Join(ks, ",") != w.kinds || ls.AttachedRoutes != w.attached || strings.Join(cs, " ") != w.conds {
			t.Errorf("listener %s: kinds %v, attached %d, conditions %v; want %+v", ls.Name, ks, ls.AttachedRoutes, cs, w)
		}
	}
	// A second computation from the written status changes nothing,
	// times included.
	again := p.status(st, o)
	if again.Conditions[1].LastTransitionTime != st.Conditions[1].LastTransitionTime || len(again.Listeners) != 3 {
		t.Error("status not stable")
	}
}

func TestRouteStatusMerge(t *testing.T) {
	gw := gateway(listenerSpec("tcp", gatewayv1.TCPProtocolType, 8080))
	other := gatewayv1.RouteParentStatus{ParentRef: gatewayv1.ParentReference{Name: "gw"}, ControllerName: "example.com/other",
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted"}}}
	stale := gatewayv1.RouteParentStatus{ParentRef: gatewayv1.ParentReference{Name: "gw", SectionName: new(gatewayv1.SectionName("old"))}, ControllerName: ControllerName,
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted"}}}
	otherGW := gatewayv1.RouteParentStatus{ParentRef: gatewayv1.ParentReference{Name: "gw2"}, ControllerName: ControllerName,
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted"}}}
	r := tcp("infra", "r", time.Hour, []parent{{name: "gw", section: "tcp"}})
	r.status = []gatewayv1.RouteParentStatus{other, stale, otherGW}
	p := makePlan(gw, zerohopClass, []*route{r}, worldOf())

	st := routeStatus(r.status, gw, "infra", p.routes[r])
	if len(st) != 3 || st[0].ControllerName != "example.com/other" || st[1].ParentRef.Name != "gw2" {
		t.Fatalf("status %+v", st)
	}
	mine := st[2]
	if mine.ControllerName != ControllerName || *mine.ParentRef.SectionName != "tcp" || len(mine.Conditions) != 2 {
		t.Errorf("zerohop's entry %+v", mine)
	}
	// The Gateway gone: its entries go, the others stay.
	if st := routeStatus(st, gw, "infra", nil); len(st) != 2 {
		t.Errorf("after the Gateway went: %+v", st)
	}
}
