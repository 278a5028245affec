package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BGPAdvertisementSpec says how the addresses of some pools are announced
// over BGP.
// +kubebuilder:validation:XValidation:rule=`!has(self.serviceSelectors) || size(self.serviceSelectors) == 0 || (!has(self.aggregationLength) || self.aggregationLength == 32) && (!has(self.aggregationLengthV6) || self.aggregationLengthV6 == 128)`,message="serviceSelectors pick single addresses: they need aggregationLength 32 and aggregationLengthV6 128, as an aggregate carries other Services' addresses too",fieldPath=".serviceSelectors",reason=FieldValueForbidden
type BGPAdvertisementSpec struct {
	// AggregationLength is the prefix length announced for IPv4 addresses.
	// Default 32: one route per address.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=32
	// +kubebuilder:default=32
	// +optional
	AggregationLength *int32 `json:"aggregationLength,omitempty"`

	// AggregationLengthV6 is the prefix length announced for IPv6
	// addresses. Default 128.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=128
	// +kubebuilder:default=128
	// +optional
	AggregationLengthV6 *int32 `json:"aggregationLengthV6,omitempty"`

	// LocalPref is the LOCAL_PREF attribute, sent on iBGP sessions only.
	// +optional
	// +kubebuilder:validation:Format=int64
	LocalPref uint32 `json:"localPref,omitempty"`

	// Communities attached to the routes: standard ("65000:100"), large
	// ("large:65000:1:2") or well-known names (no-export, no-advertise,
	// no-peer, blackhole).
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:XValidation:rule=`self in ['no-export', 'no-advertise', 'no-peer', 'blackhole'] || self.matches('^[0-9]{1,5}:[0-9]{1,5}$') && self.split(':').all(x, int(x) <= 65535) || self.matches('^large:[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}$') && self.split(':').filter(x, x != 'large').all(x, int(x) <= 4294967295)`,message="must be a standard community (0-65535:0-65535), a large community (large:ASN:N:N) or a well-known name"
	// +listType=set
	// +optional
	Communities []string `json:"communities,omitempty"`

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

	// NodeSelectors limit the nodes that announce. Empty: all.
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +optional
	NodeSelectors []LabelSelector `json:"nodeSelectors,omitempty"`

	// ServiceSelectors limit the addresses announced to those of Services
	// whose labels match one of the selectors. Empty: every Service of
	// the selected pools. An address shared by several Services is
	// announced only when every one of them matches.
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +optional
	ServiceSelectors []LabelSelector `json:"serviceSelectors,omitempty"`

	// Peers limits the BGPPeers (by name) that receive the routes. Empty:
	// all.
	// +kubebuilder:validation:MaxItems=256
	// +listType=set
	// +optional
	Peers []string `json:"peers,omitempty"`

	// WeightedECMP attaches the BGP Link Bandwidth extended community to
	// routes of externalTrafficPolicy Local Services, proportional to the
	// node's ready endpoints, so that routers that honour it spread
	// traffic per Pod rather than per node.
	// +optional
	WeightedECMP bool `json:"weightedECMP,omitempty"`
}

// BGPAdvertisement announces pools' addresses over BGP.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,categories=zerohop
// +kubebuilder:printcolumn:name="Pools",type=string,JSONPath=`.spec.ipAddressPools`
// +kubebuilder:printcolumn:name="Peers",type=string,JSONPath=`.spec.peers`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
type BGPAdvertisement struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   BGPAdvertisementSpec `json:"spec,omitempty"`
	Status ObjectStatus         `json:"status,omitempty"`
}

// BGPAdvertisementList is a list of BGPAdvertisement.
// +kubebuilder:object:root=true
type BGPAdvertisementList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPAdvertisement `json:"items"`
}

func init() {
	SchemeBuilder.Register(&BGPAdvertisement{}, &BGPAdvertisementList{})
}
