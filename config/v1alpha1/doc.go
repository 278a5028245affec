// Package v1alpha1 holds zerohop's API: address pools, BGP peers and the
// advertisements that say which pools are announced how.
//
// Field names follow MetalLB's metallb.io/v1beta1 where the concept is the
// same, so that a MetalLB manifest moves over by changing its group.
// Validation lives in the CRD schema (OpenAPI and CEL) so that the API server
// itself refuses bad objects, naming the field.
//
// +kubebuilder:object:generate=true
// +groupName=zerohop.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is the API group and version of every type in this package.
var GroupVersion = schema.GroupVersion{Group: "zerohop.io", Version: "v1alpha1"}

// SchemeBuilder collects the package's types; each types file registers
// its own in init.
var SchemeBuilder = &schemeBuilder{}

// AddToScheme adds the package's types to a runtime.Scheme.
var AddToScheme = SchemeBuilder.AddToScheme

// schemeBuilder keeps this package free of controller-runtime, so that any
// client can import the API types with apimachinery alone.
type schemeBuilder struct{ objects []runtime.Object }

// Register records objects to be added to schemes.
func (b *schemeBuilder) Register(objects ...runtime.Object) {
	b.objects = append(b.objects, objects...)
}

// AddToScheme adds the recorded objects under GroupVersion.
func (b *schemeBuilder) AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, b.objects...)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}

// LoadBalancerClass is the spec.loadBalancerClass of Services that zerohop
// serves. Services of another class belong to another implementation and
// are never given an address or announced by zerohop.
const LoadBalancerClass = "zerohop.io/lb"
