package speaker

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func TestTrimForCache(t *testing.T) {
	managed := []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}}
	ready := true
	node := "n1"
	tests := []struct {
		name     string
		in, want runtime.Object
	}{{
		name: "service keeps what announce and the datapath read",
		in: &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "demo", UID: "u1", ManagedFields: managed,
				Annotations: map[string]string{lastAppliedAnnotation: `{"big":"copy"}`, "service.beta.kubernetes.io/load-balancer-source-ranges": "10.0.0.0/8"}},
			Spec:   corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerSourceRanges: []string{"192.0.2.0/24"}},
			Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "203.0.113.1"}}}},
		},
		want: &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "demo", UID: "u1",
				Annotations: map[string]string{"service.beta.kubernetes.io/load-balancer-source-ranges": "10.0.0.0/8"}},
			Spec:   corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerSourceRanges: []string{"192.0.2.0/24"}},
			Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "203.0.113.1"}}}},
		},
	}, {
		name: "endpoint keeps address, conditions, node and the target's name",
		in: &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "demo", ManagedFields: managed},
			Endpoints: []discoveryv1.Endpoint{{
				Addresses: []string{"100.64.1.2"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}, NodeName: &node,
				TargetRef:          &corev1.ObjectReference{Kind: "Pod", Namespace: "demo", Name: "web-abc", UID: "u2", ResourceVersion: "7"},
				Hints:              &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "a"}}},
				DeprecatedTopology: map[string]string{"k": "v"},
			}},
		},
		want: &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "demo"},
			Endpoints: []discoveryv1.Endpoint{{
				Addresses: []string{"100.64.1.2"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}, NodeName: &node,
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "demo", Name: "web-abc"},
			}},
		},
	}, {
		name: "node keeps labels, addresses and conditions",
		in: &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{"a": "b"}},
			Status: corev1.NodeStatus{
				Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.51.100.11"}},
				Conditions:      []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
				Images:          []corev1.ContainerImage{{Names: []string{"registry.example/big:1"}, SizeBytes: 1 << 30}},
				VolumesInUse:    []corev1.UniqueVolumeName{"v"},
				VolumesAttached: []corev1.AttachedVolume{{Name: "v", DevicePath: "/dev/x"}},
			},
		},
		want: &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{"a": "b"}},
			Status: corev1.NodeStatus{
				Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.51.100.11"}},
				Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
			},
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := trimForCache(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if !equality.Semantic.DeepEqual(got, tc.want) {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
	// Not an object (a tombstone, say): passed through.
	if got, err := trimForCache("x"); err != nil || got != "x" {
		t.Errorf("non-object: got %v, %v", got, err)
	}
}
