package bpf

import (
	"os"
	"strings"
	"testing"
)

// TestLoadRefusesOtherLayout: pins of another map layout version are
// refused, with the way out in the error, and left as they were.
func TestLoadRefusesOtherLayout(t *testing.T) {
	requireRoot(t)
	opts := Options{PinRoot: testPinRoot(t), MaglevSize: testMaglevM, MaxServices: 64, MaxBackends: 256, MaxFlows: 4096}
	d, err := Load(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = d.Remove()
		_ = os.RemoveAll(opts.PinRoot)
	}()
	var cfg zhDpConfig
	if err := d.objs.Config.Lookup(uint32(0), &cfg); err != nil {
		t.Fatal(err)
	}
	old := cfg
	old.Version = configVersion - 1
	if err := d.objs.Config.Put(uint32(0), old); err != nil {
		t.Fatal(err)
	}
	d2, err := Load(opts)
	if err == nil {
		_ = d2.Close()
		t.Fatal("Load accepted pins of another layout version")
	}
	if !strings.Contains(err.Error(), "zerohop speaker --cleanup") {
		t.Errorf("error %q does not tell how to clean up", err)
	}
	var now zhDpConfig
	if err := d.objs.Config.Lookup(uint32(0), &now); err != nil || now != old {
		t.Errorf("config after refusal %+v (%v), want %+v untouched", now, err, old)
	}
}
