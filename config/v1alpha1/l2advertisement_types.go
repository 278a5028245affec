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

	// Interfaces limits the interfaces answered on. Empty: the interface
	// that holds the node's address on the address's subnet.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=15
	// +kubebuilder:validation:items:Pattern=`^[^/\s:]+$`
	// +listType=set
	// +optional
	Interfaces []string `json:"interfaces,omitempty"`
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
