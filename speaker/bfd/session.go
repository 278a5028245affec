package bfd

import (
	"time"
)

// session holds the RFC 5880 state variables of one peer. It does no I/O
// and reads no clock: the manager feeds it received packets and the time,
// and it answers with the packets to send and whether the state changed.
// That keeps the state machine a table-testable function of its inputs.
type session struct {
	prof Profile

	localDiscr, remoteDiscr uint32
	state, remoteState      State
	diag, remoteDiag        Diag
	remoteMult              uint8
	remoteMinRx             uint32 // µs, bfd.RemoteMinRxInterval
	remoteDesiredTx         uint32 // µs, from the last packet received

	// adv* are what this end advertises; eff* are what its timers use.
	// They differ only during a Poll Sequence: a slower transmit rate and
	// a faster receive requirement wait for the peer's Final (6.8.3).
	advTx, advRx uint32
	effTx, effRx uint32
	polling      bool
	pollsDone    uint64

	lastRx time.Time // zero: detection timer not armed
	nextTx time.Time // zero: periodic transmission stopped
	jitter func() float64
}

// step is what one input to a session produced.
type step struct {
	send    []Packet
	changed bool
	old     State
}

func newSession(prof Profile, localDiscr uint32, now time.Time, jitter func() float64) *session {
	s := &session{
		prof:        prof,
		localDiscr:  localDiscr,
		state:       StateDown,
		remoteState: StateDown,
		remoteMinRx: 1, // RFC 5880 6.8.1: initialized to 1 µs
		jitter:      jitter,
	}
	s.advTx, s.advRx = s.targetTimers()
	s.effTx, s.effRx = s.advTx, s.advRx
	s.nextTx = now // first packet as soon as the manager runs us
	return s
}

// targetTimers is what this end should advertise in its current state:
// slow start holds the transmit interval at 1 s or more until Up.
func (s *session) targetTimers() (tx, rx uint32) {
	tx = micros(s.prof.TransmitInterval)
	if s.state != StateUp && s.prof.TransmitInterval < slowTxInterval {
		tx = micros(slowTxInterval)
	}
	return tx, micros(s.prof.ReceiveInterval)
}

// retime moves the advertised timers to the target for the current state.
// While Up a change starts a Poll Sequence and, until its Final, the
// timers use the safer of old and new values (RFC 5880 6.8.3).
func (s *session) retime() (startedPoll bool) {
	tx, rx := s.targetTimers()
	if tx == s.advTx && rx == s.advRx {
		return false
	}
	s.advTx, s.advRx = tx, rx
	if s.state != StateUp {
		s.effTx, s.effRx = tx, rx
		s.polling = false
		return false
	}
	s.effTx = min(s.effTx, tx)
	s.effRx = max(s.effRx, rx)
	s.polling = true
	return true
}

func (s *session) mayTransmit() bool {
	// 6.8.7: a passive end is silent until it knows the peer's discriminator.
	return !s.prof.Passive || s.remoteDiscr != 0
}

// txInterval is the negotiated periodic interval before jitter; zero means
// the peer asked for no packets at all.
func (s *session) txInterval() time.Duration {
	if s.remoteMinRx == 0 {
		return 0
	}
	return fromMicros(max(s.effTx, s.remoteMinRx))
}

// detectTime is how long this end waits for the peer's packets (6.8.4).
func (s *session) detectTime() time.Duration {
	return time.Duration(s.remoteMult) * fromMicros(max(s.effRx, s.remoteDesiredTx))
}

func (s *session) schedule(now time.Time) {
	iv := s.txInterval()
	if iv == 0 {
		s.nextTx = time.Time{}
		return
	}
	// 6.8.7: reduce each interval by a random 0–25% (10–25% when the
	// multiplier is 1) so that sessions do not synchronise.
	frac := 0.75 + 0.25*s.jitter()
	if s.prof.DetectMultiplier == 1 {
		frac = 0.75 + 0.15*s.jitter()
	}
	s.nextTx = now.Add(time.Duration(float64(iv) * frac))
}

func (s *session) packet(poll, final bool) Packet {
	return Packet{
		Diag:                  s.diag,
		State:                 s.state,
		Poll:                  poll,
		Final:                 final,
		DetectMult:            s.prof.DetectMultiplier,
		MyDiscriminator:       s.localDiscr,
		YourDiscriminator:     s.remoteDiscr,
		DesiredMinTxInterval:  s.advTx,
		RequiredMinRxInterval: s.advRx,
		// Echo is not implemented: zero tells the peer not to send any.
		RequiredMinEchoRxInterval: 0,
	}
}

func (s *session) setState(st State, d Diag) {
	s.state = st
	s.diag = d
	if st == StateUp {
		// The diagnostic explains the last change; a fresh Up has none.
		s.diag = DiagNone
	}
}

// receive runs the reception rules of RFC 5880 section 6.8.6 that need
// session state; Unmarshal has applied the rest.
func (s *session) receive(p Packet, now time.Time) step {
	out := step{old: s.state}
	s.remoteDiscr = p.MyDiscriminator
	s.remoteState = p.State
	s.remoteDiag = p.Diag
	s.remoteMult = p.DetectMult
	s.remoteMinRx = p.RequiredMinRxInterval
	s.remoteDesiredTx = p.DesiredMinTxInterval
	if p.Final && s.polling {
		s.polling = false
		s.pollsDone++
		s.effTx, s.effRx = s.advTx, s.advRx
	}
	if s.state == StateAdminDown {
		return out
	}
	switch {
	case p.State == StateAdminDown:
		if s.state != StateDown {
			s.setState(StateDown, DiagNeighborSignaledDown)
		}
	case s.state == StateDown:
		switch p.State {
		case StateDown:
			s.setState(StateInit, s.diag)
		case StateInit:
			s.setState(StateUp, DiagNone)
		}
	case s.state == StateInit:
		if p.State == StateInit || p.State == StateUp {
			s.setState(StateUp, DiagNone)
		}
	case s.state == StateUp:
		if p.State == StateDown {
			s.setState(StateDown, DiagNeighborSignaledDown)
		}
	}
	s.lastRx = now
	out.changed = s.state != out.old
	startedPoll := false
	if out.changed {
		startedPoll = s.retime()
	}
	if p.Poll {
		// 6.8.6: answer a Poll at once, whatever the transmit timer says.
		out.send = append(out.send, s.packet(false, true))
	}
	if out.changed || startedPoll {
		// Tell the peer now rather than a (possibly 1 s) interval later.
		if s.mayTransmit() {
			out.send = append(out.send, s.packet(s.polling, false))
		}
		s.schedule(now)
	} else if s.nextTx.IsZero() {
		// The peer may have just made periodic packets possible
		// (passive end learning a discriminator, RequiredMinRx > 0).
		s.schedule(now)
	} else if iv := s.txInterval(); iv > 0 && s.nextTx.After(now.Add(iv)) {
		// The interval just shrank (the peer lowered RequiredMinRx, often
		// in its own Poll after going Up, or our Poll ended): a packet
		// still due on the old, slow-start schedule would arrive after
		// the peer's new, shorter detection time, and the session would
		// flap (seen against FRR's bfdd right after Up).
		s.schedule(now)
	}
	return out
}

// tick fires the detection and transmit timers that are due at now.
func (s *session) tick(now time.Time) step {
	out := step{old: s.state}
	if !s.lastRx.IsZero() && s.state != StateAdminDown && !now.Before(s.lastRx.Add(s.detectTime())) {
		s.lastRx = time.Time{}
		// 6.8.1: the peer's discriminator is forgotten when it goes quiet.
		s.remoteDiscr = 0
		s.remoteState = StateDown
		s.remoteMinRx = 1
		if s.state == StateInit || s.state == StateUp {
			s.setState(StateDown, DiagControlDetectExpired)
			out.changed = true
			s.retime()
			if s.mayTransmit() {
				out.send = append(out.send, s.packet(false, false))
			}
			s.schedule(now)
		}
	}
	if !s.nextTx.IsZero() && !now.Before(s.nextTx) {
		if s.mayTransmit() {
			out.send = append(out.send, s.packet(s.polling, false))
		}
		s.schedule(now)
	}
	return out
}

// setProfile changes the timers; while Up that runs a Poll Sequence.
func (s *session) setProfile(p Profile, now time.Time) step {
	out := step{old: s.state}
	s.prof = p
	if s.retime() {
		if s.mayTransmit() {
			out.send = append(out.send, s.packet(true, false))
		}
		s.schedule(now)
	}
	return out
}

// adminDown takes the session out of service (6.8.16) and returns the
// packet that tells the peer.
func (s *session) adminDown(now time.Time) step {
	out := step{old: s.state}
	if s.state == StateAdminDown {
		return out
	}
	s.setState(StateAdminDown, DiagAdministrativelyDown)
	out.changed = true
	s.lastRx = time.Time{}
	s.retime()
	// The peer is told even by a passive end: it has been talking to us.
	if s.remoteDiscr != 0 || !s.prof.Passive {
		out.send = append(out.send, s.packet(false, false))
	}
	s.schedule(now)
	return out
}

// deadline is when tick must next run; zero means never.
func (s *session) deadline() time.Time {
	var d time.Time
	if !s.nextTx.IsZero() && s.mayTransmit() {
		d = s.nextTx
	}
	if !s.lastRx.IsZero() && s.state != StateAdminDown {
		det := s.lastRx.Add(s.detectTime())
		if d.IsZero() || det.Before(d) {
			d = det
		}
	}
	return d
}
