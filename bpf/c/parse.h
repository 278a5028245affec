/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The parser: every path reads a frame through these functions (the flow
 * cache in front of everything, the conntrack fast path, the full path,
 * the inner packet of a decapsulated frame, the tc reply), so each check
 * on a header is written once, here.
 *
 Stages, each filling a part of struct zh_pkt:
 *   parse_eth      Ethernet and at most one 802.1Q/802.1ad tag;
 *   parse_ip       the fixed IP header's addresses and protocol
 *                  (parse_ip4_hdr, parse_ip6_hdr);
 *   parse_ip_rest  the IP header checked in full (IPv4 with its options;
 *                  IPv6 with its extension headers) and what it says of
 *                  the payload: fragment, IP-in-IP, or an upper-layer
 *                  protocol (parse_ip4, parse_ip6);
 *   parse_l4       the TCP/UDP header with its ports, or the ICMP message.
 * parse_l3() runs the first three, parse() all four. The flow cache reads
 * the VIP filter right after parse_ip, so pass-through traffic costs the
 * fixed header alone.
 *
 * IPv6 extension headers other than a fragment header are walked only
 * where asked (ZH_EXTHDR_WALK: zh_lb, tc egress): the flow cache, the
 * conntrack fast path and decap stop at them (ZH_EXTHDR_STOP, kind
 * ZK_EXTHDR) and leave such packets to zh_lb, so the common case pays
 * nothing for the walk.
 *
 * Everything is checked before it is used: a frame that fails a check is
 * left to the kernel untouched (the callers return XDP_PASS / TCX_NEXT).
 * len_end is where the packet really ends: end in XDP, beyond end in tc
 * when only the headers are linear. Lengths are checked against it,
 * pointers against end.
 */
#pragma once

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "consts.h"
#include "zerohop.h"

struct zh_pkt {
	struct tuple t;  /* as on the wire; an ICMP error: the quoted flow, client -> VIP */
	void *l3;
	void *l4;        /* the upper-layer header, after IPv4 options / IPv6 extension headers */
	__u32 len;       /* L3 length, for byte counters and the FIB */
	__u16 l3_off;    /* from start of frame */
	__u16 l4_off;
	__u8 csum_off;   /* of the L4 checksum within the L4 header */
	__u8 tcp_flags;
	__u8 vlan;
	__u8 kind;       /* ZK_* */
	__u8 frag;       /* first fragment of a fragmented datagram */
	__u8 emb_l4;     /* ICMP error: quoted L4 header, from the ICMP header */
	__u32 frag_id;   /* fragments: IP id / IPv6 identification */
};

/* The IPv6 fragment header (RFC 8200 4.5); the kernel's is not UAPI. */
struct ip6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset << 3 | M */
	__be32 id;
};

/* ---------------------------------------------------------- Ethernet -- */

/* Returns the L3 ethertype in network order, 0 when the frame is too
 * short. */
static __always_inline __be16 parse_eth(struct zh_pkt *p, void *data, void *end)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return 0;
	__be16 proto = eth->h_proto;
	p->l3_off = sizeof(*eth);
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		__be16 *inner = data + sizeof(*eth) + 2;

		if ((void *)(inner + 1) > end)
			return 0;
		proto = *inner;
		p->l3_off += 4;
		p->vlan = 1;
	}
	return proto;
}

/* ---------------------------------------------------------------- IP -- */

/* Fragments: the first one (ports readable) is balanced like any packet
 * and leaves its ports in `frags`; later ones (ZK_FRAG) find them there.
 * Only TCP and UDP are followed in fragments. */
static __always_inline int parse_frag(struct zh_pkt *p, __u32 id, int later)
{
	if (p->t.proto != IPPROTO_TCP && p->t.proto != IPPROTO_UDP)
		return -1;
	p->frag_id = id;
	if (later)
		p->kind = ZK_FRAG;
	else
		p->frag = 1;
	return 0;
}

/* The fixed IP header's addresses and protocol: what the VIP filter and
 * the IP-in-IP test read, before the rest is checked. */
static __always_inline int parse_ip4_hdr(struct zh_pkt *p, void *data, void *end)
{
	struct iphdr *ip = data + p->l3_off;

	if ((void *)(ip + 1) > end)
		return -1;
	p->l3 = ip;
	p->t.family = ZH_AF_INET;
	p->t.proto = ip->protocol;
	p->t.saddr[0] = ip->saddr;
	p->t.daddr[0] = ip->daddr;
	return 0;
}

static __always_inline int parse_ip6_hdr(struct zh_pkt *p, void *data, void *end)
{
	struct ipv6hdr *ip6 = data + p->l3_off;

	if ((void *)(ip6 + 1) > end)
		return -1;
	p->l3 = ip6;
	p->t.family = ZH_AF_INET6;
	p->t.proto = ip6->nexthdr;
	__builtin_memcpy(p->t.saddr, &ip6->saddr, 16);
	__builtin_memcpy(p->t.daddr, &ip6->daddr, 16);
	return 0;
}

static __always_inline int parse_ip(struct zh_pkt *p, void *data, void *end, __be16 ethertype)
{
	if (ethertype == bpf_htons(ETH_P_IP))
		return parse_ip4_hdr(p, data, end);
	if (ethertype == bpf_htons(ETH_P_IPV6))
		return parse_ip6_hdr(p, data, end);
	return -1;
}

/* Said by the IP header: its payload is an IP packet of the same family. */
static __always_inline int ip_in_ip(const struct zh_pkt *p)
{
	return p->t.proto == (p->t.family == ZH_AF_INET ? IPPROTO_IPIP : IPPROTO_IPV6);
}

/* The rest of an IPv4 header. Options are allowed and left as they are. */
static __always_inline int parse_ip4(struct zh_pkt *p, void *end, void *len_end)
{
	struct iphdr *ip = p->l3;

	if ((void *)(ip + 1) > end)
		return -1;
	if (ip->version != 4 || ip->ihl < 5)
		return -1;
	__u32 hl = ip->ihl * 4;
	__u32 tot = bpf_ntohs(ip->tot_len);
	if (tot < hl || (void *)ip + tot > len_end)
		return -1;
	p->l4 = (void *)ip + hl;
	p->l4_off = p->l3_off + hl;
	p->len = tot;
	if (ip->frag_off & bpf_htons(ZH_IP_MF | ZH_IP_OFFSET))
		return parse_frag(p, ip->id, ip->frag_off & bpf_htons(ZH_IP_OFFSET));
	if (ip_in_ip(p))
		p->kind = ZK_IPIP;
	return 0;
}

/* 1 for the extension headers the walk steps over: hop-by-hop options,
 * routing, destination options. A table, not compares: see ip6_walk. */
static const __u8 ip6_skipped[256] = {
	[IPPROTO_HOPOPTS] = 1,
	[IPPROTO_ROUTING] = 1,
	[IPPROTO_DSTOPTS] = 1,
};

/* Steps over at most ZH_IP6_MAX_EXTHDRS hop-by-hop options (only as the
 * first header), destination options and routing headers without
 * segments left, from p->l4 on, nh being the first header's type: their
 * options are for the hosts on the way and the Pod, and this node
 * forwards them unchanged. Leaves p->l4 (and l4_off) at the header after
 * them and returns its type, or -1.
 *
 * Written for the verifier: a round advances by the header's length times
 * `skip`, a 0 or 1 it cannot see, rather than branching on whether to
 * step. So every number of headers leads to one state (an offset within
 * a range) instead of one state each, which would each be followed
 * through all that comes after; a round that stepped over nothing ends
 * the walk in a state the longest walk covers, and is pruned. Only failed
 * checks branch otherwise, and they end the parse. Out of line: the
 * rounds' registers stay off the callers' frames. */
static __attribute__((noinline)) int ip6_walk(struct zh_pkt *p, void *end, __u32 nh, __u32 left)
{
	void *h = p->l4;
	__u32 off = p->l4_off;

#pragma unroll
	for (int i = 0; i < ZH_IP6_MAX_EXTHDRS; i++) {
		__u8 *e = h;

		/* Every header the walk can stop at has 8 bytes or more. */
		if ((void *)(e + 8) > end)
			return -1;
		__u32 skip = ip6_skipped[nh & 0xff];
		barrier_var(skip);
		skip &= 1;
		barrier_var(skip);
		__u32 cur = nh, next = e[0], segs = e[3];
		__u32 hl = ((__u32)e[1] + 1) * 8 * skip;
		if (hl > left)
			return -1;
		h += hl;
		off += hl;
		left -= hl;
		nh ^= (nh ^ next) & -skip;
		/* With segments left the packet is still on its way to another
		 * address than the one in the header, and the TCP/UDP
		 * checksum covers that other one. */
		if (skip && ((cur == IPPROTO_HOPOPTS && i) || (cur == IPPROTO_ROUTING && segs)))
			return -1;
		if (!skip)
			break;
	}
	if (ip6_skipped[nh & 0xff])
		return -1;
	p->l4 = h;
	p->l4_off = off;
	return nh;
}

/* The IPv6 payload up to the upper-layer header (RFC 8200 4.1): with
 * ZH_EXTHDR_WALK the extension headers ip6_walk steps over; then a
 * fragment header, if any, which TCP or UDP must follow (as IPv4
 * fragments); then the upper-layer protocol. ICMPv6 after extension
 * headers is passed: echo replies and relayed errors are built only from
 * packets without them. With ZH_EXTHDR_STOP the first extension header
 * but a fragment header ends the parse (kind ZK_EXTHDR), for the stages
 * that leave those packets to zh_lb. Each header, and the upper-layer
 * header, must lie within the payload length `plen`. */
static __always_inline int parse_ip6_payload(struct zh_pkt *p, void *end, __u32 nh, __u32 plen, int exthdrs)
{
	if (exthdrs == ZH_EXTHDR_STOP && ip6_skipped[nh & 0xff]) {
		p->t.proto = nh;
		p->kind = ZK_EXTHDR;
		return 0;
	}
	if (exthdrs == ZH_EXTHDR_WALK) {
		int upper = ip6_walk(p, end, nh, plen);

		if (upper < 0 || (upper == IPPROTO_ICMPV6 && nh != IPPROTO_ICMPV6))
			return -1;
		nh = upper;
	}
	p->t.proto = nh;
	if (nh == IPPROTO_FRAGMENT) {
		struct ip6_frag_hdr *fh = p->l4;

		/* The compiler may prove the bounds check from the length
		 * check (len_end is end in XDP) and drop it; the verifier
		 * needs it. */
		barrier_var(fh);
		if ((void *)(fh + 1) > end || p->l4_off - p->l3_off + sizeof(*fh) > p->len)
			return -1;
		p->t.proto = fh->nexthdr;
		p->l4 = fh + 1;
		p->l4_off += sizeof(*fh);
		__u16 off = bpf_ntohs(fh->frag_off);
		/* Offset 0 and no M: an atomic fragment (RFC 6946), a whole
		 * datagram. */
		if (!(off & (ZH_IP6_OFFSET | ZH_IP6_MF)))
			return p->t.proto == IPPROTO_TCP || p->t.proto == IPPROTO_UDP ? 0 : -1;
		return parse_frag(p, fh->id, off & ZH_IP6_OFFSET);
	}
	if (ip_in_ip(p))
		p->kind = ZK_IPIP;
	return 0;
}

/* The rest of an IPv6 header, and its payload up to the upper layer. */
static __always_inline int parse_ip6(struct zh_pkt *p, void *end, void *len_end, int exthdrs)
{
	struct ipv6hdr *ip6 = p->l3;

	if ((void *)(ip6 + 1) > end)
		return -1;
	if (ip6->version != 6)
		return -1;
	__u32 plen = bpf_ntohs(ip6->payload_len);
	if (plen == 0 || (void *)(ip6 + 1) + plen > len_end)
		return -1;
	p->l4 = ip6 + 1;
	p->l4_off = p->l3_off + sizeof(*ip6);
	p->len = plen + sizeof(*ip6);
	return parse_ip6_payload(p, end, ip6->nexthdr, plen, exthdrs);
}

/* After parse_ip: the header checked in full, what it carries. */
static __always_inline int parse_ip_rest(struct zh_pkt *p, void *end, void *len_end, int exthdrs)
{
	if (p->t.family == ZH_AF_INET)
		return parse_ip4(p, end, len_end);
	return parse_ip6(p, end, len_end, exthdrs);
}

/* Ethernet and IP: addresses, protocol, kind. */
static __always_inline int parse_l3(struct zh_pkt *p, void *data, void *end, void *len_end, int exthdrs)
{
	if (parse_ip(p, data, end, parse_eth(p, data, end)))
		return -1;
	return parse_ip_rest(p, end, len_end, exthdrs);
}

/* -------------------------------------------------------------- ICMP -- */

/* ICMP errors carry the start of the packet that caused them: here the
 * reply of a VIP flow, VIP -> client, whose quoted source must be the
 * packet's destination (the VIP). The tuple becomes that flow seen the
 * other way, client -> VIP, so conntrack and Maglev find its backend;
 * the addresses are the family's part, this the rest. */
static __always_inline int quoted_flow(struct zh_pkt *p, __u8 proto, __be16 *ports, __u32 emb_l4)
{
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return -1;
	p->t.proto = proto;
	p->t.sport = ports[1];
	p->t.dport = ports[0];
	p->emb_l4 = emb_l4;
	p->kind = ZK_ICMP_ERR;
	return 0;
}

/* IPv4 frag-needed: the quoted header, not a later fragment, and the
 * first 8 bytes of its payload. */
static __always_inline int parse_quoted4(struct zh_pkt *p, void *end, __u32 l4_len)
{
	struct iphdr *in = p->l4 + 8;

	if ((void *)(in + 1) > end)
		return -1;
	if (in->version != 4 || in->ihl < 5 || (in->frag_off & bpf_htons(ZH_IP_OFFSET)))
		return -1;
	__u32 ihl = in->ihl * 4;
	__be16 *ports = (void *)in + ihl;
	if ((void *)(ports + 2) > end || 8 + ihl + 8 > l4_len || in->saddr != p->t.daddr[0])
		return -1;
	p->t.saddr[0] = in->daddr;
	return quoted_flow(p, in->protocol, ports, 8 + ihl);
}

/* ICMPv6 packet-too-big: the quoted fixed header and the ports right after
 * it. */
static __always_inline int parse_quoted6(struct zh_pkt *p, void *end, __u32 l4_len)
{
	struct ipv6hdr *in = p->l4 + 8;
	__be16 *ports = (void *)(in + 1);

	if ((void *)(ports + 2) > end || 8 + sizeof(*in) + 4 > l4_len || in->version != 6)
		return -1;
	__u32 *es = (__u32 *)&in->saddr;
	if (es[0] != p->t.daddr[0] || es[1] != p->t.daddr[1] || es[2] != p->t.daddr[2] || es[3] != p->t.daddr[3])
		return -1;
	__builtin_memcpy(p->t.saddr, &in->daddr, 16);
	return quoted_flow(p, in->nexthdr, ports, 8 + sizeof(*in));
}

/* An echo request (ZK_ECHO), or frag-needed / packet-too-big quoting a
 * VIP flow (ZK_ICMP_ERR); any other ICMP message is not ours. */
static __always_inline int parse_icmp(struct zh_pkt *p, void *end, __u32 l4_len)
{
	__u8 *ic = p->l4;
	int v4 = p->t.family == ZH_AF_INET;

	if ((void *)(ic + 8) > end || l4_len < 8)
		return -1;
	if (ic[0] == (v4 ? ICMP_ECHO : ICMPV6_ECHO_REQUEST) && ic[1] == 0) {
		p->kind = ZK_ECHO;
		return 0;
	}
	if (v4 && ic[0] == ICMP_DEST_UNREACH && ic[1] == ICMP_FRAG_NEEDED)
		return parse_quoted4(p, end, l4_len);
	if (!v4 && ic[0] == ICMPV6_PKT_TOOBIG && ic[1] == 0)
		return parse_quoted6(p, end, l4_len);
	return -1;
}

/* ------------------------------------------------------------ TCP/UDP -- */

/* TCP and UDP both start with the source and destination port: one
 * 4-byte load (the flow cache compares them as one word), split as
 * memory holds them. */
static __always_inline void l4_ports(struct zh_pkt *p, void *l4)
{
	__u32 ports = *(__u32 *)l4;

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	p->t.sport = ports;
	p->t.dport = ports >> 16;
#else
	p->t.sport = ports >> 16;
	p->t.dport = ports;
#endif
}

/* A complete TCP/UDP header whose ports are readable, or an ICMP message
 * of interest; a later fragment and IP-in-IP have nothing to read here. */
static __always_inline int parse_l4(struct zh_pkt *p, void *end)
{
	__u32 l4_len = p->len - (p->l4_off - p->l3_off);

	if (p->kind != ZK_L4)
		return 0;
	if (p->t.proto == IPPROTO_TCP) {
		struct tcphdr *th = p->l4;

		if ((void *)(th + 1) > end)
			return -1;
		if (th->doff < 5 || (__u32)th->doff * 4 > l4_len)
			return -1;
		l4_ports(p, th);
		p->csum_off = offsetof(struct tcphdr, check);
		p->tcp_flags = ((__u8 *)th)[13];
		return 0;
	}
	if (p->t.proto == IPPROTO_UDP) {
		struct udphdr *uh = p->l4;

		if ((void *)(uh + 1) > end)
			return -1;
		__u32 ulen = bpf_ntohs(uh->len);
		/* A first fragment carries only part of the datagram. */
		if (ulen < sizeof(*uh) || (!p->frag && ulen > l4_len))
			return -1;
		l4_ports(p, uh);
		p->csum_off = offsetof(struct udphdr, check);
		return 0;
	}
	if (p->t.proto == (p->t.family == ZH_AF_INET ? IPPROTO_ICMP : IPPROTO_ICMPV6))
		return parse_icmp(p, end, l4_len);
	return -1;
}

/* The whole frame. Returns 0 when it is one of the kinds above, with
 * everything the kind needs readable; anything else is left untouched. */
static __always_inline int parse(struct zh_pkt *p, void *data, void *end, void *len_end, int exthdrs)
{
	if (parse_l3(p, data, end, len_end, exthdrs))
		return -1;
	return parse_l4(p, end);
}

/* What the fast paths serve: a complete, unfragmented, untagged TCP/UDP
 * packet. */
static __always_inline int plain_l4(const struct zh_pkt *p)
{
	return p->kind == ZK_L4 && !p->frag && !p->vlan;
}
