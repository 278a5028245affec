package bpf

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// TestAttachForeignXDP: another tool's XDP program on the uplink, attached
// by bpf_link or by netlink, is not replaced unless ReplaceXDP is set.
func TestAttachForeignXDP(t *testing.T) {
	requireRoot(t)
	ns := "zh-xo-" + netnsSuffix()
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	sh(t, "ip", "netns", "add", ns)
	sh(t, "ip", "-n", ns, "link", "add", "zh-x0", "type", "veth", "peer", "name", "zh-x1")
	sh(t, "ip", "-n", ns, "link", "set", "zh-x0", "up")

	foreign, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "other_tool", Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer foreign.Close()
	dir := testPinRoot(t)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	pinned := filepath.Join(dir, "other")
	if err := foreign.Pin(pinned); err != nil {
		t.Fatal(err)
	}

	for _, how := range []string{"bpf_link", "netlink"} {
		t.Run(how, func(t *testing.T) {
			var fl link.Link
			err := inNS(ns, func() error {
				if how == "netlink" {
					// The previous case's links are released
					// asynchronously: retry while the slot is busy.
					var out []byte
					var err error
					for range 50 {
						out, err = exec.Command("ip", "link", "set", "dev", "zh-x0", "xdpgeneric", "pinned", pinned).CombinedOutput()
						if err == nil {
							return nil
						}
						time.Sleep(100 * time.Millisecond)
					}
					return fmt.Errorf("ip link set xdp: %w\n%s", err, out)
				}
				ifc, err := net.InterfaceByName("zh-x0")
				if err != nil {
					return err
				}
				fl, err = link.AttachXDP(link.XDPOptions{Program: foreign, Interface: ifc.Index})
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if fl != nil {
				defer fl.Close()
			}
			for _, replace := range []bool{false, true} {
				err := inNS(ns, func() error {
					d, err := Load(Options{PinRoot: testPinRoot(t), MaglevSize: testMaglevM, MaxServices: 8, MaxBackends: 8, MaxFlows: 1024, ReplaceXDP: replace})
					if err != nil {
						return err
					}
					defer func() { _ = d.Remove() }()
					aerr := d.Attach("zh-x0")
					ifc, err := net.InterfaceByName("zh-x0")
					if err != nil {
						return err
					}
					id, err := xdpProgID(ifc.Index)
					if err != nil {
						return err
					}
					info, err := d.objs.ZhXdp.Info()
					if err != nil {
						return err
					}
					ours, _ := info.ID()
					if !replace {
						if aerr == nil || !strings.Contains(aerr.Error(), "refusing to replace") || !strings.Contains(aerr.Error(), "other_tool") {
							t.Errorf("attach over another tool's program: %v, want a refusal naming it", aerr)
						}
						if id == uint32(ours) || id == 0 {
							t.Errorf("interface runs program %d after a refused attach", id)
						}
						return nil
					}
					if aerr != nil {
						t.Errorf("attach with ReplaceXDP: %v", aerr)
					}
					if id != uint32(ours) {
						t.Errorf("interface runs program %d, want ours (%d)", id, ours)
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
