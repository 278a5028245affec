package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SpeakerStatusStatus is what one node's speaker reports: its BGP sessions
// and which Services it announces to which peers.
type SpeakerStatusStatus struct {
	// Node is the node the speaker runs on (also the object's name).
	Node string `json:"node,omitempty"`

	// Sessions are the node's BGP sessions, one per selected BGPPeer.
	// +listType=map
	// +listMapKey=peer
	// +optional
	Sessions []BGPSessionStatus `json:"sessions,omitempty"`

	// Announcements list, per Service, the prefixes this node announces
	// and to which peers. Capped at 5000 entries; Truncated says when
	// more were left out.
	// +listType=map
	// +listMapKey=service
	// +optional
	Announcements []ServiceAnnouncement `json:"announcements,omitempty"`

	// L2 lists the addresses this node answers ARP/NDP for (it owns them
	// in L2 mode), sorted, capped at 5000.
	// +listType=map
	// +listMapKey=ip
	// +optional
	L2 []L2Ownership `json:"l2,omitempty"`

	// Truncated is true when Announcements was capped.
	// +optional
	Truncated bool `json:"truncated,omitempty"`

	// Datapath says which Services this node's XDP datapath serves;
	// absent when the speaker runs without one (announce only).
	// +optional
	Datapath *DatapathStatus `json:"datapath,omitempty"`

	// Errors are configuration problems the speaker found (bad selectors,
	// missing password Secrets, duplicate peer addresses), capped at 50.
	// +listType=atomic
	// +optional
	Errors []string `json:"errors,omitempty"`
}

// BGPSessionStatus is the state of one BGP session.
type BGPSessionStatus struct {
	// Peer is the BGPPeer's name.
	Peer string `json:"peer"`
	// Address is the router's address.
	Address string `json:"address,omitempty"`
	// State is the BGP FSM state: idle, connect, active, opensent,
	// openconfirm or established.
	State string `json:"state,omitempty"`
	// Since is when the session entered State.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`
	// BFD is the state of the BFD session to the peer, up or down, when
	// the BGPPeer has a bfdProfile; empty otherwise.
	// +optional
	// +kubebuilder:validation:Enum=up;down
	BFD string `json:"bfd,omitempty"`
}

// ServiceAnnouncement says what this node announces for one Service.
type ServiceAnnouncement struct {
	// Service is namespace/name.
	Service string `json:"service"`
	// Prefixes announced for the Service's IPs.
	// +listType=set
	Prefixes []string `json:"prefixes,omitempty"`
	// Peers (BGPPeer names) that receive them.
	// +listType=set
	Peers []string `json:"peers,omitempty"`
}

// L2Ownership is one address this node owns in L2 mode.
type L2Ownership struct {
	// IP is the Service address.
	IP string `json:"ip"`
	// Service is namespace/name.
	Service string `json:"service,omitempty"`
	// Interfaces answered on.
	// +listType=set
	// +optional
	Interfaces []string `json:"interfaces,omitempty"`
}

// SpeakerStatus is written by the speaker of the node it is named after;
// users read it to see sessions and announcements per node. It has no
// spec: deleting it is harmless, the speaker writes it again.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,categories=zerohop
type SpeakerStatus struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Status SpeakerStatusStatus `json:"status,omitempty"`
}

// SpeakerStatusList is a list of SpeakerStatus.
// +kubebuilder:object:root=true
type SpeakerStatusList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []SpeakerStatus `json:"items"`
}

func init() {
	SchemeBuilder.Register(&SpeakerStatus{}, &SpeakerStatusList{})
}
