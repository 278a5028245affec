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

	// EndpointSlices are the EndpointSlices (namespace/name) of the
	// programmed Services and the generation of each that the entries in
	// place reflect, sorted, capped at 5000. The readiness gate
	// (docs/readiness-gate.md) compares them with the slices it sees; a
	// slice left out counts as not programmed.
	// +listType=map
	// +listMapKey=name
	// +optional
	EndpointSlices []SliceGeneration `json:"endpointSlices,omitempty"`

	// Truncated is true when Programmed or EndpointSlices was capped.
	// +optional
	Truncated bool `json:"truncated,omitempty"`
}

// SliceGeneration is one EndpointSlice as a node's datapath entries
// reflect it.
type SliceGeneration struct {
	// Name is namespace/name.
	Name string `json:"name"`
	// Generation is the slice's metadata.generation.
	Generation int64 `json:"generation"`
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
