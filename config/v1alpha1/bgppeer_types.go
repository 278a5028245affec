package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BGPPeerSpec describes one BGP session the speakers open to a router.
// +kubebuilder:validation:XValidation:rule=`!has(self.holdTime) || duration(self.holdTime) == duration('0s') || duration(self.holdTime) >= duration('3s')`,message="holdTime must be 0 (no keepalives) or at least 3s",fieldPath=".holdTime",reason=FieldValueInvalid
// +kubebuilder:validation:XValidation:rule=`!has(self.keepaliveTime) || duration(self.keepaliveTime) < duration(has(self.holdTime) ? self.holdTime : '90s') || (duration(self.keepaliveTime) == duration('0s'))`,message="keepaliveTime must be less than holdTime (default 90s)",fieldPath=".keepaliveTime",reason=FieldValueInvalid
// +kubebuilder:validation:XValidation:rule=`!has(self.sourceAddress) || !has(self.peerAddress) || ip(self.sourceAddress).family() == ip(self.peerAddress).family()`,message="sourceAddress must be of the same family as peerAddress",fieldPath=".sourceAddress",reason=FieldValueInvalid
// +kubebuilder:validation:XValidation:rule=`has(self.peerASN) != has(self.dynamicASN)`,message="set exactly one of peerASN and dynamicASN",fieldPath=".peerASN",reason=FieldValueRequired
// +kubebuilder:validation:XValidation:rule=`has(self.peerAddress) != has(self.interface)`,message="set exactly one of peerAddress and interface",fieldPath=".peerAddress",reason=FieldValueRequired
// +kubebuilder:validation:XValidation:rule=`!has(self.sourceAddress) || !has(self.interface)`,message="an unnumbered session (interface) is opened from the interface's IPv6 link-local address; sourceAddress does not apply",fieldPath=".sourceAddress",reason=FieldValueForbidden
// +kubebuilder:validation:XValidation:rule=`!has(self.ebgpMultiHop) || !self.ebgpMultiHop || (has(self.peerASN) ? self.peerASN != self.myASN : self.dynamicASN != 'internal')`,message="ebgpMultiHop applies to eBGP sessions only; this is an iBGP peer (peerASN equals myASN, or dynamicASN internal)",fieldPath=".ebgpMultiHop",reason=FieldValueForbidden
type BGPPeerSpec struct {
	// MyASN is the AS number the speakers use on this session.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	// +kubebuilder:validation:Format=int64
	MyASN uint32 `json:"myASN"`

	// PeerASN is the router's AS number. Exactly one of PeerASN and
	// DynamicASN is set.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	// +kubebuilder:validation:Format=int64
	// +optional
	PeerASN uint32 `json:"peerASN,omitempty"`

	// DynamicASN takes the router's AS number from its OPEN message
	// instead of PeerASN: "internal" accepts only myASN (iBGP), "external"
	// only another AS (eBGP); the session is refused otherwise.
	// +kubebuilder:validation:Enum=internal;external
	// +optional
	DynamicASN DynamicASNMode `json:"dynamicASN,omitempty"`

	// PeerAddress is the router's IPv4 or IPv6 address. Exactly one of
	// PeerAddress and Interface is set.
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule=`isIP(self)`,message="must be an IPv4 or IPv6 address"
	// +kubebuilder:validation:XValidation:rule=`!isIP(self) || !ip(self).isUnspecified() && !ip(self).isLoopback() && !(ip(self).family() == 4 ? cidr('224.0.0.0/4') : cidr('ff00::/8')).containsIP(ip(self)) && self != '255.255.255.255'`,message="must not be an unspecified, loopback, multicast or broadcast address"
	// +optional
	PeerAddress string `json:"peerAddress,omitempty"`

	// Interface opens the session unnumbered (RFC 8950): to the one IPv6
	// link-local neighbour on this node interface, carrying IPv4 routes
	// with an IPv6 next hop. The link must be point to point.
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:Pattern=`^[^/\s:]+$`
	// +optional
	Interface string `json:"interface,omitempty"`

	// PeerPort is the router's TCP port. Default 179.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +kubebuilder:default=179
	// +optional
	PeerPort uint16 `json:"peerPort,omitempty"`

	// SourceAddress is the local address the session is opened from.
	// Default: chosen by the node's routing table.
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule=`isIP(self)`,message="must be an IPv4 or IPv6 address"
	// +optional
	SourceAddress string `json:"sourceAddress,omitempty"`

	// RouterID overrides the BGP router ID (an IPv4 address). Default: the
	// node's first IPv4 address. A node runs one BGP router, so the peers
	// that select one node must agree on it (as in MetalLB's FRR mode).
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:XValidation:rule=`isIP(self) && ip(self).family() == 4`,message="must be an IPv4 address"
	// +optional
	RouterID string `json:"routerID,omitempty"`

	// HoldTime is the BGP hold time: 0 or at least 3s. Default 90s.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +optional
	HoldTime *metav1.Duration `json:"holdTime,omitempty"`

	// KeepaliveTime is the interval between keepalives; less than
	// HoldTime. Default a third of HoldTime.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +optional
	KeepaliveTime *metav1.Duration `json:"keepaliveTime,omitempty"`

	// ConnectTime is how long to wait between connection attempts.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule=`duration(self) >= duration('1s') && duration(self) <= duration('65535s')`,message="must be between 1s and 65535s"
	// +optional
	ConnectTime *metav1.Duration `json:"connectTime,omitempty"`

	// EBGPMultiHop lets an eBGP session cross more than one hop. Refused
	// on an iBGP peer, where it means nothing.
	// +optional
	EBGPMultiHop bool `json:"ebgpMultiHop,omitempty"`

	// PasswordSecret names a Secret of type kubernetes.io/basic-auth, in the
	// speaker's namespace, whose "password" key is the TCP MD5 password.
	// +optional
	PasswordSecret *SecretReference `json:"passwordSecret,omitempty"`

	// BFDProfile names the BFDProfile whose settings run BFD on this
	// session. Empty: no BFD.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	BFDProfile string `json:"bfdProfile,omitempty"`

	// EnableGracefulRestart asks the router to keep this session's routes
	// while the speaker restarts (RFC 4724).
	// +optional
	EnableGracefulRestart bool `json:"enableGracefulRestart,omitempty"`

	// NodeSelectors limit the nodes that open this session. Empty: all.
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +optional
	NodeSelectors []LabelSelector `json:"nodeSelectors,omitempty"`
}

// DynamicASNMode is how a BGPPeer without peerASN accepts the router's AS.
type DynamicASNMode string

// DynamicASN modes.
const (
	DynamicASNInternal DynamicASNMode = "internal"
	DynamicASNExternal DynamicASNMode = "external"
)

// SecretReference names a Secret.
type SecretReference struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Namespace of the Secret. Default: the speaker's namespace.
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Namespace string `json:"namespace,omitempty"`
}

// ObjectStatus reports, for the kinds whose conflicts the schema cannot
// see, whether the object is in force.
type ObjectStatus struct {
	// Conditions: Accepted is False, with the reason and the object it
	// conflicts with, where zerohop does not use the object (or a part of
	// it) because an older object keeps what it asks for. Written by the
	// controller; the speakers apply the same rules on their own.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ConditionAccepted is the condition type of ObjectStatus.
const ConditionAccepted = "Accepted"

// BGPPeer is a router the speakers peer with.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,categories=zerohop
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.spec.peerAddress`
// +kubebuilder:printcolumn:name="ASN",type=integer,JSONPath=`.spec.peerASN`
// +kubebuilder:printcolumn:name="My ASN",type=integer,JSONPath=`.spec.myASN`
// +kubebuilder:printcolumn:name="BFD",type=string,JSONPath=`.spec.bfdProfile`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
type BGPPeer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   BGPPeerSpec  `json:"spec"`
	Status ObjectStatus `json:"status,omitempty"`
}

// BGPPeerList is a list of BGPPeer.
// +kubebuilder:object:root=true
type BGPPeerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPPeer `json:"items"`
}

func init() {
	SchemeBuilder.Register(&BGPPeer{}, &BGPPeerList{})
}
