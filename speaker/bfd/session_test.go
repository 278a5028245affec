package bfd

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func fastProfile() Profile {
	return Profile{ReceiveInterval: 300 * time.Millisecond, TransmitInterval: 300 * time.Millisecond, DetectMultiplier: 3, MinimumTTL: 254}
}

// noJitter makes intervals exactly 75% + 25%·0.999… ≈ the full interval.
func noJitter() float64 { return 0.9999999 }

func peerPacket(st State, yours uint32) Packet {
	return Packet{State: st, DetectMult: 3, MyDiscriminator: 77, YourDiscriminator: yours,
		DesiredMinTxInterval: 300000, RequiredMinRxInterval: 300000}
}

func TestSessionTransitions(t *testing.T) {
	// RFC 5880 6.8.6 state table: (local state, received state) → new state.
	tests := []struct {
		from, recv State
		want       State
		wantDiag   Diag
	}{
		{StateDown, StateDown, StateInit, DiagNone},
		{StateDown, StateInit, StateUp, DiagNone},
		{StateDown, StateUp, StateDown, DiagNone},
		{StateDown, StateAdminDown, StateDown, DiagNone},
		{StateInit, StateDown, StateInit, DiagNone},
		{StateInit, StateInit, StateUp, DiagNone},
		{StateInit, StateUp, StateUp, DiagNone},
		{StateInit, StateAdminDown, StateDown, DiagNeighborSignaledDown},
		{StateUp, StateDown, StateDown, DiagNeighborSignaledDown},
		{StateUp, StateInit, StateUp, DiagNone},
		{StateUp, StateUp, StateUp, DiagNone},
		{StateUp, StateAdminDown, StateDown, DiagNeighborSignaledDown},
		{StateAdminDown, StateDown, StateAdminDown, DiagAdministrativelyDown},
		{StateAdminDown, StateUp, StateAdminDown, DiagAdministrativelyDown},
	}
	for _, tc := range tests {
		t.Run(tc.from.String()+"+"+tc.recv.String(), func(t *testing.T) {
			s := newSession(fastProfile(), 5, t0, noJitter)
			s.state = tc.from
			if tc.from == StateAdminDown {
				s.diag = DiagAdministrativelyDown
			}
			yours := uint32(5)
			if tc.recv == StateDown || tc.recv == StateAdminDown {
				yours = 0
			}
			st := s.receive(peerPacket(tc.recv, yours), t0)
			if s.state != tc.want || s.diag != tc.wantDiag {
				t.Fatalf("state %v diag %q, want %v %q", s.state, s.diag, tc.want, tc.wantDiag)
			}
			if st.changed != (tc.from != tc.want) {
				t.Errorf("changed = %v", st.changed)
			}
			if st.changed && len(st.send) == 0 {
				t.Error("state change sent nothing to the peer")
			}
			if s.remoteDiscr != 77 {
				t.Errorf("remote discriminator %d, want 77", s.remoteDiscr)
			}
		})
	}
}

func TestSessionSlowStartAndPoll(t *testing.T) {
	s := newSession(fastProfile(), 5, t0, noJitter)
	first := s.tick(t0)
	if len(first.send) != 1 || first.send[0].DesiredMinTxInterval != 1000000 || first.send[0].State != StateDown {
		t.Fatalf("first packet %+v, want Down with 1 s desired TX (slow start)", first.send)
	}
	if s.txInterval() != time.Second {
		t.Fatalf("tx interval while Down = %v, want 1s", s.txInterval())
	}

	now := t0.Add(10 * time.Millisecond)
	s.receive(peerPacket(StateDown, 0), now) // → Init
	st := s.receive(peerPacket(StateUp, 5), now)
	if s.state != StateUp || !st.changed {
		t.Fatalf("state %v, want Up", s.state)
	}
	// Going Up lowers desired TX to 300 ms: that is a Poll Sequence, and
	// the faster rate applies at once (a decrease is always safe).
	if !s.polling || s.effTx != 300000 || s.advTx != 300000 {
		t.Fatalf("after Up: polling %v effTx %d advTx %d, want poll, 300000, 300000", s.polling, s.effTx, s.advTx)
	}
	if last := st.send[len(st.send)-1]; !last.Poll || last.DesiredMinTxInterval != 300000 {
		t.Fatalf("Up announcement %+v, want Poll with 300 ms", last)
	}
	// Periodic packets keep the P bit until the Final arrives.
	p := s.tick(s.nextTx)
	if len(p.send) != 1 || !p.send[0].Poll {
		t.Fatalf("periodic packet during poll = %+v, want P set", p.send)
	}
	fin := peerPacket(StateUp, 5)
	fin.Final = true
	s.receive(fin, s.nextTx)
	if s.polling || s.pollsDone != 1 {
		t.Fatalf("Final did not end the poll: polling %v done %d", s.polling, s.pollsDone)
	}

	// Slower TX and faster RX while Up: the old, safer values stay in
	// force until the Final.
	prof := fastProfile()
	prof.TransmitInterval = 500 * time.Millisecond
	prof.ReceiveInterval = 100 * time.Millisecond
	ch := s.setProfile(prof, now)
	if len(ch.send) != 1 || !ch.send[0].Poll || ch.send[0].DesiredMinTxInterval != 500000 || ch.send[0].RequiredMinRxInterval != 100000 {
		t.Fatalf("profile change sent %+v, want a Poll advertising 500 ms / 100 ms", ch.send)
	}
	if s.effTx != 300000 || s.effRx != 300000 {
		t.Fatalf("during poll effTx %d effRx %d, want the old 300000 for both", s.effTx, s.effRx)
	}
	s.receive(fin, now)
	if s.effTx != 500000 || s.effRx != 100000 || s.polling {
		t.Fatalf("after Final effTx %d effRx %d polling %v, want 500000 100000 false", s.effTx, s.effRx, s.polling)
	}
	// Detect time uses our RX against the peer's TX (300 ms) × its multiplier.
	if got := s.detectTime(); got != 900*time.Millisecond {
		t.Fatalf("detect time %v, want 900ms", got)
	}
}

func TestSessionAnswersPollWithFinal(t *testing.T) {
	s := newSession(fastProfile(), 5, t0, noJitter)
	s.receive(peerPacket(StateDown, 0), t0)
	s.receive(peerPacket(StateUp, 5), t0)
	poll := peerPacket(StateUp, 5)
	poll.Poll = true
	st := s.receive(poll, t0)
	if len(st.send) == 0 || !st.send[0].Final || st.send[0].Poll {
		t.Fatalf("reply to Poll = %+v, want F set and P clear first", st.send)
	}
}

func TestSessionDetectionTimeout(t *testing.T) {
	s := newSession(fastProfile(), 5, t0, noJitter)
	s.receive(peerPacket(StateDown, 0), t0)
	s.receive(peerPacket(StateUp, 5), t0)
	det := s.detectTime()
	if det != 900*time.Millisecond {
		t.Fatalf("detect time %v, want 3 × max(300ms, 300ms)", det)
	}
	if got := s.deadline(); got.After(t0.Add(det)) {
		t.Fatalf("deadline %v is after detection time %v", got, t0.Add(det))
	}
	if st := s.tick(t0.Add(det - time.Millisecond)); st.changed {
		t.Fatal("went down before the detection time")
	}
	st := s.tick(t0.Add(det))
	if !st.changed || s.state != StateDown || s.diag != DiagControlDetectExpired {
		t.Fatalf("after detection time: %v %q, want Down, control detection time expired", s.state, s.diag)
	}
	if s.remoteDiscr != 0 {
		t.Error("remote discriminator kept after timeout")
	}
	if s.advTx != 1000000 {
		t.Errorf("desired TX after Down = %d, want slow start 1000000", s.advTx)
	}
}

func TestSessionPassive(t *testing.T) {
	p := fastProfile()
	p.Passive = true
	s := newSession(p, 5, t0, noJitter)
	if st := s.tick(t0.Add(5 * time.Second)); len(st.send) != 0 {
		t.Fatalf("passive session sent %+v before hearing the peer", st.send)
	}
	if !s.deadline().IsZero() {
		t.Fatalf("passive idle session has a deadline %v; it should sleep", s.deadline())
	}
	st := s.receive(peerPacket(StateDown, 0), t0)
	if len(st.send) != 1 || st.send[0].State != StateInit || st.send[0].YourDiscriminator != 77 {
		t.Fatalf("passive reply %+v, want Init to discriminator 77", st.send)
	}
}

func TestSessionRemoteZeroRxStopsPeriodic(t *testing.T) {
	s := newSession(fastProfile(), 5, t0, noJitter)
	p := peerPacket(StateDown, 0)
	p.RequiredMinRxInterval = 0
	s.receive(p, t0)
	s.schedule(t0)
	if !s.nextTx.IsZero() {
		t.Fatal("periodic transmission scheduled although the peer asked for none")
	}
}

func TestSessionAdminDown(t *testing.T) {
	s := newSession(fastProfile(), 5, t0, noJitter)
	s.receive(peerPacket(StateDown, 0), t0)
	s.receive(peerPacket(StateUp, 5), t0)
	st := s.adminDown(t0)
	if !st.changed || len(st.send) != 1 || st.send[0].State != StateAdminDown || st.send[0].Diag != DiagAdministrativelyDown {
		t.Fatalf("adminDown sent %+v", st.send)
	}
	// Packets from the peer no longer move the state, and nothing times out.
	s.receive(peerPacket(StateUp, 5), t0)
	if s.state != StateAdminDown {
		t.Fatalf("state %v after a packet in AdminDown", s.state)
	}
	if st := s.tick(t0.Add(time.Minute)); st.changed {
		t.Fatal("AdminDown session changed state on a timer")
	}
}

func TestJitterRange(t *testing.T) {
	for _, tc := range []struct {
		mult     uint8
		r        float64
		min, max time.Duration
	}{
		{3, 0, 750 * time.Millisecond, 750 * time.Millisecond},
		{3, 0.9999, 999 * time.Millisecond, time.Second},
		{1, 0.9999, 899 * time.Millisecond, 900 * time.Millisecond},
	} {
		p := fastProfile()
		p.DetectMultiplier = tc.mult
		s := newSession(p, 5, t0, func() float64 { return tc.r })
		s.schedule(t0) // Down: 1 s slow start
		if d := s.nextTx.Sub(t0); d < tc.min || d > tc.max {
			t.Errorf("mult %d r %v: interval %v, want %v..%v", tc.mult, tc.r, d, tc.min, tc.max)
		}
	}
}

// FuzzSession drives a session with arbitrary valid packets and clock
// steps: it must never panic, never send a malformed packet, never spin
// (a deadline in the past after tick) and keep P and F apart.
func FuzzSession(f *testing.F) {
	f.Add([]byte{1, 0, 2, 3, 1, 3, 0xff, 0x10})
	f.Fuzz(func(t *testing.T, in []byte) {
		s := newSession(fastProfile(), 5, t0, noJitter)
		now := t0
		for i := 0; i+1 < len(in) && i < 400; i += 2 {
			op, arg := in[i], in[i+1]
			var st step
			switch op % 5 {
			case 0, 1:
				p := Packet{State: State(arg & 3), Poll: arg&4 != 0, DetectMult: 1 + arg>>4,
					MyDiscriminator: 9, DesiredMinTxInterval: uint32(arg)*1000 + 1, RequiredMinRxInterval: uint32(arg>>3) * 10000}
				if arg&8 != 0 && !p.Poll {
					p.Final = true
				}
				if p.State == StateUp || p.State == StateInit || arg&0x40 != 0 {
					p.YourDiscriminator = 5
				}
				st = s.receive(p, now)
			case 2:
				now = now.Add(time.Duration(arg) * 10 * time.Millisecond)
				st = s.tick(now)
			case 3:
				pr := fastProfile()
				pr.TransmitInterval = time.Duration(10+int(arg)) * time.Millisecond
				st = s.setProfile(pr, now)
			case 4:
				if arg == 0 {
					st = s.adminDown(now)
				}
			}
			for _, p := range st.send {
				if _, err := Unmarshal(p.Marshal(nil)); err != nil {
					t.Fatalf("sent a packet the RFC says to discard: %+v: %v", p, err)
				}
			}
			s.tick(now)
			if d := s.deadline(); !d.IsZero() && !d.After(now) {
				t.Fatalf("deadline %v not after now %v after tick: would spin", d, now)
			}
		}
	})
}

// TestSessionFollowsShorterInterval: the peer comes Up in slow start (1 s
// RequiredMinRx) and then lowers it to 300 ms in a Poll, as FRR's bfdd
// does. The next periodic packet must follow the new interval, not the
// slow one still scheduled, or the peer's 900 ms detection time runs out.
func TestSessionFollowsShorterInterval(t *testing.T) {
	slow := func(st State) Packet {
		p := peerPacket(st, 5)
		p.DesiredMinTxInterval, p.RequiredMinRxInterval = 1000000, 1000000
		return p
	}
	s := newSession(fastProfile(), 5, t0, noJitter)
	s.receive(slow(StateDown), t0)
	s.receive(slow(StateUp), t0) // Up; periodic at max(300 ms, peer's 1 s)
	if got := s.nextTx.Sub(t0); got < 900*time.Millisecond {
		t.Fatalf("next packet in %v while the peer asks for 1 s, want about 1s", got)
	}
	now := t0.Add(50 * time.Millisecond)
	poll := peerPacket(StateUp, 5) // RequiredMinRx 300 ms
	poll.Poll = true
	st := s.receive(poll, now)
	if len(st.send) == 0 || !st.send[0].Final {
		t.Fatalf("reply %+v, want a Final", st.send)
	}
	if got := s.nextTx.Sub(now); got > 300*time.Millisecond {
		t.Fatalf("after the peer lowered RequiredMinRx to 300 ms the next packet is %v away, want <= 300ms", got)
	}
}
