package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Read-only mode after bgpd starts: from the first session up, wait up to
// establish-wait seconds for the other neighbors, then for their
// End-of-RIB, max-delay seconds in all ("update-delay max-delay
// establish-wait").
//
// A lab router starts before any speaker, and a configured node that runs
// none holds the first routes back for the whole establish wait, so a
// fresh router waits 3 s. A restarted one waits 12 s: its nodes' speakers
// are running, but GoBGP stays idle 5 s after a session drops and then
// dials every 1-2 s, so they come back 5-13 s after the kill, seconds
// apart, and a route installed before the last one is back shrinks.
const (
	startUpdateDelay   = "update-delay 10 3"
	restartUpdateDelay = "update-delay 20 12"
)

// RestartConfig writes, next to the bgpd configuration file conf, the
// configuration for a bgpd restarted under running speakers (the longer
// read-only wait) and returns its path.
func RestartConfig(conf string) (string, error) {
	b, err := os.ReadFile(conf)
	if err != nil {
		return "", err
	}
	if !strings.Contains(string(b), " "+startUpdateDelay+"\n") {
		return "", fmt.Errorf("%s: no %q line", conf, startUpdateDelay)
	}
	out := filepath.Join(filepath.Dir(conf), "bgpd-restart.conf")
	st, err := os.Stat(conf)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(out, []byte(strings.Replace(string(b), " "+startUpdateDelay+"\n", " "+restartUpdateDelay+"\n", 1)), st.Mode().Perm()); err != nil {
		return "", err
	}
	if err := chownLike(out, st); err != nil {
		return "", err
	}
	return out, nil
}

// RegisterBGPGracefulRestart makes zebra keep bgpd's routes when bgpd
// dies, as the router's `bgp graceful-restart` intends. FRR 8.4's bgpd
// tells zebra so only when its graceful restart configuration changes
// at the vty or on `clear bgp *`, with zebra connected; the configuration
// it reads at start-up comes before that connection, so zebra never
// hears it. A soft clear (no session is reset) sends it. It returns once
// zebra lists bgpd as a graceful restart client.
func RegisterBGPGracefulRestart(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		if _, err := Vtysh(ctx, "clear bgp * soft"); err != nil {
			last = err.Error()
		} else {
			out, err := Vtysh(ctx, "show zebra client")
			if err != nil {
				last = err.Error()
			} else if i := strings.Index(string(out), "Client: bgp"); i >= 0 && strings.Contains(string(out[i:]), "Graceful Restart(") {
				return nil
			} else {
				last = string(out)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("zebra does not list bgpd as a graceful restart client after %s: %s", timeout, last)
}

// chownLike gives path the owner and group of the file st describes.
func chownLike(path string, st os.FileInfo) error {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	return os.Chown(path, int(sys.Uid), int(sys.Gid))
}
