package datapath

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/zerohop/zerohop/bpf"
)

const thisNode = "n1"

var nodes = map[string][]netip.Addr{
	"n1": {netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("2001:db8:1::1")},
	"n2": {netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("2001:db8:1::2")},
	"n3": {netip.MustParseAddr("198.51.100.3")}, // no IPv6
}

type svcOpt func(*corev1.Service)

func svc(name string, ips []string, opts ...svcOpt) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
		Spec: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeLoadBalancer,
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyCluster,
			Ports:                 []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	for _, ip := range ips {
		s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

func local(s *corev1.Service) {
	s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
}

func affinity(s *corev1.Service) { s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP }

func ports(p ...corev1.ServicePort) svcOpt {
	return func(s *corev1.Service) { s.Spec.Ports = p }
}

type ep struct {
	addr                        string
	node                        string
	ready, serving, terminating *bool
}

var (
	yes = new(true)
	no  = new(false)
)

func readyEP(addr, node string) ep { return ep{addr: addr, node: node} }

func slice(name, service string, at discoveryv1.AddressType, ps []discoveryv1.EndpointPort, eps ...ep) *discoveryv1.EndpointSlice {
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: at,
		Ports:       ps,
	}
	for _, e := range eps {
		var n *string
		if e.node != "" {
			n = new(e.node)
		}
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{e.addr},
			NodeName:   n,
			Conditions: discoveryv1.EndpointConditions{Ready: e.ready, Serving: e.serving, Terminating: e.terminating},
		})
	}
	return sl
}

func slicePorts(name string, port int32, proto corev1.Protocol) []discoveryv1.EndpointPort {
	return []discoveryv1.EndpointPort{{Name: new(name), Port: new(port), Protocol: new(proto)}}
}

var http8080 = slicePorts("http", 8080, corev1.ProtocolTCP)

func key(addr string, port uint16, p bpf.Proto) bpf.ServiceKey {
	return bpf.ServiceKey{Addr: netip.MustParseAddr(addr), Port: port, Proto: p}
}

func lb(addr string, port uint16, f bpf.BackendFlags) bpf.Backend {
	return bpf.Backend{Addr: netip.MustParseAddr(addr), Port: port, Flags: f}
}

func rb(addr string, port uint16, node string, f bpf.BackendFlags) bpf.Backend {
	return bpf.Backend{Addr: netip.MustParseAddr(addr), Port: port, Node: netip.MustParseAddr(node), Flags: bpf.BackendRemote | f}
}

func TestTranslate(t *testing.T) {
	const (
		L    = bpf.BackendLocal
		T    = bpf.BackendTerminating
		v4   = discoveryv1.AddressTypeIPv4
		v6   = discoveryv1.AddressTypeIPv6
		vip4 = "203.0.113.10"
		vip6 = "2001:db8:f::10"
	)
	k4 := key(vip4, 80, bpf.TCP)
	k6 := key(vip6, 80, bpf.TCP)
	tests := []struct {
		name    string
		svcs    []*corev1.Service
		slices  []*discoveryv1.EndpointSlice
		down    map[string]bool // nodes shutting down
		want    map[bpf.ServiceKey]Entry
		wantErr []string // substrings, one per error, in order
	}{{
		name:   "v4 cluster: local and remote backends",
		svcs:   []*corev1.Service{svc("web", []string{vip4})},
		slices: []*discoveryv1.EndpointSlice{slice("web-a", "web", v4, http8080, readyEP("100.64.1.5", "n1"), readyEP("100.64.2.5", "n2"))},
		want: map[bpf.ServiceKey]Entry{k4: {Service: "ns/web", Flags: bpf.ServiceCluster, Backends: []bpf.Backend{
			lb("100.64.1.5", 8080, L), rb("100.64.2.5", 8080, "198.51.100.2", 0)}}},
	}, {
		name:   "v6 cluster",
		svcs:   []*corev1.Service{svc("web", []string{vip6})},
		slices: []*discoveryv1.EndpointSlice{slice("web-a", "web", v6, http8080, readyEP("fd00::1:5", "n1"), readyEP("fd00::2:5", "n2"))},
		want: map[bpf.ServiceKey]Entry{k6: {Service: "ns/web", Flags: bpf.ServiceCluster, Backends: []bpf.Backend{
			lb("fd00::1:5", 8080, L), rb("fd00::2:5", 8080, "2001:db8:1::2", 0)}}},
	}, {
		name: "dual stack: one entry per family with that family's backends",
		svcs: []*corev1.Service{svc("web", []string{vip4, vip6})},
		slices: []*discoveryv1.EndpointSlice{
			slice("web-4", "web", v4, http8080, readyEP("100.64.1.5", "n1")),
			slice("web-6", "web", v6, http8080, readyEP("fd00::1:5", "n1")),
		},
		want: map[bpf.ServiceKey]Entry{
			k4: {Service: "ns/web", Flags: bpf.ServiceCluster, Backends: []bpf.Backend{lb("100.64.1.5", 8080, L)}},
			k6: {Service: "ns/web", Flags: bpf.ServiceCluster, Backends: []bpf.Backend{lb("fd00::1:5", 8080, L)}},
		},
	}, {
		name:   "eTP Local: only local backends, no node address needed",
		svcs:   []*corev1.Service{svc("web", []string{vip4}, local)},
		slices: []*discoveryv1.EndpointSlice{slice("web-a", "web", v4, http8080, readyEP("100.64.1.5", "n1"), readyEP("100.64.2.5", "n2"), readyEP("100.64.9.5", "unknown"))},
		want:   map[bpf.ServiceKey]Entry{k4: {Service: "ns/web", Flags: bpf.ServiceLocal, Backends: []bpf.Backend{lb("100.64.1.5", 8080, L)}}},
	}, {
		name:   "eTP Local without local endpoints: entry with no backends",
		svcs:   []*corev1.Service{svc("web", []string{vip4}, local)},
		slices: []*discoveryv1.EndpointSlice{slice("web-a", "web", v4, http8080, readyEP("100.64.2.5", "n2"))},
		want:   map[bpf.ServiceKey]Entry{k4: {Service: "ns/web", Flags: bpf.ServiceLocal, Backends: []bpf.Backend{}}},
	}, {
		name: "conditions: ready, nil, serving+terminating, terminating not serving, not ready (standby)",
		svcs: []*corev1.Service{svc("web", []string{vip4})},
		slices: []*discoveryv1.EndpointSlice{slice("web-a", "web", v4, http8080,
			ep{addr: "100.64.1.1", node: "n1", ready: yes, serving: yes, terminating: no},
			ep{addr: "100.64.1.2", node: "n1"},
			ep{addr: "100.64.1.3", node: "n1", ready: no, serving: yes, terminating: yes},
			ep{addr: "100.64.1.4", node: "n1", ready: no, serving: no, terminating: yes},
			ep{addr: "100.64.1.5", node: "n1", ready: no, serving: no, terminating: no},
			ep{addr: "100.64.2.3", node: "n2", ready: no, serving: yes, terminating: yes},
		)},
		want: map[bpf.ServiceKey]Entry{k4: {Service: "ns/web", Flags: bpf.ServiceCluster, Backends: []bpf.Backend{
			lb("100.64.1.1", 8080, L), lb("100.64.1.2", 8080, L), lb("100.64.1.3", 8080, L|T), lb("100.64.1.5", 8080, L|T), rb("100.64.2.3", 8080, "198.51.100.2", T)}}},
	}, {
		name: "terminating with nil serving counts as serving; ready+terminating is terminating",
		svcs: []*corev1.Service{svc("web", []string{vip4})},
		slices: []*discoveryv1.EndpointSlice{slice("web-a", "web", v4, http8080,
			ep{addr: "100.64.1.1", node: "n1", terminating: yes},
			ep{addr: "100.64.1.2", node: "n1", ready: yes, terminating: yes},
		)},
		want: map[bpf.ServiceKey]Entry{k4: {Service: "ns/web", Flags: bpf.ServiceCluster, Backends: []bpf.Backend{
			lb("100.64.1.1", 8080, L|T), lb("100.64.1.2", 8080, L|T)}}},
	}, {
		name: "eTP Local keeps local terminating backends",
		svcs: []*corev1.Service{svc("web", []string{vip4}, local)},
		slices: []*discoveryv1.EndpointSlice{slice("web-a", "web", v4, http8080,
			ep{addr: "100.64.1.3", node: "n1", ready: no, serving: yes, terminating: yes},
			ep{addr: "100.64.2.3", node: "n2", ready: no, serving: yes, terminating: yes},
		)},
		want: map[bpf.ServiceKey]Entry{k4: {Service: "ns/web", Flags: bpf.ServiceLocal, Backends: []bpf.Backend{lb("100.64.1.3", 8080, L|T)}}},
	}, {
		name: "named target port resolved per slice; slice without it serves nothing",
		svcs: []*corev1.Service{svc("web", []string{vip4}, ports(corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("web")}))},
		slices: []*discoveryv1.EndpointSlice{
			slice("web-a", "web", v4, slicePorts("http", 8080, corev1.ProtocolTCP), readyEP("100.64.1.1", "n1")),
			slice("web-b", "web", v4, slicePorts("http", 9090, corev1.ProtocolTCP), readyEP("100.64.1.2", "n1")),
			slice("web-c", "web", v4, slicePorts("other", 7070, corev1.ProtocolTCP), readyEP("100.64.1.3", "n1")),
		},
		want: map[bpf.ServiceKey]Entry{k4: {Service: "ns/web", Flags: bpf.ServiceCluster, Backends: []bpf.Backend{
			lb("100.64.1.1", 8080, L), lb("100.64.1.2", 9090, L)}}},
	}, {
		name: "numeric target port when the slice does not list the port; unset target port is the port",
		svcs: []*corev1.Service{svc("web", []string{vip4}, ports(
			corev1.ServicePort{Name: "a", Port: 80, TargetPort: intstr.FromInt32(8080)},
			corev1.ServicePort{Name: "b", Port: 81},
		))},
		slices: []*discoveryv1.EndpointSlice{slice("web-a", "web", v4, nil, readyEP("100.64.1.1", "n1"))},
		want: map[bpf.ServiceKey]Entry{
			k4:                     {Service: "ns/web", Flags: bpf.ServiceCluster, Backends: []bpf.Backend{lb("100.64.1.1", 8080, L)}},
			key(vip4, 81, bpf.TCP): {Service: "ns/web", Flags: bpf.ServiceCluster, Backends: []bpf.Backend{lb("100.64.1.1", 81, L)}},
		},
	}, {
		name: "TCP and UDP on one port number are two entries with their own slice ports",
		svcs: []*corev1.Service{svc("dns", []string{vip4}, ports(
			corev1.ServicePort{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("dns-tcp")},
			corev1.ServicePort{Name: "dns-udp", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromString("dns-udp")},
		))},
		slices: []*discoveryv1.EndpointSlice{slice("dns-a", "dns", v4,
			append(slicePorts("dns-tcp", 5353, corev1.ProtocolTCP), slicePorts("dns-udp", 5354, corev1.ProtocolUDP)...),
			readyEP("100.64.1.1", "n1"))},
		want: map[bpf.ServiceKey]Entry{
			key(vip4, 53, bpf.TCP): {Service: "ns/dns", Flags: bpf.ServiceCluster, Backends: []bpf.Backend{lb("100.64.1.1", 5353, L)}},
			key(vip4, 53, bpf.UDP): {Service: "ns/dns", Flags: bpf.ServiceCluster, Backends: []bpf.Backend{lb("100.64.1.1", 5354, L)}},
		},
	}, {
		name: "duplicates across slices are merged, the better condition wins",
		svcs: []*corev1.Service{svc("web", []string{vip4})},
		slices: []*discoveryv1.EndpointSlice{
			slice("web-a", "web", v4, http8080, readyEP("100.64.1.1", "n1"), ep{addr: "100.64.1.2", node: "n1", ready: no, serving: yes, terminating: yes}),
			slice("web-b", "web", v4, http8080, readyEP("100.64.1.1", "n1"), readyEP("100.64.1.2", "n1")),
			slice("web-c", "web", v4, http8080, ep{addr: "100.64.1.1", node: "n1", ready: no, serving: yes, terminating: yes}),
		},
		want: map[bpf.ServiceKey]Entry{k4: {Service: "ns/web", Flags: bpf.ServiceCluster, Backends: []bpf.Backend{
			lb("100.64.1.1", 8080, L), lb("100.64.1.2", 8080, L)}}},
	}, {
		name: "duplicates that disagree on the node: the slice first by name wins",
		svcs: []*corev1.Service{svc("web", []string{vip4})},
		slices: []*discoveryv1.EndpointSlice{
			slice("web-b", "web", v4, http8080, readyEP("100.64.1.9", "n1")),
			slice("web-a", "web", v4, http8080, readyEP("100.64.1.9", "n2")),
		},
		want: map[bpf.ServiceKey]Entry{k4: {Service: "ns/web", Flags: bpf.ServiceCluster, Backends: []bpf.Backend{rb("100.64.1.9", 8080, "198.51.100.2", 0)}}},
	}, {
		name: "slices of other services, namespaces and families are ignored",
		svcs: []*corev1.Service{svc("web", []string{vip4})},
		slices: func() []*discoveryv1.EndpointSlice {
			other := slice("x", "web", v4, http8080, readyEP("100.64.7.7", "n1"))
			other.Namespace = "elsewhere"
			return []*discoveryv1.EndpointSlice{
				other,
				slice("api-a", "api", v4, http8080, readyEP("100.64.8.8", "n1")),
				slice("web-6", "web", v6, http8080, readyEP("fd00::8", "n1")),
				slice("web-f", "web", discoveryv1.AddressTypeFQDN, http8080, readyEP("pod.example", "n1")),
				slice("web-a", "web", v4, http8080, readyEP("100.64.1.1", "n1")),
			}
		}(),
		want: map[bpf.ServiceKey]Entry{k4: {Service: "ns/web", Flags: bpf.ServiceCluster, Backends: []bpf.Backend{lb("100.64.1.1", 8080, L)}}},
	}, {
		name: "remote node without an address of the family: error naming node and service, backend left out",
		svcs: []*corev1.Service{svc("web", []string{vip6})},
		slices: []*discoveryv1.EndpointSlice{slice("web-6", "web", v6, http8080,
			readyEP("fd00::1:5", "n1"), readyEP("fd00::3:5", "n3"), readyEP("fd00::4:5", "n4"))},
		want: map[bpf.ServiceKey]Entry{k6: {Service: "ns/web", Flags: bpf.ServiceCluster, Backends: []bpf.Backend{lb("fd00::1:5", 8080, L)}}},
		wantErr: []string{
			"service ns/web: node n3 has no IPv6 address",
			"service ns/web: node n4 has no IPv6 address",
		},
	}, {
		name:    "remote endpoint without a node name",
		svcs:    []*corev1.Service{svc("web", []string{vip4})},
		slices:  []*discoveryv1.EndpointSlice{slice("web-a", "web", v4, http8080, readyEP("100.64.1.5", ""))},
		want:    map[bpf.ServiceKey]Entry{k4: {Service: "ns/web", Flags: bpf.ServiceCluster, Backends: []bpf.Backend{}}},
		wantErr: []string{"service ns/web: endpoint 100.64.1.5 has no node name"},
	}, {
		name: "SCTP port skipped with an error, other ports kept",
		svcs: []*corev1.Service{svc("web", []string{vip4, vip6}, ports(
			corev1.ServicePort{Name: "sig", Port: 3868, Protocol: corev1.ProtocolSCTP},
			corev1.ServicePort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)},
		))},
		want: map[bpf.ServiceKey]Entry{
			k4: {Service: "ns/web", Flags: bpf.ServiceCluster, Backends: []bpf.Backend{}},
			k6: {Service: "ns/web", Flags: bpf.ServiceCluster, Backends: []bpf.Backend{}},
		},
		wantErr: []string{"service ns/web: port sig 3868/SCTP"},
	}, {
		name: "no ingress IP, hostname only, not a LoadBalancer, being deleted: nothing",
		svcs: []*corev1.Service{
			svc("pending", nil),
			svc("hostname", nil, func(s *corev1.Service) {
				s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{Hostname: "lb.example"}}
			}),
			svc("clusterip", []string{vip4}, func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeClusterIP }),
			svc("gone", []string{vip4}, func(s *corev1.Service) { s.DeletionTimestamp = &metav1.Time{} }),
		},
		slices: []*discoveryv1.EndpointSlice{slice("pending-a", "pending", v4, http8080, readyEP("100.64.1.5", "n1"))},
		want:   map[bpf.ServiceKey]Entry{},
	}, {
		name: "ClientIP affinity: flag and Kubernetes' default timeout",
		svcs: []*corev1.Service{svc("web", []string{vip4}, affinity, local)},
		want: map[bpf.ServiceKey]Entry{k4: {Service: "ns/web", Flags: bpf.ServiceLocal | bpf.ServiceAffinity,
			AffinityTimeout: 3 * time.Hour, Backends: []bpf.Backend{}}},
	}, {
		name: "ClientIP affinity with a timeout",
		svcs: []*corev1.Service{svc("web", []string{vip4}, affinity, func(s *corev1.Service) {
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: new(int32(60))}}
		})},
		want: map[bpf.ServiceKey]Entry{k4: {Service: "ns/web", Flags: bpf.ServiceCluster | bpf.ServiceAffinity,
			AffinityTimeout: time.Minute, Backends: []bpf.Backend{}}},
	}, {
		name: "source ranges: per family, masked, sorted, deduplicated; a family with none admits nobody",
		svcs: []*corev1.Service{svc("web", []string{vip4, vip6}, func(s *corev1.Service) {
			s.Spec.LoadBalancerSourceRanges = []string{"192.0.2.77/24", " 10.0.0.0/8", "192.0.2.0/24", "::ffff:198.51.100.0/120"}
		})},
		want: map[bpf.ServiceKey]Entry{
			k4: {Service: "ns/web", Flags: bpf.ServiceCluster | bpf.ServiceSourceRanges, Backends: []bpf.Backend{},
				SourceRanges: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.0/24")}},
			k6: {Service: "ns/web", Flags: bpf.ServiceCluster | bpf.ServiceSourceRanges, Backends: []bpf.Backend{},
				SourceRanges: []netip.Prefix{}},
		},
	}, {
		name: "source ranges from the annotation; a bad entry is reported and left out, the rest still restricts",
		svcs: []*corev1.Service{svc("web", []string{vip4}, func(s *corev1.Service) {
			s.Annotations = map[string]string{"service.beta.kubernetes.io/load-balancer-source-ranges": "192.0.2.0/24, bogus"}
		})},
		want: map[bpf.ServiceKey]Entry{k4: {Service: "ns/web", Flags: bpf.ServiceCluster | bpf.ServiceSourceRanges, Backends: []bpf.Backend{},
			SourceRanges: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}},
		wantErr: []string{`service ns/web: annotation service.beta.kubernetes.io/load-balancer-source-ranges: "bogus" is not a CIDR; left out`},
	}, {
		name:    "two services claiming one key: first by name wins, the other gets an error",
		svcs:    []*corev1.Service{svc("zeta", []string{vip4}), svc("alpha", []string{vip4}, local)},
		want:    map[bpf.ServiceKey]Entry{k4: {Service: "ns/alpha", Flags: bpf.ServiceLocal, Backends: []bpf.Backend{}}},
		wantErr: []string{"service ns/zeta: 203.0.113.10:80/tcp is already used by service ns/alpha"},
	}, {
		name:   "IPv4-mapped addresses are unmapped; duplicate ingress IPs collapse",
		svcs:   []*corev1.Service{svc("web", []string{"::ffff:" + vip4, vip4})},
		slices: []*discoveryv1.EndpointSlice{slice("web-a", "web", v4, http8080, readyEP("::ffff:100.64.1.5", "n1"))},
		want:   map[bpf.ServiceKey]Entry{k4: {Service: "ns/web", Flags: bpf.ServiceCluster, Backends: []bpf.Backend{lb("100.64.1.5", 8080, L)}}},
	}, {
		name:   "a shutting-down node's endpoints are standbys while others are ready",
		svcs:   []*corev1.Service{svc("web", []string{vip4})},
		slices: []*discoveryv1.EndpointSlice{slice("web-a", "web", v4, http8080, readyEP("100.64.1.5", "n1"), readyEP("100.64.2.5", "n2"))},
		down:   map[string]bool{"n2": true},
		want: map[bpf.ServiceKey]Entry{k4: {Service: "ns/web", Flags: bpf.ServiceCluster, Backends: []bpf.Backend{
			lb("100.64.1.5", 8080, L), rb("100.64.2.5", 8080, "198.51.100.2", T)}}},
	}, {
		name:   "this node shutting down: its own endpoints are standbys too",
		svcs:   []*corev1.Service{svc("web", []string{vip4})},
		slices: []*discoveryv1.EndpointSlice{slice("web-a", "web", v4, http8080, readyEP("100.64.1.5", "n1"), readyEP("100.64.2.5", "n2"))},
		down:   map[string]bool{"n1": true},
		want: map[bpf.ServiceKey]Entry{k4: {Service: "ns/web", Flags: bpf.ServiceCluster, Backends: []bpf.Backend{
			lb("100.64.1.5", 8080, L|T), rb("100.64.2.5", 8080, "198.51.100.2", 0)}}},
	}, {
		name:   "every ready endpoint on shutting-down nodes: they stay eligible",
		svcs:   []*corev1.Service{svc("web", []string{vip4})},
		slices: []*discoveryv1.EndpointSlice{slice("web-a", "web", v4, http8080, readyEP("100.64.1.5", "n1"), readyEP("100.64.2.5", "n2"))},
		down:   map[string]bool{"n1": true, "n2": true},
		want: map[bpf.ServiceKey]Entry{k4: {Service: "ns/web", Flags: bpf.ServiceCluster, Backends: []bpf.Backend{
			lb("100.64.1.5", 8080, L), rb("100.64.2.5", 8080, "198.51.100.2", 0)}}},
	}, {
		name:   "Local mode on a shutting-down node keeps its own endpoints",
		svcs:   []*corev1.Service{svc("web", []string{vip4}, local)},
		slices: []*discoveryv1.EndpointSlice{slice("web-a", "web", v4, http8080, readyEP("100.64.1.5", "n1"), readyEP("100.64.2.5", "n2"))},
		down:   map[string]bool{"n1": true},
		want:   map[bpf.ServiceKey]Entry{k4: {Service: "ns/web", Flags: bpf.ServiceLocal, Backends: []bpf.Backend{lb("100.64.1.5", 8080, L)}}},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, errs := Translate(thisNode, tc.svcs, tc.slices, nodes, tc.down)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("entries:\n got %s\nwant %s", dump(got), dump(tc.want))
			}
			if len(errs) != len(tc.wantErr) {
				t.Fatalf("errors: got %v, want %d matching %q", errs, len(tc.wantErr), tc.wantErr)
			}
			for i, e := range errs {
				if !strings.Contains(e.Error(), tc.wantErr[i]) {
					t.Errorf("error %d: %q does not contain %q", i, e, tc.wantErr[i])
				}
			}
		})
	}
}

func dump(m map[bpf.ServiceKey]Entry) string {
	keys := make([]bpf.ServiceKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareKeys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "\n  %s %s flags=%b", k, m[k].Service, m[k].Flags)
		for _, be := range m[k].Backends {
			fmt.Fprintf(&b, "\n    %s node=%s flags=%b", be.AddrPort(), be.Node, be.Flags)
		}
	}
	return b.String()
}

// Every node must build the same Maglev table: the backend list may not
// depend on the order the informer hands out slices or endpoints.
func TestTranslateCanonicalOrder(t *testing.T) {
	s := svc("web", []string{"203.0.113.10"})
	mk := func(perm []int) []*discoveryv1.EndpointSlice {
		addrs := []ep{readyEP("100.64.2.9", "n2"), readyEP("100.64.1.10", "n1"), readyEP("100.64.1.9", "n1"), readyEP("100.64.3.1", "n3")}
		var a, b []ep
		for i, p := range perm {
			if i%2 == 0 {
				a = append(a, addrs[p])
			} else {
				b = append(b, addrs[p])
			}
		}
		return []*discoveryv1.EndpointSlice{
			slice("web-a", "web", discoveryv1.AddressTypeIPv4, http8080, a...),
			slice("web-b", "web", discoveryv1.AddressTypeIPv4, http8080, b...),
		}
	}
	base, errs := Translate(thisNode, []*corev1.Service{s}, mk([]int{0, 1, 2, 3}), nodes, nil)
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	var order []string
	for _, b := range base[key("203.0.113.10", 80, bpf.TCP)].Backends {
		order = append(order, b.Addr.String())
	}
	if want := []string{"100.64.1.9", "100.64.1.10", "100.64.2.9", "100.64.3.1"}; !slices.Equal(order, want) {
		t.Fatalf("order %v, want %v", order, want)
	}
	for _, perm := range [][]int{{3, 2, 1, 0}, {1, 3, 0, 2}, {2, 0, 3, 1}} {
		sl := mk(perm)
		slices.Reverse(sl)
		got, _ := Translate(thisNode, []*corev1.Service{s}, sl, nodes, nil)
		if !reflect.DeepEqual(got, base) {
			t.Errorf("permutation %v:%s\nwant%s", perm, dump(got), dump(base))
		}
	}
}

func TestDiff(t *testing.T) {
	ka := key("203.0.113.1", 80, bpf.TCP)
	kb := key("203.0.113.2", 80, bpf.TCP)
	kc := key("2001:db8:f::3", 443, bpf.UDP)
	b1 := lb("100.64.1.1", 8080, bpf.BackendLocal)
	b2 := rb("100.64.2.1", 8080, "198.51.100.2", 0)
	entry := func(f bpf.ServiceFlags, bs ...bpf.Backend) Entry {
		return Entry{Service: "ns/s", Flags: f, Backends: bs}
	}
	base := map[bpf.ServiceKey]Entry{
		ka: entry(bpf.ServiceCluster, b1, b2),
		kb: entry(bpf.ServiceLocal, b1),
	}
	with := func(k bpf.ServiceKey, e Entry) map[bpf.ServiceKey]Entry {
		m := map[bpf.ServiceKey]Entry{}
		for k, v := range base {
			m[k] = v
		}
		m[k] = e
		return m
	}
	without := func(k bpf.ServiceKey) map[bpf.ServiceKey]Entry {
		m := with(k, Entry{})
		delete(m, k)
		return m
	}
	b2term := b2
	b2term.Flags |= bpf.BackendTerminating
	tests := []struct {
		name         string
		current, des map[bpf.ServiceKey]Entry
		upserts      []bpf.ServiceKey
		deletes      []bpf.ServiceKey
	}{
		{name: "nothing changed", current: base, des: base},
		{name: "only the Service name differs", current: base, des: with(ka, Entry{Service: "other/name", Flags: bpf.ServiceCluster, Backends: []bpf.Backend{b1, b2}})},
		{name: "nil and empty backends are the same", current: with(kb, entry(bpf.ServiceLocal)), des: with(kb, Entry{Service: "ns/s", Flags: bpf.ServiceLocal, Backends: []bpf.Backend{}})},
		{name: "backend removed from one service", current: base, des: with(ka, entry(bpf.ServiceCluster, b1)), upserts: []bpf.ServiceKey{ka}},
		{name: "backend turns terminating", current: base, des: with(ka, entry(bpf.ServiceCluster, b1, b2term)), upserts: []bpf.ServiceKey{ka}},
		{name: "service flags change", current: base, des: with(kb, entry(bpf.ServiceLocal|bpf.ServiceAffinity, b1)), upserts: []bpf.ServiceKey{kb}},
		{name: "new key", current: base, des: with(kc, entry(bpf.ServiceCluster)), upserts: []bpf.ServiceKey{kc}},
		{name: "key gone", current: base, des: without(ka), deletes: []bpf.ServiceKey{ka}},
		{name: "empty current: everything upserted, sorted", current: nil, des: base, upserts: []bpf.ServiceKey{ka, kb}},
		{name: "desired empty: everything deleted, sorted", current: with(kc, entry(bpf.ServiceCluster)), des: nil, deletes: []bpf.ServiceKey{ka, kb, kc}},
		{name: "observed keys: wanted ones rewritten, others deleted", current: Observed([]bpf.ServiceKey{kc, kb}), des: base, upserts: []bpf.ServiceKey{ka, kb}, deletes: []bpf.ServiceKey{kc}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ups, dels := Diff(tc.current, tc.des)
			var upKeys []bpf.ServiceKey
			for _, u := range ups {
				upKeys = append(upKeys, u.Key)
				if !reflect.DeepEqual(u.Entry, tc.des[u.Key]) {
					t.Errorf("upsert %s carries %+v, want %+v", u.Key, u.Entry, tc.des[u.Key])
				}
			}
			if !reflect.DeepEqual(upKeys, tc.upserts) {
				t.Errorf("upserts %v, want %v", upKeys, tc.upserts)
			}
			if !reflect.DeepEqual(dels, tc.deletes) {
				t.Errorf("deletes %v, want %v", dels, tc.deletes)
			}
		})
	}
}

// An endpoint change of one Service rewrites that Service's keys only.
func TestTranslateDiffMinimal(t *testing.T) {
	v4 := discoveryv1.AddressTypeIPv4
	svcs := []*corev1.Service{svc("web", []string{"203.0.113.1", "2001:db8:f::1"}), svc("api", []string{"203.0.113.2"}, local)}
	before := []*discoveryv1.EndpointSlice{
		slice("web-a", "web", v4, http8080, readyEP("100.64.1.1", "n1")),
		slice("api-a", "api", v4, http8080, readyEP("100.64.1.2", "n1")),
	}
	after := []*discoveryv1.EndpointSlice{
		before[0],
		slice("api-a", "api", v4, http8080, readyEP("100.64.1.2", "n1"), readyEP("100.64.1.3", "n1")),
	}
	cur, errs := Translate(thisNode, svcs, before, nodes, nil)
	if len(errs) != 0 || len(cur) != 3 {
		t.Fatalf("before: %d entries, errors %v", len(cur), errs)
	}
	des, errs := Translate(thisNode, svcs, after, nodes, nil)
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	ups, dels := Diff(cur, des)
	if len(ups) != 1 || ups[0].Key != key("203.0.113.2", 80, bpf.TCP) || len(dels) != 0 {
		t.Fatalf("upserts %+v deletes %v, want only api's key", ups, dels)
	}
	if got := len(ups[0].Entry.Backends); got != 2 {
		t.Errorf("api has %d backends, want 2", got)
	}
	// The IPv6 VIP of web has no IPv6 endpoints: still an entry, unchanged.
	if e := des[key("2001:db8:f::1", 80, bpf.TCP)]; len(e.Backends) != 0 || e.Flags != bpf.ServiceCluster {
		t.Errorf("web v6 entry %+v", e)
	}
}
