package announce

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// ServiceFrom summarises a Service and its EndpointSlices for node. It
// returns false for Services that are not LoadBalancers or have no ingress
// IP yet.
func ServiceFrom(svc *corev1.Service, slices []*discoveryv1.EndpointSlice, node string) (Service, bool) {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return Service{}, false
	}
	s := Service{
		Key:       svc.Namespace + "/" + svc.Name,
		LocalOnly: svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal,
	}
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(in.IP); err == nil {
			s.IPs = append(s.IPs, a.Unmap())
		}
	}
	if len(s.IPs) == 0 {
		return Service{}, false
	}
	// A dual-stack Service has one slice per family listing the same Pods:
	// count Pods, not addresses, so that weights do not double.
	ready := map[string]bool{}
	local := map[string]bool{}
	for _, sl := range slices {
		for _, ep := range sl.Endpoints {
			// A nil Ready means ready (discovery/v1 API contract).
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			if len(ep.Addresses) == 0 {
				continue
			}
			key := "addr/" + ep.Addresses[0]
			if ep.TargetRef != nil && ep.TargetRef.Name != "" {
				key = "ref/" + ep.TargetRef.Namespace + "/" + ep.TargetRef.Name
			}
			ready[key] = true
			if ep.NodeName != nil && *ep.NodeName == node {
				local[key] = true
			}
		}
	}
	s.Ready, s.LocalReady = len(ready), len(local)
	return s, true
}
