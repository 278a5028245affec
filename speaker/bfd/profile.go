package bfd

import (
	"fmt"
	"time"

	"github.com/zerohop/zerohop/config/v1alpha1"
)

// Defaults, the same as the CRD's; used when a field is unset (for example
// a BFDProfile written before the defaults existed, or a test).
const (
	DefaultReceiveInterval  = 300 * time.Millisecond
	DefaultTransmitInterval = 300 * time.Millisecond
	DefaultDetectMultiplier = 3
	DefaultMinimumTTL       = 254

	// slowTxInterval is the RFC 5880 section 6.8.3 floor on the desired
	// transmit interval while the session is not Up.
	slowTxInterval = time.Second

	minInterval = 10 * time.Millisecond
	maxInterval = 60 * time.Second
)

// Profile is the timer set of one session, decoded from a BFDProfile.
type Profile struct {
	// ReceiveInterval is bfd.RequiredMinRxInterval: the fastest rate at
	// which this end accepts packets.
	ReceiveInterval time.Duration
	// TransmitInterval is bfd.DesiredMinTxInterval once the session is Up.
	TransmitInterval time.Duration
	// DetectMultiplier is bfd.DetectMult.
	DetectMultiplier uint8
	// Passive sessions send nothing until the peer has spoken.
	Passive bool
	// MinimumTTL is the lowest IP TTL / hop limit accepted on receive.
	MinimumTTL uint8
}

// DefaultProfile is the profile of a BFDProfile with no fields set.
func DefaultProfile() Profile {
	return Profile{
		ReceiveInterval:  DefaultReceiveInterval,
		TransmitInterval: DefaultTransmitInterval,
		DetectMultiplier: DefaultDetectMultiplier,
		MinimumTTL:       DefaultMinimumTTL,
	}
}

// ProfileFrom converts a BFDProfile spec, filling defaults. It refuses
// what the CRD schema refuses, so a profile that slipped past the API
// server (an older CRD, a unit test) still cannot run with bad timers.
func ProfileFrom(spec *v1alpha1.BFDProfileSpec) (Profile, error) {
	p := DefaultProfile()
	if spec == nil {
		return p, nil
	}
	if spec.EchoMode {
		return Profile{}, fmt.Errorf("bfd profile: spec.echoMode: echo mode is not supported by zerohop; remove echoMode or set it to false")
	}
	if spec.ReceiveInterval != nil {
		p.ReceiveInterval = time.Duration(*spec.ReceiveInterval) * time.Millisecond
	}
	if spec.TransmitInterval != nil {
		p.TransmitInterval = time.Duration(*spec.TransmitInterval) * time.Millisecond
	}
	if spec.DetectMultiplier != nil {
		if *spec.DetectMultiplier < 2 || *spec.DetectMultiplier > 255 {
			return Profile{}, fmt.Errorf("bfd profile: spec.detectMultiplier %d: must be 2..255", *spec.DetectMultiplier)
		}
		p.DetectMultiplier = uint8(*spec.DetectMultiplier)
	}
	if spec.MinimumTTL != nil {
		if *spec.MinimumTTL < 1 || *spec.MinimumTTL > 255 {
			return Profile{}, fmt.Errorf("bfd profile: spec.minimumTtl %d: must be 1..255", *spec.MinimumTTL)
		}
		p.MinimumTTL = uint8(*spec.MinimumTTL)
	}
	p.Passive = spec.PassiveMode
	if err := p.Validate(); err != nil {
		return Profile{}, err
	}
	return p, nil
}

// Validate checks the ranges the CRD enforces.
func (p Profile) Validate() error {
	if p.ReceiveInterval < minInterval || p.ReceiveInterval > maxInterval {
		return fmt.Errorf("bfd profile: receiveInterval %v: must be 10ms..60s", p.ReceiveInterval)
	}
	if p.TransmitInterval < minInterval || p.TransmitInterval > maxInterval {
		return fmt.Errorf("bfd profile: transmitInterval %v: must be 10ms..60s", p.TransmitInterval)
	}
	if p.DetectMultiplier < 2 {
		return fmt.Errorf("bfd profile: detectMultiplier %d: must be 2..255", p.DetectMultiplier)
	}
	if p.MinimumTTL < 1 {
		return fmt.Errorf("bfd profile: minimumTtl %d: must be 1..255", p.MinimumTTL)
	}
	return nil
}

func micros(d time.Duration) uint32 { return uint32(d / time.Microsecond) }

func fromMicros(us uint32) time.Duration { return time.Duration(us) * time.Microsecond }

// logValues are the profile's fields as log key/value pairs.
func (p Profile) logValues() []any {
	return []any{"receiveInterval", p.ReceiveInterval.String(), "transmitInterval", p.TransmitInterval.String(),
		"detectMultiplier", p.DetectMultiplier, "passive", p.Passive, "minimumTTL", p.MinimumTTL}
}
