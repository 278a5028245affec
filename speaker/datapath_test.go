package speaker_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/zerohop/zerohop/bpf"
	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/internal/apiserver"
	"github.com/zerohop/zerohop/speaker"
)

// fakeDatapath records what the speaker programs. It is a fake of the
// kernel side only; bpf's own tests run the real program, and e2e/datapath
// runs the speaker with it.
type fakeDatapath struct {
	mu       sync.Mutex
	services map[bpf.ServiceKey][]bpf.Backend
	refuse   map[netip.Addr]bool // upserts for these VIPs fail
	attached []string
	node     bpf.NodeConfig
	peers    []netip.Prefix
	// onDelete runs before a delete, outside mu.
	onDelete func(bpf.ServiceKey)
}

func (f *fakeDatapath) Upsert(key bpf.ServiceKey, cfg bpf.ServiceConfig) error {
	backends := cfg.Backends
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refuse[key.Addr] {
		return errors.New("map full")
	}
	f.services[key] = slices.Clone(backends)
	return nil
}

func (f *fakeDatapath) DeleteService(key bpf.ServiceKey) error {
	if f.onDelete != nil {
		f.onDelete(key)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.services, key)
	return nil
}

func (f *fakeDatapath) Services() []bpf.ServiceKey {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []bpf.ServiceKey
	for k := range f.services {
		out = append(out, k)
	}
	return out
}

func (f *fakeDatapath) Attach(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attached = append(f.attached, name)
	return nil
}

func (f *fakeDatapath) SetNode(c bpf.NodeConfig) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.node = c
	return nil
}

func (f *fakeDatapath) SetPeers(p []netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.peers = slices.Clone(p)
	return nil
}

func (f *fakeDatapath) SetPodLinks(bpf.PodLinks) error { return nil }

func (f *fakeDatapath) setRefuse(a netip.Addr, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refuse[a] = on
}

func (f *fakeDatapath) snapshot() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var keys []string
	for k, bes := range f.services {
		var b []string
		for _, be := range bes {
			b = append(b, be.AddrPort().String())
		}
		keys = append(keys, fmt.Sprintf("%s->%v", k, b))
	}
	slices.Sort(keys)
	return strings.Join(keys, " ")
}

// TestSpeakerDatapathOrdering checks the speaker's contract with its
// datapath: a VIP is announced only once all its entries are in place, the
// datapath is configured and attached, a restarted speaker's leftovers are
// retired, and entries are deleted only after their VIP was withdrawn.
func TestSpeakerDatapathOrdering(t *testing.T) {
	ctrl.SetLogger(testr.New(t))
	srv := apiserver.ForTest(t)
	c, err := client.New(srv.Config, client.Options{Scheme: speaker.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := &env{t: t, ctx: ctx, c: c}

	e.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "zerohop-system"}})
	for i, name := range []string{"n1", "n2"} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
		e.create(node)
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("192.0.2.%d", 11+i)}}
		if err := c.Status().Update(ctx, node); err != nil {
			t.Fatal(err)
		}
	}
	e.create(&v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "pool"},
		Spec: v1alpha1.IPAddressPoolSpec{Addresses: []v1alpha1.Address{"203.0.113.0/28"}}})
	e.create(&v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "r1"},
		Spec: v1alpha1.BGPPeerSpec{MyASN: 64512, PeerASN: 64513, PeerAddress: peerAddr, PeerPort: 1}})
	e.create(&v1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "all"}})

	vip := netip.MustParseAddr("203.0.113.1")
	leftover := bpf.ServiceKey{Addr: netip.MustParseAddr("203.0.113.9"), Port: 80, Proto: bpf.TCP}
	dp := &fakeDatapath{
		services: map[bpf.ServiceKey][]bpf.Backend{leftover: nil}, // a previous speaker's
		refuse:   map[netip.Addr]bool{vip: true},
	}
	sp, err := speaker.New(srv.Config, speaker.Options{NodeName: "n1", Namespace: "zerohop-system",
		Datapath: dp, Uplinks: []string{"zh-up0"}, NoNeighbours: true, PathMTU: 1500, WithdrawGrace: 300 * time.Millisecond})
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
	paths := func() []string {
		s := sp.BGP()
		if s == nil {
			return nil
		}
		var got []string
		for _, p := range s.Paths() {
			got = append(got, p.String())
		}
		return got
	}
	status := func() v1alpha1.SpeakerStatusStatus {
		var st v1alpha1.SpeakerStatus
		_ = c.Get(ctx, types.NamespacedName{Name: "n1"}, &st)
		return st.Status
	}

	eventually(t, "a previous speaker's entry retired, node configured, uplink attached", func() (bool, string) {
		dp.mu.Lock()
		defer dp.mu.Unlock()
		_, left := dp.services[leftover]
		ok := !left && slices.Equal(dp.attached, []string{"zh-up0"}) &&
			dp.node.Addr4 == netip.MustParseAddr("192.0.2.11") && dp.node.PathMTU == 1500 &&
			slices.Equal(dp.peers, []netip.Prefix{netip.MustParsePrefix("192.0.2.12/32")})
		return ok, fmt.Sprintf("services %v attached %v node %+v peers %v", dp.services, dp.attached, dp.node, dp.peers)
	})

	// The datapath refuses the entry: the VIP must not be announced, and
	// the status says why.
	e.service("web", false, vip.String())
	e.endpoints("web", "n1:true", "n2:true")
	eventually(t, "upsert failure reported", func() (bool, string) {
		st := status()
		return slices.ContainsFunc(st.Errors, func(s string) bool { return strings.Contains(s, "map full") }), fmt.Sprint(st.Errors)
	})
	eventually(t, "the Service listed as failed in the datapath status", func() (bool, string) {
		d := status().Datapath
		ok := d != nil && len(d.Programmed) == 0 && len(d.Failed) == 1 &&
			d.Failed[0].Service == "default/web" && strings.Contains(d.Failed[0].Reason, "map full")
		return ok, fmt.Sprintf("%+v", d)
	})
	time.Sleep(500 * time.Millisecond)
	if got := paths(); len(got) != 0 {
		t.Fatalf("VIP announced without its datapath entry: %v", got)
	}

	// Once the datapath takes it, the entry comes first, then the route.
	dp.setRefuse(vip, false)
	e.endpoints("web", "n1:true", "n2:true", "n2:true") // any change triggers a reconcile
	eventually(t, "announced after the entry exists", func() (bool, string) {
		got := paths()
		return slices.Equal(got, []string{"203.0.113.1/32"}), fmt.Sprint(got, " datapath: ", dp.snapshot())
	})
	if snap := dp.snapshot(); !strings.Contains(snap, "203.0.113.1:80/tcp->[100.64.0.1:80 100.64.0.2:80 100.64.0.3:80]") {
		t.Fatalf("datapath entry: %s", snap)
	}
	eventually(t, "the Service listed as programmed", func() (bool, string) {
		d := status().Datapath
		return d != nil && slices.Equal(d.Programmed, []string{"default/web"}) && len(d.Failed) == 0, fmt.Sprintf("%+v", d)
	})

	// Deleting the Service withdraws first; the entry goes after the grace.
	var announcedAtDelete []string
	var deletedAt time.Time
	dp.onDelete = func(bpf.ServiceKey) {
		announcedAtDelete = paths()
		deletedAt = time.Now()
	}
	var svc corev1.Service
	if err := c.Get(ctx, types.NamespacedName{Namespace: "default", Name: "web"}, &svc); err != nil {
		t.Fatal(err)
	}
	start := time.Now() // the speaker cannot see the deletion before this
	if err := c.Delete(ctx, &svc); err != nil {
		t.Fatal(err)
	}
	eventually(t, "entry deleted", func() (bool, string) {
		snap := dp.snapshot()
		return snap == "", snap
	})
	if len(announcedAtDelete) != 0 {
		t.Fatalf("entry deleted while the VIP was still announced: %v", announcedAtDelete)
	}
	if gap := deletedAt.Sub(start); gap < 300*time.Millisecond {
		t.Fatalf("entry deleted %v after the Service, before the 300ms grace", gap)
	}
}
