package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// IPAddressPoolSpec says which addresses zerohop may hand out and to whom.
type IPAddressPoolSpec struct {
	// Addresses lists the pool's addresses, each a CIDR ("192.0.2.0/28",
	// "2001:db8::/120") or an inclusive range of one family
	// ("192.0.2.10-192.0.2.20").
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=256
	// +listType=atomic
	Addresses []Address `json:"addresses"`

	// AutoAssign lets the controller take addresses from this pool for
	// Services that did not ask for it by name. Default true.
	// +kubebuilder:default=true
	// +optional
	AutoAssign *bool `json:"autoAssign,omitempty"`

	// AvoidBuggyIPs skips addresses ending in .0 and .255, which some
	// consumer routers drop.
	// +kubebuilder:default=false
	// +optional
	AvoidBuggyIPs bool `json:"avoidBuggyIPs,omitempty"`

	// ServiceAllocation restricts which Services may take from the pool
	// and orders pools among each other.
	// +optional
	ServiceAllocation *ServiceAllocation `json:"serviceAllocation,omitempty"`
}

// Address is one pool entry: a CIDR, or a range "start-end" whose ends are
// of one family with start <= end. Addresses that can never be LoadBalancer
// IPs (unspecified, loopback, link-local, multicast, broadcast, IPv4-mapped)
// are refused: the schema checks a CIDR's network address and an IPv4
// CIDR's width, and range ends; the controller refuses the rest (a range or
// an IPv6 CIDR that only spans such a block), marking the pool invalid. The schema checks the order of IPv4
// ranges; the order of IPv6 ranges is checked by the controller, which
// marks the pool invalid (a CEL rule for it is over the API server's cost
// budget).
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=90
// +kubebuilder:validation:XValidation:rule=`self.contains('-') || isCIDR(self)`,message="must be a CIDR (192.0.2.0/24, 2001:db8::/64) or a range start-end; IPv4-mapped IPv6 addresses are not allowed"
// +kubebuilder:validation:XValidation:rule=`self.contains('-') || !isCIDR(self) || cidr(self).ip().isGlobalUnicast() && (cidr(self).ip().family() == 6 || cidr(self).prefixLength() >= 8)`,message="must not include unspecified, loopback, link-local, multicast or broadcast addresses: a LoadBalancer IP must be routable unicast"
// +kubebuilder:validation:XValidation:rule=`!self.contains('-') || size(self.split('-')) != 2 || !isIP(self.split('-')[0].trim()) || !isIP(self.split('-')[1].trim()) || ip(self.split('-')[0].trim()).isGlobalUnicast() && ip(self.split('-')[1].trim()).isGlobalUnicast()`,message="range ends must not be unspecified, loopback, link-local, multicast or broadcast addresses: a LoadBalancer IP must be routable unicast"
// +kubebuilder:validation:XValidation:rule=`!self.contains('-') || size(self.split('-')) == 2 && isIP(self.split('-')[0].trim()) && isIP(self.split('-')[1].trim()) && ip(self.split('-')[0].trim()).family() == ip(self.split('-')[1].trim()).family()`,message="a range must be two IP addresses of one family joined by '-'"
// +kubebuilder:validation:XValidation:rule=`!self.contains('-') || size(self.split('-')) != 2 || !isIP(self.split('-')[0].trim()) || !isIP(self.split('-')[1].trim()) || ip(self.split('-')[0].trim()).family() != 4 || ip(self.split('-')[1].trim()).family() != 4 || int(self.split('-')[0].trim().split('.')[0]) < int(self.split('-')[1].trim().split('.')[0]) || int(self.split('-')[0].trim().split('.')[0]) == int(self.split('-')[1].trim().split('.')[0]) && (int(self.split('-')[0].trim().split('.')[1]) < int(self.split('-')[1].trim().split('.')[1]) || int(self.split('-')[0].trim().split('.')[1]) == int(self.split('-')[1].trim().split('.')[1]) && (int(self.split('-')[0].trim().split('.')[2]) < int(self.split('-')[1].trim().split('.')[2]) || int(self.split('-')[0].trim().split('.')[2]) == int(self.split('-')[1].trim().split('.')[2]) && int(self.split('-')[0].trim().split('.')[3]) <= int(self.split('-')[1].trim().split('.')[3])))`,message="range start must not be above range end"
type Address string

// ServiceAllocation narrows which Services a pool serves.
type ServiceAllocation struct {
	// Priority orders pools that could serve the same Service: lower
	// numbers are tried first; pools without a priority come last.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Priority int32 `json:"priority,omitempty"`

	// Namespaces the pool serves, by name. Empty means all.
	// +kubebuilder:validation:MaxItems=256
	// +listType=set
	// +optional
	Namespaces []string `json:"namespaces,omitempty"`

	// NamespaceSelectors pick the namespaces the pool serves by label.
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +optional
	NamespaceSelectors []LabelSelector `json:"namespaceSelectors,omitempty"`

	// ServiceSelectors pick the Services the pool serves by label.
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +optional
	ServiceSelectors []LabelSelector `json:"serviceSelectors,omitempty"`
}

// IPAddressPoolStatus reports how full the pool is, per family.
type IPAddressPoolStatus struct {
	// AssignedIPv4 is the number of IPv4 addresses held by Services.
	AssignedIPv4 int64 `json:"assignedIPv4"`
	// AvailableIPv4 is the number of IPv4 addresses still free.
	AvailableIPv4 int64 `json:"availableIPv4"`
	// AssignedIPv6 is the number of IPv6 addresses held by Services.
	AssignedIPv6 int64 `json:"assignedIPv6"`
	// AvailableIPv6 is the number of IPv6 addresses still free, capped at
	// 2^63-1 for very large ranges.
	AvailableIPv6 int64 `json:"availableIPv6"`

	// Conditions: Overlapping when another pool shares addresses with
	// this one; Valid when every address parsed.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// IPAddressPool is a set of addresses that the controller hands out to
// LoadBalancer Services.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=ippool;ippools,categories=zerohop
// +kubebuilder:printcolumn:name="Auto",type=boolean,JSONPath=`.spec.autoAssign`
// +kubebuilder:printcolumn:name="Buggy IPs",type=boolean,JSONPath=`.spec.avoidBuggyIPs`,priority=1
// +kubebuilder:printcolumn:name="IPv4 used",type=integer,JSONPath=`.status.assignedIPv4`
// +kubebuilder:printcolumn:name="IPv4 free",type=integer,JSONPath=`.status.availableIPv4`
// +kubebuilder:printcolumn:name="IPv6 used",type=integer,JSONPath=`.status.assignedIPv6`
// +kubebuilder:printcolumn:name="IPv6 free",type=integer,JSONPath=`.status.availableIPv6`
type IPAddressPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   IPAddressPoolSpec   `json:"spec"`
	Status IPAddressPoolStatus `json:"status,omitempty"`
}

// IPAddressPoolList is a list of IPAddressPool.
// +kubebuilder:object:root=true
type IPAddressPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPAddressPool `json:"items"`
}

func init() {
	SchemeBuilder.Register(&IPAddressPool{}, &IPAddressPoolList{})
}
