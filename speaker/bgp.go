package speaker

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/speaker/bfd"
	"github.com/zerohop/zerohop/speaker/bgp"
)

// unnumberedRecheck is how often the link-local neighbour of an unnumbered
// session is looked up again.
const unnumberedRecheck = 5 * time.Second

// bgpState is what the speaker knows of its BGP sessions; guarded by the
// reconciler's mu.
type bgpState struct {
	server *bgp.Server
	// started is set once the process started a server: a later one
	// (another router ID) is not a restart for the routers.
	started bool
	peers   map[netip.Addr]string // address -> BGPPeer name
	up      map[netip.Addr]bool   // sessions last seen established
	bfdUp   map[netip.Addr]bool   // BFD sessions' last state, by peer
	// bfdPeers are the peers with a BFD session (a bfdProfile).
	bfdPeers map[netip.Addr]bool
	// linkLocal is, by unnumbered BGPPeer name, the router address last
	// found on its interface.
	linkLocal map[string]netip.Addr
}

// announceBGP is the BGP phase: it plans the paths of every peer of this
// node for the Services whose VIPs may be announced (speaker/bgp), records
// Announced/Withdrawn Events, starts the BGP server on first use, and gives
// it the peers and paths, and the BFD hook its sessions. It returns the
// plan, for the status, and an error only when the server could not be
// started; then nothing was given to it.
func (r *reconciler) announceBGP(ctx context.Context, snap *snapshot, svcs []corev1.Service, rd *round) (bgp.Plan, error) {
	in := bgp.Input{Node: bgp.Node{Name: r.opts.NodeName}, Pools: snap.pools}
	if snap.nodeKnown {
		in.Node.Labels = snap.node.Labels
		in.Node.Healthy = bgp.NodeHealthy(&snap.node)
	}
	for i := range snap.peers {
		in.Peers = append(in.Peers, &snap.peers[i])
	}
	for i := range snap.bgpAdvs {
		in.Advertisements = append(in.Advertisements, &snap.bgpAdvs[i])
	}
	for i := range svcs {
		svc := &svcs[i]
		if svc.DeletionTimestamp != nil {
			continue
		}
		if s, ok := bgp.ServiceFrom(svc, snap.slicesOf[types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}], r.opts.NodeName); ok {
			in.Services = append(in.Services, s)
		}
	}
	plan, errs := bgp.Compute(in)
	rd.problem(errs...)
	r.bgpEvents(plan, svcs)

	srv, err := r.server(ctx, plan, &snap.node, rd)
	if err != nil {
		return plan, err
	}
	var peers []bgp.Peer
	paths := map[netip.Addr][]bgp.Path{}
	names := map[netip.Addr]string{}
	byAddr := map[netip.Addr]string{}
	var bfdSessions []BFDSession
	profileByName := map[string]*v1alpha1.BFDProfile{}
	for i := range snap.profiles {
		profileByName[snap.profiles[i].Name] = &snap.profiles[i]
	}
	// The node's addresses are the next hops of prefixes sent over a
	// session of the other family.
	var nh4, nh6 netip.Addr
	for _, a := range snap.node.Status.Addresses {
		ip, err := netip.ParseAddr(a.Address)
		if a.Type != corev1.NodeInternalIP || err != nil {
			continue
		}
		if ip = ip.Unmap(); ip.Is4() && !nh4.IsValid() {
			nh4 = ip
		} else if ip.Is6() && !nh6.IsValid() {
			nh6 = ip
		}
	}
	for _, pp := range plan.Peers {
		if pp.Peer.Spec.Interface != "" {
			// The router's link-local address is in no object: look
			// again now and then, for a router that appears or changes.
			rd.recheck = unnumberedRecheck
		}
		p, err := r.peerOf(ctx, pp.Peer)
		if err != nil {
			rd.problem(err)
			continue
		}
		p.NextHop4, p.NextHop6 = nh4, nh6
		// GoBGP reports, and its export policy matches, a link-local
		// neighbour without its zone: two unnumbered routers with one
		// link-local address could not be told apart.
		if other, dup := byAddr[p.Address.WithZone("")]; dup {
			rd.problem(fmt.Errorf("bgppeer %s: address %v used by bgppeer %s too", p.Name, p.Address, other))
			continue
		}
		byAddr[p.Address.WithZone("")] = p.Name
		names[p.Address] = p.Name
		peers = append(peers, p)
		paths[p.Address] = pp.Paths
		if name := pp.Peer.Spec.BFDProfile; name != "" {
			prof, ok := profileByName[name]
			if !ok {
				rd.problem(fmt.Errorf("bgppeer %s: bfdProfile %s not found", p.Name, name))
				continue
			}
			bfdSessions = append(bfdSessions, BFDSession{Peer: p.Address, Local: p.SourceAddress, Profile: prof.Spec})
		}
	}
	r.mu.Lock()
	r.bgp.peers = names
	r.bgp.bfdPeers = map[netip.Addr]bool{}
	for _, b := range bfdSessions {
		r.bgp.bfdPeers[b.Peer] = true
	}
	r.mu.Unlock()

	// Apply fills the RIB before it opens new sessions, so that a
	// restarted speaker's first UPDATEs and End-of-RIB carry every path
	// and routers drop none of the stale ones it still announces.
	if err := srv.Apply(ctx, peers, paths); err != nil {
		rd.fail(err)
	}
	if r.opts.BFD != nil {
		if err := r.opts.BFD.SetSessions(bfdSessions); err != nil {
			rd.fail(fmt.Errorf("bfd: %w", err))
		}
	}
	announced.Reset()
	for _, pp := range plan.Peers {
		announced.WithLabelValues(pp.Peer.Name).Set(float64(len(pp.Paths)))
	}
	return plan, nil
}

// server returns the BGP server, starting it on first use. Its router ID
// is --router-id, else the routerID the node's BGPPeers ask for
// (crosscheck.RouterID), else the node's first IPv4 InternalIP. GoBGP
// cannot change a running router's identifier: a server without sessions
// is replaced at once; one with sessions keeps its identifier, as
// replacing it would close every session with a Cease and make the
// routers withdraw this node's paths, and the change is reported until
// the speaker restarts (with graceful restart, routers keep the paths
// over that restart).
func (r *reconciler) server(ctx context.Context, plan bgp.Plan, node *corev1.Node, rd *round) (*bgp.Server, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	id := r.opts.RouterID
	if id.IsValid() && plan.RouterID.IsValid() && plan.RouterID != id {
		rd.problem(fmt.Errorf("the BGPPeers of this node ask for routerID %s; this speaker runs with --router-id %s, which wins", plan.RouterID, id))
	}
	if !id.IsValid() {
		id = plan.RouterID
	}
	for _, a := range node.Status.Addresses {
		if id.IsValid() {
			break
		}
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil && ip.Is4() {
			id = ip
		}
	}
	if s := r.bgp.server; s != nil {
		switch {
		case !id.IsValid() || s.RouterID() == id:
			return s, nil
		case !s.Idle():
			rd.problem(fmt.Errorf("BGP router ID: this node's BGP router runs as %s and now should be %s; it keeps %s until the speaker restarts, "+
				"as changing it closes every session (with enableGracefulRestart the routers keep the paths over the restart)", s.RouterID(), id, s.RouterID()))
			return s, nil
		}
		r.log.Info("BGP router ID changed, no sessions: restarting the BGP server", "from", s.RouterID(), "to", id)
		s.Close(false)
		r.bgp.server = nil
	}
	if !id.IsValid() {
		return nil, errors.New("no BGP router ID: set --router-id, a BGPPeer routerID, or an IPv4 InternalIP on the node")
	}
	s, err := bgp.New(ctx, bgp.Options{
		RouterID: id,
		// Only the process's first server follows a restart of the
		// speaker; one replaced later had no sessions to resume.
		Restarting: !r.bgp.started,
		Log:        r.opts.Log.WithName("gobgp"),
	})
	if err != nil {
		return nil, err
	}
	s.Watch(r.sessionChanged)
	r.bgp.server, r.bgp.started = s, true
	return s, nil
}

func (r *reconciler) peerOf(ctx context.Context, bp *v1alpha1.BGPPeer) (bgp.Peer, error) {
	p := bgp.Peer{
		Name: bp.Name, Port: bp.Spec.PeerPort,
		MyASN: bp.Spec.MyASN, PeerASN: bp.Spec.PeerASN,
		EBGPMultiHop: bp.Spec.EBGPMultiHop, GracefulRestart: bp.Spec.EnableGracefulRestart,
		// Reconnect quickly by default: a router that restarts should
		// get its routes back in seconds, not GoBGP's two minutes.
		ConnectTime: 5 * time.Second,
	}
	switch bp.Spec.DynamicASN {
	case v1alpha1.DynamicASNInternal:
		p.PeerASN = bp.Spec.MyASN
	case v1alpha1.DynamicASNExternal:
		p.PeerASN, p.ExternalOnly = 0, true
	}
	if ifname := bp.Spec.Interface; ifname != "" {
		addr, err := bgp.LinkLocalNeighbor(ifname)
		r.mu.Lock()
		if err == nil {
			if r.bgp.linkLocal == nil {
				r.bgp.linkLocal = map[string]netip.Addr{}
			}
			r.bgp.linkLocal[bp.Name] = addr
		} else if last, ok := r.bgp.linkLocal[bp.Name]; ok && last.Zone() == ifname {
			// A neighbour entry that failed for a moment (or a second
			// neighbour that appeared) does not end a session in
			// service: the last router found keeps it.
			addr, err = last, nil
		}
		r.mu.Unlock()
		if err != nil {
			return bgp.Peer{}, fmt.Errorf("bgppeer %s: %w", bp.Name, err)
		}
		p.Address, p.Interface = addr, ifname
	} else {
		addr, err := netip.ParseAddr(bp.Spec.PeerAddress)
		if err != nil {
			return bgp.Peer{}, fmt.Errorf("bgppeer %s: peerAddress: %w", bp.Name, err)
		}
		p.Address = addr.Unmap()
	}
	if bp.Spec.SourceAddress != "" {
		src, err := netip.ParseAddr(bp.Spec.SourceAddress)
		if err != nil {
			return bgp.Peer{}, fmt.Errorf("bgppeer %s: sourceAddress: %w", bp.Name, err)
		}
		p.SourceAddress = src.Unmap()
	}
	if d := bp.Spec.HoldTime; d != nil {
		p.HoldTime = d.Duration
	}
	if d := bp.Spec.KeepaliveTime; d != nil {
		p.KeepaliveTime = d.Duration
	}
	if d := bp.Spec.ConnectTime; d != nil {
		p.ConnectTime = d.Duration
	}
	if ref := bp.Spec.PasswordSecret; ref != nil {
		pw, err := r.password(ctx, ref)
		if err != nil {
			return bgp.Peer{}, fmt.Errorf("bgppeer %s: %w", bp.Name, err)
		}
		p.Password = pw
	}
	return p, nil
}

// password reads a peer's MD5 password. Secrets in the speaker's own
// namespace come from the cache (and changes to them reconfigure the
// session); others are read directly.
func (r *reconciler) password(ctx context.Context, ref *v1alpha1.SecretReference) (string, error) {
	ns := ref.Namespace
	if ns == "" {
		ns = r.opts.Namespace
	}
	var sec corev1.Secret
	key := types.NamespacedName{Namespace: ns, Name: ref.Name}
	var err error
	if ns == r.opts.Namespace {
		err = r.client.Get(ctx, key, &sec)
	} else {
		err = r.reader.Get(ctx, key, &sec)
	}
	if err != nil {
		return "", fmt.Errorf("password secret %s: %w", key, err)
	}
	pw, ok := sec.Data["password"]
	if !ok {
		return "", fmt.Errorf("password secret %s has no \"password\" key", key)
	}
	return string(pw), nil
}

// sessionChanged refreshes the status on every state change, and records
// an Event only when a session comes up or goes down from up: a session
// that cannot connect cycles through connect and active every few seconds,
// which is status, not news.
func (r *reconciler) sessionChanged(st bgp.SessionState) {
	r.mu.Lock()
	r.dirty = true
	name := st.Name
	if name == "" {
		name = r.bgp.peers[st.Address]
	}
	wasUp := r.bgp.up[st.Address]
	if r.bgp.up == nil {
		r.bgp.up = map[netip.Addr]bool{}
	}
	r.bgp.up[st.Address] = st.Up
	r.mu.Unlock()
	r.wake()
	if name == "" {
		return
	}
	up := 0.0
	if st.Up {
		up = 1
	}
	sessionUp.WithLabelValues(name, st.Address.String()).Set(up)
	flaps := sessionFlaps.WithLabelValues(name) // exported from the first state seen
	if st.Up == wasUp {
		return
	}
	if wasUp {
		flaps.Inc()
	}
	peer := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name}}
	peer.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("BGPPeer"))
	if st.Up {
		r.rec.Eventf(peer, nil, corev1.EventTypeNormal, "SessionUp", "BGP", "node %s: session to %s established", r.opts.NodeName, st.Address)
	} else {
		r.rec.Eventf(peer, nil, corev1.EventTypeWarning, "SessionDown", "BGP", "node %s: session to %s is %s", r.opts.NodeName, st.Address, st.State)
	}
}

// BFD is the hook for speaker/bfd, which this package does not implement:
// the speaker tells it which sessions to run, and it reports a session
// going down, on which the speaker resets the BGP session so that paths
// move within BFD's detection time rather than the hold time.
type BFD interface {
	// SetSessions replaces the set of BFD sessions.
	SetSessions(sessions []BFDSession) error
	// Subscribe registers fn to be called when a session changes state.
	Subscribe(fn func(peer netip.Addr, up bool))
}

// BFDSession is one BFD session the speaker wants.
type BFDSession struct {
	Peer    netip.Addr
	Local   netip.Addr // invalid: chosen by the routing table
	Profile v1alpha1.BFDProfileSpec
}

// bfdChanged records a BFD session's state for the status and, when it
// went down, resets the BGP session to that peer.
func (r *reconciler) bfdChanged(peer netip.Addr, up bool) {
	r.mu.Lock()
	if r.bgp.bfdUp == nil {
		r.bgp.bfdUp = map[netip.Addr]bool{}
	}
	r.bgp.bfdUp[peer] = up
	r.dirty = true
	s := r.bgp.server
	r.mu.Unlock()
	r.wake()
	if up || s == nil {
		return
	}
	if err := s.ResetSession(context.Background(), peer, "BFD down"); err != nil {
		r.log.Error(err, "reset BGP session after BFD down", "peer", peer)
	}
}

// BFDManager adapts a speaker/bfd Manager to the BFD hook: it turns the
// wanted sessions into AddPeer/RemovePeer calls and the Manager's state
// changes into up/down callbacks (down only for a real failure, not for
// the router taking its session down administratively; RFC 5882).
func BFDManager(m *bfd.Manager) BFD {
	return &bfdManager{m: m, current: map[netip.Addr]BFDSession{}}
}

type bfdManager struct {
	m       *bfd.Manager
	mu      sync.Mutex
	current map[netip.Addr]BFDSession
}

func (b *bfdManager) SetSessions(sessions []BFDSession) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	want := map[netip.Addr]BFDSession{}
	for _, s := range sessions {
		want[s.Peer] = s
	}
	var errs []error
	for peer := range b.current {
		if _, ok := want[peer]; ok {
			continue
		}
		if err := b.m.RemovePeer(peer); err != nil {
			errs = append(errs, fmt.Errorf("bfd peer %s: %w", peer, err))
			continue
		}
		delete(b.current, peer)
	}
	for peer, s := range want {
		if old, ok := b.current[peer]; ok && reflect.DeepEqual(old, s) {
			continue
		}
		prof, err := bfd.ProfileFrom(&s.Profile)
		if err != nil {
			errs = append(errs, fmt.Errorf("bfd peer %s: %w", peer, err))
			continue
		}
		if err := b.m.AddPeer(peer, s.Local, prof); err != nil {
			errs = append(errs, err)
			continue
		}
		b.current[peer] = s
	}
	return errors.Join(errs...)
}

func (b *bfdManager) Subscribe(fn func(peer netip.Addr, up bool)) {
	changes := b.m.Subscribe()
	go func() {
		for c := range changes {
			switch {
			case c.Failed():
				fn(c.Peer, false)
			case c.New == bfd.StateUp:
				fn(c.Peer, true)
			}
		}
	}()
}
