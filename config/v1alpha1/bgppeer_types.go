package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BGPPeerSpec describes one BGP session the speakers open to a router.
// +kubebuilder:validation:XValidation:rule=`!has(self.holdTime) || duration(self.holdTime) == duration('0s') || duration(self.holdTime) >= duration('3s')`,message="holdTime must be 0 (no keepalives) or at least 3s",fieldPath=".holdTime",reason=FieldValueInvalid
// +kubebuilder:validation:XValidation:rule=`!has(self.keepaliveTime) || duration(self.keepaliveTime) < duration(has(self.holdTime) ? self.holdTime : '90s') || (duration(self.keepaliveTime) == duration('0s'))`,message="keepaliveTime must be less than holdTime (default 90s)",fieldPath=".keepaliveTime",reason=FieldValueInvalid
// +kubebuilder:validation:XValidation:rule=`!has(self.sourceAddress) || ip(self.sourceAddress).family() == ip(self.peerAddress).family()`,message="sourceAddress must be of the same family as peerAddress",fieldPath=".sourceAddress",reason=FieldValueInvalid
type BGPPeerSpec struct {
	// MyASN is the AS number the speakers use on this session.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	// +kubebuilder:validation:Format=int64
	MyASN uint32 `json:"myASN"`

	// PeerASN is the router's AS number.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	// +kubebuilder:validation:Format=int64
	PeerASN uint32 `json:"peerASN"`

	// PeerAddress is the router's IPv4 or IPv6 address.
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule=`isIP(self)`,message="must be an IPv4 or IPv6 address"
	// +kubebuilder:validation:XValidation:rule=`!isIP(self) || !ip(self).isUnspecified() && !ip(self).isLoopback() && !(ip(self).family() == 4 ? cidr('224.0.0.0/4') : cidr('ff00::/8')).containsIP(ip(self)) && self != '255.255.255.255'`,message="must not be an unspecified, loopback, multicast or broadcast address"
	PeerAddress string `json:"peerAddress"`

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
	// node's first IPv4 address.
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

	// EBGPMultiHop lets an eBGP session cross more than one hop.
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
