package cluster_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/e2e/lab"
	"github.com/zerohop/zerohop/speaker"
)

const speakerNS = "zerohop-system"

type env struct {
	t        *testing.T
	ctx      context.Context
	l        *lab.Lab
	c        client.Client
	speakers *lab.Speakers
}

// upEnv brings a lab up with kube-proxy in the given mode, runs zerohop's
// controller, and applies a pool, BGP peers to the router and an
// advertisement; speakers start with startSpeakers.
func upEnv(t *testing.T, kubeProxy string, d time.Duration) *env {
	l := lab.Up(t, lab.Options{Nodes: 3, KubeProxy: kubeProxy})
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	ctrllog.SetLogger(logr.Discard())
	c, err := client.New(l.RESTConfig, client.Options{Scheme: speaker.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ctx: ctx, l: l, c: c, speakers: l.Speakers(t, zerohopBin, speakerNS, nil, nil)}
	l.Controller(t, zerohopBin)
	r4, r6 := lab.RouterNodeAddrs()
	e.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: speakerNS}})
	e.create(&v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "lab"},
		Spec: v1alpha1.IPAddressPoolSpec{Addresses: []v1alpha1.Address{"203.0.113.0/26", "2001:db8:113::/120"}}})
	for name, addr := range map[string]netip.Addr{"router-v4": r4, "router-v6": r6} {
		e.create(&v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.BGPPeerSpec{
			MyASN: lab.DefaultNodeASN, PeerASN: lab.DefaultRouterASN, PeerAddress: addr.String(),
			HoldTime: &metav1.Duration{Duration: 9 * time.Second}, ConnectTime: &metav1.Duration{Duration: time.Second}}})
	}
	e.create(&v1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "lab"},
		Spec: v1alpha1.BGPAdvertisementSpec{IPAddressPools: []string{"lab"}}})
	return e
}

func (e *env) startSpeakers() {
	for i := 1; i <= e.l.Nodes(); i++ {
		e.speakers.Start(i)
	}
}

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

func eventually(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	lab.Eventually(t, d, what, cond)
}
