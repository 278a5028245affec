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
	Name    string
	Address netip.Addr
	// Port is the router's port; 0 means 179.
	Port    uint16
	MyASN   uint32
	PeerASN uint32
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

	stateMu  sync.Mutex
	states   map[netip.Addr]SessionState
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
		if graceful {
			// GoBGP's Stop sends Cease to every peer, which ends graceful
			// restart on the router. Leaving the sockets to the process
			// exit is what a crash looks like, and what RFC 4724 covers.
			return
		}
		s.s.Stop()
	})
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
	name := s.peers[addr].Name
	s.mu.Unlock()
	st := SessionState{Name: name, Address: addr.Unmap(), State: state, Up: state == "established", Since: time.Now()}
	s.stateMu.Lock()
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
		s.stateMu.Lock()
		delete(s.states, addr)
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
	return added, errs
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
