package kubescheme

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/zerohop/zerohop/config/v1alpha1"
)

func TestNewKnowsBothGroups(t *testing.T) {
	s := New()
	for _, obj := range []runtime.Object{&corev1.Service{}, &v1alpha1.IPAddressPool{}, &v1alpha1.SpeakerStatus{}} {
		if _, _, err := s.ObjectKinds(obj); err != nil {
			t.Errorf("%T: %v", obj, err)
		}
	}
}
