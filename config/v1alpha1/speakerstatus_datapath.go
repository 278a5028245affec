package v1alpha1

// DatapathStatus is the state of one node's XDP datapath, per Service, so
// that the controller can say on each Service on how many nodes its
// entries are in place.
type DatapathStatus struct {
	// Programmed lists the Services (namespace/name) every entry of which
	// is in place on this node, sorted, capped at 5000; Truncated says
	// when more were left out.
	// +listType=set
	// +optional
	Programmed []string `json:"programmed,omitempty"`

	// Failed lists the Services with an entry that is not in place, and
	// why, capped at 50. The speaker does not announce their addresses
	// from this node.
	// +listType=map
	// +listMapKey=service
	// +optional
	Failed []DatapathFailure `json:"failed,omitempty"`

	// Truncated is true when Programmed was capped.
	// +optional
	Truncated bool `json:"truncated,omitempty"`
}

// DatapathFailure is one Service whose datapath entries are not all in
// place on a node.
type DatapathFailure struct {
	// Service is namespace/name.
	Service string `json:"service"`
	// Reason is the error the write met, if one was reported.
	// +optional
	Reason string `json:"reason,omitempty"`
}
