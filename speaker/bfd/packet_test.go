package bfd

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

// wire builds a packet from hex, ignoring spaces.
func wire(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(string(bytes.ReplaceAll([]byte(s), []byte(" "), nil)))
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// A valid Up packet: version 1, diag 0, state Up (0xc0), mult 3, length 24,
// discriminators 1 and 2, 300 ms TX and RX, echo 0.
const upHex = "20 c0 03 18 00000001 00000002 000493e0 000493e0 00000000"

func TestUnmarshalValid(t *testing.T) {
	tests := []struct {
		name string
		hex  string
		want Packet
	}{
		{"up", upHex, Packet{State: StateUp, DetectMult: 3, MyDiscriminator: 1, YourDiscriminator: 2,
			DesiredMinTxInterval: 300000, RequiredMinRxInterval: 300000}},
		{"down without your discriminator", "21 40 05 18 0000abcd 00000000 000f4240 00000000 00000032",
			Packet{Diag: DiagControlDetectExpired, State: StateDown, DetectMult: 5, MyDiscriminator: 0xabcd,
				DesiredMinTxInterval: 1000000, RequiredMinEchoRxInterval: 50}},
		{"admin down without your discriminator", "27 00 03 18 00000009 00000000 00000001 00000001 00000000",
			Packet{Diag: DiagAdministrativelyDown, State: StateAdminDown, DetectMult: 3, MyDiscriminator: 9,
				DesiredMinTxInterval: 1, RequiredMinRxInterval: 1}},
		{"poll with C and D bits", "20 ea ff 18 ffffffff 00000001 00000001 00000000 00000000",
			Packet{State: StateUp, Poll: true, ControlPlaneIndependent: true, Demand: true, DetectMult: 255,
				MyDiscriminator: 0xffffffff, YourDiscriminator: 1, DesiredMinTxInterval: 1}},
		{"final, init", "20 90 02 18 00000003 00000004 00000064 00000064 00000000",
			Packet{State: StateInit, Final: true, DetectMult: 2, MyDiscriminator: 3, YourDiscriminator: 4,
				DesiredMinTxInterval: 100, RequiredMinRxInterval: 100}},
		{"reserved diag carried", "3f c0 03 18 00000001 00000002 00000001 00000001 00000000",
			Packet{Diag: 31, State: StateUp, DetectMult: 3, MyDiscriminator: 1, YourDiscriminator: 2,
				DesiredMinTxInterval: 1, RequiredMinRxInterval: 1}},
		{"trailing bytes after length ignored", upHex + " deadbeef",
			Packet{State: StateUp, DetectMult: 3, MyDiscriminator: 1, YourDiscriminator: 2,
				DesiredMinTxInterval: 300000, RequiredMinRxInterval: 300000}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Unmarshal(wire(t, tc.hex))
			if err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if got != tc.want {
				t.Fatalf("Unmarshal = %+v\nwant       %+v", got, tc.want)
			}
			// Round trip: encoding gives the first 24 bytes back.
			if enc := got.Marshal(nil); !bytes.Equal(enc, wire(t, tc.hex)[:24]) {
				t.Fatalf("Marshal = %x, want %x", enc, wire(t, tc.hex)[:24])
			}
		})
	}
}

func TestUnmarshalRefuses(t *testing.T) {
	tests := []struct {
		name string
		hex  string
		want error
	}{
		{"empty", "", ErrShort},
		{"23 bytes", upHex[:len(upHex)-2], ErrShort},
		{"version 0", "00" + upHex[2:], ErrVersion},
		{"version 2", "40" + upHex[2:], ErrVersion},
		{"version 7", "e0" + upHex[2:], ErrVersion},
		{"length 0", "20 c0 03 00" + upHex[11:], ErrLength},
		{"length 23", "20 c0 03 17" + upHex[11:], ErrLength},
		{"length 25 beyond payload", "20 c0 03 19" + upHex[11:], ErrLength},
		{"length 25 without auth", "20 c0 03 19" + upHex[11:] + " 00", ErrLength},
		{"length 255", "20 c0 03 ff" + upHex[11:], ErrLength},
		{"auth bit, length 24", "20 c4 03 18" + upHex[11:], ErrLength},
		{"auth bit, length beyond payload", "20 c4 03 1c" + upHex[11:] + " 0102", ErrLength},
		{"auth bit, well framed", "20 c4 03 1a" + upHex[11:] + " 0102", ErrAuth},
		{"multipoint", "20 c1" + upHex[5:], ErrMultipoint},
		{"poll and final", "20 f0" + upHex[5:], ErrPollFinal},
		{"detect mult 0", "20 c0 00" + upHex[8:], ErrDetectMult},
		{"my discriminator 0", "20 c0 03 18 00000000 00000002 000493e0 000493e0 00000000", ErrMyDiscriminator},
		{"your discriminator 0 in Up", "20 c0 03 18 00000001 00000000 000493e0 000493e0 00000000", ErrYourDiscrimState},
		{"your discriminator 0 in Init", "20 80 03 18 00000001 00000000 000493e0 000493e0 00000000", ErrYourDiscrimState},
		{"desired min tx 0", "20 c0 03 18 00000001 00000002 00000000 000493e0 00000000", ErrDesiredMinTx},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Unmarshal(wire(t, tc.hex))
			if !errors.Is(err, tc.want) {
				t.Fatalf("Unmarshal = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestMarshalMasksOutOfRange(t *testing.T) {
	// Out-of-range values must not spill into neighbouring bit fields.
	p := Packet{Diag: 0xff, State: 0xff, DetectMult: 1, MyDiscriminator: 1, DesiredMinTxInterval: 1}
	b := p.Marshal([]byte{0xaa})
	if len(b) != 25 || b[0] != 0xaa {
		t.Fatalf("Marshal did not append: %x", b)
	}
	if b[1]>>5 != 1 || b[2]&0x3f != 0 {
		t.Fatalf("version or flags clobbered: %x", b[1:3])
	}
}

func FuzzUnmarshal(f *testing.F) {
	for _, s := range []string{upHex, "21 40 05 18 0000abcd 00000000 000f4240 00000000 00000032",
		"20 c4 03 1a" + upHex[11:] + " 0102", ""} {
		f.Add(wire(f, s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Unmarshal(b)
		if err != nil {
			return
		}
		// Whatever was accepted obeys the RFC 5880 6.8.6 rules...
		if len(b) < 24 || b[0]>>5 != 1 || b[3] != 24 || p.DetectMult == 0 || p.MyDiscriminator == 0 ||
			b[1]&(flagAuth|flagMultipoint) != 0 || (p.Poll && p.Final) || p.DesiredMinTxInterval == 0 ||
			(p.YourDiscriminator == 0 && (p.State == StateUp || p.State == StateInit)) {
			t.Fatalf("accepted a packet that breaks a discard rule: %x -> %+v", b, p)
		}
		// ...and encodes back to the same 24 bytes.
		if enc := p.Marshal(nil); !bytes.Equal(enc, b[:24]) {
			t.Fatalf("round trip: %x -> %+v -> %x", b[:24], p, enc)
		}
	})
}
