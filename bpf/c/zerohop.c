// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * zerohop datapath, part 1: VIP -> local Pod in one hop.
 *
 *   zh_xdp        XDP on the uplink: VIP hit -> conntrack/Maglev -> DNAT to
 *                 the Pod -> fib lookup -> redirect (or XDP_PASS).
 *   zh_tc_egress  tcx egress on the uplink: Pod reply -> SNAT back to VIP.
 *
 * Layout: the file reads top to bottom as maps, checksum helpers, parsing,
 * backend choice (ct_lookup, lb_new_flow), rewrite, forwarding, then the
 * two entry points. Parsing fills a struct zh_pkt; new cases (fragments,
 * ICMP, IP-in-IP in part 2) slot in as extra branches of parse_v4/parse_v6
 * and as another action next to dnat_v4/dnat_v6 + forward (encapsulate for
 * a backend flagged ZH_BE_REMOTE), without touching the rest.
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

#define ZH_DEF_SERVICES 16384
#define ZH_DEF_BACKENDS 65536
#define ZH_DEF_FLOWS 131072
#define ZH_DEF_MAGLEV 16381
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
};

#define TCP_FLAG_SYN_ 0x02
#define TCP_FLAG_ACK_ 0x10

/* Returns 0 when the packet is a complete, well-formed TCP/UDP packet whose
 * ports are readable; anything else is left to the kernel untouched. */
static __always_inline int parse_l4(struct zh_pkt *p, void *l4, void *end, __u32 l4_len)
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
		if (ulen < sizeof(*uh) || ulen > l4_len)
			return -1;
		p->t.sport = uh->source;
		p->t.dport = uh->dest;
		p->csum_off = offsetof(struct udphdr, check);
		return 0;
	}
	return -1;
}

/* Part 1 defined behaviour: IP fragments and IPv6 extension headers are not
 * load-balanced; they are passed on unchanged (docs/datapath.md). */
static __always_inline int parse_v4(struct zh_pkt *p, void *data, void *end)
{
	struct iphdr *ip = data + p->l3_off;

	if ((void *)(ip + 1) > end)
		return -1;
	if (ip->version != 4 || ip->ihl < 5)
		return -1;
	__u32 hl = ip->ihl * 4;
	__u32 tot = bpf_ntohs(ip->tot_len);
	if (tot < hl || (void *)ip + tot > end)
		return -1;
	if (ip->frag_off & bpf_htons(IP_MF_ | IP_OFFSET_))
		return -1;
	p->l3 = ip;
	p->l4 = (void *)ip + hl;
	p->l4_off = p->l3_off + hl;
	p->len = tot;
	p->t.family = ZH_AF_INET;
	p->t.proto = ip->protocol;
	p->t.saddr[0] = ip->saddr;
	p->t.daddr[0] = ip->daddr;
	return parse_l4(p, p->l4, end, tot - hl);
}

static __always_inline int parse_v6(struct zh_pkt *p, void *data, void *end)
{
	struct ipv6hdr *ip6 = data + p->l3_off;

	if ((void *)(ip6 + 1) > end)
		return -1;
	if (ip6->version != 6)
		return -1;
	__u32 plen = bpf_ntohs(ip6->payload_len);
	if (plen == 0 || (void *)(ip6 + 1) + plen > end)
		return -1;
	p->l3 = ip6;
	p->l4 = ip6 + 1;
	p->l4_off = p->l3_off + sizeof(*ip6);
	p->len = plen + sizeof(*ip6);
	p->t.family = ZH_AF_INET6;
	p->t.proto = ip6->nexthdr;
	__builtin_memcpy(p->t.saddr, &ip6->saddr, 16);
	__builtin_memcpy(p->t.daddr, &ip6->daddr, 16);
	return parse_l4(p, p->l4, end, plen);
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

static __always_inline int parse(struct zh_pkt *p, void *data, void *end)
{
	__be16 proto = parse_l2(p, data, end);

	if (proto == bpf_htons(ETH_P_IP))
		return parse_v4(p, data, end);
	if (proto == bpf_htons(ETH_P_IPV6))
		return parse_v6(p, data, end);
	return -1;
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
 * flow, whichever VIP or node it arrives at. */
static __always_inline __u32 flow_hash(const struct tuple *t)
{
	__u32 h = zh_seed;

	h = mm_mix(h, t->saddr[0]);
	if (t->family == ZH_AF_INET6) {
		h = mm_mix(h, t->saddr[1]);
		h = mm_mix(h, t->saddr[2]);
		h = mm_mix(h, t->saddr[3]);
	}
	h = mm_mix(h, t->sport);
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
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
	__u32 slot = flow_hash(t) % zh_maglev_m;
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

static __always_inline struct backend *ct_lookup(struct zh_pkt *p, struct ct_value **ctp, __u64 now)
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
	if (now - ct->last_seen > NSEC_PER_SEC)
		ct->last_seen = now;
	*ctp = ct;
	stats_add(ct->svc, p->len, 0, 0, 0);
	stats_add(zh_max_services + be_id, p->len, 0, 0, 0);
	return be;
}

/* New flow (or one whose backend is gone): Maglev over the service's
 * table, then record the flow both ways. Returns NULL when the service
 * cannot take it; the caller drops (counted). */
static __always_inline struct backend *lb_new_flow(struct zh_pkt *p, const struct svc_value *svc, __u64 now)
{
	struct backend *be;
	__u32 be_id;

	__u32 miss = 0;
	if (p->t.proto == IPPROTO_TCP &&
	    (p->tcp_flags & (TCP_FLAG_SYN_ | TCP_FLAG_ACK_)) != TCP_FLAG_SYN_)
		miss = 1;

	if (svc->count == 0 || !(be = maglev_pick(svc, &p->t, &be_id))) {
		stats_add(svc->id, 0, 1, 0, 0);
		return 0;
	}

	struct ct_value nct = {
		.backend = be_id,
		.svc = svc->id,
		.last_seen = now,
	};
	bpf_map_update_elem(&conntrack, &p->t, &nct, BPF_ANY);

	struct tuple rk = {};
	__builtin_memcpy(rk.saddr, be->addr, 16);
	__builtin_memcpy(rk.daddr, p->t.saddr, 16);
	rk.sport = be->port;
	rk.dport = p->t.sport;
	rk.proto = p->t.proto;
	rk.family = p->t.family;
	struct revnat_value rv = {
		.port = p->t.dport,
		.family = p->t.family,
		.svc = svc->id,
	};
	__builtin_memcpy(rv.addr, p->t.daddr, 16);
	bpf_map_update_elem(&revnat, &rk, &rv, BPF_ANY);

	stats_add(svc->id, p->len, 0, miss, 1);
	stats_add(zh_max_services + be_id, p->len, 0, miss, 1);
	return be;
}

static __always_inline int maybe_vip(const struct tuple *t)
{
	__u32 x = t->daddr[0];

	if (t->family == ZH_AF_INET6)
		x ^= t->daddr[1] ^ t->daddr[2] ^ t->daddr[3];
	__u32 bit = (x * 0x9e3779b1U) >> 12;
	__u32 word = bit >> 6;
	__u64 *w = bpf_map_lookup_elem(&vip_filter, &word);

	return w && (*w & (1ULL << (bit & 63)));
}

/* ------------------------------------------------------- XDP rewrite -- */

/* Destination NAT in place. Checksums are updated incrementally; a UDP/IPv4
 * zero checksum ("none") stays zero, and a computed zero is sent as 0xffff. */
static __always_inline int dnat_v4(struct zh_pkt *p, void *end, const struct backend *be)
{
	struct iphdr *ip = p->l3;
	__u16 *l4csum = p->l4 + p->csum_off;
	__be16 *dport = p->l4 + 2;

	if ((void *)(ip + 1) > end || (void *)(l4csum + 1) > end || (void *)(dport + 1) > end)
		return -1;

	__u32 addr_diff = csum_diff32(0, ip->daddr, be->addr[0]);
	ip->check = csum_apply(ip->check, addr_diff);

	__u16 c = *l4csum;
	if (p->t.proto == IPPROTO_TCP || c != 0) {
		c = csum_apply(c, csum_diff16(addr_diff, *dport, be->port));
		if (p->t.proto == IPPROTO_UDP && c == 0)
			c = 0xffff;
		*l4csum = c;
	}
	ip->daddr = be->addr[0];
	*dport = be->port;
	return 0;
}

static __always_inline int dnat_v6(struct zh_pkt *p, void *end, const struct backend *be)
{
	struct ipv6hdr *ip6 = p->l3;
	__u16 *l4csum = p->l4 + p->csum_off;
	__be16 *dport = p->l4 + 2;

	if ((void *)(ip6 + 1) > end || (void *)(l4csum + 1) > end || (void *)(dport + 1) > end)
		return -1;

	__u32 *d = (__u32 *)&ip6->daddr;
	__u32 diff = 0;
#pragma unroll
	for (int i = 0; i < 4; i++)
		diff = csum_diff32(diff, d[i], be->addr[i]);
	diff = csum_diff16(diff, *dport, be->port);
	__u16 c = csum_apply(*l4csum, diff);
	if (p->t.proto == IPPROTO_UDP && c == 0)
		c = 0xffff;
	*l4csum = c;
#pragma unroll
	for (int i = 0; i < 4; i++)
		d[i] = be->addr[i];
	*dport = be->port;
	return 0;
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
			ct->nh_until = now + NSEC_PER_SEC;
		}
	}
	if (!bpf_map_lookup_elem(&tx_ports, &ifindex))
		return XDP_PASS;

	/* We route it ourselves now, so act as the router would. */
	if (p->t.family == ZH_AF_INET) {
		struct iphdr *ip = p->l3;

		if ((void *)(ip + 1) > end)
			return XDP_PASS;
		__u32 c = ip->check;
		c += bpf_htons(0x0100);
		ip->check = (__u16)(c + (c >= 0xffff));
		ip->ttl--;
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

SEC("xdp")
int zh_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct zh_pkt p = {};

	if (parse(&p, data, end))
		return XDP_PASS;

	if (!maybe_vip(&p.t))
		return XDP_PASS;

	struct ct_value *ct = 0;
	__u64 now = bpf_ktime_get_coarse_ns();
	struct backend *be = ct_lookup(&p, &ct, now);
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
		be = lb_new_flow(&p, svc, now);
		if (!be)
			return XDP_DROP;
	}

	int err = p.t.family == ZH_AF_INET ? dnat_v4(&p, end, be) : dnat_v6(&p, end, be);
	if (err)
		return XDP_PASS;
	return forward(ctx, &p, data, end, be->port, ct, now);
}

/* ------------------------------------------------------ tc reverse NAT -- */

#define PULL_LEN 128

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
	if (parse(&p, data, end))
		return TCX_NEXT_;

	struct revnat_value *rv = bpf_map_lookup_elem(&revnat, &p.t);
	if (!rv || rv->family != p.t.family)
		return TCX_NEXT_;

	__u32 csum_at = p.l4_off + p.csum_off;
	__u64 mangled = p.t.proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	__be16 old_port = p.t.sport, new_port = rv->port;
	__u32 new_addr[4];
	__builtin_memcpy(new_addr, rv->addr, 16);

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
