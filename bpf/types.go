package bpf

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
)

// Proto is an IP protocol number.
type Proto uint8

// Protocols the datapath balances.
const (
	TCP Proto = 6
	UDP Proto = 17
)

func (p Proto) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// ServiceKey is what a client addresses: a VIP, a port and a protocol.
type ServiceKey struct {
	Addr  netip.Addr
	Port  uint16
	Proto Proto
}

func (k ServiceKey) String() string {
	return fmt.Sprintf("%s/%s", netip.AddrPortFrom(k.Addr, k.Port), k.Proto)
}

// ServiceFlags select how a service is balanced.
type ServiceFlags uint32

const (
	// ServiceLocal: externalTrafficPolicy Local, backends on this node only.
	ServiceLocal ServiceFlags = 1 << 0
	// ServiceCluster: externalTrafficPolicy Cluster, Maglev over all ready
	// backends; remote ones are reached by IP-in-IP to Backend.Node and
	// reply directly to the client (direct server return).
	ServiceCluster ServiceFlags = 1 << 1
	// ServiceAffinity: ClientIP session affinity. New flows choose by the
	// client address alone, and a client stays on its backend for
	// ServiceConfig.AffinityTimeout after its last packet.
	ServiceAffinity ServiceFlags = 1 << 2
	// ServiceSourceRanges: only clients within ServiceConfig.SourceRanges
	// are admitted (loadBalancerSourceRanges); other sources' packets are
	// dropped and counted in Counters.Denied.
	ServiceSourceRanges ServiceFlags = 1 << 3
)

// serviceFlagsKnown are the flags the datapath implements.
const serviceFlagsKnown = ServiceLocal | ServiceCluster | ServiceAffinity | ServiceSourceRanges

// ServiceConfig is everything a service holds.
type ServiceConfig struct {
	Backends []Backend
	Flags    ServiceFlags
	// SourceRanges, with flag ServiceSourceRanges, are the only client
	// prefixes admitted; other sources' packets are dropped and counted
	// (Counters.Denied), established flows included. Prefixes of the other
	// family than the VIP are an error (the caller filters per family).
	// Flag set with no ranges: every source refused.
	SourceRanges []netip.Prefix
	// AffinityTimeout applies with ServiceAffinity; 0 means 10800s
	// (Kubernetes' default).
	AffinityTimeout time.Duration
	// RejectWeight, when not 0, adds the reject share to the Maglev
	// table: that weight's share of the slots (relative to the eligible
	// backends' weights, where 0 counts as 1) names no backend, and a new
	// flow that hashes to one is rejected: a TCP segment is answered with
	// a reset, anything else dropped (Counters.Rejects). With no eligible
	// backend, every new flow is rejected. Established flows are not
	// affected.
	RejectWeight uint32
}

// BackendFlags describe one endpoint of a service.
type BackendFlags uint32

const (
	// BackendLocal: the Pod runs on this node.
	BackendLocal BackendFlags = 1 << 0
	// BackendRemote: the Pod runs on Backend.Node (Cluster mode).
	BackendRemote BackendFlags = 1 << 1
	// BackendTerminating: keeps its established flows, gets no new ones.
	BackendTerminating BackendFlags = 1 << 2

	// backendSvcSourceRanges is set by the datapath itself on every
	// backend of a ServiceSourceRanges service (ZH_BE_SVC_SRC_RANGES).
	backendSvcSourceRanges BackendFlags = 1 << 8
	// backendFlagsKnown are the flags callers may set.
	backendFlagsKnown = BackendLocal | BackendRemote | BackendTerminating
)

// Backend is one endpoint of a service.
type Backend struct {
	Addr  netip.Addr // Pod address, same family as the VIP
	Port  uint16     // Pod port (targetPort)
	Node  netip.Addr // node the Pod runs on; optional for local backends
	Flags BackendFlags
	// Weight sets the backend's share of its service's Maglev slots, and
	// so of new flows, relative to the other backends' (0 counts as 1).
	Weight uint32
}

// AddrPort is the identity of a backend within its service.
func (b Backend) AddrPort() netip.AddrPort { return netip.AddrPortFrom(b.Addr, b.Port) }

// Counters are summed over all CPUs.
type Counters struct {
	Packets uint64 // forwarded to a backend
	Bytes   uint64 // L3 bytes forwarded
	Drops   uint64 // new flows dropped: no backend could take them
	CTMiss  uint64 // conntrack misses on packets other than a TCP SYN
	Flows   uint64 // conntrack entries created
	Denied  uint64 // packets from sources outside the service's SourceRanges: dropped
	Rejects uint64 // new flows in the reject share (ServiceConfig.RejectWeight): reset or dropped
}

func (c *Counters) add(o Counters) {
	c.Packets += o.Packets
	c.Bytes += o.Bytes
	c.Drops += o.Drops
	c.CTMiss += o.CTMiss
	c.Flows += o.Flows
	c.Denied += o.Denied
	c.Rejects += o.Rejects
}

// ServiceStats are the counters of a service and of each of its backends.
type ServiceStats struct {
	Counters
	Backends map[netip.AddrPort]Counters
}

const (
	familyV4 = 4
	familyV6 = 6
)

func family(a netip.Addr) uint8 {
	if a.Is4() {
		return familyV4
	}
	return familyV6
}

// addrWords lays an address out as the C side's __u32 addr[4]: network
// byte order in memory, IPv4 in word 0.
func addrWords(a netip.Addr) [4]uint32 {
	var b [16]byte
	if a.Is4() {
		v4 := a.As4()
		copy(b[:], v4[:])
	} else if a.IsValid() {
		b = a.As16()
	}
	var w [4]uint32
	for i := range w {
		w[i] = binary.NativeEndian.Uint32(b[4*i:])
	}
	return w
}

func wordsAddr(w [4]uint32, fam uint8) netip.Addr {
	var b [16]byte
	for i := range w {
		binary.NativeEndian.PutUint32(b[4*i:], w[i])
	}
	if fam == familyV4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(b)
}

// netPort converts a host port to the in-memory value of a __be16.
func netPort(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

func hostPort(p uint16) uint16 { return netPort(p) }

func svcKey(k ServiceKey) zhSvcKey {
	return zhSvcKey{
		Addr:   addrWords(k.Addr),
		Port:   netPort(k.Port),
		Proto:  uint8(k.Proto),
		Family: family(k.Addr),
	}
}

func fromSvcKey(k zhSvcKey) ServiceKey {
	return ServiceKey{Addr: wordsAddr(k.Addr, k.Family), Port: hostPort(k.Port), Proto: Proto(k.Proto)}
}
