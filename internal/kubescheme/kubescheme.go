// Package kubescheme builds the runtime.Scheme both zerohop components use:
// Kubernetes' built-in types plus zerohop.io/v1alpha1.
package kubescheme

import (
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	"github.com/zerohop/zerohop/config/v1alpha1"
)

// New returns a fresh scheme with the built-in types and zerohop's.
func New() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err) // only on a broken build: the types are static
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}
