// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * zerohop datapath: VIP -> Pod in one hop (Local mode), or to another node
 * by IP-in-IP built here with direct server return (Cluster mode).
 *
 *   zh_xdp        XDP on the uplink: VIP hit -> conntrack/Maglev -> DNAT to
 *                 a local Pod -> fib lookup -> redirect (or XDP_PASS); or
 *                 encapsulate towards a remote backend's node -> XDP_TX.
 *                 Encapsulation from a known peer is taken apart first and
 *                 the inner packet handled as above (never sent on again).
 *                 Also: fragments follow their first fragment, ICMP
 *                 frag-needed / packet-too-big go to the flow's backend,
 *                 echo requests to a VIP are answered.
 *   zh_tc_egress  tcx egress on the uplink: Pod reply -> SNAT back to VIP
 *                 (and the SYN-ACK's MSS clamped for encapsulated flows).
 *
 * Layout: the file reads top to bottom as maps, checksum helpers, parsing,
 * backend choice (ct_lookup, zh_new_flow), rewrite, forwarding, Cluster
 * mode (MSS clamp, encap, decap), ICMP, then the entry points. Parsing
 * fills a struct zh_pkt whose `kind` says which path a packet takes.
 *
 * Verification cost shapes the structure: lb() is one global function
 * (zh_lb, verified once, called for the frame and again for a
 * decapsulated inner packet), and so is the new-flow choice (zh_new_flow,
 * whatever packet kind led to it); encap and decap are separate frames so
 * the 512-byte stack limit holds across the call chain; the TCP option
 * walk is bounded to four options.
 *
 * Speed shapes the front: an established IPv4 hit is served from
 * flow_cache inline in zh_xdp (front()), with no call but the tx_ports
 * check; then zh_fast (one conntrack lookup); then zh_lb.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "zerohop.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8
#define IP_MF_ 0x2000
#define IP_OFFSET_ 0x1FFF
#define TCX_NEXT_ (-1)
/* linux/icmp.h pulls in libc headers; the few ICMP numbers needed: */
#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_FRAG_NEEDED 4
#define ICMP_ECHO 8
#define ICMPV6_PKT_TOOBIG 2
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129

#define ZH_DEF_SERVICES 16384
#define ZH_DEF_BACKENDS 65536
#define ZH_DEF_FLOWS 131072
#define ZH_DEF_MAGLEV 16381
#define ZH_DEF_SRC_RANGES 65536
#define ZH_CHUNK_MAX 1000

/* Load-time constants (.rodata, frozen): the verifier sees them as known
 * values, so zh_chunk_slots bounds table indexing and zh_ct_bypass is removed as
 * dead code when false. */
volatile const __u32 zh_maglev_m = ZH_DEF_MAGLEV;
volatile const __u32 zh_chunk_slots = ZH_CHUNK_MAX;
volatile const __u32 zh_seed = 0;
volatile const __u32 zh_max_services = ZH_DEF_SERVICES;
/* Test-only: ignore conntrack hits so a repeated packet measures the
 * new-flow path (bench-xdp). Never set in production. */
volatile const __u32 zh_ct_bypass = 0;
/* Test-only: put the frame back as it came after each run, so a repeated
 * PROG_TEST_RUN can measure encapsulation and decapsulation (which move
 * the frame's start). Never set in production. */
volatile const __u32 zh_bench_restore = 0;

/* ---------------------------------------------------------------- maps -- */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ZH_DEF_SERVICES);
	__type(key, struct svc_key);
	__type(value, struct svc_value);
} services SEC(".maps");

/* Maglev tables, stored in chunks of zh_chunk_slots slots: table t, chunk c
 * holds slots [c*zh_chunk_slots, (c+1)*zh_chunk_slots). A hash map without
 * preallocation keeps memory proportional to the services that exist, each
 * chunk fits one 4 KiB allocation, and updates need no RCU wait (map-in-map
 * updates do, which made 100k services take minutes). Table t of service s
 * is s*2 or s*2+1; the loader fills the inactive one before flipping. */
struct maglev_key {
	__u32 table;
	__u32 chunk;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 2 * ZH_DEF_SERVICES * 17);
	__type(key, struct maglev_key);
	__type(value, __u32[ZH_CHUNK_MAX]); /* resized at load */
} maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ZH_DEF_BACKENDS);
	__type(key, __u32);
	__type(value, struct backend);
} backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, ZH_DEF_FLOWS);
	__type(key, struct tuple);
	__type(value, struct ct_value);
} conntrack SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, ZH_DEF_FLOWS);
	__type(key, struct tuple);
	__type(value, struct revnat_value);
} revnat SEC(".maps");

/* See struct flow_cache_entry. A power of two: the slot is a hash's top
 * bits. */
#define ZH_FCACHE_BITS 11
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1 << ZH_FCACHE_BITS);
	__type(key, __u32);
	__type(value, struct flow_cache_entry);
} flow_cache SEC(".maps");

/* Index: service id, or max_services + backend id. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ZH_DEF_SERVICES + ZH_DEF_BACKENDS);
	__type(key, __u32);
	__type(value, struct counters);
} stats SEC(".maps");

/* Interfaces known to accept XDP redirects (the loader's caller decides). */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u32);
} tx_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dp_config);
} config SEC(".maps");

/* A 2^20-bit (128 KiB) filter over VIP addresses: a clear bit proves the packet is
 * not for a VIP at the cost of one inlined array read, so pass-through
 * traffic never pays for a hash lookup. The loader sets a bit before the
 * first service of an address is added and clears it after the last one
 * is gone, so the filter has no false negatives. */
#define ZH_FILTER_WORDS 16384
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ZH_FILTER_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} vip_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct node_cfg);
} node SEC(".maps");

/* Outer source prefixes of the other nodes: only encapsulation from these is
 * taken apart; protocol 4/41 from anywhere else is passed untouched. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, struct peer_key);
	__type(value, __u32);
} peers SEC(".maps");

/* ClientIP session affinity of the services flagged ZH_SVC_AFFINITY. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, ZH_DEF_FLOWS);
	__type(key, struct aff_key);
	__type(value, struct aff_value);
} affinity SEC(".maps");

/* loadBalancerSourceRanges of the services flagged ZH_SVC_SRC_RANGES. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, ZH_DEF_SRC_RANGES);
	__type(key, struct src_key);
	__type(value, __u32);
} src_ranges SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct frag_key);
	__type(value, struct frag_value);
} frags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ZH_DEF_SERVICES);
	__type(key, struct vip_key);
	__type(value, __u32);
} vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event_counts);
} events SEC(".maps");

#define EV_INC(field)                                              \
	do {                                                       \
		__u32 k_ = 0;                                      \
		struct event_counts *e_ = bpf_map_lookup_elem(&events, &k_); \
		if (e_)                                            \
			e_->field++;                               \
	} while (0)

/* ----------------------------------------------------------- checksums -- */

static __always_inline __u16 csum_fold(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

/* Ones'-complement sum of replacing word `from` by `to` (RFC 1624 eqn. 3
 * terms ~m + m'). Byte order does not matter for ones'-complement sums as
 * long as old and new are read the same way, so raw loads are used. */
static __always_inline __u32 csum_diff32(__u32 sum, __u32 from, __u32 to)
{
	sum += (~from & 0xffff) + (~from >> 16);
	sum += (to & 0xffff) + (to >> 16);
	return sum;
}

static __always_inline __u32 csum_diff16(__u32 sum, __u16 from, __u16 to)
{
	return sum + (__u16)~from + to;
}

/* HC' = ~(~HC + diff). */
static __always_inline __u16 csum_apply(__u16 check, __u32 diff)
{
	return ~csum_fold((__u16)~check + diff);
}

/* -------------------------------------------------------------- parsing -- */

struct zh_pkt {
	struct tuple t;
	void *l3;
	void *l4;
	__u32 len;       /* L3 length, for byte counters */
	__u16 l3_off;    /* from start of frame */
	__u16 l4_off;
	__u8 csum_off;   /* of the L4 checksum within the L4 header */
	__u8 tcp_flags;
	__u8 vlan;
	__u8 kind;       /* ZK_* */
	__u8 frag;       /* first fragment of a fragmented datagram */
	__u8 emb_l4;     /* ICMP error: embedded L4 header, from the ICMP header */
	__u32 frag_id;   /* fragments: IP id / IPv6 identification */
};

/* What parse() found. ZK_L4 has ports; the others are special cases. */
#define ZK_L4 0        /* TCP/UDP with ports (maybe a first fragment) */
#define ZK_FRAG 1      /* a later fragment: ports come from the first */
#define ZK_ICMP_ERR 2  /* frag-needed / packet-too-big; t is the embedded flow, client -> VIP */
#define ZK_ECHO 3      /* echo request */
#define ZK_IPIP 4      /* protocol 4 / 41 */

#define TCP_FLAG_SYN_ 0x02
#define TCP_FLAG_ACK_ 0x10

/* Returns 0 when the packet is a complete, well-formed TCP/UDP packet whose
 * ports are readable; anything else is left to the kernel untouched. */
static __always_inline int parse_l4(struct zh_pkt *p, void *l4, void *end, __u32 l4_len, int first_frag)
{
	if (p->t.proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;

		if ((void *)(th + 1) > end)
			return -1;
		if (th->doff < 5 || (__u32)th->doff * 4 > l4_len)
			return -1;
		p->t.sport = th->source;
		p->t.dport = th->dest;
		p->csum_off = offsetof(struct tcphdr, check);
		p->tcp_flags = ((__u8 *)th)[13];
		return 0;
	}
	if (p->t.proto == IPPROTO_UDP) {
		struct udphdr *uh = l4;

		if ((void *)(uh + 1) > end)
			return -1;
		__u32 ulen = bpf_ntohs(uh->len);
		/* A first fragment carries only part of the datagram. */
		if (ulen < sizeof(*uh) || (!first_frag && ulen > l4_len))
			return -1;
		p->t.sport = uh->source;
		p->t.dport = uh->dest;
		p->csum_off = offsetof(struct udphdr, check);
		return 0;
	}
	return -1;
}

/* ICMP errors carry the start of the packet that caused them: here the
 * reply of a VIP flow, VIP -> client. The tuple becomes that flow seen the
 * other way, client -> VIP, so conntrack and Maglev find its backend. */
static __always_inline int parse_icmp4(struct zh_pkt *p, void *end, __u32 l4_len)
{
	__u8 *ic = p->l4;

	if ((void *)(ic + 8) > end || l4_len < 8)
		return -1;
	if (ic[0] == ICMP_ECHO && ic[1] == 0) {
		p->kind = ZK_ECHO;
		return 0;
	}
	if (ic[0] != ICMP_DEST_UNREACH || ic[1] != ICMP_FRAG_NEEDED)
		return -1;
	struct iphdr *in = (void *)(ic + 8);
	if ((void *)(in + 1) > end)
		return -1;
	if (in->version != 4 || in->ihl < 5 || (in->frag_off & bpf_htons(IP_OFFSET_)))
		return -1;
	__u32 ihl = in->ihl * 4;
	if (8 + ihl + 8 > l4_len)
		return -1;
	__be16 *ports = (void *)in + ihl;
	if ((void *)(ports + 2) > end)
		return -1;
	if ((in->protocol != IPPROTO_TCP && in->protocol != IPPROTO_UDP) || in->saddr != p->t.daddr[0])
		return -1;
	p->t.proto = in->protocol;
	p->t.saddr[0] = in->daddr;
	p->t.sport = ports[1];
	p->t.dport = ports[0];
	p->emb_l4 = 8 + ihl;
	p->kind = ZK_ICMP_ERR;
	return 0;
}

/* Fragments: the first one (ports readable) is balanced like any packet
 * and leaves its ports in `frags`; later ones (ZK_FRAG) find them there.
 * Other IPv4 options are left as they are. */
/* len_end is where the packet really ends: end in XDP, beyond end in tc
 * when only the headers are linear. Lengths are checked against it,
 * pointers against end. */
static __always_inline int parse_v4(struct zh_pkt *p, void *data, void *end, void *len_end)
{
	struct iphdr *ip = data + p->l3_off;

	if ((void *)(ip + 1) > end)
		return -1;
	if (ip->version != 4 || ip->ihl < 5)
		return -1;
	__u32 hl = ip->ihl * 4;
	__u32 tot = bpf_ntohs(ip->tot_len);
	if (tot < hl || (void *)ip + tot > len_end)
		return -1;
	p->l3 = ip;
	p->l4 = (void *)ip + hl;
	p->l4_off = p->l3_off + hl;
	p->len = tot;
	p->t.family = ZH_AF_INET;
	p->t.proto = ip->protocol;
	p->t.saddr[0] = ip->saddr;
	p->t.daddr[0] = ip->daddr;
	if (ip->frag_off & bpf_htons(IP_MF_ | IP_OFFSET_)) {
		if (p->t.proto != IPPROTO_TCP && p->t.proto != IPPROTO_UDP)
			return -1;
		p->frag_id = ip->id;
		if (ip->frag_off & bpf_htons(IP_OFFSET_)) {
			p->kind = ZK_FRAG;
			return 0;
		}
		p->frag = 1;
		return parse_l4(p, p->l4, end, tot - hl, 1);
	}
	if (p->t.proto == IPPROTO_ICMP)
		return parse_icmp4(p, end, tot - hl);
	if (p->t.proto == IPPROTO_IPIP) {
		p->kind = ZK_IPIP;
		return 0;
	}
	return parse_l4(p, p->l4, end, tot - hl, 0);
}

static __always_inline int parse_icmp6(struct zh_pkt *p, void *end, __u32 l4_len)
{
	__u8 *ic = p->l4;

	if ((void *)(ic + 8) > end || l4_len < 8)
		return -1;
	if (ic[0] == ICMPV6_ECHO_REQUEST && ic[1] == 0) {
		p->kind = ZK_ECHO;
		return 0;
	}
	if (ic[0] != ICMPV6_PKT_TOOBIG || ic[1] != 0)
		return -1;
	struct ipv6hdr *in = (void *)(ic + 8);
	__be16 *ports = (void *)(in + 1);
	if ((void *)(ports + 2) > end || 8 + sizeof(*in) + 4 > l4_len)
		return -1;
	if (in->version != 6 || (in->nexthdr != IPPROTO_TCP && in->nexthdr != IPPROTO_UDP))
		return -1;
	__u32 *es = (__u32 *)&in->saddr;
	if (es[0] != p->t.daddr[0] || es[1] != p->t.daddr[1] || es[2] != p->t.daddr[2] || es[3] != p->t.daddr[3])
		return -1;
	p->t.proto = in->nexthdr;
	__builtin_memcpy(p->t.saddr, &in->daddr, 16);
	p->t.sport = ports[1];
	p->t.dport = ports[0];
	p->emb_l4 = 8 + sizeof(*in);
	p->kind = ZK_ICMP_ERR;
	return 0;
}

struct frag6_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset << 3 | M */
	__be32 id;
};

static __always_inline int parse_v6(struct zh_pkt *p, void *data, void *end, void *len_end)
{
	struct ipv6hdr *ip6 = data + p->l3_off;

	if ((void *)(ip6 + 1) > end)
		return -1;
	if (ip6->version != 6)
		return -1;
	__u32 plen = bpf_ntohs(ip6->payload_len);
	if (plen == 0 || (void *)(ip6 + 1) + plen > len_end)
		return -1;
	p->l3 = ip6;
	p->l4 = ip6 + 1;
	p->l4_off = p->l3_off + sizeof(*ip6);
	p->len = plen + sizeof(*ip6);
	p->t.family = ZH_AF_INET6;
	p->t.proto = ip6->nexthdr;
	__builtin_memcpy(p->t.saddr, &ip6->saddr, 16);
	__builtin_memcpy(p->t.daddr, &ip6->daddr, 16);
	/* A fragment header right after the fixed header is handled like
	 * IPv4 fragments; any other extension header is passed. */
	if (p->t.proto == IPPROTO_FRAGMENT) {
		struct frag6_hdr *fh = p->l4;

		if ((void *)(fh + 1) > end || plen < sizeof(*fh))
			return -1;
		if (fh->nexthdr != IPPROTO_TCP && fh->nexthdr != IPPROTO_UDP)
			return -1;
		p->t.proto = fh->nexthdr;
		p->l4 = fh + 1;
		p->l4_off += sizeof(*fh);
		__u16 off = bpf_ntohs(fh->frag_off);
		if (off & 0xfff8) {
			p->frag_id = fh->id;
			p->kind = ZK_FRAG;
			return 0;
		}
		if (off & 1) {
			p->frag_id = fh->id;
			p->frag = 1;
		}
		return parse_l4(p, p->l4, end, plen - sizeof(*fh), p->frag);
	}
	if (p->t.proto == IPPROTO_ICMPV6)
		return parse_icmp6(p, end, plen);
	if (p->t.proto == IPPROTO_IPV6) {
		p->kind = ZK_IPIP;
		return 0;
	}
	return parse_l4(p, p->l4, end, plen, 0);
}

/* Ethernet + at most one 802.1Q/802.1ad tag. Returns the L3 ethertype in
 * network order, 0 when the frame is too short. */
static __always_inline __be16 parse_l2(struct zh_pkt *p, void *data, void *end)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return 0;
	__be16 proto = eth->h_proto;
	p->l3_off = sizeof(*eth);
	if (proto == bpf_htons(ETH_P_8021Q_) || proto == bpf_htons(ETH_P_8021AD_)) {
		__be16 *inner = data + sizeof(*eth) + 2;

		if ((void *)(inner + 1) > end)
			return 0;
		proto = *inner;
		p->l3_off += 4;
		p->vlan = 1;
	}
	return proto;
}

static __always_inline int parse_to(struct zh_pkt *p, void *data, void *end, void *len_end)
{
	__be16 proto = parse_l2(p, data, end);

	if (proto == bpf_htons(ETH_P_IP))
		return parse_v4(p, data, end, len_end);
	if (proto == bpf_htons(ETH_P_IPV6))
		return parse_v6(p, data, end, len_end);
	return -1;
}

static __always_inline int parse(struct zh_pkt *p, void *data, void *end)
{
	return parse_to(p, data, end, end);
}

/* ------------------------------------------------------- backend choice -- */

static __always_inline void stats_add(__u32 idx, __u32 len, __u32 drop, __u32 miss, __u32 flow)
{
	struct counters *s = bpf_map_lookup_elem(&stats, &idx);

	if (!s)
		return;
	if (drop) {
		s->drops++;
		return;
	}
	s->packets++;
	s->bytes += len;
	s->ct_miss += miss;
	s->flows += flow;
}

/* A source refused by its service's ranges: counted here, dropped by the
 * caller. */
static __always_inline int src_denied(__u32 svc, const struct tuple *t)
{
	struct src_key k = {
		.prefixlen = 32 + (t->family == ZH_AF_INET ? 32 : 128),
		.svc = svc,
	};

	__builtin_memcpy(k.addr, t->saddr, 16);
	if (bpf_map_lookup_elem(&src_ranges, &k))
		return 0;
	struct counters *s = bpf_map_lookup_elem(&stats, &svc);
	if (s)
		s->denied++;
	return 1;
}

static __always_inline __u32 rol32(__u32 x, int r)
{
	return (x << r) | (x >> (32 - r));
}

/* murmur3 rounds: cheap and well mixed; only this program needs it. */
static __always_inline __u32 mm_mix(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51;
	k = rol32(k, 15);
	k *= 0x1b873593;
	h ^= k;
	h = rol32(h, 13);
	return h * 5 + 0xe6546b64;
}

/* Client address and port only: every node picks the same backend for a
 * flow, whichever VIP or node it arrives at. Without the port (ClientIP
 * affinity) every flow of a client hashes alike. */
static __always_inline __u32 flow_hash_port(const struct tuple *t, int port)
{
	__u32 h = zh_seed;

	h = mm_mix(h, t->saddr[0]);
	if (t->family == ZH_AF_INET6) {
		h = mm_mix(h, t->saddr[1]);
		h = mm_mix(h, t->saddr[2]);
		h = mm_mix(h, t->saddr[3]);
	}
	if (port)
		h = mm_mix(h, t->sport);
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

static __always_inline __u32 flow_hash(const struct tuple *t)
{
	return flow_hash_port(t, 1);
}

static __always_inline struct backend *backend_get(__u32 id, const struct svc_value *svc, __u8 family)
{
	struct backend *be = bpf_map_lookup_elem(&backends, &id);

	if (!be || be->family != family || be->svc != svc->id)
		return 0;
	return be;
}

static __always_inline struct backend *maglev_pick(const struct svc_value *svc, const struct tuple *t, __u32 *be_id)
{
	__u32 slot = flow_hash_port(t, !(svc->flags & ZH_SVC_AFFINITY)) % zh_maglev_m;
	struct maglev_key k = {
		.table = svc->id * 2 + (svc->active & 1),
		.chunk = slot / zh_chunk_slots,
	};
	__u32 off = slot - k.chunk * zh_chunk_slots;
	__u32 *tbl = bpf_map_lookup_elem(&maglev, &k);

	if (!tbl) {
		/* The loader deletes the old table right after the flip; a
		 * packet that read the old `active` finds the new one. */
		k.table ^= 1;
		tbl = bpf_map_lookup_elem(&maglev, &k);
		if (!tbl)
			return 0;
	}
	/* The compiler knows off < zh_chunk_slots; the verifier must see it. */
	barrier_var(off);
	if (off >= zh_chunk_slots)
		return 0;
	*be_id = tbl[off];
	return backend_get(*be_id, svc, t->family);
}

/* Established flow: conntrack alone names the backend (and the service, for
 * counters), so the packet costs one hash lookup. The entry is honoured
 * while its backend slot still belongs to the same service: a removed
 * backend is zeroed by the loader and its flows choose again. */
#define NSEC_PER_SEC 1000000000ULL
/* Conntrack times are jiffies (bpf_jiffies64 is inlined by the verifier,
 * a clock helper is a call): 256 of them are 0.26 s at HZ=1000, 1 s at
 * HZ=250, 2.6 s at HZ=100, all fine for a next-hop cache. */
#define ZH_TICKS 256

static __always_inline struct backend *ct_lookup(struct zh_pkt *p, struct ct_value **ctp, __u64 now, int *denied)
{
	struct ct_value *ct = bpf_map_lookup_elem(&conntrack, &p->t);
	struct backend *be;
	__u32 be_id;

	if (zh_ct_bypass || !ct)
		return 0;
	be_id = ct->backend;
	be = bpf_map_lookup_elem(&backends, &be_id);
	if (!be || be->family != p->t.family || be->svc != ct->svc)
		return 0;
	/* Source ranges bind established flows too: a range removed cuts
	 * its clients off, as kube-proxy's rules would. */
	if ((be->flags & ZH_BE_SVC_SRC_RANGES) && src_denied(ct->svc, &p->t)) {
		*denied = 1;
		return 0;
	}
	if (now - ct->last_seen > ZH_TICKS)
		ct->last_seen = now;
	*ctp = ct;
	stats_add(ct->svc, p->len, 0, 0, 0);
	stats_add(zh_max_services + be_id, p->len, 0, 0, 0);
	return be;
}

/* ClientIP affinity: the backend this client's last flow took, if that
 * was within the service's timeout and the backend could still be chosen
 * (there, not terminating, local in Local mode or when decapsulated). */
static __always_inline struct backend *affinity_get(const struct svc_value *svc, const struct tuple *t,
						    __u32 *be_id, __u32 decapped, __u64 now)
{
	struct aff_key k = {.svc = svc->id, .family = t->family};

	__builtin_memcpy(k.addr, t->saddr, 16);
	struct aff_value *a = bpf_map_lookup_elem(&affinity, &k);
	if (!a || now - a->last_used > (__u64)svc->affinity_timeout * NSEC_PER_SEC)
		return 0;
	struct backend *be = backend_get(a->backend, svc, t->family);
	if (!be || (be->flags & ZH_BE_TERMINATING))
		return 0;
	if (((svc->flags & ZH_SVC_LOCAL) || decapped) && !(be->flags & ZH_BE_LOCAL))
		return 0;
	*be_id = a->backend;
	return be;
}

static __always_inline void affinity_set(const struct svc_value *svc, const struct tuple *t, __u32 be_id, __u64 now)
{
	struct aff_key k = {.svc = svc->id, .family = t->family};
	struct aff_value v = {.backend = be_id, .last_used = now};

	__builtin_memcpy(k.addr, t->saddr, 16);
	bpf_map_update_elem(&affinity, &k, &v, BPF_ANY);
}

/* New flow (or one whose backend is gone): Maglev over the service's
 * table, then record the flow both ways. Returns NULL when the service
 * cannot take it; the caller drops (counted). */
/* A global function: verified once on its own (its records stay off the
 * caller's stack, which also holds encap()'s), whatever path led here.
 * It gets the tuple, not the whole zh_pkt: the verifier forgets what a
 * global function may have overwritten, which must not include the
 * packet pointers. bits: decapsulated (bit 0), TCP flags (bits 8-15).
 * Returns the backend id, 0 (never a backend) when there is none. */
__attribute__((noinline)) int zh_new_flow(const struct tuple *t, const struct svc_value *svc, __u64 now, __u32 len,
					  __u32 bits)
{
	struct backend *be;
	__u32 be_id;
	__u32 decapped = bits & 1;
	__u8 tcp_flags = bits >> 8;

	if (!t || !svc)
		return 0;

	__u32 miss = 0;
	if (t->proto == IPPROTO_TCP && (tcp_flags & (TCP_FLAG_SYN_ | TCP_FLAG_ACK_)) != TCP_FLAG_SYN_)
		miss = 1;

	be = 0;
	if (svc->flags & ZH_SVC_AFFINITY) {
		__u64 ns = bpf_ktime_get_ns();

		be = affinity_get(svc, t, &be_id, decapped, ns);
		if (!be && svc->count)
			be = maglev_pick(svc, t, &be_id);
		/* Refreshed by every new flow of the client, like kube-proxy's
		 * "recent" match: a client stays while it keeps connecting. */
		if (be)
			affinity_set(svc, t, be_id, ns);
	} else if (svc->count) {
		be = maglev_pick(svc, t, &be_id);
	}
	if (!be) {
		stats_add(svc->id, 0, 1, 0, 0);
		return 0;
	}

	struct ct_value nct = {
		.backend = be_id,
		.svc = svc->id,
		.last_seen = now,
	};
	bpf_map_update_elem(&conntrack, t, &nct, BPF_ANY);

	/* A remote backend's reply leaves its own node: nothing to undo here. */
	if (be->flags & ZH_BE_REMOTE)
		goto count;
	struct tuple rk = {};
	__builtin_memcpy(rk.saddr, be->addr, 16);
	__builtin_memcpy(rk.daddr, t->saddr, 16);
	rk.sport = be->port;
	rk.dport = t->sport;
	rk.proto = t->proto;
	rk.family = t->family;
	struct revnat_value rv = {
		.port = t->dport,
		.family = t->family,
		.flags = decapped ? ZH_RV_ENCAP : 0,
		.svc = svc->id,
	};
	__builtin_memcpy(rv.addr, t->daddr, 16);
	bpf_map_update_elem(&revnat, &rk, &rv, BPF_ANY);

count:
	stats_add(svc->id, len, 0, miss, 1);
	stats_add(zh_max_services + be_id, len, 0, miss, 1);
	return be_id;
}

/* x: the IPv4 address, or the XOR of an IPv6 address's four words. */
static __always_inline int maybe_vip_x(__u32 x)
{
	__u32 bit = (x * 0x9e3779b1U) >> 12;
	__u32 word = bit >> 6;
	__u64 *w = bpf_map_lookup_elem(&vip_filter, &word);

	return w && (*w & (1ULL << (bit & 63)));
}

static __always_inline int maybe_vip(const struct tuple *t)
{
	__u32 x = t->daddr[0];

	if (t->family == ZH_AF_INET6)
		x ^= t->daddr[1] ^ t->daddr[2] ^ t->daddr[3];
	return maybe_vip_x(x);
}

/* ------------------------------------------------------- XDP rewrite -- */

/* Destination NAT in place. Checksums are updated incrementally; a UDP/IPv4
 * zero checksum ("none") stays zero, and a computed zero is sent as 0xffff. */
static __always_inline int dnat4(void *l3, void *l4, __u8 csum_off, __u8 proto, int frag, void *end,
				 const struct backend *be)
{
	struct iphdr *ip = l3;
	__u16 *l4csum = l4 + csum_off;
	__be16 *dport = l4 + 2;

	if ((void *)(ip + 1) > end || (void *)(l4csum + 1) > end || (void *)(dport + 1) > end)
		return -1;

	__u32 addr_diff = csum_diff32(0, ip->daddr, be->addr[0]);
	ip->check = csum_apply(ip->check, addr_diff);
	if (frag) {
		/* No L4 header here; the first fragment's checksum covered the
		 * whole datagram and was adjusted there. */
		ip->daddr = be->addr[0];
		return 0;
	}

	__u16 c = *l4csum;
	if (proto == IPPROTO_TCP || c != 0) {
		c = csum_apply(c, csum_diff16(addr_diff, *dport, be->port));
		if (proto == IPPROTO_UDP && c == 0)
			c = 0xffff;
		*l4csum = c;
	}
	ip->daddr = be->addr[0];
	*dport = be->port;
	return 0;
}

static __always_inline int dnat6(void *l3, void *l4, __u8 csum_off, __u8 proto, int frag, void *end,
				 const struct backend *be)
{
	struct ipv6hdr *ip6 = l3;
	__u16 *l4csum = l4 + csum_off;
	__be16 *dport = l4 + 2;
	__u32 *d = (__u32 *)&ip6->daddr;

	if ((void *)(ip6 + 1) > end)
		return -1;
	if (frag) {
		__builtin_memcpy(d, be->addr, 16);
		return 0;
	}
	if ((void *)(l4csum + 1) > end || (void *)(dport + 1) > end)
		return -1;

	__u32 diff = 0;
#pragma unroll
	for (int i = 0; i < 4; i++)
		diff = csum_diff32(diff, d[i], be->addr[i]);
	diff = csum_diff16(diff, *dport, be->port);
	__u16 c = csum_apply(*l4csum, diff);
	if (proto == IPPROTO_UDP && c == 0)
		c = 0xffff;
	*l4csum = c;
#pragma unroll
	for (int i = 0; i < 4; i++)
		d[i] = be->addr[i];
	*dport = be->port;
	return 0;
}

static __always_inline int dnat_v4(struct zh_pkt *p, void *end, const struct backend *be)
{
	return dnat4(p->l3, p->l4, p->csum_off, p->t.proto, p->kind == ZK_FRAG, end, be);
}

static __always_inline int dnat_v6(struct zh_pkt *p, void *end, const struct backend *be)
{
	return dnat6(p->l3, p->l4, p->csum_off, p->t.proto, p->kind == ZK_FRAG, end, be);
}

/* A router's hop on IPv4: TTL down by one, the header checksum updated
 * incrementally (RFC 1624). The caller has checked the TTL is above 1. */
static __always_inline void ipv4_dec_ttl(struct iphdr *ip)
{
	__u32 c = ip->check;

	c += bpf_htons(0x0100);
	ip->check = (__u16)(c + (c >= 0xffff));
	ip->ttl--;
}

/* Next hop for the rewritten packet. Redirect only when the egress device
 * is registered in tx_ports (it takes XDP frames) and the neighbour is
 * known; otherwise XDP_PASS lets the kernel route the already-rewritten
 * packet (resolving ARP/ND, sending ICMP errors). VLAN-tagged frames are
 * always passed so the VLAN device strips the tag. A successful lookup is
 * cached in the flow's conntrack entry (ct, when established) for a second.
 */

static __always_inline int forward(struct xdp_md *ctx, struct zh_pkt *p, void *data, void *end,
				   __be16 dport, struct ct_value *ct, __u64 now)
{
	struct bpf_fib_lookup fib = {}; /* zeroing is cheap; the verifier wants it */
	struct ethhdr *eth = data;
	__u32 ifindex;

	if (p->vlan)
		return XDP_PASS;
	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	if (p->t.family == ZH_AF_INET) {
		struct iphdr *ip = p->l3;

		if ((void *)(ip + 1) > end || ip->ttl <= 1)
			return XDP_PASS;
	} else {
		struct ipv6hdr *ip6 = p->l3;

		if ((void *)(ip6 + 1) > end || ip6->hop_limit <= 1)
			return XDP_PASS;
	}
	if (ct && ct->nh_until > now) {
		ifindex = ct->nh_ifindex;
		__builtin_memcpy(fib.dmac, ct->nh_dmac, ETH_ALEN);
		__builtin_memcpy(fib.smac, ct->nh_smac, ETH_ALEN);
	} else {
		if (p->t.family == ZH_AF_INET) {
			struct iphdr *ip = p->l3;

			if ((void *)(ip + 1) > end)
				return XDP_PASS;
			fib.family = AF_INET;
			fib.tos = ip->tos;
			fib.tot_len = bpf_ntohs(ip->tot_len);
			fib.ipv4_src = ip->saddr;
			fib.ipv4_dst = ip->daddr;
		} else {
			struct ipv6hdr *ip6 = p->l3;

			if ((void *)(ip6 + 1) > end)
				return XDP_PASS;
			fib.family = AF_INET6;
			fib.tot_len = p->len;
			__builtin_memcpy(fib.ipv6_src, &ip6->saddr, 16);
			__builtin_memcpy(fib.ipv6_dst, &ip6->daddr, 16);
		}
		fib.l4_protocol = p->t.proto;
		fib.sport = p->t.sport;
		fib.dport = dport;
		fib.ifindex = ctx->ingress_ifindex;
		if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
			return XDP_PASS;
		ifindex = fib.ifindex;
		if (ct) {
			ct->nh_ifindex = ifindex;
			__builtin_memcpy(ct->nh_dmac, fib.dmac, ETH_ALEN);
			__builtin_memcpy(ct->nh_smac, fib.smac, ETH_ALEN);
			ct->nh_until = now + ZH_TICKS;
		}
	}
	if (!bpf_map_lookup_elem(&tx_ports, &ifindex))
		return XDP_PASS;

	/* We route it ourselves now, so act as the router would. */
	if (p->t.family == ZH_AF_INET) {
		struct iphdr *ip = p->l3;

		if ((void *)(ip + 1) > end)
			return XDP_PASS;
		ipv4_dec_ttl(ip);
	} else {
		struct ipv6hdr *ip6 = p->l3;

		if ((void *)(ip6 + 1) > end)
			return XDP_PASS;
		ip6->hop_limit--;
	}
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	return bpf_redirect_map(&tx_ports, ifindex, XDP_PASS);
}

/* ------------------------------------------------- Cluster mode (IPIP) -- */

static __always_inline struct node_cfg *node_get(void)
{
	__u32 k = 0;

	return bpf_map_lookup_elem(&node, &k);
}

/* Offset of the MSS option's value from the start of a TCP header, or -1.
 * Options are walked a bounded number of times (at most 40 bytes). */
static __always_inline int mss_find(__u8 *th, void *end)
{
	if ((void *)(th + 20) > end)
		return -1;
	__u32 optend = (th[12] >> 4) * 4;
	__u32 i = 20;

	for (int n = 0; n < 4; n++) {
		if (i > 56 || i + 4 > optend)
			return -1;
		__u8 *o = th + i;
		if ((void *)(o + 4) > end)
			return -1;
		if (o[0] == 0)
			return -1;
		if (o[0] == 1) {
			i++;
			continue;
		}
		if (o[0] == 2)
			return o[1] == 4 ? (int)i + 2 : -1;
		if (o[1] < 2)
			return -1;
		i += o[1];
	}
	return -1;
}

/* Largest MSS whose segments still fit the path MTU once encapsulated. */
static __always_inline __u16 mss_max(__u32 mtu, __u8 family)
{
	return family == ZH_AF_INET ? mtu - 60 : mtu - 100;
}

/* The MSS value as the checksum sees it, in the same raw (memory order)
 * view csum_diff16 uses: at an odd offset its bytes straddle two 16-bit
 * words and count swapped. */
static __always_inline __u16 mss_raw(__u16 v, int off)
{
	__u8 b[2] = {v >> 8, v & 0xff};

	if (off & 1)
		return (__u16)b[0] << 8 | b[1];
	return (__u16)b[0] | (__u16)b[1] << 8;
}

static __always_inline void mss_clamp_xdp(struct zh_pkt *p, void *end, __u32 mtu)
{
	__u8 *th = p->l4;
	int off = mss_find(th, end);

	if (off < 0 || mtu < 1280)
		return;
	/* The compiler knows off < 64; the verifier must see it. */
	barrier_var(off);
	__u8 *o = th + (off & 63);
	__u16 *csum = (void *)th + 16;
	if ((void *)(o + 2) > end || (void *)(csum + 1) > end)
		return;
	__u16 max = mss_max(mtu, p->t.family);
	__u16 old = (__u16)o[0] << 8 | o[1];
	if (old <= max)
		return;
	*csum = csum_apply(*csum, csum_diff16(0, mss_raw(old, off), mss_raw(max, off)));
	o[0] = max >> 8;
	o[1] = max & 0xff;
	EV_INC(mss_clamped);
}

/* Sum of a 20-byte IPv4 header, for a header built from scratch. */
static __always_inline __u16 ip_csum20(void *hdr)
{
	__u16 *w = hdr;
	__u32 s = 0;

#pragma unroll
	for (int i = 0; i < 10; i++)
		s += w[i];
	return ~csum_fold(s);
}

/* Send an encapsulated frame: fib lookup of the outer destination, XDP_TX
 * when it leaves where it came in (the usual case: one uplink), redirect
 * when the egress takes XDP frames, else XDP_PASS and the kernel routes
 * the outer packet (the frame still carries our own MAC as destination).
 * The next hop is cached in the flow's conntrack entry like forward(). */
static __always_inline int encap_send(struct xdp_md *ctx, struct ct_value *ct, __u64 now, __u8 family,
				      __u8 vlan)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct bpf_fib_lookup fib = {};
	struct ethhdr *eth = data;
	__u32 ifindex;

	if (vlan || (void *)(eth + 1) > end)
		return XDP_PASS;
	if (ct && ct->nh_until > now) {
		ifindex = ct->nh_ifindex;
		__builtin_memcpy(fib.dmac, ct->nh_dmac, ETH_ALEN);
		__builtin_memcpy(fib.smac, ct->nh_smac, ETH_ALEN);
	} else {
		if (family == ZH_AF_INET) {
			struct iphdr *ip = data + sizeof(*eth);

			if ((void *)(ip + 1) > end)
				return XDP_PASS;
			fib.family = AF_INET;
			fib.tos = ip->tos;
			fib.tot_len = bpf_ntohs(ip->tot_len);
			fib.ipv4_src = ip->saddr;
			fib.ipv4_dst = ip->daddr;
			fib.l4_protocol = IPPROTO_IPIP;
		} else {
			struct ipv6hdr *ip6 = data + sizeof(*eth);

			if ((void *)(ip6 + 1) > end)
				return XDP_PASS;
			fib.family = AF_INET6;
			fib.tot_len = bpf_ntohs(ip6->payload_len) + sizeof(*ip6);
			__builtin_memcpy(fib.ipv6_src, &ip6->saddr, 16);
			__builtin_memcpy(fib.ipv6_dst, &ip6->daddr, 16);
			fib.l4_protocol = IPPROTO_IPV6;
		}
		fib.ifindex = ctx->ingress_ifindex;
		if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
			return XDP_PASS;
		ifindex = fib.ifindex;
		if (ct) {
			ct->nh_ifindex = ifindex;
			__builtin_memcpy(ct->nh_dmac, fib.dmac, ETH_ALEN);
			__builtin_memcpy(ct->nh_smac, fib.smac, ETH_ALEN);
			ct->nh_until = now + ZH_TICKS;
		}
	}
	/* XDP_PASS keeps our own MAC as destination, so the kernel takes it. */
	int tx = ifindex == ctx->ingress_ifindex;
	if (!tx && !bpf_map_lookup_elem(&tx_ports, &ifindex))
		return XDP_PASS;
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	if (tx)
		return XDP_TX;
	return bpf_redirect_map(&tx_ports, ifindex, XDP_PASS);
}

/* IP-in-IP (v4 in v4, v6 in v6) towards the remote backend's node. The
 * inner packet is left exactly as the client sent it (the receiving node
 * chooses the same backend and rewrites it there), except for a SYN's MSS,
 * clamped so the encapsulated segments fit the path MTU. The outer source
 * varies per flow within the node's source range so that the receiver's
 * RSS, which hashes the outer header, spreads flows; IPv6 also puts the
 * flow hash into the flow label. The outer header copies the inner DF bit
 * and TOS, like the kernel's own tunnels. */
static __attribute__((noinline)) int encap(struct xdp_md *ctx, struct zh_pkt *p, const struct backend *be,
					   struct ct_value *ct)
{
	void *end = (void *)(long)ctx->data_end;
	__u64 now = bpf_jiffies64();
	struct node_cfg *cfg = node_get();
	__u8 l2[18];
	__u8 vlan = p->vlan, family = p->t.family;
	__u32 h = flow_hash(&p->t);
	__u32 len = p->len;
	__u32 w0;      /* inner: v4 tos; v6 first word */
	__be16 id = 0, df = 0;
	int hl = family == ZH_AF_INET ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);

	if (!cfg) {
		EV_INC(encap_fail);
		return XDP_DROP;
	}
	if (p->kind == ZK_L4 && !p->frag && p->t.proto == IPPROTO_TCP && (p->tcp_flags & TCP_FLAG_SYN_) && cfg->mtu)
		mss_clamp_xdp(p, end, cfg->mtu);

	void *data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + sizeof(l2) > end)
		return XDP_PASS;
	__builtin_memcpy(l2, data, sizeof(l2));
	if (family == ZH_AF_INET) {
		struct iphdr *in = p->l3;

		if ((void *)(in + 1) > end)
			return XDP_PASS;
		w0 = in->tos;
		id = in->id;
		df = in->frag_off & bpf_htons(0x4000);
	} else {
		struct ipv6hdr *in = p->l3;

		if ((void *)(in + 1) > end)
			return XDP_PASS;
		w0 = bpf_ntohl(*(__be32 *)in);
	}

	if (bpf_xdp_adjust_head(ctx, -hl)) {
		EV_INC(encap_fail);
		return XDP_DROP;
	}
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + 18 + sizeof(struct ipv6hdr) > end)
		return XDP_DROP;
	if (vlan)
		__builtin_memcpy(data, l2, 18);
	else
		__builtin_memcpy(data, l2, 14);
	void *l3 = data + (vlan ? 18 : 14);
	if (family == ZH_AF_INET) {
		struct iphdr *out = l3;

		out->version = 4;
		out->ihl = 5;
		out->tos = w0;
		out->tot_len = bpf_htons(len + sizeof(*out));
		out->id = id;
		out->frag_off = df;
		out->ttl = 64;
		out->protocol = IPPROTO_IPIP;
		out->check = 0;
		out->saddr = (cfg->src4 & ~cfg->src4_mask) | (h & cfg->src4_mask);
		out->daddr = be->node[0];
		out->check = ip_csum20(out);
	} else {
		struct ipv6hdr *out = l3;

		/* version 6, the inner traffic class, flow label from the hash */
		*(__be32 *)out = bpf_htonl((6U << 28) | (w0 & 0x0ff00000) | (h & 0xfffff));
		out->payload_len = bpf_htons(len);
		out->nexthdr = IPPROTO_IPV6;
		out->hop_limit = 64;
		__u32 *os = (__u32 *)&out->saddr, *od = (__u32 *)&out->daddr;
		os[0] = cfg->src6[0];
		os[1] = cfg->src6[1];
		os[2] = cfg->src6[2];
		os[3] = (cfg->src6[3] & ~cfg->src6_mask) | (h & cfg->src6_mask);
		od[0] = be->node[0];
		od[1] = be->node[1];
		od[2] = be->node[2];
		od[3] = be->node[3];
	}
	EV_INC(encap);
	return encap_send(ctx, ct, now, family, vlan);
}

/* Returned by decap() when the frame now holds the inner packet. */
#define ZH_DECAPPED 0x100
/* Returned by lb() when the frame is IP-in-IP to be looked at by decap(). */
#define ZH_DO_DECAP 0x101

/* Take apart IP-in-IP addressed to this node from a known peer. Anything
 * else with protocol 4/41 (another tunnel, an unknown source, a fragment
 * of the outer packet) is left alone for the kernel. */
static __attribute__((noinline)) int decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct zh_pkt p = {};
	struct node_cfg *cfg = node_get();
	struct peer_key pk = {};
	__u8 l2[18];
	__u32 hl;

	__be16 proto = parse_l2(&p, data, end);
	if (!cfg || data + sizeof(l2) > end)
		return XDP_PASS;
	__builtin_memcpy(l2, data, sizeof(l2));
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + p.l3_off;

		if ((void *)(ip + 1) > end)
			return XDP_PASS;
		if (!cfg->addr4 || ip->daddr != cfg->addr4 || (ip->frag_off & bpf_htons(IP_MF_ | IP_OFFSET_)))
			return XDP_PASS;
		hl = ip->ihl * 4;
		struct iphdr *inner = (void *)ip + (hl & 63);
		if ((void *)(inner + 1) > end || inner->version != 4 ||
		    bpf_ntohs(inner->tot_len) + hl > bpf_ntohs(ip->tot_len))
			return XDP_PASS;
		pk.prefixlen = 32 + 32;
		pk.family = ZH_AF_INET;
		pk.addr[0] = ip->saddr;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + p.l3_off;

		if ((void *)(ip6 + 2) > end)
			return XDP_PASS;
		__u32 *d = (__u32 *)&ip6->daddr;
		if (!(cfg->addr6[0] | cfg->addr6[1] | cfg->addr6[2] | cfg->addr6[3]) ||
		    d[0] != cfg->addr6[0] || d[1] != cfg->addr6[1] || d[2] != cfg->addr6[2] || d[3] != cfg->addr6[3])
			return XDP_PASS;
		struct ipv6hdr *inner = (void *)(ip6 + 1);
		if (inner->version != 6 ||
		    bpf_ntohs(inner->payload_len) + sizeof(*inner) > bpf_ntohs(ip6->payload_len))
			return XDP_PASS;
		hl = sizeof(*ip6);
		pk.prefixlen = 32 + 128;
		pk.family = ZH_AF_INET6;
		__builtin_memcpy(pk.addr, &ip6->saddr, 16);
	} else {
		return XDP_PASS;
	}
	if (!bpf_map_lookup_elem(&peers, &pk)) {
		EV_INC(decap_refused);
		return XDP_PASS;
	}
	if (bpf_xdp_adjust_head(ctx, hl))
		return XDP_PASS;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + 18 > end)
		return XDP_DROP;
	if (p.vlan)
		__builtin_memcpy(data, l2, 18);
	else
		__builtin_memcpy(data, l2, 14);
	EV_INC(decap);
	return ZH_DECAPPED;
}

/* ------------------------------------------------------------- ICMP -- */

/* Echo request to a VIP: answered from here, out the way it came. */
static __always_inline int echo_reply(struct zh_pkt *p, void *data, void *end)
{
	struct vip_key vk = {.family = p->t.family};
	struct ethhdr *eth = data;
	__u8 mac[ETH_ALEN];

	__builtin_memcpy(vk.addr, p->t.daddr, 16);
	if (!bpf_map_lookup_elem(&vips, &vk))
		return XDP_PASS;
	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	if (p->t.family == ZH_AF_INET) {
		struct iphdr *ip = p->l3;
		__u16 *ic = p->l4;

		if ((void *)(ip + 1) > end || (void *)(ic + 2) > end)
			return XDP_PASS;
		__u16 old = *(__u16 *)&ip->ttl;
		ip->ttl = 64;
		ip->check = csum_apply(ip->check, csum_diff16(0, old, *(__u16 *)&ip->ttl));
		ip->saddr = p->t.daddr[0];
		ip->daddr = p->t.saddr[0];
		old = ic[0];
		((__u8 *)ic)[0] = ICMP_ECHOREPLY;
		ic[1] = csum_apply(ic[1], csum_diff16(0, old, ic[0]));
	} else {
		struct ipv6hdr *ip6 = p->l3;
		__u16 *ic = p->l4;

		if ((void *)(ip6 + 1) > end || (void *)(ic + 2) > end)
			return XDP_PASS;
		ip6->hop_limit = 64;
		__builtin_memcpy(&ip6->saddr, p->t.daddr, 16);
		__builtin_memcpy(&ip6->daddr, p->t.saddr, 16);
		/* The pseudo-header sum does not change when addresses swap. */
		__u16 old = ic[0];
		((__u8 *)ic)[0] = ICMPV6_ECHO_REPLY;
		ic[1] = csum_apply(ic[1], csum_diff16(0, old, ic[0]));
	}
	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);
	EV_INC(echo_reply);
	return XDP_TX;
}

/* Frag-needed / packet-too-big about a VIP flow (its reply, VIP -> client,
 * was too big somewhere on the way to the client): find the flow's
 * backend (conntrack, else Maglev on the embedded header with addresses
 * swapped, creating no flow) and hand the error to it, rewritten as if the
 * Pod's own packet had caused it: outer destination and embedded source
 * become the Pod's address and port. The embedded L4 checksum is left
 * alone (the kernel does not read it). A remote backend's error is
 * encapsulated to its node like any packet of the flow. */
static __always_inline int icmp_relay(struct xdp_md *ctx, struct zh_pkt *p, void *data, void *end,
				      __u32 decapped, __u64 now)
{
	struct ct_value *ct = bpf_map_lookup_elem(&conntrack, &p->t);
	struct backend *be = 0;
	__u32 be_id;

	if (ct) {
		be_id = ct->backend;
		be = bpf_map_lookup_elem(&backends, &be_id);
		if (be && (be->family != p->t.family || be->svc != ct->svc))
			be = 0;
	}
	if (!be) {
		struct svc_key key = {.port = p->t.dport, .proto = p->t.proto, .family = p->t.family};
		__builtin_memcpy(key.addr, p->t.daddr, 16);
		struct svc_value *svc = bpf_map_lookup_elem(&services, &key);
		if (svc && svc->count)
			be = maglev_pick(svc, &p->t, &be_id);
	}
	if (!be) {
		EV_INC(icmp_no_flow);
		return XDP_PASS;
	}
	if (be->flags & ZH_BE_REMOTE) {
		if (decapped) {
			EV_INC(decap_no_local);
			return XDP_DROP;
		}
		EV_INC(icmp_relay);
		return encap(ctx, p, be, 0);
	}

	__u8 *ic = p->l4;
	__u16 *icsum = (__u16 *)(ic + 2);
	__be16 *esport = (void *)ic + (p->emb_l4 & 127);
	if ((void *)(ic + 8) > end || (void *)(esport + 1) > end)
		return XDP_PASS;
	__u32 d = csum_diff16(0, *esport, be->port);
	*esport = be->port;
	if (p->t.family == ZH_AF_INET) {
		struct iphdr *ip = p->l3;
		struct iphdr *in = (void *)(ic + 8);

		if ((void *)(ip + 1) > end || (void *)(in + 1) > end)
			return XDP_PASS;
		ip->check = csum_apply(ip->check, csum_diff32(0, ip->daddr, be->addr[0]));
		ip->daddr = be->addr[0];
		__u32 ed = csum_diff32(0, in->saddr, be->addr[0]);
		__u16 ocheck = in->check;
		in->check = csum_apply(ocheck, ed);
		d += ed;
		d = csum_diff16(d, ocheck, in->check);
		in->saddr = be->addr[0];
	} else {
		struct ipv6hdr *ip6 = p->l3;
		struct ipv6hdr *in = (void *)(ic + 8);

		if ((void *)(ip6 + 1) > end || (void *)(in + 1) > end)
			return XDP_PASS;
		__u32 *od = (__u32 *)&ip6->daddr, *es = (__u32 *)&in->saddr;
#pragma unroll
		for (int i = 0; i < 4; i++) {
			/* pseudo-header destination and embedded source */
			d = csum_diff32(d, od[i], be->addr[i]);
			d = csum_diff32(d, es[i], be->addr[i]);
			od[i] = be->addr[i];
			es[i] = be->addr[i];
		}
	}
	*icsum = csum_apply(*icsum, d);
	EV_INC(icmp_relay);
	return forward(ctx, p, data, end, be->port, 0, now);
}

/* ------------------------------------------------------------- entry -- */

/* Fragment records, out of line: the common path never builds a key. */
static __attribute__((noinline)) struct frag_value *frag_lookup(struct zh_pkt *p)
{
	struct frag_key fk = {.id = p->frag_id, .proto = p->t.proto, .family = p->t.family};

	__builtin_memcpy(fk.saddr, p->t.saddr, 16);
	__builtin_memcpy(fk.daddr, p->t.daddr, 16);
	return bpf_map_lookup_elem(&frags, &fk);
}

static __attribute__((noinline)) void frag_record(struct zh_pkt *p)
{
	struct frag_key fk = {.id = p->frag_id, .proto = p->t.proto, .family = p->t.family};
	struct frag_value fv = {.sport = p->t.sport, .dport = p->t.dport};

	__builtin_memcpy(fk.saddr, p->t.saddr, 16);
	__builtin_memcpy(fk.daddr, p->t.daddr, 16);
	bpf_map_update_elem(&frags, &fk, &fv, BPF_ANY);
	EV_INC(frag_first);
}

/* One packet: VIP lookup, backend choice and rewrite or encapsulation.
 * decapped: the frame came out of a peer's encapsulation, so it must end
 * on a local backend (never encapsulated again: no loops between nodes). */
static __always_inline int lb(struct xdp_md *ctx, __u32 decapped)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct zh_pkt p = {};

	if (parse(&p, data, end))
		return XDP_PASS;
	if (p.kind == ZK_IPIP)
		return decapped ? XDP_PASS : ZH_DO_DECAP;

	/* For the frame as it came, zh_fast() has read the filter. */
	if (decapped && !maybe_vip(&p.t))
		return XDP_PASS;

	__u64 now = bpf_jiffies64();
	if (p.kind == ZK_ECHO)
		return decapped ? XDP_PASS : echo_reply(&p, data, end);
	if (p.kind == ZK_ICMP_ERR)
		return icmp_relay(ctx, &p, data, end, decapped, now);

	if (p.kind == ZK_FRAG) {
		struct frag_value *fv = frag_lookup(&p);
		if (!fv) {
			EV_INC(frag_miss);
			return XDP_PASS;
		}
		p.t.sport = fv->sport;
		p.t.dport = fv->dport;
		EV_INC(frag_hit);
	}

	struct ct_value *ct = 0;
	int denied = 0;
	struct backend *be = ct_lookup(&p, &ct, now, &denied);
	if (denied)
		return XDP_DROP;
	if (!be) {
		struct svc_key key = {
			.port = p.t.dport,
			.proto = p.t.proto,
			.family = p.t.family,
		};
		__builtin_memcpy(key.addr, p.t.daddr, 16);
		struct svc_value *svc = bpf_map_lookup_elem(&services, &key);
		if (!svc)
			return XDP_PASS;
		/* Before anything is recorded: a refused source leaves no flow. */
		if ((svc->flags & ZH_SVC_SRC_RANGES) && src_denied(svc->id, &p.t))
			return XDP_DROP;
		__u32 be_id = zh_new_flow(&p.t, svc, now, p.len, (decapped ? 1 : 0) | (__u32)p.tcp_flags << 8);
		if (!be_id)
			return XDP_DROP;
		be = bpf_map_lookup_elem(&backends, &be_id);
		if (!be || be->family != p.t.family)
			return XDP_DROP;
	}
	if (p.frag)
		frag_record(&p);

	if (be->flags & ZH_BE_REMOTE) {
		if (decapped) {
			EV_INC(decap_no_local);
			return XDP_DROP;
		}
		return encap(ctx, &p, be, ct);
	}
	int err = p.t.family == ZH_AF_INET ? dnat_v4(&p, end, be) : dnat_v6(&p, end, be);
	if (err)
		return XDP_PASS;
	return forward(ctx, &p, data, end, be->port, ct, now);
}

/* A global function: the verifier checks it once, on its own, instead of
 * once per call site (it is called for the frame as it came, and again for
 * the inner packet of a decapsulated frame). */
__attribute__((noinline)) int zh_lb(struct xdp_md *ctx, __u32 decapped)
{
	if (!ctx)
		return XDP_PASS;
	return lb(ctx, decapped ? 1 : 0);
}

/* Returned by zh_fast() when zh_lb must decide. */
#define ZH_SLOW 0x102

/* flow_cache slot of an IPv4 flow (ports as loaded from the L4 header). */
static __always_inline __u32 fcache_slot(__u32 saddr, __u32 daddr, __u32 ports)
{
	__u32 h = (saddr ^ rol32(daddr, 16)) * 0x9e3779b1U;

	h = (h ^ ports) * 0x85ebca6bU;
	return h >> (32 - ZH_FCACHE_BITS);
}

/* An established hit to a valid local backend with a known next hop:
 * counters, rewrite, and on as forward() does with a cached next hop. */
static __always_inline int hit_out(struct ethhdr *eth, void *l3, void *l4, void *end, __u32 len, __u8 csum_off,
				   __u8 proto, __u8 family, const struct backend *be, __u32 svc, __u32 be_id,
				   __u32 ifindex, const __u8 *dmac, const __u8 *smac)
{
	struct counters *sc = bpf_map_lookup_elem(&stats, &svc);
	if (sc) {
		sc->packets++;
		sc->bytes += len;
	}
	stats_add(zh_max_services + be_id, len, 0, 0, 0);
	int err = family == ZH_AF_INET ? dnat4(l3, l4, csum_off, proto, 0, end, be)
				       : dnat6(l3, l4, csum_off, proto, 0, end, be);
	if (err)
		return XDP_PASS;

	if (family == ZH_AF_INET) {
		struct iphdr *ip = l3;

		if ((void *)(ip + 1) > end || ip->ttl <= 1)
			return XDP_PASS;
		if (!bpf_map_lookup_elem(&tx_ports, &ifindex))
			return XDP_PASS;
		ipv4_dec_ttl(ip);
	} else {
		struct ipv6hdr *ip6 = l3;

		if ((void *)(ip6 + 1) > end || ip6->hop_limit <= 1)
			return XDP_PASS;
		if (!bpf_map_lookup_elem(&tx_ports, &ifindex))
			return XDP_PASS;
		ip6->hop_limit--;
	}
	__builtin_memcpy(eth->h_dest, dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, smac, ETH_ALEN);
	return bpf_redirect_map(&tx_ports, ifindex, XDP_PASS);
}

/* The common case first, ahead of the classification in zh_lb, with a
 * short parse of its own (front() has read the VIP filter): an
 * established flow to a local backend of a service without source ranges
 * (a complete, unfragmented, untagged TCP/UDP packet) with a cached next
 * hop costs the conntrack lookup, the backend slot, the counters, the
 * rewrite and the tx_ports check. Whatever this cannot judge (new flows,
 * VLAN tags, fragments, ICMP, IP-in-IP, remote or restricted backends, no
 * cached next hop, anything malformed) goes on, untouched, to zh_lb, which
 * parses again and decides everything. A global function of its own
 * rather than inline in zh_xdp: its frame then does not add to the
 * deepest call chain (zh_xdp, zh_lb, zh_new_flow), which must stay within
 * 512 bytes of stack. */
__attribute__((noinline)) int zh_fast(struct xdp_md *ctx)
{
	if (!ctx)
		return ZH_SLOW;
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	/* A bare tuple and locals, not a struct zh_pkt: a smaller frame, and
	 * less to zero per packet. */
	struct tuple t = {};
	struct ethhdr *eth = data;
	void *l3, *l4;
	__u32 len, l4_len, l3_off = sizeof(*eth);
	__u8 csum_off;
	int vlan = 0;

	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	__be16 proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q_) || proto == bpf_htons(ETH_P_8021AD_)) {
		__be16 *inner = data + sizeof(*eth) + 2;

		if ((void *)(inner + 1) > end)
			return XDP_PASS;
		proto = *inner;
		l3_off += 4;
		vlan = 1;
	}
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + l3_off;

		if ((void *)(ip + 1) > end || ip->protocol == IPPROTO_IPIP)
			return ZH_SLOW;
		t.family = ZH_AF_INET;
		t.daddr[0] = ip->daddr;
		if (vlan || ip->version != 4 || ip->ihl < 5 || (ip->frag_off & bpf_htons(IP_MF_ | IP_OFFSET_)))
			return ZH_SLOW;
		__u32 hl = ip->ihl * 4;
		len = bpf_ntohs(ip->tot_len);
		if (len < hl || (void *)ip + len > end)
			return ZH_SLOW;
		l3 = ip;
		l4 = (void *)ip + hl;
		l4_len = len - hl;
		t.proto = ip->protocol;
		t.saddr[0] = ip->saddr;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + l3_off;

		if ((void *)(ip6 + 1) > end || ip6->nexthdr == IPPROTO_IPV6)
			return ZH_SLOW;
		t.family = ZH_AF_INET6;
		__builtin_memcpy(t.daddr, &ip6->daddr, 16);
		l4_len = bpf_ntohs(ip6->payload_len);
		if (vlan || ip6->version != 6 || l4_len == 0 || (void *)(ip6 + 1) + l4_len > end)
			return ZH_SLOW;
		l3 = ip6;
		l4 = ip6 + 1;
		len = l4_len + sizeof(*ip6);
		t.proto = ip6->nexthdr;
		__builtin_memcpy(t.saddr, &ip6->saddr, 16);
	} else {
		return XDP_PASS;
	}
	if (zh_ct_bypass)
		return ZH_SLOW;
	/* As parse_l4() for an unfragmented packet. */
	if (t.proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;

		if ((void *)(th + 1) > end || th->doff < 5 || (__u32)th->doff * 4 > l4_len)
			return ZH_SLOW;
		t.sport = th->source;
		t.dport = th->dest;
		csum_off = offsetof(struct tcphdr, check);
	} else if (t.proto == IPPROTO_UDP) {
		struct udphdr *uh = l4;

		if ((void *)(uh + 1) > end)
			return ZH_SLOW;
		__u32 ulen = bpf_ntohs(uh->len);
		if (ulen < sizeof(*uh) || ulen > l4_len)
			return ZH_SLOW;
		t.sport = uh->source;
		t.dport = uh->dest;
		csum_off = offsetof(struct udphdr, check);
	} else {
		return ZH_SLOW;
	}

	struct ct_value *ct = bpf_map_lookup_elem(&conntrack, &t);
	if (!ct)
		return ZH_SLOW;
	struct backend *be = bpf_map_lookup_elem(&backends, &ct->backend);
	if (!be || be->family != t.family || be->svc != ct->svc ||
	    (be->flags & (ZH_BE_REMOTE | ZH_BE_SVC_SRC_RANGES)))
		return ZH_SLOW;
	/* Only with a cached next hop: forward()'s FIB lookup (and its
	 * 64-byte argument) stay in zh_lb. */
	__u64 now = bpf_jiffies64();
	if (ct->nh_until <= now)
		return ZH_SLOW;
	if (now - ct->last_seen > ZH_TICKS)
		ct->last_seen = now;
	if (t.family == ZH_AF_INET && !vlan) {
		/* The next packets of the flow take the cache (zh_xdp_run). */
		__u32 slot = fcache_slot(t.saddr[0], t.daddr[0], (__u32)t.sport | (__u32)t.dport << 16);
		struct flow_cache_entry *fc = bpf_map_lookup_elem(&flow_cache, &slot);

		if (fc) {
			fc->saddr = t.saddr[0];
			fc->daddr = t.daddr[0];
			fc->sport = t.sport;
			fc->dport = t.dport;
			fc->proto = t.proto;
			fc->nh_until = ct->nh_until;
			fc->backend = ct->backend;
			fc->svc = ct->svc;
			fc->nh_ifindex = ct->nh_ifindex;
			__builtin_memcpy(fc->nh_dmac, ct->nh_dmac, ETH_ALEN);
			__builtin_memcpy(fc->nh_smac, ct->nh_smac, ETH_ALEN);
		}
	}
	return hit_out(eth, l3, l4, end, len, csum_off, t.proto, t.family, be, ct->svc, ct->backend,
		       ct->nh_ifindex, ct->nh_dmac, ct->nh_smac);
}

/* Returned by front() when zh_fast must look. */
#define ZH_TRY_FAST 0x103

/* Inline in zh_xdp, ahead of any call: a packet that is neither
 * IP-in-IP nor possibly for a VIP costs a header read and one filter
 * lookup, and an established IPv4 flow found in flow_cache (a plain
 * untagged TCP/UDP packet without IP options) is forwarded right here:
 * no map call at all but the tx_ports check. Whatever this cannot judge
 * goes on, untouched, to zh_fast. */
static __always_inline int front(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 l3_off = sizeof(*eth);

	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	__be16 proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q_) || proto == bpf_htons(ETH_P_8021AD_)) {
		__be16 *inner = data + sizeof(*eth) + 2;

		if ((void *)(inner + 1) > end)
			return XDP_PASS;
		proto = *inner;
		l3_off += 4;
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + l3_off;

		if ((void *)(ip6 + 1) > end || ip6->nexthdr == IPPROTO_IPV6)
			return ZH_TRY_FAST;
		__u32 *d = (__u32 *)&ip6->daddr;
		return maybe_vip_x(d[0] ^ d[1] ^ d[2] ^ d[3]) ? ZH_TRY_FAST : XDP_PASS;
	}
	if (proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	struct iphdr *ip = data + l3_off;

	if ((void *)(ip + 1) > end || ip->protocol == IPPROTO_IPIP)
		return ZH_TRY_FAST;
	if (!maybe_vip_x(ip->daddr))
		return XDP_PASS;

	/* The cache: as zh_fast's checks, for the common shape only. */
	if (zh_ct_bypass || l3_off != sizeof(*eth) || *(__u8 *)ip != 0x45 ||
	    (ip->frag_off & bpf_htons(IP_MF_ | IP_OFFSET_)))
		return ZH_TRY_FAST;
	__u32 len = bpf_ntohs(ip->tot_len);
	void *l4 = ip + 1;
	__u8 l4proto = ip->protocol, csum_off;
	if (len < sizeof(*ip) || (void *)ip + len > end)
		return ZH_TRY_FAST;
	if (l4proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;

		if ((void *)(th + 1) > end || th->doff < 5 || (__u32)th->doff * 4 > len - sizeof(*ip))
			return ZH_TRY_FAST;
		csum_off = offsetof(struct tcphdr, check);
	} else if (l4proto == IPPROTO_UDP) {
		struct udphdr *uh = l4;

		if ((void *)(uh + 1) > end)
			return ZH_TRY_FAST;
		__u32 ulen = bpf_ntohs(uh->len);
		if (ulen < sizeof(*uh) || ulen > len - sizeof(*ip))
			return ZH_TRY_FAST;
		csum_off = offsetof(struct udphdr, check);
	} else {
		return ZH_TRY_FAST;
	}
	__u32 ports = *(__u32 *)l4;
	__u32 slot = fcache_slot(ip->saddr, ip->daddr, ports);
	struct flow_cache_entry *fc = bpf_map_lookup_elem(&flow_cache, &slot);
	if (!fc || fc->saddr != ip->saddr || fc->daddr != ip->daddr || *(__u32 *)&fc->sport != ports ||
	    fc->proto != l4proto)
		return ZH_TRY_FAST;
	if (fc->nh_until <= bpf_jiffies64())
		return ZH_TRY_FAST;
	struct backend *be = bpf_map_lookup_elem(&backends, &fc->backend);
	if (!be || be->family != ZH_AF_INET || be->svc != fc->svc ||
	    (be->flags & (ZH_BE_REMOTE | ZH_BE_SVC_SRC_RANGES)))
		return ZH_TRY_FAST;
	return hit_out(eth, ip, l4, end, len, csum_off, l4proto, ZH_AF_INET, be, fc->svc, fc->backend,
		       fc->nh_ifindex, fc->nh_dmac, fc->nh_smac);
}

static __always_inline int zh_xdp_run(struct xdp_md *ctx)
{
	int r = front(ctx);

	if (r != ZH_TRY_FAST)
		return r;
	r = zh_fast(ctx);
	if (r != ZH_SLOW)
		return r;
	r = zh_lb(ctx, 0);
	if (r != ZH_DO_DECAP)
		return r;
	r = decap(ctx);
	if (r != ZH_DECAPPED)
		return r;
	return zh_lb(ctx, 1);
}

#define ZH_RESTORE_LEN 64

/* Benchmark builds only (zh_bench_restore): the frame's first bytes and
 * length. Kept in the map across the run, not in registers: the run then
 * has the registers (and so the stack) it has in a production build. */
struct bench_saved {
	__u8 head[ZH_RESTORE_LEN];
	__s64 len;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bench_saved);
} bench_buf SEC(".maps");

static __always_inline int bench_save(struct xdp_md *ctx)
{
	__u32 k = 0;
	struct bench_saved *sv = bpf_map_lookup_elem(&bench_buf, &k);
	void *data = (void *)(long)ctx->data;

	if (!sv || data + ZH_RESTORE_LEN > (void *)(long)ctx->data_end)
		return -1;
	__builtin_memcpy(sv->head, data, ZH_RESTORE_LEN);
	sv->len = (long)ctx->data_end - (long)ctx->data;
	return 0;
}

static __always_inline int bench_restore(struct xdp_md *ctx)
{
	__u32 k = 0;
	struct bench_saved *sv = bpf_map_lookup_elem(&bench_buf, &k);

	if (!sv)
		return -1;
	/* Only the front moves (adjust_head), so the length tells by how much. */
	long cur = (long)ctx->data_end - (long)ctx->data;
	barrier_var(cur); /* a scalar, not packet pointer arithmetic */
	long grown = cur - sv->len;
	if (grown > -256 && grown < 256 && grown != 0 && bpf_xdp_adjust_head(ctx, (int)grown))
		return -1;
	void *data = (void *)(long)ctx->data;
	if (data + ZH_RESTORE_LEN > (void *)(long)ctx->data_end)
		return -1;
	__builtin_memcpy(data, sv->head, ZH_RESTORE_LEN);
	return 0;
}

SEC("xdp")
int zh_xdp(struct xdp_md *ctx)
{
	if (!zh_bench_restore)
		return zh_xdp_run(ctx);

	/* Benchmarks only: undo whatever the run did to the frame. */
	if (bench_save(ctx))
		return XDP_ABORTED;
	int r = zh_xdp_run(ctx);
	if (bench_restore(ctx))
		return XDP_ABORTED;
	return r;
}

/* ------------------------------------------------------ tc reverse NAT -- */

#define PULL_LEN 128

/* The SYN-ACK of a flow that arrived encapsulated carries the MSS the
 * client will use towards the VIP, and that direction is encapsulated:
 * clamp it so the client's segments fit the path MTU once wrapped. */
static __always_inline void mss_clamp_tc(struct __sk_buff *skb, struct zh_pkt *p, void *end)
{
	struct node_cfg *cfg = node_get();

	if (!cfg || cfg->mtu < 1280)
		return;
	__u8 *th = p->l4;
	int off = mss_find(th, end);
	if (off < 0)
		return;
	/* The compiler knows off < 64; the verifier must see it. */
	barrier_var(off);
	__u8 *o = th + (off & 63);
	if ((void *)(o + 2) > end)
		return;
	__u16 max = mss_max(cfg->mtu, p->t.family);
	__u16 old = (__u16)o[0] << 8 | o[1];
	if (old <= max)
		return;
	__u8 nb[2] = {max >> 8, max & 0xff};
	__u32 at = p->l4_off + (off & 63);
	if (bpf_l4_csum_replace(skb, p->l4_off + 16, mss_raw(old, off), mss_raw(max, off), 2))
		return;
	bpf_skb_store_bytes(skb, at, nb, 2, 0);
	__u32 k = 0;
	struct event_counts *e = bpf_map_lookup_elem(&events, &k);
	if (e)
		e->mss_clamped++;
}

SEC("tcx/egress")
int zh_tc_egress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct zh_pkt p = {};

	/* Forwarded Pod traffic normally has linear headers; pull them when
	 * not, and give up quietly if the packet is shorter. */
	if (data + PULL_LEN > end && skb->len > (__u32)(end - data)) {
		bpf_skb_pull_data(skb, skb->len < PULL_LEN ? skb->len : PULL_LEN);
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
	}
	/* Fragmented replies are not rewritten (docs/datapath.md). */
	/* Only the headers need be linear: lengths are checked against the
	 * skb's, or a reply longer than PULL_LEN would go out unrewritten. */
	__u32 len = skb->len;
	if (len > 0xffff) /* GSO; the verifier wants a bounded offset */
		len = 0xffff;
	if (parse_to(&p, data, end, data + len) || p.kind != ZK_L4 || p.frag)
		return TCX_NEXT_;

	struct revnat_value *rv = bpf_map_lookup_elem(&revnat, &p.t);
	if (!rv || rv->family != p.t.family)
		return TCX_NEXT_;

	__u32 csum_at = p.l4_off + p.csum_off;
	__u64 mangled = p.t.proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	__be16 old_port = p.t.sport, new_port = rv->port;
	__u32 new_addr[4];
	__builtin_memcpy(new_addr, rv->addr, 16);

	/* Before the helpers below, which invalidate packet pointers. */
	if ((rv->flags & ZH_RV_ENCAP) && p.t.proto == IPPROTO_TCP && (p.tcp_flags & TCP_FLAG_SYN_))
		mss_clamp_tc(skb, &p, end);

	/* The helpers keep CHECKSUM_PARTIAL skbs (Pod-generated, offloaded)
	 * correct: only the pseudo-header part changes for those. */
	if (p.t.family == ZH_AF_INET) {
		__u32 old_addr = p.t.saddr[0];

		if (bpf_l4_csum_replace(skb, csum_at, old_addr, new_addr[0], BPF_F_PSEUDO_HDR | mangled | 4))
			return TCX_NEXT_;
		if (bpf_l3_csum_replace(skb, p.l3_off + offsetof(struct iphdr, check), old_addr, new_addr[0], 4))
			return TCX_NEXT_;
		bpf_skb_store_bytes(skb, p.l3_off + offsetof(struct iphdr, saddr), &new_addr[0], 4, 0);
	} else {
		__s64 diff = bpf_csum_diff(p.t.saddr, 16, new_addr, 16, 0);

		if (bpf_l4_csum_replace(skb, csum_at, 0, diff, BPF_F_PSEUDO_HDR | mangled))
			return TCX_NEXT_;
		bpf_skb_store_bytes(skb, p.l3_off + offsetof(struct ipv6hdr, saddr), new_addr, 16, 0);
	}
	bpf_l4_csum_replace(skb, csum_at, old_port, new_port, mangled | 2);
	bpf_skb_store_bytes(skb, p.l4_off, &new_port, 2, 0);
	return TCX_NEXT_;
}
