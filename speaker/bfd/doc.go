// Package bfd is zerohop's Bidirectional Forwarding Detection: RFC 5880
// asynchronous mode over RFC 5881 single-hop UDP, IPv4 and IPv6. GoBGP v3
// has no BFD, so the speaker runs this next to it and resets a BGP session
// as soon as its BFD session fails.
//
// What is implemented: the Down/Init/Up/AdminDown state machine,
// discriminators, diagnostic codes, timer negotiation (desired min TX,
// required min RX, detect multiplier) with slow start at 1 s until Up,
// Poll/Final sequences whenever the timers change while Up, 0–25% transmit
// jitter, passive mode, TTL 255 on send and a minimum TTL on receive,
// source ports from 49152–65535. Left out: authentication (packets with
// the A bit are discarded, as RFC 5880 requires of an end without it), the
// echo function (a profile asking for it is refused), demand mode and
// multihop (RFC 5883).
//
// Use:
//
//	m, err := bfd.NewManager(bfd.ManagerOptions{Registerer: metrics.Registry})
//	changes := m.Subscribe()
//	prof, err := bfd.ProfileFrom(&bfdProfile.Spec) // refuses echoMode
//	err = m.AddPeer(peerIP, sourceIP /* or netip.Addr{} */, prof) // add or update
//	for c := range changes {
//		if c.Failed() { /* reset the BGP session to c.Peer */ }
//	}
//	m.RemovePeer(peerIP)   // sends AdminDown, stops the session
//	m.Shutdown(ctx)        // node going away: AdminDown to every peer, then close
//
// Packet encoding (Packet.Marshal, Unmarshal) is pure; the per-session
// state machine does no I/O and reads no clock, so both are table-tested
// and fuzzed. The Manager owns the sockets: one receive socket per
// address family on port 3784, one connected transmit socket per peer,
// and one goroutine per peer.
package bfd
