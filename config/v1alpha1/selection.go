package v1alpha1

import (
	"fmt"
	"slices"

	"k8s.io/apimachinery/pkg/labels"
)

// The selection rules below give the API's fields their meaning wherever
// they are read: BGP and L2 advertisements name pools by name or label and
// nodes by label, BGP peers name nodes by label, with one meaning of
// "empty" for all of them.

// Selection is a list of label selectors in the form advertisements and
// peers use it: an empty list selects everything, otherwise one matching
// selector is enough. The zero value selects everything.
// +kubebuilder:object:generate=false
type Selection struct {
	sels []labels.Selector
}

// NewSelection compiles selectors once, for matching many label sets.
func NewSelection(selectors []LabelSelector) (Selection, error) {
	var s Selection
	for i := range selectors {
		sel, err := selectors[i].AsSelector()
		if err != nil {
			return Selection{}, fmt.Errorf("selector %d: %w", i, err)
		}
		s.sels = append(s.sels, sel)
	}
	return s, nil
}

// Matches reports whether the selection covers an object with these
// labels.
func (s Selection) Matches(l map[string]string) bool {
	if len(s.sels) == 0 {
		return true
	}
	return slices.ContainsFunc(s.sels, func(sel labels.Selector) bool { return sel.Matches(labels.Set(l)) })
}

// selects compiles and matches in one step, for selectors read once.
func selects(selectors []LabelSelector, l map[string]string) (bool, error) {
	s, err := NewSelection(selectors)
	if err != nil {
		return false, err
	}
	return s.Matches(l), nil
}

// selectsPool is the pool rule of both advertisement kinds: no names and
// no selectors cover every pool; otherwise a name or any selector match is
// enough.
func selectsPool(names []string, selectors []LabelSelector, pool *IPAddressPool) (bool, error) {
	if len(names) == 0 && len(selectors) == 0 {
		return true, nil
	}
	if slices.Contains(names, pool.Name) {
		return true, nil
	}
	if len(selectors) == 0 {
		return false, nil
	}
	return selects(selectors, pool.Labels)
}

// SelectsPool reports whether the advertisement covers pool.
func (s *BGPAdvertisementSpec) SelectsPool(pool *IPAddressPool) (bool, error) {
	return selectsPool(s.IPAddressPools, s.IPAddressPoolSelectors, pool)
}

// SelectsNode reports whether the advertisement applies on a node with
// these labels.
func (s *BGPAdvertisementSpec) SelectsNode(nodeLabels map[string]string) (bool, error) {
	return selects(s.NodeSelectors, nodeLabels)
}

// SelectsNode reports whether the peer's session is opened from a node
// with these labels.
func (s *BGPPeerSpec) SelectsNode(nodeLabels map[string]string) (bool, error) {
	return selects(s.NodeSelectors, nodeLabels)
}

// SelectsPool reports whether the advertisement covers pool.
func (s *L2AdvertisementSpec) SelectsPool(pool *IPAddressPool) (bool, error) {
	return selectsPool(s.IPAddressPools, s.IPAddressPoolSelectors, pool)
}
