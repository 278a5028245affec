package ipam

import (
	"fmt"
	"slices"
	"strings"
)

// Port is one port of a Service, as far as sharing an IP is concerned.
type Port struct {
	Port     int32
	Protocol string // TCP, UDP or SCTP
}

func (p Port) String() string { return fmt.Sprintf("%d/%s", p.Port, p.Protocol) }

// Sharing is what decides whether two Services may hold the same IP.
type Sharing struct {
	// Key is the zerohop.io/allow-shared-ip annotation; empty means the
	// Service wants its IPs for itself.
	Key   string
	Ports []Port
	// Local is externalTrafficPolicy: Local. Such a Service is announced
	// only from nodes with its endpoints, so a shared IP would be pulled to
	// nodes where the other Service has none: it may share only with
	// Services that select the very same Pods.
	Local bool
	// Selector is the Service's Pod selector in a canonical form
	// (sorted key=value pairs); compared only for Local Services.
	Selector string
}

func (s Sharing) equal(o Sharing) bool {
	return s.Key == o.Key && s.Local == o.Local && s.Selector == o.Selector && slices.Equal(s.Ports, o.Ports)
}

// canShare says why a (the newcomer) may not share an IP with b (a holder),
// or returns nil. The rules are symmetric.
func canShare(a, b Sharing) error {
	switch {
	case a.Key == "":
		return fmt.Errorf("this Service has no zerohop.io/allow-shared-ip key")
	case b.Key == "":
		return fmt.Errorf("it has no zerohop.io/allow-shared-ip key")
	case a.Key != b.Key:
		return fmt.Errorf("sharing keys differ (%q vs %q)", a.Key, b.Key)
	case a.Local != b.Local:
		return fmt.Errorf("externalTrafficPolicy differs (Local and Cluster cannot share)")
	case a.Local && a.Selector != b.Selector:
		return fmt.Errorf("externalTrafficPolicy Local requires identical selectors (%q vs %q)", a.Selector, b.Selector)
	}
	var clash []string
	for _, p := range a.Ports {
		if slices.Contains(b.Ports, p) {
			clash = append(clash, p.String())
		}
	}
	if len(clash) > 0 {
		return fmt.Errorf("port %s collides", strings.Join(clash, ", "))
	}
	return nil
}
