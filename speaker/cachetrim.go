package speaker

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/tools/cache"
)

// lastAppliedAnnotation is where `kubectl apply` keeps a whole copy of the
// object it applied.
const lastAppliedAnnotation = "kubectl.kubernetes.io/last-applied-configuration"

// trimForCache drops, before an object enters the informer cache, what
// the speaker never reads but would hold for every Service, EndpointSlice
// and Node of the cluster on every node: managed fields, kubectl's
// last-applied copy, a Node's image list and volume state (tens of KiB per
// Node), and an endpoint's topology hints and the parts of its target
// reference other than kind, namespace and name.
func trimForCache(obj any) (any, error) {
	if a, err := meta.Accessor(obj); err == nil {
		// Only when set: kubernetes/kubernetes#124337.
		if a.GetManagedFields() != nil {
			a.SetManagedFields(nil)
		}
		if ann := a.GetAnnotations(); ann[lastAppliedAnnotation] != "" {
			delete(ann, lastAppliedAnnotation)
			a.SetAnnotations(ann)
		}
	}
	switch o := obj.(type) {
	case *corev1.Node:
		o.Status.Images = nil
		o.Status.VolumesInUse = nil
		o.Status.VolumesAttached = nil
	case *discoveryv1.EndpointSlice:
		for i := range o.Endpoints {
			ep := &o.Endpoints[i]
			ep.Hints = nil
			ep.DeprecatedTopology = nil
			if ref := ep.TargetRef; ref != nil {
				ep.TargetRef = &corev1.ObjectReference{Kind: ref.Kind, Namespace: ref.Namespace, Name: ref.Name}
			}
		}
	}
	return obj, nil
}

var _ cache.TransformFunc = trimForCache
