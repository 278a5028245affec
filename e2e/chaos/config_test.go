package chaos_test

// Configuration mistakes under load: objects an operator might apply by
// mistake next to a served Service. Each is refused (by the API server's
// schema, or reported on the object and ignored by the speakers), and
// nothing that works stops working: the served VIPs keep their routes and
// every request is answered, and no prefix or ARP/NDP answer outside the
// pools ever appears.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/controller/ipam"
	"github.com/zerohop/zerohop/e2e/lab"
)

// fuzzPrefix names every object the mistakes and the fuzz create, so that
// they never touch what the served Services use and are removed at the end.
const fuzzPrefix = "fuzz-"

// guard watches, while mistakes are made, what the router and the node
// segment see: the router's BGP routes (every prefix must lie in a pool;
// the served VIPs' routes must never leave) and the ARP replies,
// gratuitous ARPs and neighbour advertisements on the node segment (every
// address answered for must be in a pool or be a lab host's own).
type guard struct {
	cancel context.CancelFunc
	done   chan struct{}
	served []netip.Prefix

	mu         sync.Mutex
	pools      []ipam.Range // every range that was in a pool while watching
	samples    int
	missing    []string // served routes that left
	outside    []string // prefixes outside every pool
	answers    int
	badAnswers []string
}

// hostAddrs are the lab's own addresses, which the nodes' and router's
// kernels answer ARP/NDP for.
func hostAddrs(nodes int) map[netip.Addr]bool {
	m := map[netip.Addr]bool{}
	r4, r6 := lab.RouterNodeAddrs()
	m[r4], m[r6] = true, true
	for i := 1; i <= nodes; i++ {
		a4, a6 := lab.NodeAddrs(i)
		m[a4], m[a6] = true, true
	}
	return m
}

func startGuard(ctx context.Context, t *testing.T, c client.Client, nodes int, served []netip.Addr) *guard {
	ctx, cancel := context.WithCancel(ctx)
	g := &guard{cancel: cancel, done: make(chan struct{})}
	for _, v := range served {
		g.served = append(g.served, netip.PrefixFrom(v, v.BitLen()))
	}
	g.notePools(ctx, c)
	hosts := hostAddrs(nodes)

	// The node segment, on every port of the lab's switch.
	cap := exec.CommandContext(ctx, "ip", "netns", "exec", lab.SwitchNS,
		"tcpdump", "-l", "-n", "-i", "any", "arp or (icmp6 and ip6[40] == 136)")
	out, err := cap.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cap.Start(); err != nil {
		t.Fatalf("tcpdump on the node segment: %v", err)
	}
	answer := regexp.MustCompile(`Reply (\S+) is-at|Request who-has (\S+) tell (\S+),|tgt is (\S+?),`)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			m := answer.FindStringSubmatch(sc.Text())
			if m == nil {
				continue
			}
			target := m[1] + m[4]
			if m[2] != "" {
				if m[2] != m[3] {
					continue // an ordinary request, not a gratuitous ARP
				}
				target = m[2]
			}
			a, err := netip.ParseAddr(target)
			if err != nil {
				continue
			}
			g.mu.Lock()
			g.answers++
			// The hosts' kernels answer for their own addresses, link-local
			// ones included; no pool can hold a link-local address.
			if !hosts[a] && !a.IsLinkLocalUnicast() && !g.inPool(netip.PrefixFrom(a, a.BitLen())) {
				g.badAnswers = append(g.badAnswers, fmt.Sprintf("%s %s", time.Now().Format("15:04:05.000"), sc.Text()))
			}
			g.mu.Unlock()
		}
		_ = cap.Wait()
	}()
	go func() {
		defer wg.Done()
		for n := 0; n < 100000 && ctx.Err() == nil; n++ {
			g.notePools(ctx, c)
			g.sampleRIB(ctx)
			sleepCtx(ctx, 200*time.Millisecond)
		}
	}()
	go func() {
		wg.Wait()
		close(g.done)
	}()
	return g
}

// notePools adds the ranges of every pool that exists now to those
// allowed: an address announced from a pool deleted a moment ago is not a
// mistake of the speakers.
func (g *guard) notePools(ctx context.Context, c client.Client) {
	var pools v1alpha1.IPAddressPoolList
	if err := c.List(ctx, &pools); err != nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, p := range pools.Items {
		for _, a := range p.Spec.Addresses {
			if r, err := ipam.ParseRange(string(a)); err == nil && ipam.Reserved(r) == "" && !slices.Contains(g.pools, r) {
				g.pools = append(g.pools, r)
			}
		}
	}
}

func (g *guard) inPool(p netip.Prefix) bool {
	r := ipam.Range{First: p.Masked().Addr(), Last: lastAddr(p)}
	for _, pool := range ipam.Merge(g.pools) {
		if pool.Contains(r.First) && pool.Contains(r.Last) {
			return true
		}
	}
	return false
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// sampleRIB reads the router's BGP routes of both families once.
func (g *guard) sampleRIB(ctx context.Context) {
	have := map[netip.Prefix]bool{}
	for _, fam := range []string{"ip", "ipv6"} {
		out, err := lab.Vtysh(ctx, fmt.Sprintf("show %s route bgp json", fam))
		if err != nil {
			return
		}
		var routes map[string]json.RawMessage
		if err := json.Unmarshal(out, &routes); err != nil {
			return
		}
		for s := range routes {
			if p, err := netip.ParsePrefix(s); err == nil {
				have[p] = true
			}
		}
	}
	now := time.Now().Format("15:04:05.000")
	g.mu.Lock()
	defer g.mu.Unlock()
	g.samples++
	for _, p := range g.served {
		if !have[p] {
			g.missing = append(g.missing, now+" "+p.String())
		}
	}
	for p := range have {
		if !g.inPool(p) {
			g.outside = append(g.outside, now+" "+p.String())
		}
	}
}

// stop ends the watch and fails t for every route that left, every prefix
// and every answer outside the pools.
func (g *guard) stop(t *testing.T) (samples, answers int) {
	// The numbers the report prints are the ones measured here; the
	// test fails above them when any of the lists is not empty.
	t.Helper()
	g.cancel()
	<-g.done
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.missing) > 0 {
		t.Errorf("served routes left the router in %d of %d samples, first: %s", len(g.missing), g.samples, g.missing[0])
	}
	if len(g.outside) > 0 {
		t.Errorf("prefixes outside every pool in the router's RIB (%d times), first: %s", len(g.outside), g.outside[0])
	}
	if len(g.badAnswers) > 0 {
		t.Errorf("ARP/NDP answers for addresses outside every pool (%d), first: %s", len(g.badAnswers), g.badAnswers[0])
	}
	if g.samples < 5 {
		t.Errorf("only %d RIB samples: the watch did not watch", g.samples)
	}
	return g.samples, g.answers
}

// cleanupFuzz deletes every object the mistakes and the fuzz made.
func (e *env) cleanupFuzz(ctx context.Context) {
	for _, l := range []client.ObjectList{&v1alpha1.IPAddressPoolList{}, &v1alpha1.BGPPeerList{},
		&v1alpha1.BGPAdvertisementList{}, &v1alpha1.L2AdvertisementList{}, &v1alpha1.BFDProfileList{}} {
		if err := e.c.List(ctx, l); err != nil {
			continue
		}
		_ = meta.EachListItem(l, func(o runtime.Object) error {
			obj := o.(client.Object)
			if strings.HasPrefix(obj.GetName(), fuzzPrefix) {
				_ = e.c.Delete(ctx, obj)
			}
			return nil
		})
	}
}

// configMistakes applies, one at a time, the mistakes an operator made in
// the lab, and checks each is refused or reported while the served
// Service keeps its routes and its clients.
func configMistakes(ctx context.Context, t *testing.T, e *env, web []netip.Addr) {
	defer e.cleanupFuzz(ctx)
	r4, _ := lab.RouterNodeAddrs()
	before, err := sessionCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	g := startGuard(ctx, t, e.c, e.l.Nodes(), web)
	ld := startLoad(ctx, targets(web)...)
	i32 := func(v int32) *int32 { return &v }
	pool := func(name string, addrs ...v1alpha1.Address) *v1alpha1.IPAddressPool {
		return &v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: fuzzPrefix + name},
			Spec: v1alpha1.IPAddressPoolSpec{Addresses: addrs}}
	}
	adv := func(name string, v4, v6 *int32) *v1alpha1.BGPAdvertisement {
		return &v1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: fuzzPrefix + name},
			Spec: v1alpha1.BGPAdvertisementSpec{IPAddressPools: []string{"chaos"}, AggregationLength: v4, AggregationLengthV6: v6}}
	}
	tests := []struct {
		name string
		obj  client.Object
		// refusedBy is a substring of the API server's refusal; "" when
		// the object is admitted and must be reported instead.
		refusedBy string
		// reported waits for the object's condition that reports it.
		reported func() (bool, string)
	}{
		{name: "a second BGPPeer for the router's address, another myASN",
			obj: &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: fuzzPrefix + "dup-router"},
				Spec: v1alpha1.BGPPeerSpec{MyASN: 64999, PeerASN: lab.DefaultRouterASN, PeerAddress: r4.String()}},
			reported: acceptedFalse(ctx, e.c, &v1alpha1.BGPPeer{}, fuzzPrefix+"dup-router", "router-v4")},
		{name: "a pool 0.0.0.0/0", obj: pool("all-v4", "0.0.0.0/0"), refusedBy: "spec.addresses[0]"},
		{name: "a pool 203.0.0.0/16 around the served pool", obj: pool("wide-v4", "203.0.0.0/16"),
			reported: poolOverlapping(ctx, e.c, fuzzPrefix+"wide-v4", "chaos")},
		{name: "a pool 2001:db8::/32 around the served pool", obj: pool("wide-v6", "2001:db8::/32"),
			reported: poolOverlapping(ctx, e.c, fuzzPrefix+"wide-v6", "chaos")},
		{name: "aggregationLength 0 for the served pool", obj: adv("agg0", i32(0), nil),
			reported: acceptedFalse(ctx, e.c, &v1alpha1.BGPAdvertisement{}, fuzzPrefix+"agg0", "use 26 or more")},
		{name: "aggregationLength 16 for the served pool", obj: adv("agg16", i32(16), nil),
			reported: acceptedFalse(ctx, e.c, &v1alpha1.BGPAdvertisement{}, fuzzPrefix+"agg16", "spec.aggregationLength 16")},
		{name: "aggregationLengthV6 64 for the served pool", obj: adv("agg64", nil, i32(64)),
			reported: acceptedFalse(ctx, e.c, &v1alpha1.BGPAdvertisement{}, fuzzPrefix+"agg64", "spec.aggregationLengthV6 64")},
		{name: "a pool 127.0.0.0/8", obj: pool("loopback", "127.0.0.0/8"), refusedBy: "spec.addresses[0]"},
		{name: "a pool 224.0.0.0/4", obj: pool("multicast", "224.0.0.0/4"), refusedBy: "spec.addresses[0]"},
		{name: "a pool fe80::/64", obj: pool("link-local", "fe80::/64"), refusedBy: "spec.addresses[0]"},
		{name: "a BGPPeer to 0.0.0.0",
			obj: &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: fuzzPrefix + "unspecified"},
				Spec: v1alpha1.BGPPeerSpec{MyASN: 64513, PeerASN: 64512, PeerAddress: "0.0.0.0"}},
			refusedBy: "spec.peerAddress"},
	}
	for _, tc := range tests {
		err := e.c.Create(ctx, tc.obj)
		switch {
		case tc.refusedBy != "":
			if err == nil || !strings.Contains(err.Error(), tc.refusedBy) {
				t.Errorf("%s: admitted or refused without naming %s: %v", tc.name, tc.refusedBy, err)
			} else {
				t.Logf("MISTAKE %s: refused by the API server: %v", tc.name, err)
			}
		case err != nil:
			t.Errorf("%s: refused by the API server, want admitted and reported: %v", tc.name, err)
		default:
			var why string
			eventually(t, 30*time.Second, tc.name+" reported", func() (bool, string) {
				ok, s := tc.reported()
				why = s
				return ok, s
			})
			t.Logf("MISTAKE %s: reported: %s", tc.name, why)
		}
	}
	// Give the speakers time to act on all of it, under load.
	time.Sleep(3 * time.Second)
	res := ld.stop()
	samples, answers := g.stop(t)
	after, err := sessionCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= e.nodes; i++ {
		n4, n6 := lab.NodeAddrs(i)
		for _, a := range []string{n4.String(), n6.String()} {
			if after[a] != before[a] {
				t.Errorf("session %s moved: established/dropped %v -> %v", a, before[a], after[a])
			}
		}
	}
	if len(res.failures) > 0 {
		t.Errorf("%d failed requests:\n%s", len(res.failures), res.firstFailures(10))
	}
	report(t, result{scenario: fmt.Sprintf("%d configuration mistakes next to the served Service", len(tests)), sent: res.sent, failed: len(res.failures),
		recover: fmt.Sprintf("nothing to recover: each refused or reported; served routes in all %d RIB samples, no prefix and none of %d ARP/NDP answers outside the pools, sessions untouched", samples, answers),
		user:    "nothing"})
}

func acceptedFalse(ctx context.Context, c client.Client, obj client.Object, name, mention string) func() (bool, string) {
	return func() (bool, string) {
		if err := c.Get(ctx, client.ObjectKey{Name: name}, obj); err != nil {
			return false, err.Error()
		}
		var conds []metav1.Condition
		switch o := obj.(type) {
		case *v1alpha1.BGPPeer:
			conds = o.Status.Conditions
		case *v1alpha1.BGPAdvertisement:
			conds = o.Status.Conditions
		}
		cond := meta.FindStatusCondition(conds, v1alpha1.ConditionAccepted)
		if cond == nil || cond.Status != metav1.ConditionFalse || !strings.Contains(cond.Message, mention) {
			return false, fmt.Sprintf("conditions %+v", conds)
		}
		return true, cond.Reason + ": " + cond.Message
	}
}

func poolOverlapping(ctx context.Context, c client.Client, name, older string) func() (bool, string) {
	return func() (bool, string) {
		var p v1alpha1.IPAddressPool
		if err := c.Get(ctx, client.ObjectKey{Name: name}, &p); err != nil {
			return false, err.Error()
		}
		cond := meta.FindStatusCondition(p.Status.Conditions, "Overlapping")
		if cond == nil || cond.Status != metav1.ConditionTrue || !strings.Contains(cond.Message, older) {
			return false, fmt.Sprintf("conditions %+v", p.Status.Conditions)
		}
		return true, cond.Message
	}
}

// configFuzz applies a few hundred random schema-valid (and some invalid)
// creates, edits and deletes of pools, peers, advertisements and BFD
// profiles, none of them the served Service's own objects, under load.
func configFuzz(ctx context.Context, t *testing.T, e *env, web []netip.Addr, mutations int, seed uint64) {
	defer e.cleanupFuzz(ctx)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	g := startGuard(ctx, t, e.c, e.l.Nodes(), web)
	ld := startLoad(ctx, targets(web)...)
	f := &fuzzer{ctx: ctx, c: e.c, rng: rng, nodes: e.nodes, counts: map[string]int{}}
	t0 := time.Now()
	for i := range mutations {
		f.step(i)
		// A few per second: the speakers see bursts and quiet gaps.
		if rng.IntN(4) == 0 {
			sleepCtx(ctx, time.Duration(rng.IntN(400))*time.Millisecond)
		}
	}
	took := time.Since(t0)
	time.Sleep(3 * time.Second)
	res := ld.stop()
	samples, answers := g.stop(t)
	if len(res.failures) > 0 {
		t.Errorf("%d failed requests:\n%s", len(res.failures), res.firstFailures(10))
	}
	var kinds []string
	for k, n := range f.counts {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(kinds)
	t.Logf("CONFIG-FUZZ %d mutations in %s (seed %d): %s", mutations, ms(took), seed, strings.Join(kinds, ", "))
	report(t, result{scenario: fmt.Sprintf("config fuzz: %d random creates, edits and deletes of pools, peers, advertisements, BFD profiles", mutations), sent: res.sent, failed: len(res.failures),
		recover: fmt.Sprintf("nothing to recover: served routes in all %d RIB samples, no prefix and none of %d ARP/NDP answers outside the pools", samples, answers),
		user:    fmt.Sprintf("nothing: %d failed requests, slowest %s", len(res.failures), ms(res.max))})
}

// fuzzer makes the random mutations and counts them by kind, operation
// and outcome.
type fuzzer struct {
	ctx    context.Context
	c      client.Client
	rng    *rand.Rand
	nodes  int
	counts map[string]int
	live   []client.Object
}

func (f *fuzzer) pick(xs ...string) string { return xs[f.rng.IntN(len(xs))] }

func (f *fuzzer) step(i int) {
	// Deletes and edits need something to work on.
	op := "create"
	if len(f.live) > 0 {
		switch n := f.rng.IntN(10); {
		case n < 2:
			op = "delete"
		case n < 5:
			op = "edit"
		}
	}
	switch op {
	case "delete":
		k := f.rng.IntN(len(f.live))
		obj := f.live[k]
		f.live = slices.Delete(f.live, k, k+1)
		f.count(obj, op, f.c.Delete(f.ctx, obj))
	case "edit":
		obj := f.live[f.rng.IntN(len(f.live))]
		if err := f.c.Get(f.ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			f.count(obj, op, err)
			return
		}
		f.mutate(obj)
		f.count(obj, op, f.c.Update(f.ctx, obj))
	default:
		obj := f.fresh(i)
		err := f.c.Create(f.ctx, obj)
		f.count(obj, op, err)
		if err == nil {
			f.live = append(f.live, obj)
		}
	}
}

func (f *fuzzer) count(obj client.Object, op string, err error) {
	kind := fmt.Sprintf("%T", obj)
	kind = kind[strings.LastIndex(kind, ".")+1:]
	outcome := "ok"
	if err != nil {
		outcome = "refused"
	}
	f.counts[fmt.Sprintf("%s %s %s", kind, op, outcome)]++
}

// fresh makes a new random object, named fuzz-<kind>-<i>.
func (f *fuzzer) fresh(i int) client.Object {
	switch f.rng.IntN(5) {
	case 0:
		p := &v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%spool-%d", fuzzPrefix, i)}}
		f.mutate(p)
		return p
	case 1:
		p := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%speer-%d", fuzzPrefix, i)}}
		f.mutate(p)
		return p
	case 2:
		a := &v1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%sadv-%d", fuzzPrefix, i)}}
		f.mutate(a)
		return a
	case 3:
		a := &v1alpha1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%sl2-%d", fuzzPrefix, i)}}
		f.mutate(a)
		return a
	}
	p := &v1alpha1.BFDProfile{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%sbfd-%d", fuzzPrefix, i)}}
	f.mutate(p)
	return p
}

// mutate gives obj new random contents of its kind.
func (f *fuzzer) mutate(obj client.Object) {
	r := f.rng
	i32 := func(v int32) *int32 { return &v }
	dur := func(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }
	pools := func() []string {
		var out []string
		for range r.IntN(3) {
			out = append(out, f.pick("chaos", sparePool, fuzzPrefix+"pool-1", "no-such-pool"))
		}
		return out
	}
	switch o := obj.(type) {
	case *v1alpha1.IPAddressPool:
		o.Spec.Addresses = nil
		for range 1 + r.IntN(2) {
			o.Spec.Addresses = append(o.Spec.Addresses, v1alpha1.Address(f.pick(
				"203.0.113.0/24", "203.0.0.0/16", "203.0.113.32/27", "203.0.113.10-203.0.113.90",
				"198.18.0.0/24", "198.18.1.10-198.18.1.20", "2001:db8:113::/112", "2001:db8::/32",
				"2001:db8:18::/120", "0.0.0.0/0", "127.0.0.0/8", "224.0.0.0/4", "fe80::/64",
				"126.255.255.250-128.0.0.5", "192.0.2.1/24")))
		}
		no := false
		o.Spec.AutoAssign = &no // no Service is to take from these
		o.Spec.AvoidBuggyIPs = r.IntN(2) == 0
	case *v1alpha1.BGPPeer:
		r4, r6 := lab.RouterNodeAddrs()
		o.Spec.MyASN = uint32(f.pick2(64513, 64999, 65001))
		o.Spec.PeerASN = uint32(f.pick2(64512, 64512, 65002))
		o.Spec.PeerAddress = f.pick(r4.String(), r6.String(), "198.51.100.231", "2001:db8:100::231",
			"0.0.0.0", "127.0.0.1", "224.0.0.5")
		o.Spec.HoldTime = dur(time.Duration(3+r.IntN(60)) * time.Second)
		o.Spec.ConnectTime = dur(time.Duration(1+r.IntN(5)) * time.Second)
		o.Spec.BFDProfile = f.pick("", fuzzPrefix+"bfd-1", "no-such-profile")
		o.Spec.EnableGracefulRestart = r.IntN(2) == 0
		o.Spec.NodeSelectors = nil
		if r.IntN(3) == 0 {
			o.Spec.NodeSelectors = []v1alpha1.LabelSelector{{MatchLabels: map[string]string{"kubernetes.io/hostname": lab.NodeName(1 + r.IntN(f.nodes))}}}
		}
	case *v1alpha1.BGPAdvertisement:
		o.Spec.IPAddressPools = pools()
		o.Spec.AggregationLength = nil
		o.Spec.AggregationLengthV6 = nil
		if r.IntN(2) == 0 {
			o.Spec.AggregationLength = i32(int32(f.pick2(0, 8, 16, 24, 26, 27, 32)))
		}
		if r.IntN(2) == 0 {
			o.Spec.AggregationLengthV6 = i32(int32(f.pick2(0, 32, 64, 112, 120, 128)))
		}
		o.Spec.Communities = nil
		for range r.IntN(3) {
			o.Spec.Communities = append(o.Spec.Communities, f.pick("65000:1", "65000:2", "no-export", "large:64512:1:2"))
		}
		slices.Sort(o.Spec.Communities)
		o.Spec.Communities = slices.Compact(o.Spec.Communities)
		o.Spec.LocalPref = uint32(r.IntN(300))
		o.Spec.Peers = nil
		if r.IntN(3) == 0 {
			o.Spec.Peers = []string{f.pick("router-v4", "router-v6", fuzzPrefix+"peer-1")}
		}
		o.Spec.WeightedECMP = r.IntN(2) == 0
	case *v1alpha1.L2Advertisement:
		o.Spec.IPAddressPools = pools()
		o.Spec.Interfaces = nil
		if r.IntN(2) == 0 {
			o.Spec.Interfaces = []string{f.pick(lab.UplinkIf, "zh-none0")}
		}
	case *v1alpha1.BFDProfile:
		u32 := func(v int) *uint32 { x := uint32(v); return &x }
		o.Spec.ReceiveInterval = u32(f.pick2(10, 50, 300, 1000))
		o.Spec.TransmitInterval = u32(f.pick2(10, 50, 300, 1000))
		o.Spec.DetectMultiplier = u32(f.pick2(2, 3, 50))
	}
}

func (f *fuzzer) pick2(xs ...int) int { return xs[f.rng.IntN(len(xs))] }
