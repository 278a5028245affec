package bfd

import (
	"strings"
	"testing"
	"time"

	"github.com/zerohop/zerohop/config/v1alpha1"
)

func u32(v uint32) *uint32 { return &v }

func TestProfileFrom(t *testing.T) {
	tests := []struct {
		name    string
		spec    *v1alpha1.BFDProfileSpec
		want    Profile
		wantErr string
	}{
		{"nil is defaults", nil, DefaultProfile(), ""},
		{"empty is defaults", &v1alpha1.BFDProfileSpec{}, Profile{ReceiveInterval: 300 * time.Millisecond, TransmitInterval: 300 * time.Millisecond, DetectMultiplier: 3, MinimumTTL: 254}, ""},
		{"all set", &v1alpha1.BFDProfileSpec{ReceiveInterval: u32(10), TransmitInterval: u32(60000), DetectMultiplier: u32(255), PassiveMode: true, MinimumTTL: u32(255)},
			Profile{ReceiveInterval: 10 * time.Millisecond, TransmitInterval: time.Minute, DetectMultiplier: 255, Passive: true, MinimumTTL: 255}, ""},
		{"echo refused", &v1alpha1.BFDProfileSpec{EchoMode: true}, Profile{}, "spec.echoMode: echo mode is not supported"},
		{"rx too fast", &v1alpha1.BFDProfileSpec{ReceiveInterval: u32(9)}, Profile{}, "receiveInterval"},
		{"tx too slow", &v1alpha1.BFDProfileSpec{TransmitInterval: u32(60001)}, Profile{}, "transmitInterval"},
		{"multiplier 1", &v1alpha1.BFDProfileSpec{DetectMultiplier: u32(1)}, Profile{}, "spec.detectMultiplier"},
		{"multiplier 256", &v1alpha1.BFDProfileSpec{DetectMultiplier: u32(256)}, Profile{}, "spec.detectMultiplier"},
		{"ttl 0", &v1alpha1.BFDProfileSpec{MinimumTTL: u32(0)}, Profile{}, "spec.minimumTtl"},
		{"ttl 256", &v1alpha1.BFDProfileSpec{MinimumTTL: u32(256)}, Profile{}, "spec.minimumTtl"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ProfileFrom(tc.spec)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ProfileFrom = %+v, %v; want error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ProfileFrom = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}
