/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The reject share: a new flow whose Maglev slot holds ZH_BE_REJECT (a
 * Gateway route's share of backendRefs that do not resolve) is refused
 * the way a host with no listener refuses it. A TCP segment is answered
 * with a reset (RFC 9293 3.10.7.1), built in place of the frame and sent
 * back out the way it came (XDP_TX); a UDP datagram, a fragment or a
 * reset is dropped. zh_new_flow has counted it (the rejects map).
 */
#pragma once

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "consts.h"
#include "csum.h"
#include "parse.h"

/* Ones'-complement sum of a 32-bit word as two 16-bit ones. */
static __always_inline __u32 csum_add32(__u32 sum, __u32 w)
{
	return sum + (w & 0xffff) + (w >> 16);
}

/* A global function, called from zh_xdp itself: its frame never adds to
 * the deepest call chain, and it parses the frame again (zh_lb's packet
 * pointers cannot be handed to it). */
__attribute__((noinline)) int zh_reject(struct xdp_md *ctx)
{
	if (!ctx)
		return XDP_DROP;
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct zh_pkt p = {};

	if (parse(&p, data, end, end, ZH_EXTHDR_WALK) || p.kind != ZK_L4 || p.frag || p.t.proto != IPPROTO_TCP ||
	    (p.tcp_flags & ZH_TCP_RST))
		return XDP_DROP;
	struct tcphdr *th = p.l4;
	struct ethhdr *eth = data;
	if ((void *)(th + 1) > end || (void *)(eth + 1) > end)
		return XDP_DROP;

	/* The reset: to a segment with ACK, sequence number its
	 * acknowledgment; else sequence 0 acknowledging all it occupies
	 * (its data, SYN and FIN). */
	__be32 seq = 0, ack = 0;
	__u8 flags = ZH_TCP_RST;
	if (p.tcp_flags & ZH_TCP_ACK) {
		seq = th->ack_seq;
	} else {
		__u32 seglen = p.len - (p.l4_off - p.l3_off) - (__u32)th->doff * 4;

		seglen += !!(p.tcp_flags & ZH_TCP_SYN) + !!(p.tcp_flags & ZH_TCP_FIN);
		ack = bpf_htonl(bpf_ntohl(th->seq) + seglen);
		flags |= ZH_TCP_ACK;
	}
	__u8 mac[ETH_ALEN];
	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);

	/* Ethernet (and its tag) stay; a fresh IP header without options or
	 * extension headers and a bare TCP header follow, and the frame ends
	 * there. */
	__u32 l3_off = p.l3_off;
	if (l3_off > sizeof(struct ethhdr) + 4)
		return XDP_DROP;
	__u32 l3_len = (p.t.family == ZH_AF_INET ? sizeof(struct iphdr) : sizeof(struct ipv6hdr)) + sizeof(*th);
	long delta = (long)(l3_off + l3_len) - (long)(end - data);
	if (delta > 0 || (delta < 0 && bpf_xdp_adjust_tail(ctx, (int)delta)))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;

	/* The pseudo-header's protocol and length, as words in memory. */
	__u32 sum = bpf_htons(IPPROTO_TCP) + bpf_htons(sizeof(*th));
	if (p.t.family == ZH_AF_INET) {
		struct iphdr *ip = data + l3_off;

		th = (void *)(ip + 1);
		if ((void *)(th + 1) > end)
			return XDP_DROP;
		*(__u16 *)ip = bpf_htons(0x4500); /* version 4, 5 words, TOS 0 */
		ip->tot_len = bpf_htons(l3_len);
		ip->id = 0;
		ip->frag_off = bpf_htons(ZH_IP_DF);
		ip->ttl = 64;
		ip->protocol = IPPROTO_TCP;
		ip->check = 0;
		ip->saddr = p.t.daddr[0];
		ip->daddr = p.t.saddr[0];
		ip->check = csum_ip4_hdr(ip);
		sum = csum_add32(sum, p.t.saddr[0]);
		sum = csum_add32(sum, p.t.daddr[0]);
	} else {
		struct ipv6hdr *ip6 = data + l3_off;

		th = (void *)(ip6 + 1);
		if ((void *)(th + 1) > end)
			return XDP_DROP;
		*(__be32 *)ip6 = bpf_htonl(0x60000000); /* version 6, class and flow label 0 */
		ip6->payload_len = bpf_htons(sizeof(*th));
		ip6->nexthdr = IPPROTO_TCP;
		ip6->hop_limit = 64;
		__builtin_memcpy(&ip6->saddr, p.t.daddr, 16);
		__builtin_memcpy(&ip6->daddr, p.t.saddr, 16);
#pragma unroll
		for (int i = 0; i < 4; i++) {
			sum = csum_add32(sum, p.t.saddr[i]);
			sum = csum_add32(sum, p.t.daddr[i]);
		}
	}
	__u32 *w = (__u32 *)th;
	th->source = p.t.dport;
	th->dest = p.t.sport;
	th->seq = seq;
	th->ack_seq = ack;
	w[3] = 0; /* window 0 too */
	((__u8 *)th)[12] = 5 << 4; /* 5 words, no options */
	((__u8 *)th)[13] = flags;
	w[4] = 0; /* checksum, urgent pointer */
#pragma unroll
	for (int i = 0; i < 5; i++)
		sum = csum_add32(sum, w[i]);
	th->check = ~csum_fold(sum);
	return XDP_TX;
}
