package l2_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/e2e/echo"
	"github.com/zerohop/zerohop/e2e/lab"
	"github.com/zerohop/zerohop/speaker"
)

const (
	speakerNS = "zerohop-system"
	// The VIPs are on the node segment (198.51.100.0/24, 2001:db8:100::/64),
	// so the router reaches them by ARP/NDP on its connected route.
	webVIP4   = "198.51.100.200"
	webVIP6   = "2001:db8:100::200"
	localVIP4 = "198.51.100.201"
	nodes     = 3
)

type env struct {
	t        *testing.T
	ctx      context.Context
	l        *lab.Lab
	c        client.Client
	speakers *lab.Speakers
}

func (e *env) startSpeaker(i int)                { e.t.Helper(); e.speakers.Start(i) }
func (e *env) killSpeaker(i int)                 { e.speakers.Kill(i) }
func (e *env) logTails(t *testing.T, why string) { e.speakers.LogTails(why) }

func (e *env) create(obj client.Object) {
	e.t.Helper()
	if err := e.c.Create(e.ctx, obj); err != nil {
		e.t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
}

// service creates a LoadBalancer Service for the Pods labelled app=sel
// and waits for zerohop's controller to assign it ips.
func (e *env) service(name, sel string, local bool, ips ...string) {
	e.t.Helper()
	if err := e.l.AddLBService(e.ctx, name, sel, local, ips...); err != nil {
		e.t.Fatal(err)
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

func ipCmd(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("ip %v: %w: %s", args, err, out)
	}
	return string(out), nil
}

// nodeMAC is node i's uplink MAC address.
func nodeMAC(t *testing.T, i int) string {
	t.Helper()
	var mac string
	err := lab.InNetns(lab.NodeName(i), func() error {
		ifi, err := net.InterfaceByName(lab.UplinkIf)
		if err != nil {
			return err
		}
		mac = ifi.HardwareAddr.String()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return mac
}

// routerNeigh is the router's neighbour entry for ip on the node segment:
// the MAC address, or "" when it has none.
func routerNeigh(ctx context.Context, ip string) string {
	out, err := ipCmd(ctx, "-n", lab.RouterNS, "neigh", "show", ip, "dev", lab.RouterNodesIf)
	if err != nil {
		return ""
	}
	f := strings.Fields(out)
	if i := slices.Index(f, "lladdr"); i >= 0 && i+1 < len(f) {
		return f[i+1]
	}
	return ""
}

// arpAnswers sends one ARP request for vip from the router and returns
// the MACs of every answer heard within 300ms.
func arpAnswers(t *testing.T, vip string) []string {
	t.Helper()
	var c *arp.Client
	err := lab.InNetns(lab.RouterNS, func() error {
		ifi, err := net.InterfaceByName(lab.RouterNodesIf)
		if err != nil {
			return err
		}
		c, err = arp.Dial(ifi)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	ip := netip.MustParseAddr(vip)
	if err := c.Request(ip); err != nil {
		t.Fatal(err)
	}
	var macs []string
	deadline := time.Now().Add(300 * time.Millisecond)
	for range 100 {
		if err := c.SetReadDeadline(deadline); err != nil {
			t.Fatal(err)
		}
		p, _, err := c.Read()
		if err != nil {
			break // deadline
		}
		if p.Operation == arp.OperationReply && p.SenderIP == ip {
			macs = append(macs, p.SenderHardwareAddr.String())
		}
	}
	slices.Sort(macs)
	return macs
}

// ndpAnswers sends one neighbour solicitation for vip from the router and
// returns the target MACs of every advertisement heard within 300ms.
func ndpAnswers(t *testing.T, vip string) []string {
	t.Helper()
	_, r6 := lab.RouterNodeAddrs()
	var (
		c   *ndp.Conn
		mac net.HardwareAddr
	)
	err := lab.InNetns(lab.RouterNS, func() error {
		ifi, err := net.InterfaceByName(lab.RouterNodesIf)
		if err != nil {
			return err
		}
		mac = ifi.HardwareAddr
		c, _, err = ndp.Listen(ifi, ndp.Addr(r6.String()))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	ip := netip.MustParseAddr(vip)
	group, err := ndp.SolicitedNodeMulticast(ip)
	if err != nil {
		t.Fatal(err)
	}
	ns := &ndp.NeighborSolicitation{TargetAddress: ip,
		Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac}}}
	if err := c.SetReadDeadline(time.Now().Add(300 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteTo(ns, nil, group); err != nil {
		t.Fatal(err)
	}
	var macs []string
	for range 100 {
		m, _, _, err := c.ReadFrom()
		if err != nil {
			break // deadline
		}
		na, ok := m.(*ndp.NeighborAdvertisement)
		if !ok || na.TargetAddress != ip {
			continue
		}
		for _, o := range na.Options {
			if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Target {
				macs = append(macs, lla.Addr.String())
			}
		}
	}
	slices.Sort(macs)
	return macs
}

// owners reads every SpeakerStatus: VIP -> nodes that say they own it.
func (e *env) owners() map[string][]string {
	var list v1alpha1.SpeakerStatusList
	if err := e.c.List(e.ctx, &list); err != nil {
		return nil
	}
	out := map[string][]string{}
	for _, s := range list.Items {
		for _, o := range s.Status.L2 {
			out[o.IP] = append(out[o.IP], s.Name)
		}
	}
	return out
}

// soleOwner waits until exactly one node reports owning vip and returns
// its index.
func (e *env) soleOwner(t *testing.T, vip string, d time.Duration) int {
	t.Helper()
	var got []string
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		got = e.owners()[vip]
		if len(got) == 1 {
			for i := 1; i <= nodes; i++ {
				if got[0] == lab.NodeName(i) {
					return i
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: owners %v after %s, want exactly one", vip, got, d)
	return 0
}

func eventually(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	lab.Eventually(t, d, what, cond)
}

func (e *env) request(addr string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(e.ctx, timeout)
	defer cancel()
	r, err := e.l.Request(ctx, "tcp", addr)
	return r.Pod, err
}

// TestL2 is the lab end-to-end test of L2 mode. Its subtests share one lab
// and run in order.
func TestL2(t *testing.T) {
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
	l.Controller(t, zerohopBin)

	e.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: speakerNS}})
	e.create(&v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "segment"},
		Spec: v1alpha1.IPAddressPoolSpec{Addresses: []v1alpha1.Address{"198.51.100.200/29", "2001:db8:100::200/125"}}})
	e.create(&v1alpha1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: "segment"},
		Spec: v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{"segment"}}})

	web := map[int]lab.Pod{}
	for i := 1; i <= nodes; i++ {
		web[i] = e.pod(fmt.Sprintf("web-%d", i), "web", i)
	}
	// The Local Service's only Pod is on node 2; the others do not route
	// its VIP anywhere, so a wrong owner shows as failed requests too.
	loc := e.pod("loc-2", "loc", 2)
	// Local, so the owner's XDP program picks its own Pod and a request
	// shows which node took it.
	e.service("web", "web", true, webVIP4, webVIP6)
	e.service("loc", "loc", true, localVIP4)
	for i := 1; i <= nodes; i++ {
		e.startSpeaker(i)
	}
	macs := map[int]string{}
	for i := 1; i <= nodes; i++ {
		macs[i] = nodeMAC(t, i)
	}
	podNode := func(pod string) int {
		for i, p := range web {
			if p.Name == pod {
				return i
			}
		}
		return 0
	}
	v4 := net.JoinHostPort(webVIP4, fmt.Sprint(echo.DefaultTCPPort))
	v6 := net.JoinHostPort(webVIP6, fmt.Sprint(echo.DefaultTCPPort))

	var owner int
	t.Run("arp", func(t *testing.T) {
		// Until all speakers have joined, the first ones own everything;
		// wait for all three to report, then for the owner to hold.
		eventually(t, 30*time.Second, "three SpeakerStatuses", func() (bool, string) {
			var list v1alpha1.SpeakerStatusList
			if err := c.List(ctx, &list); err != nil {
				return false, err.Error()
			}
			return len(list.Items) == nodes, fmt.Sprint(len(list.Items))
		})
		owner = e.soleOwner(t, webVIP4, 30*time.Second)
		for range 100 {
			time.Sleep(2 * time.Second)
			o := e.soleOwner(t, webVIP4, 5*time.Second)
			if o == owner {
				break
			}
			owner = o
		}
		got := arpAnswers(t, webVIP4)
		if !slices.Equal(got, []string{macs[owner]}) {
			t.Fatalf("ARP answers for %s: %v, want only node%d's %s", webVIP4, got, owner, macs[owner])
		}
		pod, err := e.request(v4, 3*time.Second)
		if err != nil || podNode(pod) != owner {
			t.Fatalf("request to %s: pod %q err %v, want node%d's Pod", v4, pod, err, owner)
		}
		if mac := routerNeigh(ctx, webVIP4); mac != macs[owner] {
			t.Errorf("router neighbour %s is %q, want node%d's %s", webVIP4, mac, owner, macs[owner])
		}
	})
	t.Run("ndp", func(t *testing.T) {
		o6 := e.soleOwner(t, webVIP6, 10*time.Second)
		if got := ndpAnswers(t, webVIP6); !slices.Equal(got, []string{macs[o6]}) {
			t.Fatalf("NDP answers for %s: %v, want only node%d's %s", webVIP6, got, o6, macs[o6])
		}
		pod, err := e.request(v6, 3*time.Second)
		if err != nil || podNode(pod) != o6 {
			t.Fatalf("request to %s: pod %q err %v, want node%d's Pod", v6, pod, err, o6)
		}
		if mac := routerNeigh(ctx, webVIP6); mac != macs[o6] {
			t.Errorf("router neighbour %s is %q, want node%d's %s", webVIP6, mac, o6, macs[o6])
		}
	})
	t.Run("local", func(t *testing.T) {
		if o := e.soleOwner(t, localVIP4, 10*time.Second); o != 2 {
			t.Fatalf("Local Service VIP owned by node%d, want node2 (the only one with a ready Pod)", o)
		}
		if got := arpAnswers(t, localVIP4); !slices.Equal(got, []string{macs[2]}) {
			t.Fatalf("ARP answers for %s: %v, want only node2's %s", localVIP4, got, macs[2])
		}
		pod, err := e.request(net.JoinHostPort(localVIP4, fmt.Sprint(echo.DefaultTCPPort)), 3*time.Second)
		if err != nil || pod != loc.Name {
			t.Fatalf("request to %s: pod %q err %v, want %s", localVIP4, pod, err, loc.Name)
		}
	})
	t.Run("event", func(t *testing.T) {
		eventually(t, 10*time.Second, "an L2Owner Event on Service web", func() (bool, string) {
			var evs eventsv1.EventList
			if err := c.List(ctx, &evs, client.InNamespace("default")); err != nil {
				return false, err.Error()
			}
			for _, ev := range evs.Items {
				if ev.Reason == "L2Owner" && ev.Regarding.Name == "web" {
					return true, ev.Note
				}
			}
			return false, fmt.Sprintf("%d events", len(evs.Items))
		})
	})
	t.Run("failover", func(t *testing.T) {
		if owner == 0 {
			t.Fatal("no owner from the arp subtest")
		}
		// Every failover must be inside the bound, not the median: a user
		// sees each one.
		const runs, bound = 20, time.Second
		var gaps []time.Duration
		budget := time.Now().Add(150 * time.Second)
		for run := 0; run < runs && time.Now().Before(budget); run++ {
			gap, newOwner := e.failover(t, owner, macs, v4, podNode)
			gaps = append(gaps, gap)
			if gap > bound {
				t.Errorf("run %d: failover gap %v, want at most %v", run+1, gap.Round(time.Millisecond), bound)
				e.logTails(t, "slow failover")
			}
			t.Logf("run %d (%s): node%d crashed, node%d took over, gap %v", run+1, time.Now().UTC().Format("15:04:05.000"), owner, newOwner, gap.Round(time.Millisecond))
			// Bring the killed node back; rendezvous hashing gives it
			// the VIP back, which the next run kills again.
			if _, err := ipCmd(ctx, "-n", lab.SwitchNS, "link", "set", fmt.Sprintf("p-node%d", owner), "up"); err != nil {
				t.Fatal(err)
			}
			e.startSpeaker(owner)
			eventually(t, 30*time.Second, fmt.Sprintf("node%d owning %s again", owner, webVIP4), func() (bool, string) {
				o := e.owners()[webVIP4]
				mac := routerNeigh(ctx, webVIP4)
				pod, _ := e.request(v4, 200*time.Millisecond)
				return slices.Equal(o, []string{lab.NodeName(owner)}) && mac == macs[owner] && podNode(pod) == owner,
					fmt.Sprintf("owners %v, router neighbour %s, pod %s", o, mac, pod)
			})
		}
		if len(gaps) < runs {
			t.Errorf("only %d of %d failovers within the time budget", len(gaps), runs)
		}
		slices.Sort(gaps)
		t.Logf("failover gap over %d runs: median %v, min %v, max %v", len(gaps),
			gaps[len(gaps)/2].Round(time.Millisecond), gaps[0].Round(time.Millisecond), gaps[len(gaps)-1].Round(time.Millisecond))
	})
}

// failover crashes the owner node: its switch port goes dark (the node
// neither forwards nor gossips; its pinned XDP program would otherwise
// keep serving the VIP, which a mere speaker crash does) and its speaker
// is killed. It streams requests from the client until another node's Pod
// answers, and returns the gap since the last answer before the crash.
func (e *env) failover(t *testing.T, owner int, macs map[int]string, addr string, podNode func(string) int) (time.Duration, int) {
	t.Helper()
	type result struct {
		at   time.Time
		node int
	}
	results := make(chan result, 1000)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		deadline := time.Now().Add(20 * time.Second)
		for range 5000 {
			select {
			case <-stop:
				return
			default:
			}
			if time.Now().After(deadline) {
				return
			}
			// A short timeout keeps the measurement's resolution: a
			// request to the dead owner blocks this long.
			pod, err := e.request(addr, 50*time.Millisecond)
			if err == nil {
				select {
				case results <- result{time.Now(), podNode(pod)}:
				default: // nobody listens any more
				}
			}
		}
	}()
	// Some answers from the owner first.
	var last time.Time
	for range 5 {
		select {
		case r := <-results:
			if r.node != owner {
				t.Fatalf("answer from node%d before the kill, want owner node%d", r.node, owner)
			}
			last = r.at
		case <-time.After(3 * time.Second):
			t.Fatal("no answers before the kill")
		}
	}
	if _, err := ipCmd(e.ctx, "-n", lab.SwitchNS, "link", "set", fmt.Sprintf("p-node%d", owner), "down"); err != nil {
		t.Fatal(err)
	}
	e.killSpeaker(owner)
	newOwner := 0
	var first time.Time
	timeout := time.After(15 * time.Second)
	for newOwner == 0 {
		select {
		case r := <-results:
			if r.node == owner {
				last = r.at // in flight when the route went
				continue
			}
			newOwner, first = r.node, r.at
		case <-timeout:
			close(stop)
			<-done
			t.Fatalf("no other node answered for %s within 15s of killing node%d's speaker", webVIP4, owner)
		}
	}
	close(stop)
	<-done
	if mac := routerNeigh(e.ctx, webVIP4); mac != macs[newOwner] {
		t.Errorf("router neighbour %s is %q after failover, want node%d's %s", webVIP4, mac, newOwner, macs[newOwner])
	}
	return first.Sub(last), newOwner
}
