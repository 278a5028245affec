package l2_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/e2e/echo"
	"github.com/zerohop/zerohop/e2e/lab"
	"github.com/zerohop/zerohop/speaker"
)

// Addresses of TestL2MetalLB, on the node segment like TestL2's.
const (
	dnsA4    = "198.51.100.202" // preferred on node 2
	dnsB4    = "198.51.100.203" // preferred on node 3
	shared4  = "198.51.100.204" // two Local Services
	excludeL = "node.kubernetes.io/exclude-from-external-load-balancers"
)

// lbService creates a LoadBalancer Service with labels for the Pods
// labelled app=sel, on the echo server's port with protocol proto, and
// writes ips into its status itself: no zerohop controller runs in this
// lab, so the test can give two Local Services with different selectors
// one address, which the controller would refuse, and see that the
// speakers still answer for it from one node.
func (e *env) lbService(name, sel string, proto corev1.Protocol, local bool, lbls map[string]string, ips ...string) {
	e.t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Labels: lbls},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": sel},
			Ports: []corev1.ServicePort{{Name: "echo", Port: echo.DefaultTCPPort, Protocol: proto,
				TargetPort: intstr.FromInt32(echo.DefaultTCPPort)}},
		},
	}
	if local {
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}
	if err := e.l.AddService(e.ctx, svc); err != nil {
		e.t.Fatal(err)
	}
	got, err := e.l.Kube.CoreV1().Services("default").Get(e.ctx, name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, ip := range ips {
		got.Status.LoadBalancer.Ingress = append(got.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
	}
	if _, err := e.l.Kube.CoreV1().Services("default").UpdateStatus(e.ctx, got, metav1.UpdateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// nodeLabel sets (value != nil) or removes node i's label key.
func (e *env) nodeLabel(t *testing.T, i int, key string, value *string) {
	t.Helper()
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]*string{key: value}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.l.Kube.CoreV1().Nodes().Patch(e.ctx, lab.NodeName(i), types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// networkUnavailable sets node i's NetworkUnavailable condition.
func (e *env) networkUnavailable(t *testing.T, i int, on bool) {
	t.Helper()
	n, err := e.l.Kube.CoreV1().Nodes().Get(e.ctx, lab.NodeName(i), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	status := corev1.ConditionFalse
	if on {
		status = corev1.ConditionTrue
	}
	n.Status.Conditions = slices.DeleteFunc(n.Status.Conditions, func(c corev1.NodeCondition) bool { return c.Type == corev1.NodeNetworkUnavailable })
	n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: corev1.NodeNetworkUnavailable, Status: status,
		Reason: "ZerohopLab", LastTransitionTime: metav1.Now()})
	if _, err := e.l.Kube.CoreV1().Nodes().UpdateStatus(e.ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// answeredBy waits until exactly one node reports owning vip, that node
// is want (0: any node; -i: any node but i, whose SpeakerStatus is not
// read, as it may be a dead speaker's), and the router hears ARP answers
// from its MAC only; it returns the owner.
func (e *env) answeredBy(t *testing.T, vip string, want int, macs map[int]string, d time.Duration) int {
	t.Helper()
	owner := 0
	what := fmt.Sprintf("%s answered by node%d alone", vip, want)
	if want <= 0 {
		what = fmt.Sprintf("%s answered by one node other than node%d", vip, -want)
	}
	eventually(t, d, what, func() (bool, string) {
		o := slices.DeleteFunc(e.owners()[vip], func(n string) bool { return want < 0 && n == lab.NodeName(-want) })
		if len(o) != 1 {
			return false, fmt.Sprintf("owners %v", o)
		}
		owner = 0
		for i := 1; i <= nodes; i++ {
			if o[0] == lab.NodeName(i) {
				owner = i
			}
		}
		if want > 0 && owner != want {
			return false, fmt.Sprintf("owner %v", o)
		}
		got := arpAnswers(t, vip)
		return slices.Equal(got, []string{macs[owner]}), fmt.Sprintf("owner %v, ARP answers %v", o, got)
	})
	return owner
}

// TestL2MetalLB checks on the node segment what MetalLB users rely on in
// L2 mode: preferredNodeSelectors with serviceSelectors place an address
// on a chosen node with failover (MetalLB issue 2797); Services sharing an
// address are answered for by one node; the exclusion label and
// NetworkUnavailable move an address off a node. Its subtests share one
// lab and run in order.
func TestL2MetalLB(t *testing.T) {
	l := lab.Up(t, lab.Options{Nodes: nodes})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ctrllog.SetLogger(logr.Discard())
	c, err := client.New(l.RESTConfig, client.Options{Scheme: speaker.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ctx: ctx, l: l, c: c,
		speakers: l.Speakers(t, zerohopBin, speakerNS, []string{"--bfd=false"}, []string{"ZEROHOP_MEMBERLIST_KEY=zh-l2-e2e-shared-key"})}

	host := func(i int) v1alpha1.LabelSelector {
		return v1alpha1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/hostname": lab.NodeName(i)}}
	}
	app := func(name string) []v1alpha1.LabelSelector {
		return []v1alpha1.LabelSelector{{MatchLabels: map[string]string{"app": name}}}
	}
	e.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: speakerNS}})
	e.create(&v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "segment"},
		Spec: v1alpha1.IPAddressPoolSpec{Addresses: []v1alpha1.Address{"198.51.100.200/29"}}})
	// The address of each DNS Service on its own node, with failover:
	// an advertisement per Service, preferring that node.
	e.create(&v1alpha1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: "dns-a"},
		Spec: v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{"segment"}, ServiceSelectors: app("dns-a"),
			PreferredNodeSelectors: []v1alpha1.PreferredNodeSelector{{Weight: 100, Preference: host(2)}}}})
	e.create(&v1alpha1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: "dns-b"},
		Spec: v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{"segment"}, ServiceSelectors: app("dns-b"),
			PreferredNodeSelectors: []v1alpha1.PreferredNodeSelector{{Weight: 100, Preference: host(3)}}}})
	// Everything else in the pool, without preference.
	e.create(&v1alpha1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: "shared"},
		Spec: v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{"segment"}, ServiceSelectors: app("shared")}})

	for i := 1; i <= nodes; i++ {
		e.pod(fmt.Sprintf("dns-%d", i), "dns", i)
	}
	// The shared address's two Local Services: their Pods meet on node 2
	// only.
	e.pod("sha-1", "sha", 1)
	e.pod("sha-2", "sha", 2)
	e.pod("shb-2", "shb", 2)
	e.pod("shb-3", "shb", 3)
	e.lbService("dns-a", "dns", corev1.ProtocolTCP, false, map[string]string{"app": "dns-a"}, dnsA4)
	e.lbService("dns-b", "dns", corev1.ProtocolTCP, false, map[string]string{"app": "dns-b"}, dnsB4)
	e.lbService("sh-tcp", "sha", corev1.ProtocolTCP, true, map[string]string{"app": "shared"}, shared4)
	e.lbService("sh-udp", "shb", corev1.ProtocolUDP, true, map[string]string{"app": "shared"}, shared4)
	for i := 1; i <= nodes; i++ {
		e.startSpeaker(i)
	}
	macs := map[int]string{}
	for i := 1; i <= nodes; i++ {
		macs[i] = nodeMAC(t, i)
	}
	eventually(t, 30*time.Second, "three SpeakerStatuses", func() (bool, string) {
		var list v1alpha1.SpeakerStatusList
		if err := c.List(ctx, &list); err != nil {
			return false, err.Error()
		}
		return len(list.Items) == nodes, fmt.Sprint(len(list.Items))
	})

	t.Run("preferred node", func(t *testing.T) {
		e.answeredBy(t, dnsA4, 2, macs, 30*time.Second)
		e.answeredBy(t, dnsB4, 3, macs, 10*time.Second)
	})
	if t.Failed() {
		return
	}

	t.Run("preferred node fails and returns", func(t *testing.T) {
		port := func(state string) {
			if _, err := ipCmd(ctx, "-n", lab.SwitchNS, "link", "set", "p-node2", state); err != nil {
				t.Fatal(err)
			}
		}
		port("down")
		e.killSpeaker(2)
		restored := false
		defer func() {
			if !restored {
				port("up")
				e.startSpeaker(2)
			}
		}()
		t0 := time.Now()
		other := e.answeredBy(t, dnsA4, -2, macs, 15*time.Second)
		took := time.Since(t0)
		t.Logf("node2 down: %s taken over by node%d after %s", dnsA4, other, took.Round(time.Millisecond))
		// Failure detection is 0.3-0.4 s; the rest is the status write and
		// the ARP probes' 300 ms windows.
		if bound := 3 * time.Second; took > bound {
			t.Errorf("takeover of the preferred node's address took %s, want at most %s", took.Round(time.Millisecond), bound)
			e.logTails(t, "slow takeover")
		}
		// The address preferred elsewhere did not move.
		e.answeredBy(t, dnsB4, 3, macs, 5*time.Second)
		// The shared address loses its node with both Services' Pods.
		if o := e.answeredBy(t, shared4, -2, macs, 10*time.Second); o != 1 && o != 3 {
			t.Fatalf("%s answered by node%d", shared4, o)
		}
		port("up")
		e.startSpeaker(2)
		restored = true
		e.answeredBy(t, dnsA4, 2, macs, 30*time.Second)
	})

	t.Run("shared address from one node", func(t *testing.T) {
		// node 2 is the only node with Pods of both Local Services.
		e.answeredBy(t, shared4, 2, macs, 15*time.Second)
		var st v1alpha1.SpeakerStatus
		if err := c.Get(ctx, client.ObjectKey{Name: lab.NodeName(2)}, &st); err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(st.Status.L2, func(o v1alpha1.L2Ownership) bool { return o.IP == shared4 })
		if i < 0 || st.Status.L2[i].Service != "default/sh-tcp,default/sh-udp" {
			t.Fatalf("node2's status for %s: %+v, want both Services in one entry", shared4, st.Status.L2)
		}
		// Without node 2's Pod of one of them, no node has both: still
		// exactly one node answers.
		if err := l.SetPodReady(ctx, "shb-2", false); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = l.SetPodReady(ctx, "shb-2", true) }()
		// (node2 still has sh-tcp's Pod, so it may keep the address.)
		time.Sleep(2 * time.Second)
		e.answeredBy(t, shared4, 0, macs, 10*time.Second)
		if err := l.SetPodReady(ctx, "shb-2", true); err != nil {
			t.Fatal(err)
		}
		e.answeredBy(t, shared4, 2, macs, 10*time.Second)
	})

	t.Run("excluded node", func(t *testing.T) {
		e.answeredBy(t, dnsA4, 2, macs, 10*time.Second)
		yes := "true"
		e.nodeLabel(t, 2, excludeL, &yes)
		t0 := time.Now()
		other := e.answeredBy(t, dnsA4, -2, macs, 10*time.Second)
		t.Logf("exclusion label on node2: %s moved to node%d after %s", dnsA4, other, time.Since(t0).Round(time.Millisecond))
		// The shared address has no other node with both Services' Pods:
		// it goes to a node with one of them, never to node 2.
		e.answeredBy(t, shared4, -2, macs, 10*time.Second)
		e.nodeLabel(t, 2, excludeL, nil)
		e.answeredBy(t, dnsA4, 2, macs, 10*time.Second)

		e.networkUnavailable(t, 2, true)
		e.answeredBy(t, dnsA4, -2, macs, 10*time.Second)
		e.networkUnavailable(t, 2, false)
		e.answeredBy(t, dnsA4, 2, macs, 10*time.Second)
	})
}
