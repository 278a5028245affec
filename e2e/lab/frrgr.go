package lab

import (
	"context"
	"fmt"
	"strings"
	"time"
)

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
