package bpf

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
)

// The pinning test runs the loader as separate processes: this test binary
// re-executed with ZH_BPF_HELPER set. Each helper loads, attaches (or
// re-attaches to the pinned links), configures the service and exits
// without cleaning up, as a speaker that is upgraded would.
const (
	helperEnv   = "ZH_BPF_HELPER"
	helperNSEnv = "ZH_BPF_HELPER_NETNS"
	helperPin   = "ZH_BPF_HELPER_PIN"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		if err := helperMain(); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func pinTestOptions(root string) Options {
	return Options{PinRoot: root, MaglevSize: testMaglevM, MaxServices: 64, MaxBackends: 256, MaxFlows: 4096}
}

// helperMain prints the id of the XDP program now attached to the uplink.
func helperMain() error {
	runtime.LockOSThread()
	if err := setNS(os.Getenv(helperNSEnv)); err != nil {
		return err
	}
	d, err := setupDatapath(os.Getenv(helperNSEnv), pinTestOptions(os.Getenv(helperPin)))
	if err != nil {
		return err
	}
	defer d.Close()
	info, err := d.objs.ZhXdp.Info()
	if err != nil {
		return err
	}
	id, _ := info.ID()
	fmt.Println(id)
	return nil
}

func runHelper(t *testing.T, ns, root string) uint32 {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1", helperNSEnv+"="+ns, helperPin+"="+root)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("loader process: %v", err)
	}
	id, err := strconv.ParseUint(strings.TrimSpace(string(out)), 10, 32)
	if err != nil {
		t.Fatalf("loader process printed %q", out)
	}
	return uint32(id)
}

// attachedXDP is the id of the program behind the pinned XDP link.
func attachedXDP(t *testing.T, root string) uint32 {
	t.Helper()
	l, err := link.LoadPinnedLink(root+"/link_xdp_"+labUplink, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		t.Fatal(err)
	}
	return uint32(info.Program)
}

func TestPinnedHandover(t *testing.T) {
	l := newLab(t)
	root := testPinRoot(t)
	t.Cleanup(func() { _ = os.RemoveAll(root) })

	first := runHelper(t, l.node, root)
	if got := attachedXDP(t, root); got != first {
		t.Fatalf("attached program %d, first loader loaded %d", got, first)
	}

	// A client keeps making requests (bounded in number and time) while
	// the first loader is gone and a second one takes over.
	var done, failed, stop atomic.Int64
	var firstErr atomic.Value
	clientDone := make(chan error, 1)
	go func() {
		clientDone <- inNS(l.client, func() error {
			dialer := net.Dialer{Timeout: 3 * time.Second}
			deadline := time.Now().Add(60 * time.Second)
			for i := 0; i < 5000 && stop.Load() == 0 && time.Now().Before(deadline); i++ {
				if _, err := request(dialer); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
				done.Add(1)
				time.Sleep(2 * time.Millisecond)
			}
			return nil
		})
	}()
	waitFor := func(n int64) {
		for deadline := time.Now().Add(20 * time.Second); done.Load() < n; {
			if time.Now().After(deadline) {
				t.Fatalf("client made only %d requests", done.Load())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor(50)
	before := done.Load()
	second := runHelper(t, l.node, root)
	mid := done.Load()
	if mid == before {
		t.Fatal("no request completed while the second loader ran; the test proves nothing")
	}
	waitFor(mid + 50)
	stop.Store(1)
	if err := <-clientDone; err != nil {
		t.Fatal(err)
	}

	if second == first {
		t.Fatal("second loader did not load new programs")
	}
	if got := attachedXDP(t, root); got != second {
		t.Fatalf("attached program %d, want the second loader's %d", got, second)
	}
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d requests failed across the hand-over; first: %v", n, done.Load(), firstErr.Load())
	}

	// This process re-opens the state and sees the service and its flows.
	var d *Datapath
	if err := inNS(l.node, func() error {
		var err error
		d, err = Load(pinTestOptions(root))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	st, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	k, _ := labService()
	if got := st[k].Flows; got < uint64(done.Load()) {
		t.Errorf("re-opened stats show %d flows, client made %d requests", got, done.Load())
	}
	if err := d.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pin root still there after Remove: %v", err)
	}
	t.Logf("%d requests (%d during the second loader's run), none failed; programs %d -> %d",
		done.Load(), mid-before, first, second)
}
