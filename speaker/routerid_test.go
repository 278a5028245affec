package speaker_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/speaker"
)

// TestSpeakerRouterID: the BGP router ID follows the node's BGPPeers while
// the server has no session, is kept and reported once it has one, and a
// younger peer asking for another one is refused.
func TestSpeakerRouterID(t *testing.T) {
	srv, e, cancel := startEnv(t)
	ctx, c := e.ctx, e.c
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
	e.create(node)
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.11"}}
	if err := c.Status().Update(ctx, node); err != nil {
		t.Fatal(err)
	}
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
	routerID := func(want string) func() (bool, string) {
		return func() (bool, string) {
			s := sp.BGP()
			if s == nil {
				return false, "no BGP server"
			}
			return s.RouterID().String() == want, s.RouterID().String()
		}
	}
	errorsSay := func(want string) func() (bool, string) {
		return func() (bool, string) {
			var st v1alpha1.SpeakerStatus
			if err := c.Get(ctx, types.NamespacedName{Name: "n1"}, &st); err != nil {
				return false, err.Error()
			}
			joined := strings.Join(st.Status.Errors, "; ")
			return strings.Contains(joined, want), joined
		}
	}

	eventually(t, "router ID from the node's address without peers", routerID("192.0.2.11"))
	// A peer created after the start: no session yet, so the server is
	// replaced with the peer's router ID.
	r1 := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "r1"},
		Spec: v1alpha1.BGPPeerSpec{MyASN: 64512, PeerASN: 64513, PeerAddress: peerAddr, PeerPort: 1, RouterID: "192.0.2.99"}}
	e.create(r1)
	eventually(t, "router ID from the new peer", routerID("192.0.2.99"))

	// With a session configured, an edit is reported, not applied.
	if err := c.Get(ctx, client.ObjectKeyFromObject(r1), r1); err != nil {
		t.Fatal(err)
	}
	r1.Spec.RouterID = "192.0.2.98"
	if err := c.Update(ctx, r1); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the kept router ID reported", errorsSay("runs as 192.0.2.99 and now should be 192.0.2.98"))
	if got := sp.BGP().RouterID().String(); got != "192.0.2.99" {
		t.Fatalf("router ID %s, want 192.0.2.99 kept while a session is configured", got)
	}

	// A younger peer asking for another router ID is not used. Age is
	// the creation timestamp, which has a resolution of one second, and
	// equal ages go by name ("r0-younger" first): create it a second
	// later than r1 so that it is younger in fact.
	if wait := time.Until(r1.CreationTimestamp.Add(time.Second)); wait > 0 {
		time.Sleep(wait + 10*time.Millisecond)
	}
	e.create(&v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "r0-younger"},
		Spec: v1alpha1.BGPPeerSpec{MyASN: 64512, PeerASN: 64513, PeerAddress: "192.0.2.253", PeerPort: 1, RouterID: "192.0.2.97"}})
	eventually(t, "the younger peer refused", errorsSay("bgppeer r0-younger: routerID 192.0.2.97 differs from 192.0.2.98, set by the older bgppeer r1"))
	eventually(t, "only r1's session", func() (bool, string) {
		var names []string
		for _, s := range sp.BGP().Sessions() {
			names = append(names, s.Name)
		}
		return fmt.Sprint(names) == "[r1]", fmt.Sprint(names)
	})
}
