package announce

import (
	"fmt"
	"net/netip"
	"slices"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/zerohop/zerohop/config/v1alpha1"
	"github.com/zerohop/zerohop/controller/ipam"
)

// The selection rules below are shared by BGP and L2 advertisements: both
// name pools by name or label and nodes by label, with the same meaning of
// "empty".

// Pools indexes IPAddressPools by the addresses they hold, so that the pool
// of a Service's IP is found by address: the IP itself is the truth, even
// when a Service was given it by hand or by an older controller.
type Pools struct {
	pools  []*v1alpha1.IPAddressPool
	ranges [][]ipam.Range
}

// NewPools indexes pools. A pool entry that does not parse is reported in
// errs and left out; the rest of the pool still counts.
func NewPools(pools []*v1alpha1.IPAddressPool) (p *Pools, errs []error) {
	p = &Pools{}
	for _, pool := range pools {
		var rs []ipam.Range
		for _, a := range pool.Spec.Addresses {
			r, err := ipam.ParseRange(string(a))
			if err != nil {
				errs = append(errs, fmt.Errorf("pool %s: %w", pool.Name, err))
				continue
			}
			rs = append(rs, r)
		}
		p.pools = append(p.pools, pool)
		p.ranges = append(p.ranges, rs)
	}
	return p, errs
}

// Of returns the pool that holds ip, or nil. Pools may overlap (the
// controller flags that); the first by name wins so the answer is stable.
func (p *Pools) Of(ip netip.Addr) *v1alpha1.IPAddressPool {
	var best *v1alpha1.IPAddressPool
	for i, rs := range p.ranges {
		for _, r := range rs {
			if r.First.Compare(ip) <= 0 && ip.Compare(r.Last) <= 0 {
				if best == nil || p.pools[i].Name < best.Name {
					best = p.pools[i]
				}
				break
			}
		}
	}
	return best
}

// SelectsPool reports whether an advertisement with these pool names and
// selectors covers pool. No names and no selectors cover every pool;
// otherwise a name match or any selector match is enough.
func SelectsPool(names []string, selectors []v1alpha1.LabelSelector, pool *v1alpha1.IPAddressPool) (bool, error) {
	if len(names) == 0 && len(selectors) == 0 {
		return true, nil
	}
	if slices.Contains(names, pool.Name) {
		return true, nil
	}
	return anySelects(selectors, pool.Labels)
}

// SelectsNode reports whether node selectors cover a node with these
// labels. No selectors cover every node; otherwise any one must match.
func SelectsNode(selectors []v1alpha1.LabelSelector, nodeLabels map[string]string) (bool, error) {
	if len(selectors) == 0 {
		return true, nil
	}
	return anySelects(selectors, nodeLabels)
}

func anySelects(selectors []v1alpha1.LabelSelector, l map[string]string) (bool, error) {
	for i := range selectors {
		sel, err := selectors[i].AsSelector()
		if err != nil {
			return false, fmt.Errorf("selector %d: %w", i, err)
		}
		if sel.Matches(labels.Set(l)) {
			return true, nil
		}
	}
	return false, nil
}
