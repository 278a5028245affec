package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BFDProfileSpec holds the BFD timers for the BGP sessions that name the
// profile. Intervals are in milliseconds, as in MetalLB and FRR.
type BFDProfileSpec struct {
	// ReceiveInterval is the slowest rate, in ms, at which this end wants
	// to receive control packets. Default 300.
	// +kubebuilder:validation:Minimum=10
	// +kubebuilder:validation:Maximum=60000
	// +kubebuilder:default=300
	// +optional
	ReceiveInterval *uint32 `json:"receiveInterval,omitempty"`

	// TransmitInterval is the fastest rate, in ms, at which this end
	// sends control packets. Default 300.
	// +kubebuilder:validation:Minimum=10
	// +kubebuilder:validation:Maximum=60000
	// +kubebuilder:default=300
	// +optional
	TransmitInterval *uint32 `json:"transmitInterval,omitempty"`

	// DetectMultiplier is how many missed packets declare the session
	// down. Default 3.
	// +kubebuilder:validation:Minimum=2
	// +kubebuilder:validation:Maximum=255
	// +kubebuilder:default=3
	// +optional
	DetectMultiplier *uint32 `json:"detectMultiplier,omitempty"`

	// EchoMode is accepted for MetalLB compatibility but zerohop does not
	// implement BFD echo; true is refused.
	// +kubebuilder:validation:XValidation:rule=`!self`,message="echo mode is not supported by zerohop; remove echoMode or set it to false"
	// +optional
	EchoMode bool `json:"echoMode,omitempty"`

	// PassiveMode waits for the router to start the session.
	// +optional
	PassiveMode bool `json:"passiveMode,omitempty"`

	// MinimumTTL is the lowest TTL accepted on incoming packets (RFC 5881
	// single-hop sessions send 255). Default 254.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=255
	// +kubebuilder:default=254
	// +optional
	MinimumTTL *uint32 `json:"minimumTtl,omitempty"`
}

// BFDProfile is a set of BFD timers that BGPPeers refer to by name.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=zerohop
// +kubebuilder:printcolumn:name="RX ms",type=integer,JSONPath=`.spec.receiveInterval`
// +kubebuilder:printcolumn:name="TX ms",type=integer,JSONPath=`.spec.transmitInterval`
// +kubebuilder:printcolumn:name="Multiplier",type=integer,JSONPath=`.spec.detectMultiplier`
type BFDProfile struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec BFDProfileSpec `json:"spec,omitempty"`
}

// BFDProfileList is a list of BFDProfile.
// +kubebuilder:object:root=true
type BFDProfileList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BFDProfile `json:"items"`
}

func init() {
	SchemeBuilder.Register(&BFDProfile{}, &BFDProfileList{})
}
