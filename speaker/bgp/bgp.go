// Package bgp is the speaker's BGP mode: the pure planner (plan.go:
// Compute, from Services, pools, BGPAdvertisements, BGPPeers and this
// node, to the paths each peer receives) and the embedded GoBGP v3 server
// that announces them (bgp.go, paths.go). The server's gRPC API is never
// opened; the speaker drives it through this package's small API.
//
// GoBGP keeps one RIB for all peers. Different peers receiving different
// prefixes, or one prefix with different communities, is done with one
// export policy: a statement per (peer, attribute set, family) matching the
// peer's address and a prefix set, adding the communities and local-pref,
// and accepting; everything else is rejected. Paths in the RIB carry only
// what is common to every peer (origin, next hop, link bandwidth).
package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
)

// Peer is one BGP session.
type Peer struct {
	// Name is the BGPPeer's name, used in events and status.
	Name string
	// Address is the router's address; for an unnumbered session, its
	// IPv6 link-local address with the interface as zone.
	Address netip.Addr
	// Interface, for an unnumbered session (RFC 8950), is the node
	// interface the session runs on: prefixes of both families go with
	// this node's link-local address there as next hop.
	Interface string
	// Port is the router's port; 0 means 179.
	Port  uint16
	MyASN uint32
	// PeerASN is the router's AS; 0 takes whatever AS the router's OPEN
	// carries (dynamicASN), which decides iBGP or eBGP.
	PeerASN uint32
	// ExternalOnly, with PeerASN 0, refuses a router whose OPEN carries
	// MyASN (dynamicASN external): the session is reset as soon as its
	// OPEN is seen, and SessionState.Refused says why. Until an OPEN with
	// another AS is seen, the export policy sends the peer nothing, so a
	// refused router never receives a path.
	ExternalOnly bool
	// SourceAddress, when valid, is the local address of the session.
	SourceAddress netip.Addr
	// HoldTime, KeepaliveTime and ConnectTime: 0 means GoBGP's defaults
	// (90s, a third of the hold time, 120s... zerohop uses 10s).
	HoldTime, KeepaliveTime, ConnectTime time.Duration
	EBGPMultiHop                         bool
	// Password is the TCP MD5 password; empty for none.
	Password string
	// NextHop4 and NextHop6 are this node's addresses, used as the next
	// hop of prefixes of the other family than the session's (IPv6 over
	// an IPv4 session and the reverse). Unset: such prefixes are not sent
	// to this peer, as they would carry an unusable next hop.
	NextHop4, NextHop6 netip.Addr
	// GracefulRestart advertises RFC 4724 graceful restart, so the router
	// keeps this session's paths while the speaker restarts.
	GracefulRestart bool
}

// Options configure a Server.
type Options struct {
	// RouterID is the BGP identifier, an IPv4 address.
	RouterID netip.Addr
	// ASN is the global AS number; each peer may override it with MyASN.
	// Default 64512.
	ASN uint32
	// ListenPort is the port for incoming sessions; 0 or below means the
	// server only connects out (the default: routers need not dial nodes).
	ListenPort int32
	// Restarting marks the sessions opened in the first minute after start
	// as a graceful restart (R and F bits), so routers keep the paths they
	// hold until this speaker has sent its own table again.
	Restarting bool
	// RestartTime is the advertised graceful restart time. Default 120s.
	RestartTime time.Duration
	Log         logr.Logger
}

// SessionState is the state of one session, for status and events.
type SessionState struct {
	Name    string
	Address netip.Addr
	// State is GoBGP's FSM state name: idle, connect, active, opensent,
	// openconfirm, established.
	State string
	Up    bool
	// Since is when the state was entered (as seen by this speaker).
	Since time.Time
	// Refused, when not empty, is why the speaker last reset the session
	// itself (a router AS that dynamicASN does not accept).
	Refused string
}

// Server is the embedded GoBGP server.
type Server struct {
	s       *server.BgpServer
	opts    Options
	started time.Time
	log     logr.Logger

	mu    sync.Mutex
	peers map[netip.Addr]Peer
	// applied is the export policy now in force: peer -> prefix -> key of
	// the attribute set the peer receives the prefix with. It may hold
	// prefixes not in the RIB (see SetPaths).
	applied map[netip.Addr]map[netip.Prefix]string
	// rib is what is in GoBGP's RIB: prefix -> link bandwidth weight.
	rib map[netip.Prefix]uint32
	// attrs is the attribute set of each key in applied.
	attrs map[string]attrSet
	// advertisers send Router Advertisements on the interfaces of
	// unnumbered sessions.
	advertisers map[string]*advertiser
	// accepted holds the ExternalOnly peers whose current session's OPEN
	// carried another AS: only those get export statements.
	accepted map[netip.Addr]bool

	stateMu sync.Mutex
	states  map[netip.Addr]SessionState
	// refused keeps, per peer, why the speaker last reset its session;
	// cleared when the session comes up or the peer is re-created.
	refused  map[netip.Addr]string
	watchers []func(SessionState)
	stopOnce sync.Once
	cancel   context.CancelFunc
}

// New starts a server. Call Close to stop it.
func New(ctx context.Context, opts Options) (*Server, error) {
	if !opts.RouterID.Is4() {
		return nil, fmt.Errorf("router ID %v: want an IPv4 address", opts.RouterID)
	}
	if opts.ASN == 0 {
		opts.ASN = 64512
	}
	if opts.RestartTime == 0 {
		opts.RestartTime = 120 * time.Second
	}
	listen := opts.ListenPort
	if listen <= 0 {
		listen = -1
	}
	s := &Server{
		s:       server.NewBgpServer(server.LoggerOption(&logAdapter{l: opts.Log})),
		opts:    opts,
		started: time.Now(),
		log:     opts.Log,
		peers:   map[netip.Addr]Peer{},
		applied: map[netip.Addr]map[netip.Prefix]string{},
		rib:     map[netip.Prefix]uint32{},
		attrs:   map[string]attrSet{},
		states:  map[netip.Addr]SessionState{},
		refused: map[netip.Addr]string{},

		advertisers: map[string]*advertiser{},
		accepted:    map[netip.Addr]bool{},
	}
	go s.s.Serve()
	if err := s.s.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: opts.ASN, RouterId: opts.RouterID.String(), ListenPort: listen,
	}}); err != nil {
		s.s.Stop()
		return nil, fmt.Errorf("start BGP: %w", err)
	}
	// One export policy, rejecting by default, so that a new peer gets
	// nothing until the policy names it.
	if err := s.s.SetPolicies(ctx, &api.SetPoliciesRequest{Policies: []*api.Policy{{Name: policyName}, importPolicy()}}); err != nil {
		s.s.Stop()
		return nil, fmt.Errorf("export policy: %w", err)
	}
	if err := s.s.AddPolicyAssignment(ctx, &api.AddPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name: "global", Direction: api.PolicyDirection_EXPORT,
		Policies: []*api.Policy{{Name: policyName}}, DefaultAction: api.RouteAction_REJECT,
	}}); err != nil {
		s.s.Stop()
		return nil, fmt.Errorf("export policy assignment: %w", err)
	}
	// Routes the routers send are of no use to a speaker; keeping them
	// would only cost memory and could compete with our own paths.
	if err := s.s.AddPolicyAssignment(ctx, &api.AddPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name: "global", Direction: api.PolicyDirection_IMPORT, DefaultAction: api.RouteAction_REJECT,
		Policies: []*api.Policy{{Name: importPolicyName}},
	}}); err != nil {
		s.s.Stop()
		return nil, fmt.Errorf("import policy assignment: %w", err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	if err := s.s.WatchEvent(wctx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, s.onEvent); err != nil {
		cancel()
		s.s.Stop()
		return nil, fmt.Errorf("watch peers: %w", err)
	}
	return s, nil
}

// Close stops the server. With graceful it only drops the TCP sessions,
// without a NOTIFICATION, so routers with graceful restart keep the paths
// while a new speaker starts; otherwise every session is closed with a
// Cease and routers withdraw the paths at once.
func (s *Server) Close(graceful bool) {
	s.stopOnce.Do(func() {
		s.cancel()
		s.mu.Lock()
		for name, a := range s.advertisers {
			a.stop()
			delete(s.advertisers, name)
		}
		s.mu.Unlock()
		if graceful {
			// GoBGP's Stop sends Cease to every peer, which ends graceful
			// restart on the router. Leaving the sockets to the process
			// exit is what a crash looks like, and what RFC 4724 covers.
			return
		}
		s.s.Stop()
	})
}

// RouterID is the BGP identifier the server runs with.
func (s *Server) RouterID() netip.Addr { return s.opts.RouterID }

// Idle reports whether the server has no sessions configured, so that
// replacing it (for another router ID) disturbs no router.
func (s *Server) Idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.peers) == 0
}

// Watch registers fn to be called on every session state change. fn must
// not block.
func (s *Server) Watch(fn func(SessionState)) {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	s.watchers = append(s.watchers, fn)
}

// Sessions returns the state of every configured session, sorted by name.
func (s *Server) Sessions() []SessionState {
	s.mu.Lock()
	peers := make(map[netip.Addr]Peer, len(s.peers))
	for a, p := range s.peers {
		peers[a] = p
	}
	s.mu.Unlock()
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	var out []SessionState
	for a, p := range peers {
		st, ok := s.states[a]
		if !ok {
			st = SessionState{Address: a, State: "idle"}
		}
		st.Name = p.Name
		st.Refused = s.refused[a]
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b SessionState) int {
		if a.Name != b.Name {
			if a.Name < b.Name {
				return -1
			}
			return 1
		}
		return a.Address.Compare(b.Address)
	})
	return out
}

func (s *Server) onEvent(r *api.WatchEventResponse) {
	pe := r.GetPeer()
	if pe == nil || pe.Type != api.WatchEventResponse_PeerEvent_STATE || pe.Peer == nil || pe.Peer.State == nil {
		return
	}
	addr, err := netip.ParseAddr(pe.Peer.State.NeighborAddress)
	if err != nil {
		return
	}
	state := sessionStateName(pe.Peer.State.SessionState)
	s.mu.Lock()
	p, known := s.peerOf(addr.Unmap())
	accepted := s.accepted[p.Address]
	s.mu.Unlock()
	if known {
		addr = p.Address
	}
	st := SessionState{Name: p.Name, Address: addr.Unmap(), State: state, Up: state == "established", Since: time.Now()}
	if known && p.ExternalOnly && p.PeerASN == 0 {
		opened := state == "openconfirm" || state == "established"
		switch {
		case opened && pe.Peer.State.PeerAsn == p.MyASN:
			s.refuse(p, fmt.Sprintf("bgppeer %s: the router's OPEN carries AS %d, this session's own, and dynamicASN external accepts only another AS; session reset", p.Name, p.MyASN))
			st.Up = false
		case opened && !accepted:
			go s.accept(p, true)
		case !opened && accepted:
			go s.accept(p, false)
		}
	}
	s.stateMu.Lock()
	if st.Up {
		delete(s.refused, st.Address)
	}
	st.Refused = s.refused[st.Address]
	old, had := s.states[st.Address]
	if had && old.State == st.State {
		s.stateMu.Unlock()
		return
	}
	s.states[st.Address] = st
	watchers := slices.Clone(s.watchers)
	s.stateMu.Unlock()
	for _, w := range watchers {
		w(st)
	}
}

// peerOf finds the configured peer of a session address as GoBGP reports
// it: GoBGP drops the zone of an unnumbered peer's link-local address.
// Called with s.mu held.
func (s *Server) peerOf(addr netip.Addr) (Peer, bool) {
	if p, ok := s.peers[addr]; ok {
		return p, true
	}
	if addr.Zone() == "" && addr.Is6() && addr.IsLinkLocalUnicast() {
		for a, p := range s.peers {
			if a.WithZone("") == addr {
				return p, true
			}
		}
	}
	return Peer{}, false
}

// accept lets an ExternalOnly peer's session receive its paths (ok) or
// stops that (the session went down: the next OPEN is checked again). It
// runs in its own goroutine: GoBGP's event callbacks must not wait on its
// management loop.
func (s *Server) accept(p Peer, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, in := s.peers[p.Address]; !in || cur != p || s.accepted[p.Address] == ok {
		return
	}
	if ok {
		s.accepted[p.Address] = true
	} else {
		delete(s.accepted, p.Address)
	}
	ctx := context.Background()
	if err := s.setPolicy(ctx, s.applied, s.attrs); err != nil {
		s.log.Error(err, "export policy", "peer", p.Name)
		return
	}
	if !ok {
		return
	}
	// The session may have sent its initial table under the old policy:
	// send it again under the new one.
	if err := s.s.ResetPeer(ctx, &api.ResetPeerRequest{Address: p.Address.String(), Soft: true, Direction: api.ResetPeerRequest_OUT}); err != nil {
		s.log.Error(err, "resend paths", "peer", p.Name)
	}
}

// refuse resets p's session (from its own goroutine: GoBGP's event
// callbacks must not wait on its management loop) and records why.
func (s *Server) refuse(p Peer, why string) {
	s.stateMu.Lock()
	again := s.refused[p.Address] == why
	s.refused[p.Address] = why
	s.stateMu.Unlock()
	// The router retries every few seconds: log the first refusal.
	if !again {
		s.log.Info("session refused", "peer", p.Name, "address", p.Address, "reason", why)
	}
	go func() {
		if err := s.ResetSession(context.Background(), p.Address, "dynamicASN external: AS not accepted"); err != nil {
			s.log.Error(err, "reset refused session", "peer", p.Name)
		}
	}()
}

func sessionStateName(s api.PeerState_SessionState) string {
	switch s {
	case api.PeerState_IDLE:
		return "idle"
	case api.PeerState_CONNECT:
		return "connect"
	case api.PeerState_ACTIVE:
		return "active"
	case api.PeerState_OPENSENT:
		return "opensent"
	case api.PeerState_OPENCONFIRM:
		return "openconfirm"
	case api.PeerState_ESTABLISHED:
		return "established"
	}
	return "unknown"
}

// SetPeers makes the server's sessions those given: new peers are added,
// gone ones removed (with a Cease, so routers withdraw their paths at
// once), and changed ones re-created. Other sessions are not touched.
func (s *Server) SetPeers(ctx context.Context, peers []Peer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	added, errs := s.removePeers(ctx, peers)
	return errors.Join(append(errs, s.addPeers(ctx, added)...)...)
}

// Apply sets peers and paths in one step, in the order that keeps
// graceful restart whole: sessions that go are closed first, then the RIB
// and export policy are brought up to date, and only then are new
// sessions opened, so a new session's first UPDATEs (and End-of-RIB)
// already carry every path.
func (s *Server) Apply(ctx context.Context, peers []Peer, paths map[netip.Addr][]Path) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	added, errs := s.removePeers(ctx, peers)
	if err := s.setPaths(ctx, paths); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(append(errs, s.addPeers(ctx, added)...)...)
}

// removePeers closes the sessions not in peers (or changed), and records
// the new ones in s.peers, returning them for addPeers to open.
func (s *Server) removePeers(ctx context.Context, peers []Peer) ([]Peer, []error) {
	want := map[netip.Addr]Peer{}
	var errs []error
	for _, p := range peers {
		p.Address = p.Address.Unmap()
		if _, dup := want[p.Address]; dup {
			errs = append(errs, fmt.Errorf("bgppeer %s: address %v used by another peer of this node", p.Name, p.Address))
			continue
		}
		want[p.Address] = p
	}
	for addr, old := range s.peers {
		if p, ok := want[addr]; ok && p == old {
			continue
		}
		if err := s.s.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
			errs = append(errs, fmt.Errorf("bgppeer %s: remove: %w", old.Name, err))
			continue
		}
		delete(s.peers, addr)
		delete(s.accepted, addr)
		s.stateMu.Lock()
		delete(s.states, addr)
		delete(s.refused, addr)
		s.stateMu.Unlock()
	}
	var added []Peer
	for addr, p := range want {
		if _, ok := s.peers[addr]; ok {
			continue
		}
		s.peers[addr] = p
		added = append(added, p)
	}
	s.advertise(want)
	return added, errs
}

// advertise runs a Router Advertisement sender on the interface of every
// unnumbered peer, and stops the others. Called with s.mu held.
func (s *Server) advertise(peers map[netip.Addr]Peer) {
	want := map[string]bool{}
	for _, p := range peers {
		if p.Interface != "" {
			want[p.Interface] = true
		}
	}
	for name, a := range s.advertisers {
		if !want[name] {
			a.stop()
			delete(s.advertisers, name)
		}
	}
	for name := range want {
		if s.advertisers[name] == nil {
			s.advertisers[name] = startAdvertiser(name, s.log)
		}
	}
}

func (s *Server) addPeers(ctx context.Context, added []Peer) []error {
	var errs []error
	for _, p := range added {
		if err := s.s.AddPeer(ctx, &api.AddPeerRequest{Peer: s.peerConfig(p)}); err != nil {
			errs = append(errs, fmt.Errorf("bgppeer %s: add: %w", p.Name, err))
			// Forgotten, so that the next call tries again; its policy
			// statements go with the next policy change.
			delete(s.peers, p.Address)
		}
	}
	return errs
}

// ResetSession drops the session to addr, e.g. when BFD declares the path
// down: the router is then told nothing more, but its own BFD or hold
// timer removes our paths, and GoBGP reconnects once the path is back.
func (s *Server) ResetSession(ctx context.Context, addr netip.Addr, reason string) error {
	return s.s.ResetPeer(ctx, &api.ResetPeerRequest{Address: addr.Unmap().String(), Communication: reason})
}

func (s *Server) peerConfig(p Peer) *api.Peer {
	conf := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(),
			PeerAsn:         p.PeerASN,
			LocalAsn:        p.MyASN,
			AuthPassword:    p.Password,
			Description:     p.Name,
		},
		Transport: &api.Transport{},
		Timers:    &api.Timers{Config: &api.TimersConfig{ConnectRetry: 10, IdleHoldTimeAfterReset: 1}},
	}
	if p.Port != 0 {
		conf.Transport.RemotePort = uint32(p.Port)
	}
	if p.SourceAddress.IsValid() {
		conf.Transport.LocalAddress = p.SourceAddress.Unmap().String()
	}
	if p.HoldTime > 0 {
		conf.Timers.Config.HoldTime = uint64(p.HoldTime / time.Second)
		conf.Timers.Config.KeepaliveInterval = uint64(p.HoldTime / 3 / time.Second)
	}
	if p.KeepaliveTime > 0 {
		conf.Timers.Config.KeepaliveInterval = uint64(p.KeepaliveTime / time.Second)
	}
	if p.ConnectTime > 0 {
		conf.Timers.Config.ConnectRetry = uint64(max(p.ConnectTime/time.Second, 1))
	}
	// An unnumbered session is opened to the zoned link-local neighbour
	// address rather than with GoBGP's NeighborInterface, which resolves
	// the neighbour again on every DeletePeer and fails once the router is
	// gone from the neighbour table, leaving a session that can no longer
	// be removed. Its local address is left to the kernel ("::", the
	// interface's link-local address): GoBGP would otherwise fill in the
	// zoned link-local address, which it cannot parse back, and announce
	// "::" as next hop, which routers refuse.
	if p.Interface != "" {
		conf.Transport.LocalAddress = netip.IPv6Unspecified().String()
	}
	if p.EBGPMultiHop && p.MyASN != p.PeerASN {
		conf.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: 255}
	}
	families := []*api.Family{
		{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST},
		{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST},
	}
	for _, f := range families {
		as := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: f, Enabled: true}}
		if p.GracefulRestart {
			as.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		}
		conf.AfiSafis = append(conf.AfiSafis, as)
	}
	if p.GracefulRestart {
		conf.GracefulRestart = &api.GracefulRestart{
			Enabled:     true,
			RestartTime: uint32(s.opts.RestartTime / time.Second),
			// Selection deferral: after a restart, wait at most this
			// long for the routers' End-of-RIB before sending ours.
			DeferralTime: 5,
			// Only sessions opened just after the process started are
			// a restart; a peer added later is simply new.
			LocalRestarting: s.opts.Restarting && time.Since(s.started) < time.Minute,
		}
	}
	return conf
}
