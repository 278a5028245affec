package datapath

import (
	"bufio"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
)

// attachUplinks attaches to the configured uplinks, or by default to the
// interfaces of the default routes and those L2Advertisements name. An
// interface that does not exist on this node is skipped without error when
// it came from an L2Advertisement (those may name other nodes' NICs).
// Called with p.mu.
func (p *Programmer) attachUplinks(l2Interfaces []string) []error {
	var errs []error
	want := map[string]bool{} // name -> required
	if len(p.opts.Uplinks) > 0 {
		for _, n := range p.opts.Uplinks {
			want[n] = true
		}
	} else {
		names, err := DefaultRouteInterfaces()
		if err != nil {
			errs = append(errs, fmt.Errorf("datapath: uplinks: %w", err))
		}
		for _, n := range names {
			want[n] = true
		}
		for _, n := range l2Interfaces {
			if !want[n] {
				want[n] = false
			}
		}
		if len(names) == 0 && err == nil && len(want) == 0 {
			errs = append(errs, errors.New("datapath: no default route and no --uplink: attached nowhere, VIP traffic is not balanced"))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		if p.attached[name] {
			continue
		}
		if _, err := net.InterfaceByName(name); err != nil && !want[name] {
			continue
		}
		if err := p.opts.Kernel.Attach(name); err != nil {
			errs = append(errs, fmt.Errorf("datapath: uplink %s: %w", name, err))
			continue
		}
		p.attached[name] = true
		p.opts.Log.Info("datapath attached", "interface", name)
	}
	return errs
}

// DefaultRouteInterfaces reads the interfaces of this network namespace's
// IPv4 and IPv6 default routes from /proc, which follows the namespace.
func DefaultRouteInterfaces() ([]string, error) {
	set := map[string]bool{}
	v4, err := os.Open("/proc/net/route")
	if err != nil {
		return nil, err
	}
	defer func() { _ = v4.Close() }()
	sc := bufio.NewScanner(v4)
	for sc.Scan() {
		// Iface Destination Gateway Flags RefCnt Use Metric Mask ...
		f := strings.Fields(sc.Text())
		if len(f) >= 8 && f[1] == "00000000" && f[7] == "00000000" {
			set[f[0]] = true
		}
	}
	if v6, err := os.Open("/proc/net/ipv6_route"); err == nil {
		defer func() { _ = v6.Close() }()
		sc := bufio.NewScanner(v6)
		for sc.Scan() {
			// dest destlen src srclen nexthop metric refcnt use flags iface
			f := strings.Fields(sc.Text())
			if len(f) >= 10 && f[0] == strings.Repeat("0", 32) && f[1] == "00" && f[9] != "lo" {
				set[f[9]] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(set)), nil
}
