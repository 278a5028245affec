package bfd

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var (
	loA = netip.MustParseAddr("127.0.0.1")
	loB = netip.MustParseAddr("127.0.0.2")
)

// managerPair starts two Managers on loopback, A on 127.0.0.1 and B on
// 127.0.0.2, on a free port of their own so that tests never collide
// with a real BFD daemon or each other.
func managerPair(t *testing.T) (a, b *Manager, regA *prometheus.Registry) {
	t.Helper()
	var lastErr error
	for range 10 {
		l, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatalf("probe port: %v", err)
		}
		port := uint16(l.LocalAddr().(*net.UDPAddr).Port)
		_ = l.Close()
		regA = prometheus.NewRegistry()
		a, err = NewManager(ManagerOptions{ListenAddrs: []netip.Addr{loA}, Port: port, Registerer: regA})
		if err != nil {
			lastErr = err
			continue
		}
		b, err = NewManager(ManagerOptions{ListenAddrs: []netip.Addr{loB}, Port: port, Registerer: prometheus.NewRegistry()})
		if err != nil {
			a.Close()
			lastErr = err
			continue
		}
		t.Cleanup(a.Close)
		t.Cleanup(b.Close)
		return a, b, regA
	}
	t.Fatalf("no free port pair: %v", lastErr)
	return nil, nil, nil
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func sessionOf(t *testing.T, m *Manager, peer netip.Addr) SessionInfo {
	t.Helper()
	s, ok := m.Session(peer)
	if !ok {
		t.Fatalf("no session for %s", peer)
	}
	return s
}

func settledUp(m *Manager, peer netip.Addr) bool {
	s, ok := m.Session(peer)
	return ok && s.State == StateUp && !s.Polling
}

// nextChange waits for the next state change on ch.
func nextChange(t *testing.T, ch <-chan StateChange, timeout time.Duration) StateChange {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatal("state change channel closed")
		}
		return c
	case <-time.After(timeout):
		t.Fatalf("no state change within %v", timeout)
	}
	return StateChange{}
}

func TestManagersNegotiateAndPoll(t *testing.T) {
	a, b, regA := managerPair(t)
	changesA := a.Subscribe()
	pa := Profile{ReceiveInterval: 100 * time.Millisecond, TransmitInterval: 50 * time.Millisecond, DetectMultiplier: 3, MinimumTTL: 255}
	pb := Profile{ReceiveInterval: 20 * time.Millisecond, TransmitInterval: 200 * time.Millisecond, DetectMultiplier: 4, MinimumTTL: 254}
	if err := a.AddPeer(loB, loA, pa); err != nil {
		t.Fatal(err)
	}
	if err := b.AddPeer(loA, loB, pb); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "both sessions Up with timers settled", func() bool {
		return settledUp(a, loB) && settledUp(b, loA)
	})
	for _, want := range []State{StateInit, StateUp} {
		c := nextChange(t, changesA, time.Second)
		if c.New != want || c.Peer != loB {
			t.Fatalf("A change = %+v, want to %v for %s", c, want, loB)
		}
	}

	sa, sb := sessionOf(t, a, loB), sessionOf(t, b, loA)
	checks := []struct {
		name      string
		got, want time.Duration
	}{
		// TX interval: max(own desired TX, peer's required RX).
		{"A tx", sa.TransmitInterval, 50 * time.Millisecond},
		{"B tx", sb.TransmitInterval, 200 * time.Millisecond},
		// Detect time: peer's multiplier × max(own required RX, peer's desired TX).
		{"A detect", sa.DetectTime, 4 * 200 * time.Millisecond},
		{"B detect", sb.DetectTime, 3 * 50 * time.Millisecond},
		{"B sees A's tx", sb.RemoteDesiredMinTx, 50 * time.Millisecond},
		{"A sees B's rx", sa.RemoteRequiredMinRx, 20 * time.Millisecond},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if sa.PollSequencesDone < 1 {
		t.Errorf("A finished %d poll sequences; leaving slow start needs one", sa.PollSequencesDone)
	}
	if sa.RemoteDiscriminator != sb.LocalDiscriminator || sb.RemoteDiscriminator != sa.LocalDiscriminator {
		t.Errorf("discriminators do not cross: A %d/%d B %d/%d", sa.LocalDiscriminator, sa.RemoteDiscriminator, sb.LocalDiscriminator, sb.RemoteDiscriminator)
	}

	// A slows its transmit rate and asks for faster reception: a Poll
	// Sequence, after which both ends use the new values.
	polls := sa.PollSequencesDone
	pa2 := pa
	pa2.TransmitInterval = 150 * time.Millisecond
	pa2.ReceiveInterval = 60 * time.Millisecond
	if err := a.AddPeer(loB, loA, pa2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "A's poll sequence to finish", func() bool {
		s := sessionOf(t, a, loB)
		return s.PollSequencesDone > polls && !s.Polling
	})
	sa, sb = sessionOf(t, a, loB), sessionOf(t, b, loA)
	if sa.State != StateUp || sb.State != StateUp {
		t.Fatalf("timer change dropped the session: A %v B %v", sa.State, sb.State)
	}
	if sa.TransmitInterval != 150*time.Millisecond {
		t.Errorf("A tx after poll = %v, want 150ms", sa.TransmitInterval)
	}
	if sa.DetectTime != 4*200*time.Millisecond {
		t.Errorf("A detect after poll = %v, want 800ms", sa.DetectTime)
	}
	if sb.RemoteDesiredMinTx != 150*time.Millisecond || sb.DetectTime != 3*150*time.Millisecond {
		t.Errorf("B after poll: remote tx %v detect %v, want 150ms and 450ms", sb.RemoteDesiredMinTx, sb.DetectTime)
	}
	if sb.TransmitInterval != 200*time.Millisecond {
		t.Errorf("B tx after poll = %v, want 200ms (its own desired TX > A's 60ms RX)", sb.TransmitInterval)
	}

	// Metrics: state Up (3) and traffic both ways.
	if got := testutil.ToFloat64(a.met.state.WithLabelValues(loB.String())); got != float64(StateUp) {
		t.Errorf("zerohop_bfd_session_state = %v, want 3", got)
	}
	if got := testutil.ToFloat64(a.met.rx.WithLabelValues(loB.String())); got < 3 {
		t.Errorf("zerohop_bfd_packets_received_total = %v, want >= 3", got)
	}
	n, err := testutil.GatherAndCount(regA, "zerohop_bfd_session_state_changes_total")
	if err != nil || n != 2 {
		t.Errorf("state change series = %d (%v), want 2 (Init, Up)", n, err)
	}
}

func TestManagerDetectsSilentPeer(t *testing.T) {
	a, b, _ := managerPair(t)
	p := Profile{ReceiveInterval: 30 * time.Millisecond, TransmitInterval: 30 * time.Millisecond, DetectMultiplier: 3, MinimumTTL: 254}
	changes := a.Subscribe()
	if err := a.AddPeer(loB, loA, p); err != nil {
		t.Fatal(err)
	}
	if err := b.AddPeer(loA, loB, p); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "Up", func() bool { return settledUp(a, loB) && settledUp(b, loA) })
	drain(changes, StateUp)

	b.Close() // no AdminDown: B just goes quiet, as a dead node would
	c := nextChange(t, changes, 2*time.Second)
	if c.Old != StateUp || c.New != StateDown || c.Diag != DiagControlDetectExpired || !c.Failed() {
		t.Fatalf("change = %+v, want Up→Down, diag control detection time expired, Failed", c)
	}
	s := sessionOf(t, a, loB)
	if s.RemoteDiscriminator != 0 {
		t.Errorf("remote discriminator %d kept after detection timeout, want 0", s.RemoteDiscriminator)
	}
}

// drain discards queued changes up to and including the first one into st.
func drain(ch <-chan StateChange, st State) {
	for {
		select {
		case c := <-ch:
			if c.New == st {
				return
			}
		case <-time.After(time.Second):
			return
		}
	}
}

func TestManagerShutdownSendsAdminDown(t *testing.T) {
	a, b, _ := managerPair(t)
	p := Profile{ReceiveInterval: 50 * time.Millisecond, TransmitInterval: 50 * time.Millisecond, DetectMultiplier: 3, MinimumTTL: 254}
	changes := a.Subscribe()
	if err := a.AddPeer(loB, loA, p); err != nil {
		t.Fatal(err)
	}
	if err := b.AddPeer(loA, loB, p); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "Up", func() bool { return settledUp(a, loB) && settledUp(b, loA) })
	drain(changes, StateUp)

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	b.Shutdown(ctx)
	c := nextChange(t, changes, time.Second)
	if c.New != StateDown || c.Diag != DiagNeighborSignaledDown || c.RemoteState != StateAdminDown || c.RemoteDiag != DiagAdministrativelyDown {
		t.Fatalf("change = %+v, want Down by neighbor, remote AdminDown / administratively down", c)
	}
	if c.Failed() {
		t.Error("a peer's AdminDown counted as a failure; RFC 5882 says BGP must stay up")
	}
	if _, ok := <-b.Subscribe(); ok {
		t.Error("Subscribe after Shutdown returned an open channel")
	}
}

func TestManagerPassiveWaitsForPeer(t *testing.T) {
	a, b, _ := managerPair(t)
	p := Profile{ReceiveInterval: 50 * time.Millisecond, TransmitInterval: 50 * time.Millisecond, DetectMultiplier: 3, MinimumTTL: 254}
	passive := p
	passive.Passive = true
	if err := a.AddPeer(loB, loA, passive); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // a would have sent at once if active
	if s := sessionOf(t, a, loB); s.PacketsOut != 0 {
		t.Fatalf("passive session sent %d packets before hearing the peer", s.PacketsOut)
	}
	if err := b.AddPeer(loA, loB, p); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "Up with a passive end", func() bool { return settledUp(a, loB) && settledUp(b, loA) })
}

func TestManagerRemovePeer(t *testing.T) {
	a, b, regA := managerPair(t)
	p := DefaultProfile()
	p.TransmitInterval, p.ReceiveInterval = 50*time.Millisecond, 50*time.Millisecond
	if err := a.AddPeer(loB, loA, p); err != nil {
		t.Fatal(err)
	}
	if err := b.AddPeer(loA, loB, p); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "Up", func() bool { return settledUp(a, loB) && settledUp(b, loA) })
	if err := a.RemovePeer(loB); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.Session(loB); ok {
		t.Fatal("session still listed after RemovePeer")
	}
	waitFor(t, time.Second, "B to see A's AdminDown", func() bool {
		s := sessionOf(t, b, loA)
		return s.State == StateDown && s.RemoteState == StateAdminDown
	})
	out, err := testutil.GatherAndCount(regA, "zerohop_bfd_session_state", "zerohop_bfd_packets_sent_total")
	if err != nil || out != 0 {
		t.Errorf("per-peer series after RemovePeer = %d (%v), want 0", out, err)
	}
	if err := a.RemovePeer(loB); err != nil {
		t.Errorf("second RemovePeer: %v", err)
	}
}

func TestAddPeerRefuses(t *testing.T) {
	a, _, _ := managerPair(t)
	tests := []struct {
		name        string
		peer, local netip.Addr
		prof        Profile
		want        string
	}{
		{"no peer", netip.Addr{}, netip.Addr{}, DefaultProfile(), "not a peer address"},
		{"unspecified peer", netip.IPv4Unspecified(), netip.Addr{}, DefaultProfile(), "not a peer address"},
		{"family mismatch", loB, netip.MustParseAddr("::1"), DefaultProfile(), "another family"},
		{"bad profile", loB, netip.Addr{}, Profile{ReceiveInterval: time.Millisecond, TransmitInterval: time.Second, DetectMultiplier: 3, MinimumTTL: 1}, "receiveInterval"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := a.AddPeer(tc.peer, tc.local, tc.prof)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("AddPeer = %v, want error containing %q", err, tc.want)
			}
		})
	}
	if n := len(a.Sessions()); n != 0 {
		t.Errorf("%d sessions after refusals, want 0", n)
	}
}

func TestNewManagerSecondRegistryUse(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewManager(ManagerOptions{ListenAddrs: []netip.Addr{loA}, Port: 0xffff - 7, Registerer: reg})
	if err != nil {
		t.Fatalf("open test listener: %v", err)
	}
	defer m.Close()
	_, err = NewManager(ManagerOptions{ListenAddrs: []netip.Addr{loB}, Port: 0xffff - 7, Registerer: reg})
	if err == nil || !strings.Contains(err.Error(), "already registered") {
		t.Fatalf("second Manager on one registry: %v, want already registered", err)
	}
}
