/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Cluster mode: IP-in-IP (IPv4 in IPv4, IPv6 in IPv6) to a remote
 * backend's node and, on that node, taking it apart again; the MSS clamp
 * that keeps encapsulated TCP segments within the path MTU.
 */
#pragma once

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "backend.h"
#include "csum.h"
#include "fwd.h"
#include "maps.h"
#include "parse.h"

/* -------------------------------------------------------- MSS clamp -- */

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

/* The MSS option of the TCP header at p->l4 when it is larger than what
 * fits the path MTU once encapsulated (PathMTU - 60 for IPv4, - 100 for
 * IPv6): its offset in the header, the value found and the clamp; -1 when
 * it fits, is not there, or there is no usable MTU. */
static __always_inline int mss_over(struct zh_pkt *p, void *end, __u32 mtu, __u16 *old, __u16 *max)
{
	__u8 *th = p->l4;

	if (mtu < 1280)
		return -1;
	int off = mss_find(th, end);
	if (off < 0)
		return -1;
	/* The compiler knows off < 64; the verifier must see it. */
	barrier_var(off);
	off &= 63;
	__u8 *o = th + off;
	if ((void *)(o + 2) > end)
		return -1;
	*max = p->t.family == ZH_AF_INET ? mtu - 60 : mtu - 100;
	*old = (__u16)o[0] << 8 | o[1];
	return *old > *max ? off : -1;
}

/* In XDP, on the client's SYN before it is encapsulated. */
static __always_inline void mss_clamp_xdp(struct zh_pkt *p, void *end, __u32 mtu)
{
	__u16 old, max;
	int off = mss_over(p, end, mtu, &old, &max);

	if (off < 0)
		return;
	barrier_var(off);
	off &= 63;
	__u8 *th = p->l4;
	__u8 *o = th + off;
	__u16 *csum = (void *)th + 16;
	if ((void *)(o + 2) > end || (void *)(csum + 1) > end)
		return;
	*csum = csum_apply(*csum, csum_diff16(0, mss_raw(old, off), mss_raw(max, off)));
	o[0] = max >> 8;
	o[1] = max & 0xff;
	EV_INC(mss_clamped);
}

/* In tc, on the SYN-ACK of a flow that arrived encapsulated: it carries
 * the MSS the client will use towards the VIP, and that direction is
 * encapsulated. The helper keeps an offloaded checksum right. */
static __always_inline void mss_clamp_tc(struct __sk_buff *skb, struct zh_pkt *p, void *end)
{
	struct node_cfg *cfg = node_get();
	__u16 old, max;

	if (!cfg)
		return;
	int off = mss_over(p, end, cfg->mtu, &old, &max);
	if (off < 0)
		return;
	__u8 nb[2] = {max >> 8, max & 0xff};
	if (bpf_l4_csum_replace(skb, p->l4_off + 16, mss_raw(old, off), mss_raw(max, off), 2))
		return;
	bpf_skb_store_bytes(skb, p->l4_off + (off & 63), nb, 2, 0);
	EV_INC(mss_clamped);
}

/* ------------------------------------------------------ encapsulate -- */

/* Send an encapsulated frame: the next hop of the outer destination,
 * XDP_TX when it leaves where it came in (the usual case: one uplink),
 * redirect when the egress takes XDP frames, else XDP_PASS and the kernel
 * routes the outer packet (the frame still carries our own MAC as
 * destination). */
static __always_inline int encap_send(struct xdp_md *ctx, struct ct_value *ct, __u64 now, __u8 family, __u8 vlan)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct bpf_fib_lookup fib = {};
	struct ethhdr *eth = data;

	if (vlan || (void *)(eth + 1) > end)
		return XDP_PASS;
	__u8 proto = family == ZH_AF_INET ? IPPROTO_IPIP : IPPROTO_IPV6;
	if (nexthop(ctx, eth + 1, end, family, proto, 0, 0, ct, now, &fib, 0))
		return XDP_PASS;
	int tx = fib.ifindex == ctx->ingress_ifindex;
	if (!tx && !bpf_map_lookup_elem(&tx_ports, &fib.ifindex))
		return XDP_PASS;
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	if (tx)
		return XDP_TX;
	return bpf_redirect_map(&tx_ports, fib.ifindex, XDP_PASS);
}

/* IP-in-IP towards the remote backend's node. The inner packet is left
 * exactly as the client sent it (the receiving node chooses the same
 * backend and rewrites it there), except for a SYN's MSS, clamped so the
 * encapsulated segments fit the path MTU. The outer source varies per flow
 * within the node's source range so that the receiver's RSS, which hashes
 * the outer header, spreads flows; IPv6 also puts the flow hash into the
 * flow label. The outer header copies the inner DF bit and TOS, like the
 * kernel's own tunnels. Its own frame: the 512-byte stack limit holds
 * across the call chain. */
static __attribute__((noinline)) int encap(struct xdp_md *ctx, struct zh_pkt *p, const struct backend *be,
					   struct ct_value *ct)
{
	void *end = (void *)(long)ctx->data_end;
	__u64 now = bpf_jiffies64();
	struct node_cfg *cfg = node_get();
	__u8 vlan = p->vlan, family = p->t.family;
	__u32 h = flow_hash(&p->t);
	__u32 len = p->len;
	__u32 w0; /* inner: v4 tos; v6 first word */
	__be16 id = 0, df = 0;
	int hl = family == ZH_AF_INET ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);

	if (!cfg) {
		EV_INC(encap_fail);
		return XDP_DROP;
	}
	if (p->kind == ZK_L4 && !p->frag && p->t.proto == IPPROTO_TCP && (p->tcp_flags & ZH_TCP_SYN) && cfg->mtu)
		mss_clamp_xdp(p, end, cfg->mtu);

	end = (void *)(long)ctx->data_end;
	if (family == ZH_AF_INET) {
		struct iphdr *in = p->l3;

		if ((void *)(in + 1) > end)
			return XDP_PASS;
		w0 = in->tos;
		id = in->id;
		df = in->frag_off & bpf_htons(ZH_IP_DF);
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
	/* The Ethernet header (and tag) moves to the new front; the outer
	 * header goes between it and the inner packet. */
	void *data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + 18 + sizeof(struct ipv6hdr) > end)
		return XDP_DROP;
	if (vlan)
		__builtin_memcpy(data, data + hl, 18);
	else
		__builtin_memcpy(data, data + hl, 14);
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
		out->check = csum_ip4_hdr(out);
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

/* A remote backend's packet goes to its node, unless it came out of an
 * encapsulation itself: it is never encapsulated twice, so two nodes whose
 * tables disagree for a moment cannot bounce it between them. */
static __always_inline int encap_remote(struct xdp_md *ctx, struct zh_pkt *p, const struct backend *be,
					struct ct_value *ct, __u32 decapped)
{
	if (decapped) {
		EV_INC(decap_no_local);
		return XDP_DROP;
	}
	return encap(ctx, p, be, ct);
}

/* ------------------------------------------------------ decapsulate -- */

/* Take apart IP-in-IP addressed to this node from a known peer: the outer
 * header (with its IPv4 options or IPv6 extension headers, as parse.h
 * walks them) goes, the Ethernet header (and tag) moves forward over it.
 * Anything else with protocol 4/41 (another tunnel, an unknown source, a
 * fragment of the outer packet, an inner packet of another family or that
 * does not fit) is left alone for the kernel. */
static __attribute__((noinline)) int decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct zh_pkt p = {};
	struct node_cfg *cfg = node_get();
	struct peer_key pk = {};
	__u32 inner_len;
	__u8 l2[18];

	if (!cfg || parse_l3(&p, data, end, end, ZH_EXTHDR_STOP) || p.kind != ZK_IPIP || data + sizeof(l2) > end)
		return XDP_PASS;
	__builtin_memcpy(l2, data, sizeof(l2));
	__u32 hl = p.l4_off - p.l3_off;
	if (p.t.family == ZH_AF_INET) {
		struct iphdr *in = p.l4;

		if (!cfg->addr4 || p.t.daddr[0] != cfg->addr4)
			return XDP_PASS;
		if ((void *)(in + 1) > end || in->version != 4)
			return XDP_PASS;
		inner_len = bpf_ntohs(in->tot_len);
		pk.prefixlen = 32 + 32;
	} else {
		struct ipv6hdr *in = p.l4;
		__u32 *d = p.t.daddr;

		if (!(cfg->addr6[0] | cfg->addr6[1] | cfg->addr6[2] | cfg->addr6[3]) || d[0] != cfg->addr6[0] ||
		    d[1] != cfg->addr6[1] || d[2] != cfg->addr6[2] || d[3] != cfg->addr6[3])
			return XDP_PASS;
		if ((void *)(in + 1) > end || in->version != 6)
			return XDP_PASS;
		inner_len = bpf_ntohs(in->payload_len) + sizeof(*in);
		pk.prefixlen = 32 + 128;
	}
	if (inner_len > p.len - hl)
		return XDP_PASS;
	pk.family = p.t.family;
	__builtin_memcpy(pk.addr, p.t.saddr, 16);
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
