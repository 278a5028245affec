package bfd

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// State is a BFD session state, with the RFC 5880 wire encoding.
type State uint8

// Session states (RFC 5880 section 4.1, "Sta").
const (
	StateAdminDown State = 0
	StateDown      State = 1
	StateInit      State = 2
	StateUp        State = 3
)

func (s State) String() string {
	switch s {
	case StateAdminDown:
		return "AdminDown"
	case StateDown:
		return "Down"
	case StateInit:
		return "Init"
	case StateUp:
		return "Up"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Diag is a BFD diagnostic code: why the sender's session last changed
// state (RFC 5880 section 4.1, "Diag").
type Diag uint8

// Diagnostic codes. Values 9–31 are reserved; they are carried, not refused.
const (
	DiagNone                  Diag = 0
	DiagControlDetectExpired  Diag = 1
	DiagEchoFailed            Diag = 2
	DiagNeighborSignaledDown  Diag = 3
	DiagForwardingPlaneReset  Diag = 4
	DiagPathDown              Diag = 5
	DiagConcatenatedPathDown  Diag = 6
	DiagAdministrativelyDown  Diag = 7
	DiagReverseConcatPathDown Diag = 8
	maxDiag                   Diag = 31
	controlPacketLen               = 24
	authHeaderMin                  = 2
	protocolVersion                = 1
	flagPoll                       = 0x20
	flagFinal                      = 0x10
	flagCPI                        = 0x08
	flagAuth                       = 0x04
	flagDemand                     = 0x02
	flagMultipoint                 = 0x01
)

var diagNames = [...]string{
	"none", "control detection time expired", "echo function failed",
	"neighbor signaled session down", "forwarding plane reset", "path down",
	"concatenated path down", "administratively down",
	"reverse concatenated path down",
}

func (d Diag) String() string {
	if int(d) < len(diagNames) {
		return diagNames[d]
	}
	return fmt.Sprintf("diag(%d)", uint8(d))
}

// Packet is a BFD Control packet without authentication. Intervals are
// in microseconds, as on the wire.
type Packet struct {
	Diag  Diag
	State State
	Poll  bool
	Final bool
	// ControlPlaneIndependent is the C bit. zerohop runs in the control
	// plane, so it always sends false; received values are only recorded.
	ControlPlaneIndependent bool
	// Demand is the D bit. zerohop never asks for demand mode.
	Demand                    bool
	DetectMult                uint8
	MyDiscriminator           uint32
	YourDiscriminator         uint32
	DesiredMinTxInterval      uint32
	RequiredMinRxInterval     uint32
	RequiredMinEchoRxInterval uint32
}

// Errors from Unmarshal. Each names the RFC 5880 section 6.8.6 rule that
// the packet broke; all of them mean "discard".
var (
	ErrShort            = errors.New("bfd: packet shorter than 24 bytes")
	ErrVersion          = errors.New("bfd: version is not 1")
	ErrLength           = errors.New("bfd: length field does not match packet")
	ErrDetectMult       = errors.New("bfd: detect multiplier is zero")
	ErrMultipoint       = errors.New("bfd: multipoint bit set")
	ErrMyDiscriminator  = errors.New("bfd: my discriminator is zero")
	ErrYourDiscrimState = errors.New("bfd: your discriminator is zero in state Init or Up")
	ErrPollFinal        = errors.New("bfd: poll and final bits both set")
	ErrAuth             = errors.New("bfd: authentication present but not supported")
	ErrDesiredMinTx     = errors.New("bfd: desired min TX interval is zero (reserved)")
)

// Marshal appends the 24-byte wire form of p to b.
func (p *Packet) Marshal(b []byte) []byte {
	var w [controlPacketLen]byte
	w[0] = protocolVersion<<5 | byte(p.Diag&maxDiag)
	flags := byte(p.State&3) << 6
	if p.Poll {
		flags |= flagPoll
	}
	if p.Final {
		flags |= flagFinal
	}
	if p.ControlPlaneIndependent {
		flags |= flagCPI
	}
	if p.Demand {
		flags |= flagDemand
	}
	w[1] = flags
	w[2] = p.DetectMult
	w[3] = controlPacketLen
	binary.BigEndian.PutUint32(w[4:], p.MyDiscriminator)
	binary.BigEndian.PutUint32(w[8:], p.YourDiscriminator)
	binary.BigEndian.PutUint32(w[12:], p.DesiredMinTxInterval)
	binary.BigEndian.PutUint32(w[16:], p.RequiredMinRxInterval)
	binary.BigEndian.PutUint32(w[20:], p.RequiredMinEchoRxInterval)
	return append(b, w[:]...)
}

// Unmarshal decodes a BFD Control packet from a UDP payload and applies
// every check of RFC 5880 section 6.8.6 that needs no session state.
// Authenticated packets are refused: zerohop implements no
// authentication, and the RFC says a packet with the A bit set must then
// be discarded. Bytes after Length are ignored, as the RFC allows.
func Unmarshal(b []byte) (Packet, error) {
	var p Packet
	if len(b) < controlPacketLen {
		return p, ErrShort
	}
	if b[0]>>5 != protocolVersion {
		return p, ErrVersion
	}
	flags := b[1]
	length := int(b[3])
	if flags&flagAuth != 0 {
		// Still check the framing so the error says what is wrong first.
		if length < controlPacketLen+authHeaderMin || length > len(b) {
			return p, ErrLength
		}
		return p, ErrAuth
	}
	if length != controlPacketLen {
		// Without authentication the packet is exactly 24 bytes; anything
		// else is either truncated or carries something we cannot read.
		return p, ErrLength
	}
	p.Diag = Diag(b[0]) & maxDiag
	p.State = State(flags >> 6)
	p.Poll = flags&flagPoll != 0
	p.Final = flags&flagFinal != 0
	p.ControlPlaneIndependent = flags&flagCPI != 0
	p.Demand = flags&flagDemand != 0
	if flags&flagMultipoint != 0 {
		return p, ErrMultipoint
	}
	if p.Poll && p.Final {
		return p, ErrPollFinal
	}
	p.DetectMult = b[2]
	if p.DetectMult == 0 {
		return p, ErrDetectMult
	}
	p.MyDiscriminator = binary.BigEndian.Uint32(b[4:])
	p.YourDiscriminator = binary.BigEndian.Uint32(b[8:])
	if p.MyDiscriminator == 0 {
		return p, ErrMyDiscriminator
	}
	if p.YourDiscriminator == 0 && (p.State == StateInit || p.State == StateUp) {
		return p, ErrYourDiscrimState
	}
	p.DesiredMinTxInterval = binary.BigEndian.Uint32(b[12:])
	if p.DesiredMinTxInterval == 0 {
		return p, ErrDesiredMinTx
	}
	p.RequiredMinRxInterval = binary.BigEndian.Uint32(b[16:])
	p.RequiredMinEchoRxInterval = binary.BigEndian.Uint32(b[20:])
	return p, nil
}
