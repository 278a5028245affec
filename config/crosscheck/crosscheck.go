// Package crosscheck holds the rules that decide, among zerohop objects
// that each pass the CRD schema, which are in force when they conflict:
// the rules the schema cannot check because they need other objects. The
// controller applies them to report a refused object (a condition and an
// Event naming the object it conflicts with); every speaker applies the
// same rules to decide what it uses, so a refusal holds even while the
// controller is down. The rule throughout: what came first wins, so an
// object added by mistake never takes over what is in service.
package crosscheck

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/controller/ipam"
)

// Older orders objects by age, oldest first: by creation time, then by
// name, so that every process orders them the same way.
func Older(a, b metav1.Object) int {
	return cmp.Or(a.GetCreationTimestamp().Compare(b.GetCreationTimestamp().Time), strings.Compare(a.GetName(), b.GetName()))
}

// PeerConflict is a BGPPeer refused on a node because an older BGPPeer that
// the node also uses has the same peerAddress, or (BGP unnumbered) the same
// interface: one node can hold only one session to an address, and GoBGP
// resolves an interface to its one link-local neighbour.
type PeerConflict struct {
	Peer    string // the refused, younger peer
	Keeper  string // the older peer that keeps the address or interface
	Address netip.Addr
	// Interface is set instead of Address for unnumbered peers.
	Interface string
}

func (c PeerConflict) Error() string {
	if c.Interface != "" {
		return fmt.Sprintf("bgppeer %s: interface %s is already used by the older bgppeer %s on this node; this peer is not used here", c.Peer, c.Interface, c.Keeper)
	}
	return fmt.Sprintf("bgppeer %s: peerAddress %s is already used by the older bgppeer %s on this node; this peer is not used here", c.Peer, c.Address, c.Keeper)
}

// Peers returns the peers a node with these labels uses, oldest first, and
// the ones it does not use because an older peer for the same node has the
// same address, or for unnumbered peers the same interface. A peer whose
// node selectors do not parse or whose address does not parse is left out
// with an error.
func Peers(peers []*v1alpha1.BGPPeer, nodeLabels map[string]string) (inForce []*v1alpha1.BGPPeer, conflicts []PeerConflict, errs []error) {
	sorted := slices.Clone(peers)
	slices.SortFunc(sorted, func(a, b *v1alpha1.BGPPeer) int { return Older(a, b) })
	type key struct {
		addr  netip.Addr
		iface string
	}
	keeper := map[key]string{}
	for _, p := range sorted {
		ok, err := p.Spec.SelectsNode(nodeLabels)
		if err != nil {
			errs = append(errs, fmt.Errorf("bgppeer %s: nodeSelectors: %w", p.Name, err))
			continue
		}
		if !ok {
			continue
		}
		var k key
		if p.Spec.Interface != "" {
			k.iface = p.Spec.Interface
		} else {
			addr, err := netip.ParseAddr(p.Spec.PeerAddress)
			if err != nil {
				errs = append(errs, fmt.Errorf("bgppeer %s: peerAddress: %w", p.Name, err))
				continue
			}
			k.addr = addr.Unmap()
		}
		if name, taken := keeper[k]; taken {
			conflicts = append(conflicts, PeerConflict{Peer: p.Name, Keeper: name, Address: k.addr, Interface: k.iface})
			continue
		}
		keeper[k] = p.Name
		inForce = append(inForce, p)
	}
	return inForce, conflicts, errs
}

// RouterIDConflict is a BGPPeer refused on a node because an older BGPPeer
// the node uses asks for another routerID: a node runs one BGP router, with
// one identifier for all its sessions.
type RouterIDConflict struct {
	Peer     string // the refused, younger peer
	Keeper   string // the older peer whose routerID the node uses
	RouterID string // what the refused peer asks for
	KeeperID netip.Addr
}

func (c RouterIDConflict) Error() string {
	if c.Keeper == "" {
		return fmt.Sprintf("bgppeer %s: routerID %q is not an IPv4 address; this peer is not used here", c.Peer, c.RouterID)
	}
	return fmt.Sprintf("bgppeer %s: routerID %s differs from %s, set by the older bgppeer %s on this node, which runs one BGP router; this peer is not used here",
		c.Peer, c.RouterID, c.KeeperID, c.Keeper)
}

// RouterID applies the one-router rule to the peers a node uses (as Peers
// returns them, oldest first): the node's router ID is the routerID of the
// oldest peer that sets one (invalid when none does), and a younger peer
// that asks for another one is not used, so that a peer added by mistake
// never changes the identity of a router in service. Peers without a
// routerID agree with any.
func RouterID(inForce []*v1alpha1.BGPPeer) (id netip.Addr, kept []*v1alpha1.BGPPeer, conflicts []RouterIDConflict) {
	keeper := ""
	for _, p := range inForce {
		if p.Spec.RouterID == "" {
			kept = append(kept, p)
			continue
		}
		a, err := netip.ParseAddr(p.Spec.RouterID)
		switch {
		case err != nil || !a.Is4():
			conflicts = append(conflicts, RouterIDConflict{Peer: p.Name, RouterID: p.Spec.RouterID})
			continue
		case !id.IsValid():
			id, keeper = a, p.Name
		case a != id:
			conflicts = append(conflicts, RouterIDConflict{Peer: p.Name, Keeper: keeper, RouterID: p.Spec.RouterID, KeeperID: id})
			continue
		}
		kept = append(kept, p)
	}
	return id, kept, conflicts
}

// PoolRanges parses a pool's declared addresses. An entry that does not
// parse, or that reaches into addresses that can never be LoadBalancer IPs
// (ipam.Reserved), is an error naming its field and is left out; the other
// entries still count, so one bad edit does not take the pool's addresses
// in service out of their announcements. (The controller also stops
// allocating from a pool with a bad entry until it is fixed.)
func PoolRanges(pool *v1alpha1.IPAddressPool) ([]ipam.Range, []error) {
	var out []ipam.Range
	var errs []error
	for i, a := range pool.Spec.Addresses {
		r, err := ipam.ParseRange(string(a))
		if err != nil {
			errs = append(errs, fmt.Errorf("pool %s: spec.addresses[%d]: %w", pool.Name, i, err))
			continue
		}
		// The schema refuses CIDRs and range ends in these blocks; a
		// range whose ends lie outside one can still span it.
		if what := ipam.Reserved(r); what != "" {
			errs = append(errs, fmt.Errorf("pool %s: spec.addresses[%d]: %s includes %s addresses, which cannot be LoadBalancer IPs", pool.Name, i, a, what))
			continue
		}
		out = append(out, r)
	}
	return out, errs
}

// Aggregation checks that announcing the addresses of pool with the
// advertisement's aggregation lengths keeps every prefix inside the pool,
// as MetalLB does: each CIDR the pool is made of must be at least as wide
// as the aggregate. A wider aggregate would attract traffic for addresses
// zerohop does not own (aggregationLength 0 announces a default route).
func Aggregation(adv *v1alpha1.BGPAdvertisement, pool *v1alpha1.IPAddressPool) error {
	rs, _ := PoolRanges(pool)
	type need struct {
		field  string
		length int
		first  netip.Prefix // the first CIDR wider than the aggregate
		bits   int          // the aggregate every CIDR of the family fits
	}
	v4 := need{field: "aggregationLength", length: 32}
	v6 := need{field: "aggregationLengthV6", length: 128}
	if a := adv.Spec.AggregationLength; a != nil {
		v4.length = int(*a)
	}
	if a := adv.Spec.AggregationLengthV6; a != nil {
		v6.length = int(*a)
	}
	for _, r := range rs {
		n := &v4
		if r.Family() == ipam.IPv6 {
			n = &v6
		}
		for _, p := range r.Prefixes() {
			if n.length < p.Bits() && !n.first.IsValid() {
				n.first = p
			}
			n.bits = max(n.bits, p.Bits())
		}
	}
	for _, n := range []need{v4, v6} {
		if n.first.IsValid() {
			return fmt.Errorf("bgpadvertisement %s: spec.%s %d is shorter than pool %s's %s: the aggregate would announce addresses outside the pool; use %d or more",
				adv.Name, n.field, n.length, pool.Name, n.first, n.bits)
		}
	}
	return nil
}

// Pools indexes pools by the addresses they declare, to find the pool of
// an address as the controller records it.
type Pools struct {
	pools  []*v1alpha1.IPAddressPool // oldest first
	ranges [][]ipam.Range            // merged, valid entries only
	byName map[string]int
}

// NewPools indexes pools. Entries in error (PoolRanges) are reported and
// left out; the rest of each pool still counts.
func NewPools(pools []*v1alpha1.IPAddressPool) (*Pools, []error) {
	idx := &Pools{byName: map[string]int{}}
	var errs []error
	for _, p := range pools {
		if p.DeletionTimestamp == nil {
			idx.pools = append(idx.pools, p)
		}
	}
	slices.SortFunc(idx.pools, func(a, b *v1alpha1.IPAddressPool) int { return Older(a, b) })
	for i, p := range idx.pools {
		rs, perrs := PoolRanges(p)
		errs = append(errs, perrs...)
		idx.ranges = append(idx.ranges, ipam.Merge(rs))
		idx.byName[p.Name] = i
	}
	return idx, errs
}

// Of returns the pool an address belongs to: recorded, the pool named on
// its Service (v1alpha1.AnnotationAllocatedFrom), while that pool still
// declares the address, else the oldest pool that declares it, else nil.
// The controller records pools by the same rule, so both agree, and a pool
// added later never changes how an address in service is announced.
func (idx *Pools) Of(ip netip.Addr, recorded string) *v1alpha1.IPAddressPool {
	if i, ok := idx.byName[recorded]; ok && declares(idx.ranges[i], ip, ip) {
		return idx.pools[i]
	}
	for i, rs := range idx.ranges {
		if declares(rs, ip, ip) {
			return idx.pools[i]
		}
	}
	return nil
}

// Within reports whether every address of prefix lies in pool's declared
// addresses: the last check before a prefix is announced or an address is
// answered for.
func (idx *Pools) Within(prefix netip.Prefix, pool *v1alpha1.IPAddressPool) bool {
	i, ok := idx.byName[pool.Name]
	if !ok || idx.pools[i] != pool {
		return false
	}
	p := prefix.Masked()
	return declares(idx.ranges[i], p.Addr(), lastOf(p))
}

// declares reports whether first..last lies inside one of rs (merged, so
// an address range inside the pool lies inside one entry).
func declares(rs []ipam.Range, first, last netip.Addr) bool {
	for _, r := range rs {
		if r.Contains(first) && r.Contains(last) {
			return true
		}
	}
	return false
}

func lastOf(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
