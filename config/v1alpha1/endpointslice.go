package v1alpha1

import (
	"fmt"
	"strconv"
)

// AnnotationEndpointWeight on an EndpointSlice weighs each of its
// endpoints: the datapath gives an endpoint a share of its Service port's
// Maglev slots, and so of new flows, in proportion to its weight among the
// port's endpoints. Unset counts as 1. The Gateway controller writes it on
// the slices it makes for a Gateway's routes, each backendRef's weight
// divided among that backend's ready endpoints; kube-proxy, which serves
// in-cluster clients, does not read it.
const AnnotationEndpointWeight = "zerohop.io/endpoint-weight"

// AnnotationRejectWeight on an EndpointSlice gives its Service port a
// reject share, weighed like AnnotationEndpointWeight against the port's
// endpoints: the datapath gives that share of the port's Maglev slots to
// no backend, and new connections that hash to one are refused (a TCP
// reset; a UDP datagram is dropped). The Gateway controller writes it, on
// a slice of its own with no endpoints, for a route's backendRefs that do
// not resolve or have no ready endpoint of the slice's address type, as
// the Gateway API asks. The shares of several such slices add up.
const AnnotationRejectWeight = "zerohop.io/reject-weight"

// ParseEndpointWeight reads AnnotationEndpointWeight's value: a decimal
// from 1 to 4294967295.
func ParseEndpointWeight(s string) (uint32, error) {
	return parseWeight(AnnotationEndpointWeight, s)
}

// ParseRejectWeight reads AnnotationRejectWeight's value, of the same form.
func ParseRejectWeight(s string) (uint32, error) {
	return parseWeight(AnnotationRejectWeight, s)
}

func parseWeight(annotation, s string) (uint32, error) {
	w, err := strconv.ParseUint(s, 10, 32)
	if err != nil || w == 0 {
		return 0, fmt.Errorf("%s %q is not a whole number from 1 to 4294967295", annotation, s)
	}
	return uint32(w), nil
}
