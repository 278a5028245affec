package speaker_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/internal/apiserver"
	"github.com/zerohop/zerohop/speaker"
)

type env struct {
	t   *testing.T
	ctx context.Context
	c   client.Client
}

func (e *env) create(obj client.Object) {
	e.t.Helper()
	if err := e.c.Create(e.ctx, obj); err != nil {
		e.t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
}

// service creates a LoadBalancer Service and writes its ingress IP through
// the status subresource, as the controller would.
func (e *env) service(name string, local bool, ip string) {
	e.t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer,
			Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}},
	}
	if local {
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}
	e.create(svc)
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip}}
	if err := e.c.Status().Update(e.ctx, svc); err != nil {
		e.t.Fatalf("service status: %v", err)
	}
}

// endpoints writes the Service's EndpointSlice: one endpoint per entry
// "node:ready" (ready is true or false).
func (e *env) endpoints(svc string, eps ...string) {
	e.t.Helper()
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: svc + "-1",
			Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for i, ep := range eps {
		node, ready, _ := strings.Cut(ep, ":")
		r := ready == "true"
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{fmt.Sprintf("100.64.0.%d", i+1)},
			NodeName:   &node,
			Conditions: discoveryv1.EndpointConditions{Ready: &r},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: fmt.Sprintf("%s-%d", svc, i)},
		})
	}
	var old discoveryv1.EndpointSlice
	err := e.c.Get(e.ctx, types.NamespacedName{Namespace: "default", Name: sl.Name}, &old)
	switch {
	case apierrors.IsNotFound(err):
		e.create(sl)
	case err != nil:
		e.t.Fatal(err)
	default:
		old.Endpoints = sl.Endpoints
		if err := e.c.Update(e.ctx, &old); err != nil {
			e.t.Fatal(err)
		}
	}
}

func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ok, got := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; last: %s", what, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startEnv starts an API server for a speaker test and returns it with a
// client env whose context ends with the test (or with the cancel it
// returns); zerohop-system exists.
func startEnv(t *testing.T) (*apiserver.Server, *env, context.CancelFunc) {
	ctrl.SetLogger(testr.New(t))
	srv := apiserver.ForTest(t)
	c, err := client.New(srv.Config, client.Options{Scheme: speaker.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	e := &env{t: t, ctx: ctx, c: c}
	e.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "zerohop-system"}})
	return srv, e, cancel
}

// TestSpeaker runs a speaker against a real API server and checks that
// objects become paths in its embedded GoBGP RIB. Its one peer is a closed
// port on loopback: the session never comes up, which the RIB does not
// need, and no packet leaves the machine.
func TestSpeaker(t *testing.T) {
	srv, e, cancel := startEnv(t)
	ctx, c := e.ctx, e.c
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{"rack": "a"}}}
	e.create(node)
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.11"}}
	if err := c.Status().Update(ctx, node); err != nil {
		t.Fatal(err)
	}
	e.create(&v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "pool"},
		Spec: v1alpha1.IPAddressPoolSpec{Addresses: []v1alpha1.Address{"203.0.113.0/28"}}})
	e.create(&v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "r1"},
		Spec: v1alpha1.BGPPeerSpec{MyASN: 64512, PeerASN: 64513, PeerAddress: peerAddr, PeerPort: 1,
			PasswordSecret: &v1alpha1.SecretReference{Name: "r1-pw"}}})
	e.create(&v1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "all"}})

	sp, err := speaker.New(srv.Config, speaker.Options{NodeName: "n1", Namespace: "zerohop-system"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sp.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("speaker: %v", err)
		}
	}()

	status := func() v1alpha1.SpeakerStatusStatus {
		var st v1alpha1.SpeakerStatus
		if err := c.Get(ctx, types.NamespacedName{Name: "n1"}, &st); err != nil {
			return v1alpha1.SpeakerStatusStatus{}
		}
		return st.Status
	}
	// The peer's password Secret is missing: the peer is left out and the
	// status says why.
	eventually(t, "missing secret reported", func() (bool, string) {
		st := status()
		return slices.ContainsFunc(st.Errors, func(s string) bool { return strings.Contains(s, "r1-pw") }), fmt.Sprint(st.Errors)
	})
	e.create(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "zerohop-system", Name: "r1-pw"},
		Type: corev1.SecretTypeBasicAuth, StringData: map[string]string{"password": "pw"}})

	rib := func(want ...string) func() (bool, string) {
		return func() (bool, string) {
			s := sp.BGP()
			if s == nil {
				return false, "no BGP server"
			}
			var got []string
			for _, p := range s.Paths() {
				got = append(got, p.String())
			}
			return slices.Equal(got, want), fmt.Sprint(got)
		}
	}

	// Local: announced while this node has a ready endpoint.
	e.service("local", true, "203.0.113.1")
	e.endpoints("local", "n1:true", "n2:true")
	eventually(t, "local service announced", rib("203.0.113.1/32"))
	e.endpoints("local", "n1:false", "n2:true")
	eventually(t, "local service withdrawn when its endpoint on n1 is unready", rib())

	// Cluster: announced with endpoints on other nodes only.
	e.service("cluster", false, "203.0.113.2")
	e.endpoints("cluster", "n2:true")
	eventually(t, "cluster service announced", rib("203.0.113.2/32"))

	// An IP outside every pool is not ours.
	e.service("foreign", false, "198.51.100.7")
	e.endpoints("foreign", "n1:true")

	eventually(t, "status lists announcement and session", func() (bool, string) {
		st := status()
		ok := len(st.Announcements) == 1 && st.Announcements[0].Service == "default/cluster" &&
			slices.Equal(st.Announcements[0].Prefixes, []string{"203.0.113.2/32"}) &&
			slices.Equal(st.Announcements[0].Peers, []string{"r1"}) &&
			len(st.Sessions) == 1 && st.Sessions[0].Peer == "r1" && st.Sessions[0].State != "established" &&
			len(st.Errors) == 0
		return ok, fmt.Sprintf("%+v", st)
	})

	// The node excluded from load balancers announces nothing.
	var n corev1.Node
	if err := c.Get(ctx, types.NamespacedName{Name: "n1"}, &n); err != nil {
		t.Fatal(err)
	}
	n.Labels["node.kubernetes.io/exclude-from-external-load-balancers"] = ""
	if err := c.Update(ctx, &n); err != nil {
		t.Fatal(err)
	}
	eventually(t, "excluded node withdraws", rib())
	delete(n.Labels, "node.kubernetes.io/exclude-from-external-load-balancers")
	if err := c.Update(ctx, &n); err != nil {
		t.Fatal(err)
	}
	eventually(t, "node back", rib("203.0.113.2/32"))

	// An advertisement limited to other nodes withdraws; the peer stays.
	var adv v1alpha1.BGPAdvertisement
	if err := c.Get(ctx, types.NamespacedName{Name: "all"}, &adv); err != nil {
		t.Fatal(err)
	}
	adv.Spec.NodeSelectors = []v1alpha1.LabelSelector{{MatchLabels: map[string]string{"rack": "b"}}}
	if err := c.Update(ctx, &adv); err != nil {
		t.Fatal(err)
	}
	eventually(t, "advertisement for rack b withdraws on rack a", rib())
}
