package v1alpha1

import (
	"net/netip"
	"strings"
)

// AnnotationAllocatedFrom is written by the controller on every Service it
// gives addresses to: the pool each address was allocated from. Speakers
// announce an address by the advertisements of that pool, never by a lookup
// of which pools contain it, so a pool added later that declares the same
// addresses cannot change how a served address is announced. The value is
// the pool's name when every address came from one pool (as MetalLB's
// metallb.io/ip-allocated-from-pool), else "ip=pool" pairs joined by ",".
const AnnotationAllocatedFrom = "zerohop.io/ip-allocated-from-pool"

// FormatAllocatedFrom renders pools, parallel to ips, as the value of
// AnnotationAllocatedFrom. An address outside every pool ("" pool) is left
// out; no pool at all gives "".
func FormatAllocatedFrom(ips []netip.Addr, pools []string) string {
	var pairs []string
	one := ""
	same := true
	for i, ip := range ips {
		if i >= len(pools) || pools[i] == "" {
			same = false
			continue
		}
		if one == "" {
			one = pools[i]
		} else if one != pools[i] {
			same = false
		}
		pairs = append(pairs, ip.String()+"="+pools[i])
	}
	switch {
	case len(pairs) == 0:
		return ""
	case same:
		return one
	}
	return strings.Join(pairs, ",")
}

// AllocatedFrom returns the pool recorded for ip in the value of
// AnnotationAllocatedFrom, or "".
func AllocatedFrom(value string, ip netip.Addr) string {
	if value == "" {
		return ""
	}
	if !strings.Contains(value, "=") {
		return strings.TrimSpace(value)
	}
	for _, pair := range strings.Split(value, ",") {
		a, pool, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok {
			continue
		}
		if addr, err := netip.ParseAddr(a); err == nil && addr.Unmap() == ip {
			return pool
		}
	}
	return ""
}
