package bfd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// RFC 5881 constants.
const (
	ControlPort   = 3784
	sendTTL       = 255
	srcPortFirst  = 49152
	srcPortLast   = 65535
	tosNetControl = 0xc0 // CS6, as routing protocols use
	rxQueueLen    = 16
	readBufLen    = 256
)

// ManagerOptions configure a Manager. The zero value is the production
// setting: listen on 0.0.0.0 and :: port 3784, no metrics registration.
type ManagerOptions struct {
	// ListenAddrs are the local addresses to receive on, one socket each.
	// Default: 0.0.0.0 and :: (an IPv6 failure is only logged then, for
	// nodes with IPv6 disabled).
	ListenAddrs []netip.Addr
	// Port is the control port listened on and sent to. Default 3784;
	// anything else breaks RFC 5881 and is meant for tests only.
	Port uint16
	// Registerer receives the zerohop_bfd_* metrics; nil registers none.
	// The speaker passes controller-runtime's metrics.Registry.
	Registerer prometheus.Registerer
	// Log gets state changes and socket trouble, and at V(1) each
	// session added, changed or removed. Default: discarded.
	Log logr.Logger
}

// StateChange reports one session state transition.
type StateChange struct {
	Peer        netip.Addr
	Old, New    State
	Diag        Diag  // this end's reason
	RemoteState State // the peer's state in its last packet
	RemoteDiag  Diag
	At          time.Time
}

// Failed reports whether the change means the path to the peer is lost:
// an Up session went Down for any reason but the peer's own AdminDown.
// RFC 5882 section 3.2: a peer taken down administratively must not make
// the client (BGP) drop its session; a detection timeout or the peer
// reporting Down must.
func (c StateChange) Failed() bool {
	return c.Old == StateUp && c.New == StateDown && c.RemoteState != StateAdminDown
}

// SessionInfo is a snapshot of one session, for status and tests.
type SessionInfo struct {
	Peer, Local           netip.Addr
	Profile               Profile
	State, RemoteState    State
	Diag, RemoteDiag      Diag
	LocalDiscriminator    uint32
	RemoteDiscriminator   uint32
	RemoteDetectMult      uint8
	RemoteDesiredMinTx    time.Duration
	RemoteRequiredMinRx   time.Duration
	TransmitInterval      time.Duration // negotiated, before jitter; 0: not sending
	DetectTime            time.Duration // 0 until the peer has been heard
	Polling               bool
	PollSequencesDone     uint64
	PacketsIn, PacketsOut uint64
}

// Manager runs BFD sessions: the receive sockets, one transmit socket and
// one goroutine per peer.
type Manager struct {
	port uint16
	log  logr.Logger
	met  *metrics

	mu        sync.Mutex
	closed    bool
	byPeer    map[netip.Addr]*peerSession
	byDiscr   map[uint32]*peerSession
	listeners []io.Closer
	subs      []*subscriber
	wg        sync.WaitGroup
}

type rxPacket struct {
	p   Packet
	ttl int
	at  time.Time
}

type command struct {
	prof     *Profile
	adminDn  bool
	stop     bool
	deadline <-chan struct{} // ends an AdminDown burst early
	done     chan struct{}
}

type peerSession struct {
	peer, local netip.Addr
	label       string
	discr       uint32
	conn        *net.UDPConn
	rx          chan rxPacket
	ctl         chan command
	exited      chan struct{}

	mu   sync.Mutex
	info SessionInfo
}

// NewManager opens the receive sockets.
func NewManager(opts ManagerOptions) (*Manager, error) {
	log := opts.Log
	met, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	m := &Manager{
		port:    opts.Port,
		log:     log,
		met:     met,
		byPeer:  map[netip.Addr]*peerSession{},
		byDiscr: map[uint32]*peerSession{},
	}
	if m.port == 0 {
		m.port = ControlPort
	}
	addrs := opts.ListenAddrs
	lenient := false
	if len(addrs) == 0 {
		addrs = []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()}
		lenient = true
	}
	for _, a := range addrs {
		if err := m.listen(a); err != nil {
			if lenient && a.Is6() {
				log.Info("bfd: no IPv6 listener", "error", err.Error())
				continue
			}
			m.Close()
			return nil, err
		}
	}
	if len(m.listeners) == 0 {
		return nil, errors.New("bfd: no listener could be opened")
	}
	return m, nil
}

func (m *Manager) listen(a netip.Addr) error {
	a = a.Unmap()
	network := "udp4"
	if a.Is6() {
		network = "udp6"
	}
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, m.port)))
	if err != nil {
		return fmt.Errorf("bfd: listen %s port %d: %w", a, m.port, err)
	}
	var read func(b []byte) (int, netip.Addr, int, error)
	if a.Is4() {
		pc := ipv4.NewPacketConn(c)
		if err := pc.SetControlMessage(ipv4.FlagTTL|ipv4.FlagDst, true); err != nil {
			_ = c.Close()
			return fmt.Errorf("bfd: listen %s: IP_RECVTTL: %w", a, err)
		}
		read = func(b []byte) (int, netip.Addr, int, error) {
			n, cm, src, err := pc.ReadFrom(b)
			ttl := -1
			if cm != nil {
				ttl = cm.TTL
			}
			return n, udpSource(src), ttl, err
		}
	} else {
		pc := ipv6.NewPacketConn(c)
		if err := pc.SetControlMessage(ipv6.FlagHopLimit|ipv6.FlagDst, true); err != nil {
			_ = c.Close()
			return fmt.Errorf("bfd: listen %s: IPV6_RECVHOPLIMIT: %w", a, err)
		}
		read = func(b []byte) (int, netip.Addr, int, error) {
			n, cm, src, err := pc.ReadFrom(b)
			ttl := -1
			if cm != nil {
				ttl = cm.HopLimit
			}
			return n, udpSource(src), ttl, err
		}
	}
	m.listeners = append(m.listeners, c)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.readLoop(read)
	}()
	return nil
}

func udpSource(a net.Addr) netip.Addr {
	u, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.Addr{}
	}
	ip, _ := netip.AddrFromSlice(u.IP)
	return ip.Unmap()
}

func (m *Manager) readLoop(read func([]byte) (int, netip.Addr, int, error)) {
	buf := make([]byte, readBufLen)
	for {
		n, src, ttl, err := read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			m.log.Info("bfd: receive", "error", err.Error())
			time.Sleep(10 * time.Millisecond) // no hot loop on a persistent error
			continue
		}
		p, err := Unmarshal(buf[:n])
		if err != nil {
			m.met.dropped.WithLabelValues("malformed").Inc()
			continue
		}
		m.mu.Lock()
		var ps *peerSession
		if p.YourDiscriminator != 0 {
			ps = m.byDiscr[p.YourDiscriminator]
		} else {
			ps = m.byPeer[src]
		}
		m.mu.Unlock()
		// A discriminator match must also come from the session's peer:
		// single-hop sessions are tied to the neighbour's address.
		if ps == nil || ps.peer.WithZone("") != src {
			m.met.dropped.WithLabelValues("no_session").Inc()
			continue
		}
		select {
		case ps.rx <- rxPacket{p: p, ttl: ttl, at: time.Now()}:
		default:
			// The session goroutine is behind; a BFD packet is only
			// worth its freshness, so drop rather than block others.
			m.met.dropped.WithLabelValues("queue_full").Inc()
		}
	}
}

// AddPeer starts a session to peer, or updates its profile if one exists
// (a timer change on an Up session runs a Poll Sequence). local, if
// valid, is the source address to send from; it must be of the peer's
// family. A change of local restarts the session. IPv6 link-local peers
// need a zone; sessions are keyed by the address without it.
func (m *Manager) AddPeer(peer, local netip.Addr, p Profile) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("bfd peer %s: %w", peer, err)
	}
	peer = peer.Unmap()
	local = local.Unmap()
	if !peer.IsValid() || peer.IsUnspecified() {
		return fmt.Errorf("bfd peer %q: not a peer address", peer)
	}
	if local.IsValid() && local.Is4() != peer.Is4() {
		return fmt.Errorf("bfd peer %s: local address %s is of another family", peer, local)
	}
	key := peer.WithZone("")
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return fmt.Errorf("bfd peer %s: manager closed", peer)
	}
	old := m.byPeer[key]
	m.mu.Unlock()
	if old != nil {
		if old.local == local && old.peer == peer {
			m.log.V(1).Info("bfd: session profile set", append([]any{"peer", peer}, p.logValues()...)...)
			return old.do(command{prof: &p})
		}
		if err := m.RemovePeer(peer); err != nil {
			return err
		}
	}

	conn, err := m.dialPeer(peer, local)
	if err != nil {
		return fmt.Errorf("bfd peer %s: %w", peer, err)
	}
	ps := &peerSession{
		peer:   peer,
		local:  local,
		label:  key.String(),
		conn:   conn,
		rx:     make(chan rxPacket, rxQueueLen),
		ctl:    make(chan command),
		exited: make(chan struct{}),
	}
	m.mu.Lock()
	if m.closed || m.byPeer[key] != nil {
		m.mu.Unlock()
		_ = conn.Close()
		return fmt.Errorf("bfd peer %s: manager closed or peer added concurrently", peer)
	}
	for ps.discr == 0 || m.byDiscr[ps.discr] != nil {
		ps.discr = rand.Uint32()
	}
	m.byPeer[key] = ps
	m.byDiscr[ps.discr] = ps
	m.wg.Add(1)
	m.mu.Unlock()

	s := newSession(p, ps.discr, time.Now(), rand.Float64)
	m.met.setState(ps.label, s.state)
	ps.snapshot(s)
	go func() {
		defer m.wg.Done()
		m.run(ps, s)
	}()
	if l := m.log.V(1); l.Enabled() {
		src := "any" // the routing table's choice
		if local.IsValid() {
			src = local.String()
		}
		l.Info("bfd: session added", append([]any{"peer", peer, "local", src}, p.logValues()...)...)
	}
	return nil
}

// dialPeer opens the session's transmit socket: source port from the
// RFC 5881 range, TTL 255, connected to the peer's control port.
func (m *Manager) dialPeer(peer, local netip.Addr) (*net.UDPConn, error) {
	network := "udp4"
	if peer.Is6() {
		network = "udp6"
	}
	raddr := net.UDPAddrFromAddrPort(netip.AddrPortFrom(peer, m.port))
	var lastErr error
	for range 64 {
		port := srcPortFirst + rand.IntN(srcPortLast-srcPortFirst+1)
		laddr := &net.UDPAddr{Port: port}
		if local.IsValid() {
			laddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, uint16(port)))
		}
		c, err := net.DialUDP(network, laddr, raddr)
		if err != nil {
			lastErr = err
			if errors.Is(err, syscall.EADDRINUSE) {
				continue
			}
			return nil, fmt.Errorf("dial: %w", err)
		}
		if peer.Is4() {
			pc := ipv4.NewConn(c)
			err = errors.Join(pc.SetTTL(sendTTL), pc.SetTOS(tosNetControl))
		} else {
			pc := ipv6.NewConn(c)
			err = errors.Join(pc.SetHopLimit(sendTTL), pc.SetTrafficClass(tosNetControl))
		}
		if err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("set TTL 255: %w", err)
		}
		return c, nil
	}
	return nil, fmt.Errorf("no free source port in %d-%d: %w", srcPortFirst, srcPortLast, lastErr)
}

// RemovePeer tells the peer the session is administratively down and
// stops it. Removing an unknown peer is not an error.
func (m *Manager) RemovePeer(peer netip.Addr) error {
	key := peer.Unmap().WithZone("")
	m.mu.Lock()
	ps := m.byPeer[key]
	if ps != nil {
		delete(m.byPeer, key)
		delete(m.byDiscr, ps.discr)
	}
	m.mu.Unlock()
	if ps == nil {
		return nil
	}
	err := ps.do(command{adminDn: true, stop: true})
	<-ps.exited
	m.met.forget(ps.label)
	m.log.V(1).Info("bfd: session removed", "peer", ps.peer)
	return err
}

// Subscribe returns a channel of every later state change, in order per
// session. Delivery never blocks the sessions (the queue grows instead);
// the channel is closed by Close or Shutdown, and undelivered changes are
// dropped then.
func (m *Manager) Subscribe() <-chan StateChange {
	sb := &subscriber{wake: make(chan struct{}, 1), out: make(chan StateChange), done: make(chan struct{})}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		close(sb.out)
		return sb.out
	}
	m.subs = append(m.subs, sb)
	go sb.pump()
	return sb.out
}

// Sessions returns a snapshot of every session, in no particular order.
func (m *Manager) Sessions() []SessionInfo {
	m.mu.Lock()
	all := make([]*peerSession, 0, len(m.byPeer))
	for _, ps := range m.byPeer {
		all = append(all, ps)
	}
	m.mu.Unlock()
	out := make([]SessionInfo, 0, len(all))
	for _, ps := range all {
		ps.mu.Lock()
		out = append(out, ps.info)
		ps.mu.Unlock()
	}
	return out
}

// Session returns the snapshot of one peer's session.
func (m *Manager) Session(peer netip.Addr) (SessionInfo, bool) {
	m.mu.Lock()
	ps := m.byPeer[peer.Unmap().WithZone("")]
	m.mu.Unlock()
	if ps == nil {
		return SessionInfo{}, false
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.info, true
}

// Shutdown is for a node going away: every session goes AdminDown and
// sends it DetectMultiplier times at the rate the peer accepts (the first
// at once), until ctx ends; then the Manager closes. Peers see
// "administratively down" and, per RFC 5882, keep BGP up for graceful
// handling rather than treating it as a failure.
func (m *Manager) Shutdown(ctx context.Context) {
	m.mu.Lock()
	all := make([]*peerSession, 0, len(m.byPeer))
	for _, ps := range m.byPeer {
		all = append(all, ps)
	}
	m.mu.Unlock()
	var wg sync.WaitGroup
	for _, ps := range all {
		wg.Go(func() {
			_ = ps.do(command{adminDn: true, deadline: ctx.Done()})
		})
	}
	wg.Wait()
	m.Close()
}

// Close stops every session without telling peers (they time out) and
// closes the sockets. It is idempotent.
func (m *Manager) Close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	all := make([]*peerSession, 0, len(m.byPeer))
	for _, ps := range m.byPeer {
		all = append(all, ps)
	}
	m.byPeer = map[netip.Addr]*peerSession{}
	m.byDiscr = map[uint32]*peerSession{}
	ls := m.listeners
	m.listeners = nil
	subs := m.subs
	m.subs = nil
	m.mu.Unlock()
	for _, ps := range all {
		_ = ps.do(command{stop: true})
	}
	for _, l := range ls {
		_ = l.Close()
	}
	m.wg.Wait()
	for _, sb := range subs {
		close(sb.done)
	}
}

// do hands a command to the session goroutine and waits for it.
func (ps *peerSession) do(c command) error {
	c.done = make(chan struct{})
	select {
	case ps.ctl <- c:
	case <-ps.exited:
		return fmt.Errorf("bfd peer %s: session stopped", ps.peer)
	}
	<-c.done
	return nil
}

// run is the session goroutine: it owns s and the transmit socket.
func (m *Manager) run(ps *peerSession, s *session) {
	defer close(ps.exited)
	defer func() { _ = ps.conn.Close() }()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	buf := make([]byte, 0, controlPacketLen)
	apply := func(st step, now time.Time) {
		for i := range st.send {
			buf = st.send[i].Marshal(buf[:0])
			if _, err := ps.conn.Write(buf); err != nil {
				// ECONNREFUSED after an ICMP unreachable, ENETUNREACH
				// while the link is down: the detection timer is what
				// decides, so only count it.
				m.met.dropped.WithLabelValues("send_error").Inc()
				continue
			}
			m.met.tx.WithLabelValues(ps.label).Inc()
			ps.mu.Lock()
			ps.info.PacketsOut++
			ps.mu.Unlock()
		}
		// Snapshot first, so a subscriber that looks at Sessions() after
		// a change sees the state that caused it.
		ps.snapshot(s)
		if st.changed {
			m.met.setState(ps.label, s.state)
			m.met.changes.WithLabelValues(ps.label, s.state.String()).Inc()
			c := StateChange{Peer: ps.peer, Old: st.old, New: s.state, Diag: s.diag,
				RemoteState: s.remoteState, RemoteDiag: s.remoteDiag, At: now}
			m.log.Info("bfd: session state", "peer", ps.peer, "from", c.Old, "to", c.New,
				"diag", c.Diag.String(), "remoteState", c.RemoteState, "remoteDiag", c.RemoteDiag.String())
			m.publish(c)
		}
	}
	for {
		now := time.Now()
		apply(s.tick(now), now)
		if d := s.deadline(); !d.IsZero() {
			timer.Reset(time.Until(d))
		} else {
			timer.Reset(time.Hour)
		}
		select {
		case r := <-ps.rx:
			if r.ttl < int(s.prof.MinimumTTL) {
				// RFC 5881 section 5: single-hop packets arrive with TTL
				// 255; a lower one was forwarded, so it may be spoofed.
				m.met.dropped.WithLabelValues("ttl").Inc()
				continue
			}
			m.met.rx.WithLabelValues(ps.label).Inc()
			ps.mu.Lock()
			ps.info.PacketsIn++
			ps.mu.Unlock()
			apply(s.receive(r.p, r.at), r.at)
		case <-timer.C:
		case c := <-ps.ctl:
			now := time.Now()
			if c.prof != nil {
				apply(s.setProfile(*c.prof, now), now)
			}
			if c.adminDn {
				apply(s.adminDown(now), now)
				if c.deadline != nil {
					m.adminDownBurst(ps, s, c.deadline)
				}
			}
			close(c.done)
			if c.stop {
				return
			}
		}
	}
}

// adminDownBurst repeats the AdminDown packet so a single loss does not
// leave the peer waiting for its detection timer.
func (m *Manager) adminDownBurst(ps *peerSession, s *session, deadline <-chan struct{}) {
	gap := min(max(fromMicros(s.remoteMinRx), 10*time.Millisecond), time.Second)
	adm := s.packet(false, false)
	pkt := adm.Marshal(nil)
	for i := 1; i < int(s.prof.DetectMultiplier); i++ {
		t := time.NewTimer(gap)
		select {
		case <-t.C:
		case <-deadline:
			t.Stop()
			return
		}
		if _, err := ps.conn.Write(pkt); err == nil {
			m.met.tx.WithLabelValues(ps.label).Inc()
		}
	}
}

func (ps *peerSession) snapshot(s *session) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	in, out := ps.info.PacketsIn, ps.info.PacketsOut
	detect := time.Duration(0)
	if !s.lastRx.IsZero() {
		detect = s.detectTime()
	}
	tx := s.txInterval()
	if !s.mayTransmit() {
		tx = 0
	}
	ps.info = SessionInfo{
		Peer:                ps.peer,
		Local:               ps.local,
		Profile:             s.prof,
		State:               s.state,
		RemoteState:         s.remoteState,
		Diag:                s.diag,
		RemoteDiag:          s.remoteDiag,
		LocalDiscriminator:  s.localDiscr,
		RemoteDiscriminator: s.remoteDiscr,
		RemoteDetectMult:    s.remoteMult,
		RemoteDesiredMinTx:  fromMicros(s.remoteDesiredTx),
		RemoteRequiredMinRx: fromMicros(s.remoteMinRx),
		TransmitInterval:    tx,
		DetectTime:          detect,
		Polling:             s.polling,
		PollSequencesDone:   s.pollsDone,
		PacketsIn:           in,
		PacketsOut:          out,
	}
}

func (m *Manager) publish(c StateChange) {
	m.mu.Lock()
	subs := m.subs
	m.mu.Unlock()
	for _, sb := range subs {
		sb.push(c)
	}
}

type subscriber struct {
	mu   sync.Mutex
	q    []StateChange
	wake chan struct{}
	out  chan StateChange
	done chan struct{}
}

func (sb *subscriber) push(c StateChange) {
	sb.mu.Lock()
	sb.q = append(sb.q, c)
	sb.mu.Unlock()
	select {
	case sb.wake <- struct{}{}:
	default:
	}
}

func (sb *subscriber) pump() {
	defer close(sb.out)
	for {
		sb.mu.Lock()
		if len(sb.q) == 0 {
			sb.mu.Unlock()
			select {
			case <-sb.wake:
				continue
			case <-sb.done:
				return
			}
		}
		c := sb.q[0]
		sb.q = sb.q[1:]
		sb.mu.Unlock()
		select {
		case sb.out <- c:
		case <-sb.done:
			return
		}
	}
}
