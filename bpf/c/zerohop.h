/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Map layouts shared by the XDP and tc programs. The Go side gets these
 * through bpf2go (-type), so a field added here shows up in Go at the next
 * `make generate` and a layout mismatch cannot go unnoticed.
 *
 * Addresses are stored as four network-order 32-bit words; IPv4 uses word 0
 * and leaves the rest zero. Every struct is padded explicitly so that keys
 * hash the same whether written by Go or by C.
 */
#pragma once

#include <linux/types.h>

#define ZH_AF_INET 4
#define ZH_AF_INET6 6

/* services key: what a client addresses. */
struct svc_key {
	__u32 addr[4];
	__be16 port;
	__u8 proto;
	__u8 family;
};

/* Service flags. */
#define ZH_SVC_LOCAL (1U << 0)
#define ZH_SVC_CLUSTER (1U << 1)
#define ZH_SVC_AFFINITY (1U << 2)
#define ZH_SVC_SRC_RANGES (1U << 3) /* only sources in src_ranges admitted */

struct svc_value {
	__u32 id;      /* index of the stats entry; maglev tables id*2 and id*2+1 */
	__u32 flags;   /* ZH_SVC_* */
	__u32 count;   /* entries in the active Maglev table (the reject share counts one); 0 = drop new flows */
	__u32 active;  /* which of the two maglev tables is live (0 or 1) */
	__u32 affinity_timeout; /* seconds, for ZH_SVC_AFFINITY */
};

#define ZH_BE_LOCAL (1U << 0)
#define ZH_BE_REMOTE (1U << 1)
#define ZH_BE_TERMINATING (1U << 2)
/* Set by the loader on every backend of a ZH_SVC_SRC_RANGES service, so
 * that an established flow, which never reads its service entry, is
 * checked too without another lookup. */
#define ZH_BE_SVC_SRC_RANGES (1U << 8)

/* A Maglev slot that holds ZH_BE_REJECT names no backend: it is the
 * service's reject share (a Gateway route's backendRefs that do not
 * resolve, or have no ready endpoint). A new flow that hashes to it is
 * rejected (reject.h) and counted in the rejects map; no flow is
 * recorded. No backend has this id (the backends array is smaller). */
#define ZH_BE_REJECT 0xffffffffU

struct backend {
	__u32 addr[4]; /* pod address */
	__u32 node[4]; /* node address: where a remote backend is encapsulated to */
	__be16 port;
	__u8 family;   /* 0 = unused slot */
	__u8 pad;
	__u32 flags;   /* ZH_BE_* */
	__u32 svc;     /* owning service id: a stale flow cannot reach a reused id */
};

/* A flow as seen on the wire in one direction. conntrack keys it as
 * client -> VIP, revnat as pod -> client. */
struct tuple {
	__u32 saddr[4];
	__u32 daddr[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 family;
	__u8 pad[2];
};

struct ct_value {
	__u32 backend;
	__u32 svc;
	__u64 last_seen;   /* jiffies, refreshed every ZH_TICKS (about a second) */
	/* Next hop from bpf_fib_lookup, reused for ZH_TICKS jiffies so an
	 * established flow does not pay for a FIB and neighbour lookup per
	 * packet. */
	__u64 nh_until;    /* jiffies; 0 = nothing cached */
	__u32 nh_ifindex;
	__u8 nh_dmac[6];
	__u8 nh_smac[6];
};

/* flow_cache: a per-CPU, direct-mapped copy of the conntrack entries of
 * established IPv4 flows to local backends, with their cached next hop.
 * A hit costs an inlined array read and a key compare in the program
 * itself: a conntrack (hash map) lookup is a chain of kernel calls, each
 * of whose returns is expensive where the kernel mitigates return-stack
 * attacks. Filled from conntrack by the fast path, so it only ever holds
 * what conntrack held; every use checks the backend slot as a conntrack
 * hit does. The key is the slot's first 16 bytes. */
struct flow_cache_entry {
	__u32 saddr;
	__u32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;   /* 0: empty slot */
	__u8 how;     /* ZH_POD_* of nh_ifindex when filled, 0: neither */
	__u16 slot;   /* ZH_POD_PEER: its pod_slots entry, checked per packet */
	__u64 nh_until; /* jiffies: the slot is used only before this */
	__u32 backend;
	__u32 svc;
	__u32 nh_ifindex;
	__u8 nh_dmac[6];
	__u8 nh_smac[6];
};

#define ZH_RV_ENCAP (1U << 0) /* the flow arrived encapsulated (Cluster mode) */

struct revnat_value {
	__u32 addr[4]; /* VIP */
	__be16 port;   /* service port */
	__u8 family;
	__u8 flags;    /* ZH_RV_* */
	__u32 svc;
};

struct counters {
	__u64 packets;      /* forwarded to a backend */
	__u64 bytes;
	__u64 drops;        /* no backend to send a new flow to */
	__u64 ct_miss;      /* conntrack misses on packets that are not a TCP SYN */
	__u64 flows;        /* conntrack entries created */
	__u64 denied;       /* packets from sources outside the service's src_ranges: dropped */
};

/* Mirrors the load-time constants so that a later process that re-opens the
 * pinned maps can check it builds compatible tables. Not read by programs. */
struct dp_config {
	__u32 maglev_m;
	__u32 seed;
	__u32 max_services;
	__u32 version;
};

/* This node's part in Cluster mode (one entry). Encapsulation addressed to
 * addr4/addr6 from a known peer is taken apart here; packets this node
 * encapsulates leave from src4/src6 with the bits under the masks taken
 * from the flow hash, so the receiver's RSS spreads flows over its queues.
 * All addresses and masks are in network order. */
struct node_cfg {
	__u32 addr4;      /* 0: no IPv4 decapsulation */
	__u32 src4;
	__u32 src4_mask;  /* host bits varied per flow */
	__u32 mtu;        /* path MTU between nodes; 0: no MSS clamp */
	__u32 addr6[4];   /* all zero: no IPv6 decapsulation */
	__u32 src6[4];
	__u32 src6_mask;  /* host bits of the last word varied per flow */
	__u32 pad;
};

/* peers: LPM trie over the outer source addresses other nodes encapsulate
 * from. prefixlen counts the family word too (32 + address bits). */
struct peer_key {
	__u32 prefixlen;
	__u32 family;
	__u32 addr[4];
};

/* src_ranges: LPM trie over (service id, client prefix). prefixlen counts
 * the id word too (32 + address bits), so a lookup matches only prefixes
 * of the packet's own service. */
struct src_key {
	__u32 prefixlen;
	__u32 svc;
	__u32 addr[4];
};

/* ClientIP affinity: a client's backend for a ZH_SVC_AFFINITY service. */
struct aff_key {
	__u32 svc;
	__u32 family;
	__u32 addr[4];
};

struct aff_value {
	__u32 backend;
	__u32 pad;
	__u64 last_used; /* bpf_ktime_get_ns of the client's last new flow */
};

/* A datagram in fragments: the first fragment's ports, for the rest. */
struct frag_key {
	__u32 saddr[4];
	__u32 daddr[4];
	__u32 id;        /* IPv4 id (network order, low 16 bits) or IPv6 identification */
	__u8 proto;
	__u8 family;
	__u8 pad[2];
};

struct frag_value {
	__be16 sport;
	__be16 dport;
};

/* VIP addresses with at least one service: echo requests are answered for
 * these (the filter alone has false positives). */
struct vip_key {
	__u32 addr[4];
	__u32 family;
};

/* How a Pod's host-side interface takes the packets XDP balances to it
 * (pod_links values). */
#define ZH_POD_PEER 1 /* bpf_redirect_peer from tc ingress: veth / netkit, other end in the Pod */
#define ZH_POD_XDP 2  /* an XDP redirect (tx_ports): the Pod's end has NAPI (EnableRedirect) */

struct pod_link {
	__u32 how;  /* ZH_POD_* */
	__u32 slot; /* ZH_POD_PEER: its pod_slots entry */
};

/* What tc ingress needs to send a marked frame into a Pod: the interface
 * and the MACs a router's frame to the Pod carries. ifindex 0: unused. */
struct pod_slot {
	__u32 ifindex;
	__u8 host_mac[6]; /* the node's side: the veth, or the bridge the Pod routes through */
	__u8 pod_mac[6];  /* the Pod's; all zero when not known (the frame keeps the uplink's) */
};

/* pod_fdb key: a Pod's MAC behind a bridge (cni0), as bpf_fib_lookup
 * names the bridge and the MAC; the value is the bridge port (the Pod's
 * veth), as the bridge's forwarding database says. */
struct fdb_key {
	__u32 ifindex; /* the bridge */
	__u8 mac[6];
	__u8 pad[2];
};

/* XDP marks a frame it rewrote for a Pod link by its Ethernet source: the
 * four bytes ZH_MARK (a locally administered unicast prefix) and the
 * link's pod_slots index (big endian). tc ingress on the same uplink reads
 * the mark and sends the frame into the Pod. The destination MAC is left
 * as it came, so without tc the node routes the frame. XDP drops frames
 * that arrive with the mark: no one else can ask tc to skip netfilter. */
#define ZH_MARK0 0x0a
#define ZH_MARK1 0x7a
#define ZH_MARK2 0x68
#define ZH_MARK3 0xd1

/* How packets to local backends left the uplink (one PERCPU_ARRAY entry).
 * Counted per packet, on the node that delivers to its own Pod. */
struct delivery_counts {
	__u64 peer;     /* XDP: rewritten and marked for tc ingress's bpf_redirect_peer */
	__u64 redirect; /* XDP: redirected into the Pod's interface (tx_ports) */
	__u64 stack;    /* XDP: rewritten and passed to the node's routing (no neighbour, TTL, VLAN, an interface it cannot use) */
	__u64 peer_tc;  /* tc ingress: sent into the Pod by bpf_redirect_peer (segments of a GRO packet each) */
	__u64 spoofed;  /* XDP: frames that arrived with the mark as their source: dropped */
	__u64 reply_tc; /* tc on a Pod link: replies sent out of the uplink, rewritten, without the stack */
};

/* Node-wide event counters (one PERCPU_ARRAY entry). */
struct event_counts {
	__u64 encap;          /* packets encapsulated to a remote backend's node */
	__u64 encap_fail;     /* could not grow the frame: dropped */
	__u64 decap;          /* encapsulated packets from a peer taken apart */
	__u64 decap_refused;  /* protocol 4/41 to this node from an unknown source: passed */
	__u64 decap_no_local; /* decapsulated, but the backend is not local: dropped */
	__u64 mss_clamped;    /* SYN / SYN-ACK MSS lowered to fit the path MTU */
	__u64 frag_first;     /* first fragments recorded */
	__u64 frag_hit;       /* later fragments that followed their first */
	__u64 frag_miss;      /* later fragments with no record: passed */
	__u64 icmp_relay;     /* frag-needed / packet-too-big sent to the flow's backend */
	__u64 icmp_no_flow;   /* such errors for no known service: passed */
	__u64 echo_reply;     /* echo requests to a VIP answered */
};
