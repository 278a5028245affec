package speaker

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/zerohop/zerohop/config/v1alpha1"
)

func TestServedClass(t *testing.T) {
	ours, other, empty := v1alpha1.LoadBalancerClass, "example.com/lb", ""
	tests := []struct {
		name  string
		class *string
		want  bool
	}{
		{"unset", nil, true},
		{"zerohop", &ours, true},
		{"another implementation", &other, false},
		{"empty string is a class of its own", &empty, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			svc := &corev1.Service{Spec: corev1.ServiceSpec{LoadBalancerClass: tc.class}}
			if got := servedClass(svc); got != tc.want {
				t.Fatalf("servedClass(%v) = %v, want %v", tc.class, got, tc.want)
			}
		})
	}
}
