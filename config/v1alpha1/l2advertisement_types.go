package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// L2AdvertisementSpec says which pools' addresses are answered for with ARP
// and NDP, from which nodes and interfaces.
type L2AdvertisementSpec struct {
	// IPAddressPools names the pools announced. Empty, with no selectors:
	// every pool.
	// +kubebuilder:validation:MaxItems=256
	// +listType=set
	// +optional
	IPAddressPools []string `json:"ipAddressPools,omitempty"`

	// IPAddressPoolSelectors pick the pools announced by label.
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +optional
	IPAddressPoolSelectors []LabelSelector `json:"ipAddressPoolSelectors,omitempty"`

	// NodeSelectors limit the nodes that may own addresses. Empty: all.
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +optional
	NodeSelectors []LabelSelector `json:"nodeSelectors,omitempty"`

	// ServiceSelectors limit the addresses answered for to those of
	// Services whose labels match one of the selectors. Empty: every
	// Service of the selected pools. An address shared by several
	// Services is answered for only when every one of them matches.
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +optional
	ServiceSelectors []LabelSelector `json:"serviceSelectors,omitempty"`

	// PreferredNodeSelectors rank the nodes that may own an address: a
	// node scores the sum of the weights of the preferences it matches,
	// and the eligible node (NodeSelectors, live speaker, a ready
	// endpoint for externalTrafficPolicy Local) with the highest score
	// owns the address; ties, and the order among the rest for
	// failover, go by the usual per-address hash. A soft preference: when
	// no preferred node is eligible, another one answers.
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +optional
	PreferredNodeSelectors []PreferredNodeSelector `json:"preferredNodeSelectors,omitempty"`

	// Interfaces limits the interfaces answered on. Empty: the interface
	// that holds the node's address on the address's subnet.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=15
	// +kubebuilder:validation:items:Pattern=`^[^/\s:]+$`
	// +listType=set
	// +optional
	Interfaces []string `json:"interfaces,omitempty"`
}

// PreferredNodeSelector gives the nodes it selects a weight in the choice
// of the node that answers for an address.
type PreferredNodeSelector struct {
	// Weight added to the score of every node the preference selects,
	// 1-100.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	Weight int32 `json:"weight"`

	// Preference selects the nodes; an empty selector selects every node.
	Preference LabelSelector `json:"preference"`
}

// L2Advertisement announces pools' addresses on the local segment with ARP
// and NDP.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=zerohop
// +kubebuilder:printcolumn:name="Pools",type=string,JSONPath=`.spec.ipAddressPools`
// +kubebuilder:printcolumn:name="Interfaces",type=string,JSONPath=`.spec.interfaces`
type L2Advertisement struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec L2AdvertisementSpec `json:"spec,omitempty"`
}

// L2AdvertisementList is a list of L2Advertisement.
// +kubebuilder:object:root=true
type L2AdvertisementList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []L2Advertisement `json:"items"`
}

func init() {
	SchemeBuilder.Register(&L2Advertisement{}, &L2AdvertisementList{})
}
