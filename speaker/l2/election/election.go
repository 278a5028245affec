// Package election picks, without any API write, the node that answers
// ARP/NDP for a VIP. Every speaker runs the same pure function over the same
// inputs (the live eligible nodes it sees in the memberlist cluster), so they
// agree on the owner as soon as their views of the cluster agree.
//
// The function is rendezvous (highest random weight) hashing: each
// (node, VIP) pair gets a pseudo-random score and the highest score wins.
// Compared with a hash ring it needs no virtual nodes to spread evenly, and
// when a node leaves only the VIPs that node owned move.
package election

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"

	"github.com/zerohop/zerohop/config/v1alpha1"
)

// Owner returns the node among eligible that owns vip, or "" when eligible
// is empty. The result does not depend on the order of eligible, and
// duplicate names are harmless.
func Owner(vip netip.Addr, eligible []string) string {
	var (
		best      string
		bestScore uint64
	)
	for _, n := range eligible {
		s := score(n, vip)
		// Ties are astronomically rare but must still be broken the same
		// way everywhere, hence the name comparison.
		if best == "" || s > bestScore || (s == bestScore && n < best) {
			best, bestScore = n, s
		}
	}
	return best
}

// Owned returns the VIPs among vips that self owns, in the order given.
func Owned(self string, vips []netip.Addr, eligible []string) []netip.Addr {
	if !slices.Contains(eligible, self) {
		return nil
	}
	var out []netip.Addr
	for _, v := range vips {
		if Owner(v, eligible) == self {
			out = append(out, v)
		}
	}
	return out
}

// score hashes the pair with FNV-1a and then mixes the result: FNV alone
// leaves the high bits poorly spread for inputs that differ only in their
// last bytes (node-1, node-2; .10, .11), which would skew the maximum.
func score(node string, vip netip.Addr) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(node))
	// A separator that cannot occur in a node name keeps "ab"+"c" and
	// "a"+"bc" apart.
	_, _ = h.Write([]byte{0})
	b := vip.Unmap().As16()
	_, _ = h.Write(b[:])
	return mix64(h.Sum64())
}

// mix64 is the splitmix64 finalizer.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Node is what election needs to know about a node.
type Node struct {
	Name   string
	Labels map[string]string
	// Excluded nodes never own an address: labelled
	// node.kubernetes.io/exclude-from-external-load-balancers, or with
	// NetworkUnavailable, as BGP mode treats them. Every speaker reads it
	// from the same Node objects, so all agree.
	Excluded bool
}

// Eligible returns, sorted, the names of the nodes that may own an address
// announced by an L2Advertisement with these node selectors: nodes that
// are not excluded, match any selector (all nodes when there is none), are
// alive in the memberlist cluster, and — when withEndpoints is not nil, as
// for a Service with externalTrafficPolicy Local — have a ready local
// endpoint.
func Eligible(nodes []Node, nodeSelectors []v1alpha1.LabelSelector, alive, withEndpoints map[string]bool) ([]string, error) {
	sel, err := v1alpha1.NewSelection(nodeSelectors)
	if err != nil {
		return nil, fmt.Errorf("nodeSelectors: %w", err)
	}
	var out []string
	for _, n := range nodes {
		if n.Excluded || !alive[n.Name] {
			continue
		}
		if withEndpoints != nil && !withEndpoints[n.Name] {
			continue
		}
		if !sel.Matches(n.Labels) {
			continue
		}
		out = append(out, n.Name)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// Preference adds Weight to the score of every node that Nodes selects
// (an L2Advertisement's preferredNodeSelectors entry).
type Preference struct {
	Weight int32
	Nodes  v1alpha1.Selection
}

// Preferred narrows eligible (sorted, as Eligible returns it) to the nodes
// with the highest score, the sum of the weights of the preferences that
// select each; Owner then breaks ties by hash. Without preferences, or when
// every node scores alike, it is eligible itself, so the plain hash
// decides. When a preferred node leaves, the next best score takes over;
// when it comes back, it takes the address back.
func Preferred(nodes []Node, eligible []string, prefs []Preference) []string {
	if len(prefs) == 0 || len(eligible) < 2 {
		return eligible
	}
	var (
		best    []string
		top     int64
		counted = map[string]bool{}
	)
	for _, n := range nodes {
		if _, ok := slices.BinarySearch(eligible, n.Name); !ok || counted[n.Name] {
			continue
		}
		counted[n.Name] = true
		var score int64
		for _, p := range prefs {
			if p.Nodes.Matches(n.Labels) {
				score += int64(p.Weight)
			}
		}
		switch {
		case best == nil || score > top:
			best, top = []string{n.Name}, score
		case score == top:
			best = append(best, n.Name)
		}
	}
	slices.Sort(best)
	return best
}
