package bgp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
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

// The point-to-point link of the unnumbered session: node 1's end and the
// router's.
const (
	unnumberedNodeIf   = "zh-un-n1"
	unnumberedRouterIf = "zh-un-r"
)

// lbService creates a LoadBalancer Service with labels for the Pods
// labelled app=sel on the echo server's port with protocol proto, and
// writes ips into its status itself (no zerohop controller runs in this
// lab: the speakers' side alone is under test).
func (e *env) lbService(name, sel string, proto corev1.Protocol, lbls map[string]string, ips ...string) {
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

// serviceLabel sets a Service's label key to value.
func (e *env) serviceLabel(t *testing.T, name, key, value string) {
	t.Helper()
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]string{key: value}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.l.Kube.CoreV1().Services("default").Patch(e.ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// update reads obj, applies change and writes it back, retrying on a
// conflict.
func update[T client.Object](t *testing.T, e *env, obj T, change func(T)) {
	t.Helper()
	for range 5 {
		if err := e.c.Get(e.ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			t.Fatal(err)
		}
		change(obj)
		err := e.c.Update(e.ctx, obj)
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "modified") {
			t.Fatal(err)
		}
	}
	t.Fatalf("update %s: conflicts", obj.GetName())
}

// routerNeighbor is what the tests read of FRR's `show bgp neighbors X
// json`.
type routerNeighbor struct {
	State       string `json:"bgpState"`
	RemoteAS    uint32 `json:"remoteAs"`
	RouterID    string `json:"remoteRouterId"`
	Established int    `json:"connectionsEstablished"`
}

// neighbor returns the router's view of one neighbour (an address, or an
// interface for an unnumbered one); State "absent" when it has none.
func neighbor(ctx context.Context, name string) routerNeighbor {
	out, err := lab.Vtysh(ctx, "show bgp neighbors "+name+" json")
	if err != nil {
		return routerNeighbor{State: err.Error()}
	}
	var m map[string]routerNeighbor
	if err := json.Unmarshal(out, &m); err != nil {
		return routerNeighbor{State: err.Error()}
	}
	n, ok := m[name]
	if !ok {
		return routerNeighbor{State: "absent"}
	}
	return n
}

// speakerErrors is node i's SpeakerStatus errors, joined.
func (e *env) speakerErrors(i int) string {
	var st v1alpha1.SpeakerStatus
	if err := e.c.Get(e.ctx, client.ObjectKey{Name: lab.NodeName(i)}, &st); err != nil {
		return err.Error()
	}
	return strings.Join(st.Status.Errors, "; ")
}

// pathFrom waits for the router's path for prefix from the neighbour at
// from to satisfy ok.
func pathFrom(t *testing.T, ctx context.Context, d time.Duration, what string, prefix netip.Prefix, from netip.Addr, ok func(routerPath, bool) bool) {
	t.Helper()
	eventually(t, d, what, func() (bool, string) {
		m, err := bgpPaths(ctx, prefix)
		if err != nil {
			return false, err.Error()
		}
		p, has := m[from.String()]
		return ok(p, has), fmt.Sprintf("%s from %s: %+v (present %v)", prefix, from, describe(p), has)
	})
}

func describe(p routerPath) string {
	var parts []string
	if p.Community != nil {
		parts = append(parts, "community "+p.Community.String)
	}
	if p.LargeCommunity != nil {
		parts = append(parts, "large "+p.LargeCommunity.String)
	}
	if p.LocPrf != nil {
		parts = append(parts, fmt.Sprintf("localpref %d", *p.LocPrf))
	}
	return strings.Join(parts, ", ")
}

func community(p routerPath) string {
	if p.Community == nil {
		return ""
	}
	return p.Community.String
}

func localPref(p routerPath) uint32 {
	if p.LocPrf == nil {
		return 0
	}
	return *p.LocPrf
}

// TestBGPMetalLB checks on the router what MetalLB users rely on in BGP
// mode: dynamicASN (internal and external, and external refusing the
// session's own AS), serviceSelectors choosing which Services an
// advertisement announces with which communities and local-pref (per
// address, following Service labels), edits of communities, localPref and
// aggregation length applied without a session reset, BGPPeer routerID,
// and an unnumbered session. Its subtests share one lab and run in order.
func TestBGPMetalLB(t *testing.T) {
	l := lab.Up(t, lab.Options{Nodes: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	ctrllog.SetLogger(logr.Discard())
	c, err := client.New(l.RESTConfig, client.Options{Scheme: speaker.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ctx: ctx, l: l, c: c, speakers: l.Speakers(t, zerohopBin, speakerNS, nil, nil)}

	r4, r6 := lab.RouterNodeAddrs()
	n1, _ := lab.NodeAddrs(1)
	n2, _ := lab.NodeAddrs(2)
	n3, _ := lab.NodeAddrs(3)
	router := fmt.Sprintf("router bgp %d", lab.DefaultRouterASN)
	// Node 3's session is iBGP (dynamicASN internal on the speaker), so
	// that local-pref shows.
	if _, err := vtysh(ctx, "configure terminal", router,
		fmt.Sprintf("no neighbor %s", n3),
		fmt.Sprintf("neighbor %s remote-as internal", n3),
		fmt.Sprintf("neighbor %s timers connect 2", n3),
		"address-family ipv4 unicast", fmt.Sprintf("neighbor %s activate", n3), "exit-address-family"); err != nil {
		t.Fatal(err)
	}

	e.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: speakerNS}})
	for _, p := range []struct{ name, addrs string }{{"lab", "203.0.113.0/26"}, {"edit", "203.0.113.64/28"}} {
		e.create(&v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: p.name},
			Spec: v1alpha1.IPAddressPoolSpec{Addresses: []v1alpha1.Address{v1alpha1.Address(p.addrs)}}})
	}
	timers := func(s v1alpha1.BGPPeerSpec) v1alpha1.BGPPeerSpec {
		s.HoldTime, s.KeepaliveTime, s.ConnectTime = dur(9*time.Second), dur(3*time.Second), dur(time.Second)
		return s
	}
	on := func(i int) []v1alpha1.LabelSelector { return hostnameSel(metav1.LabelSelectorOpIn, lab.NodeName(i)) }
	peerN1 := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "router-n1"}, Spec: timers(v1alpha1.BGPPeerSpec{
		MyASN: lab.DefaultNodeASN, PeerASN: lab.DefaultRouterASN, PeerAddress: r4.String(), RouterID: "192.0.2.101", NodeSelectors: on(1)})}
	peerN2 := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "router-n2-dynamic-external"}, Spec: timers(v1alpha1.BGPPeerSpec{
		MyASN: lab.DefaultNodeASN, DynamicASN: v1alpha1.DynamicASNExternal, PeerAddress: r4.String(), NodeSelectors: on(2)})}
	peerN3 := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "router-n3-dynamic-internal"}, Spec: timers(v1alpha1.BGPPeerSpec{
		MyASN: lab.DefaultRouterASN, DynamicASN: v1alpha1.DynamicASNInternal, PeerAddress: r4.String(), NodeSelectors: on(3)})}
	for _, p := range []*v1alpha1.BGPPeer{peerN1, peerN2, peerN3} {
		e.create(p)
	}
	e.create(&v1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "plain"},
		Spec: v1alpha1.BGPAdvertisementSpec{IPAddressPools: []string{"lab"}}})
	e.create(&v1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "gold"},
		Spec: v1alpha1.BGPAdvertisementSpec{IPAddressPools: []string{"lab"}, Communities: []string{"65000:100"}, LocalPref: 300,
			ServiceSelectors: []v1alpha1.LabelSelector{{MatchLabels: map[string]string{"tier": "gold"}}}}})
	editAdv := &v1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "edit"},
		Spec: v1alpha1.BGPAdvertisementSpec{IPAddressPools: []string{"edit"}, Communities: []string{"65000:1"}, LocalPref: 120}}
	e.create(editAdv)

	for i := 1; i <= 3; i++ {
		e.pod(fmt.Sprintf("web-%d", i), "web", i)
	}
	gold := netip.MustParsePrefix("203.0.113.10/32")
	silver := netip.MustParsePrefix("203.0.113.11/32")
	shared := netip.MustParsePrefix("203.0.113.12/32")
	edit1 := netip.MustParsePrefix("203.0.113.65/32")
	edit2 := netip.MustParsePrefix("203.0.113.66/32")
	editAgg := netip.MustParsePrefix("203.0.113.64/28")
	e.lbService("gold", "web", corev1.ProtocolTCP, map[string]string{"tier": "gold"}, gold.Addr().String())
	e.lbService("silver", "web", corev1.ProtocolTCP, nil, silver.Addr().String())
	e.lbService("shared-tcp", "web", corev1.ProtocolTCP, map[string]string{"tier": "gold"}, shared.Addr().String())
	e.lbService("shared-udp", "web", corev1.ProtocolUDP, nil, shared.Addr().String())
	e.lbService("edit-1", "web", corev1.ProtocolTCP, nil, edit1.Addr().String())
	e.lbService("edit-2", "web", corev1.ProtocolTCP, nil, edit2.Addr().String())
	for i := 1; i <= 3; i++ {
		e.startSpeaker(i)
	}

	t.Run("dynamicASN", func(t *testing.T) {
		for _, tc := range []struct {
			node netip.Addr
			as   uint32
		}{{n1, lab.DefaultNodeASN}, {n2, lab.DefaultNodeASN}, {n3, lab.DefaultRouterASN}} {
			eventually(t, 30*time.Second, fmt.Sprintf("session with %s up, AS %d", tc.node, tc.as), func() (bool, string) {
				n := neighbor(ctx, tc.node.String())
				return n.State == "Established" && n.RemoteAS == tc.as, fmt.Sprintf("%+v", n)
			})
		}
		// The iBGP session carries local-pref, the eBGP ones do not.
		pathFrom(t, ctx, 15*time.Second, "local-pref 300 on node3's iBGP path", gold, n3, func(p routerPath, ok bool) bool {
			return ok && localPref(p) == 300
		})
		pathFrom(t, ctx, 5*time.Second, "node2's dynamic-external path", gold, n2, func(p routerPath, ok bool) bool {
			return ok && localPref(p) != 300
		})
	})
	if t.Failed() {
		return
	}

	t.Run("serviceSelectors choose communities", func(t *testing.T) {
		pathFrom(t, ctx, 10*time.Second, "gold Service with the gold community", gold, n1, func(p routerPath, ok bool) bool {
			return ok && community(p) == "65000:100"
		})
		pathFrom(t, ctx, 10*time.Second, "other Service announced without it", silver, n1, func(p routerPath, ok bool) bool {
			return ok && community(p) == ""
		})
		pathFrom(t, ctx, 10*time.Second, "other Service without the gold local-pref", silver, n3, func(p routerPath, ok bool) bool {
			return ok && localPref(p) != 300
		})
		// One of the two Services on the shared address is not gold: the
		// address is one route, announced without the gold attributes.
		pathFrom(t, ctx, 10*time.Second, "shared address without the gold community", shared, n1, func(p routerPath, ok bool) bool {
			return ok && community(p) == ""
		})
		// Labels are followed: the other sharing Service turns gold, the
		// gold one turns silver.
		e.serviceLabel(t, "shared-udp", "tier", "gold")
		pathFrom(t, ctx, 10*time.Second, "shared address gold once both Services are", shared, n1, func(p routerPath, ok bool) bool {
			return ok && community(p) == "65000:100"
		})
		pathFrom(t, ctx, 10*time.Second, "shared address with the gold local-pref", shared, n3, func(p routerPath, ok bool) bool {
			return ok && localPref(p) == 300
		})
		e.serviceLabel(t, "gold", "tier", "silver")
		pathFrom(t, ctx, 10*time.Second, "relabelled Service loses the gold community", gold, n1, func(p routerPath, ok bool) bool {
			return ok && community(p) == ""
		})
	})

	t.Run("runtime edits without a session reset", func(t *testing.T) {
		pathFrom(t, ctx, 10*time.Second, "edit pool with 65000:1", edit1, n1, func(p routerPath, ok bool) bool {
			return ok && community(p) == "65000:1"
		})
		pathFrom(t, ctx, 10*time.Second, "edit pool with local-pref 120", edit1, n3, func(p routerPath, ok bool) bool {
			return ok && localPref(p) == 120
		})
		before := map[netip.Addr]int{}
		for _, n := range []netip.Addr{n1, n2, n3} {
			before[n] = neighbor(ctx, n.String()).Established
		}

		update(t, e, editAdv, func(a *v1alpha1.BGPAdvertisement) {
			a.Spec.Communities = []string{"65000:2", "large:64512:7:7"}
			a.Spec.LocalPref = 250
		})
		t0 := time.Now()
		pathFrom(t, ctx, 10*time.Second, "new communities on the router", edit1, n1, func(p routerPath, ok bool) bool {
			return ok && community(p) == "65000:2" && p.LargeCommunity != nil && p.LargeCommunity.String == "64512:7:7"
		})
		t.Logf("communities edited -> on the router: %s", time.Since(t0).Round(time.Millisecond))
		pathFrom(t, ctx, 10*time.Second, "new local-pref on the router", edit2, n3, func(p routerPath, ok bool) bool {
			return ok && localPref(p) == 250
		})

		var agg int32 = 28
		update(t, e, editAdv, func(a *v1alpha1.BGPAdvertisement) { a.Spec.AggregationLength = &agg })
		for _, n := range []netip.Addr{n1, n2, n3} {
			pathFrom(t, ctx, 10*time.Second, "the /28 aggregate", editAgg, n, func(p routerPath, ok bool) bool {
				return ok
			})
			for _, host := range []netip.Prefix{edit1, edit2} {
				pathFrom(t, ctx, 10*time.Second, "host route withdrawn for the aggregate", host, n, func(_ routerPath, ok bool) bool {
					return !ok
				})
			}
		}
		var host int32 = 32
		update(t, e, editAdv, func(a *v1alpha1.BGPAdvertisement) { a.Spec.AggregationLength = &host })
		pathFrom(t, ctx, 10*time.Second, "host routes back", edit1, n1, func(p routerPath, ok bool) bool {
			return ok && community(p) == "65000:2"
		})
		pathFrom(t, ctx, 10*time.Second, "aggregate withdrawn", editAgg, n1, func(_ routerPath, ok bool) bool {
			return !ok
		})
		for _, n := range []netip.Addr{n1, n2, n3} {
			if got := neighbor(ctx, n.String()); got.Established != before[n] || got.State != "Established" {
				t.Errorf("session with %s: %d connections established after the edits, %d before (state %s): an edit reset it",
					n, got.Established, before[n], got.State)
			}
		}
	})

	t.Run("routerID", func(t *testing.T) {
		eventually(t, 10*time.Second, "node1 identifies as its BGPPeer's routerID", func() (bool, string) {
			n := neighbor(ctx, n1.String())
			return n.RouterID == "192.0.2.101", fmt.Sprintf("%+v", n)
		})
		// A younger peer of node 1 asking for another router ID is not
		// used, and says why.
		other := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "router-n1-other-id"}, Spec: timers(v1alpha1.BGPPeerSpec{
			MyASN: lab.DefaultNodeASN, PeerASN: lab.DefaultRouterASN, PeerAddress: r6.String(), RouterID: "192.0.2.102", NodeSelectors: on(1)})}
		e.create(other)
		eventually(t, 10*time.Second, "node1 reports the refused peer", func() (bool, string) {
			errs := e.speakerErrors(1)
			return strings.Contains(errs, "bgppeer router-n1-other-id: routerID 192.0.2.102 differs from 192.0.2.101"), errs
		})
		// Editing the routerID of a peer in service is reported, and
		// applied by a restart of the speaker.
		update(t, e, peerN1, func(p *v1alpha1.BGPPeer) { p.Spec.RouterID = "192.0.2.103" })
		eventually(t, 10*time.Second, "node1 reports the router ID it keeps", func() (bool, string) {
			errs := e.speakerErrors(1)
			return strings.Contains(errs, "runs as 192.0.2.101 and now should be 192.0.2.103"), errs
		})
		if n := neighbor(ctx, n1.String()); n.RouterID != "192.0.2.101" || n.State != "Established" {
			t.Fatalf("the router sees node1 as %+v, want its session kept with router ID 192.0.2.101", n)
		}
		e.speakers.Stop(1)
		e.startSpeaker(1)
		eventually(t, 30*time.Second, "node1 back with router ID 192.0.2.103", func() (bool, string) {
			n := neighbor(ctx, n1.String())
			return n.State == "Established" && n.RouterID == "192.0.2.103", fmt.Sprintf("%+v", n)
		})
		if err := c.Delete(ctx, other); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("dynamicASN external refuses the session's own AS", func(t *testing.T) {
		// The router's AS becomes node 2's own: FRR takes node 2 as an
		// internal neighbour, the speaker must not.
		if _, err := vtysh(ctx, "configure terminal", router, fmt.Sprintf("neighbor %s remote-as internal", n2)); err != nil {
			t.Fatal(err)
		}
		update(t, e, peerN2, func(p *v1alpha1.BGPPeer) { p.Spec.MyASN = lab.DefaultRouterASN })
		eventually(t, 20*time.Second, "node2 reports the refusal", func() (bool, string) {
			errs := e.speakerErrors(2)
			return strings.Contains(errs, "dynamicASN external accepts only another AS"), errs
		})
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if n := neighbor(ctx, n2.String()); n.State == "Established" {
				t.Fatalf("the router established the refused session: %+v", n)
			}
			if m, err := bgpPaths(ctx, silver); err == nil {
				if _, ok := m[n2.String()]; ok {
					t.Fatal("the router has a path from node2 over the refused session")
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		update(t, e, peerN2, func(p *v1alpha1.BGPPeer) { p.Spec.MyASN = lab.DefaultNodeASN })
		if _, err := vtysh(ctx, "configure terminal", router, fmt.Sprintf("neighbor %s remote-as %d", n2, lab.DefaultNodeASN)); err != nil {
			t.Fatal(err)
		}
		pathFrom(t, ctx, 30*time.Second, "node2's path back", silver, n2, func(_ routerPath, ok bool) bool { return ok })
	})

	t.Run("unnumbered", func(t *testing.T) {
		// A point-to-point link with link-local addresses only, between
		// node 1 and the router.
		if out, err := exec.CommandContext(ctx, "ip", "-n", lab.NodeName(1), "link", "add", unnumberedNodeIf,
			"type", "veth", "peer", "name", unnumberedRouterIf, "netns", lab.RouterNS).CombinedOutput(); err != nil {
			t.Fatalf("veth: %v: %s", err, out)
		}
		t.Cleanup(func() { _ = exec.Command("ip", "-n", lab.NodeName(1), "link", "del", unnumberedNodeIf).Run() })
		for _, c := range [][]string{{"-n", lab.NodeName(1), "link", "set", unnumberedNodeIf, "up"}, {"-n", lab.RouterNS, "link", "set", unnumberedRouterIf, "up"}} {
			if out, err := exec.CommandContext(ctx, "ip", c...).CombinedOutput(); err != nil {
				t.Fatalf("ip %v: %v: %s", c, err, out)
			}
		}
		if _, err := vtysh(ctx, "configure terminal", router,
			fmt.Sprintf("neighbor %s interface remote-as external", unnumberedRouterIf),
			fmt.Sprintf("neighbor %s timers connect 2", unnumberedRouterIf),
			"address-family ipv4 unicast", fmt.Sprintf("neighbor %s activate", unnumberedRouterIf), "exit-address-family",
			"address-family ipv6 unicast", fmt.Sprintf("neighbor %s activate", unnumberedRouterIf), "exit-address-family"); err != nil {
			t.Fatal(err)
		}
		unn := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "router-n1-unnumbered"}, Spec: timers(v1alpha1.BGPPeerSpec{
			MyASN: lab.DefaultNodeASN, DynamicASN: v1alpha1.DynamicASNExternal, Interface: unnumberedNodeIf, NodeSelectors: on(1)})}
		e.create(unn)
		eventually(t, 40*time.Second, "unnumbered session up", func() (bool, string) {
			n := neighbor(ctx, unnumberedRouterIf)
			return n.State == "Established", fmt.Sprintf("%+v; node1: %s", n, e.speakerErrors(1))
		})
		// The IPv4 route goes over the link, to node 1's link-local
		// address (RFC 8950).
		eventually(t, 10*time.Second, "the router's IPv4 route via the unnumbered link", func() (bool, string) {
			out, err := lab.Vtysh(ctx, fmt.Sprintf("show ip route %s json", silver))
			if err != nil {
				return false, err.Error()
			}
			s := string(out)
			return strings.Contains(s, `"interfaceName":"`+unnumberedRouterIf+`"`) && strings.Contains(s, `"ip":"fe80:`), s
		})
		if err := c.Delete(ctx, unn); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "unnumbered session closed with its peer", func() (bool, string) {
			n := neighbor(ctx, unnumberedRouterIf)
			return n.State != "Established", fmt.Sprintf("%+v", n)
		})
		if slices.Contains([]string{"", "absent"}, neighbor(ctx, n1.String()).State) {
			t.Error("node1's numbered session is gone")
		}
	})
}
