/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Sending a rewritten or encapsulated frame on: the next hop (cached in the
 * flow's conntrack entry, else bpf_fib_lookup), the router's TTL / hop
 * limit, the MAC addresses, and XDP_TX, a redirect, or XDP_PASS for the
 * kernel to route.
 */
#pragma once

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"
#include "nat.h"
#include "parse.h"

/* A router does not forward a packet whose TTL / hop limit would reach 0;
 * the kernel then sends the ICMP error. */
static __always_inline int hop_ok(void *l3, void *end, __u8 family)
{
	if (family == ZH_AF_INET) {
		struct iphdr *ip = l3;

		return (void *)(ip + 1) <= end && ip->ttl > 1;
	}
	struct ipv6hdr *ip6 = l3;

	return (void *)(ip6 + 1) <= end && ip6->hop_limit > 1;
}

/* A router's hop: TTL / hop limit down by one, the IPv4 header checksum
 * updated incrementally (RFC 1624). The caller has checked hop_ok(). */
static __always_inline void hop_dec(void *l3, void *end, __u8 family)
{
	if (family == ZH_AF_INET) {
		struct iphdr *ip = l3;

		if ((void *)(ip + 1) > end)
			return;
		__u32 c = ip->check;
		c += bpf_htons(0x0100);
		ip->check = (__u16)(c + (c >= 0xffff));
		ip->ttl--;
		return;
	}
	struct ipv6hdr *ip6 = l3;

	if ((void *)(ip6 + 1) <= end)
		ip6->hop_limit--;
}

/* The next hop towards the destination of the IP header at l3, into
 * fib->ifindex, dmac, smac: from the flow's conntrack entry (ct, when
 * established) while it is fresh, else from bpf_fib_lookup and then cached
 * there for ZH_TICKS jiffies, so an established flow does not pay for a
 * FIB and neighbour lookup per packet. Returns 0 when there is one. */
static __always_inline int nexthop(struct xdp_md *ctx, void *l3, void *end, __u8 family, __u8 proto, __be16 sport,
				   __be16 dport, struct ct_value *ct, __u64 now, struct bpf_fib_lookup *fib)
{
	if (ct && ct->nh_until > now) {
		fib->ifindex = ct->nh_ifindex;
		__builtin_memcpy(fib->dmac, ct->nh_dmac, ETH_ALEN);
		__builtin_memcpy(fib->smac, ct->nh_smac, ETH_ALEN);
		return 0;
	}
	if (family == ZH_AF_INET) {
		struct iphdr *ip = l3;

		if ((void *)(ip + 1) > end)
			return -1;
		fib->family = AF_INET;
		fib->tos = ip->tos;
		fib->tot_len = bpf_ntohs(ip->tot_len);
		fib->ipv4_src = ip->saddr;
		fib->ipv4_dst = ip->daddr;
	} else {
		struct ipv6hdr *ip6 = l3;

		if ((void *)(ip6 + 1) > end)
			return -1;
		fib->family = AF_INET6;
		fib->tot_len = bpf_ntohs(ip6->payload_len) + sizeof(*ip6);
		__builtin_memcpy(fib->ipv6_src, &ip6->saddr, 16);
		__builtin_memcpy(fib->ipv6_dst, &ip6->daddr, 16);
	}
	fib->l4_protocol = proto;
	fib->sport = sport;
	fib->dport = dport;
	fib->ifindex = ctx->ingress_ifindex;
	if (bpf_fib_lookup(ctx, fib, sizeof(*fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
		return -1;
	if (ct) {
		ct->nh_ifindex = fib->ifindex;
		__builtin_memcpy(ct->nh_dmac, fib->dmac, ETH_ALEN);
		__builtin_memcpy(ct->nh_smac, fib->smac, ETH_ALEN);
		ct->nh_until = now + ZH_TICKS;
	}
	return 0;
}

/* Out through ifindex when it takes XDP frames (tx_ports), as the router
 * would send it: hop limit down, next hop's MACs. Otherwise XDP_PASS: the
 * kernel routes the already-rewritten packet (resolving ARP/ND, sending
 * ICMP errors). */
static __always_inline int xmit(struct zh_pkt *p, void *data, void *end, __u32 ifindex, const __u8 *dmac,
				const __u8 *smac)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end || !bpf_map_lookup_elem(&tx_ports, &ifindex))
		return XDP_PASS;
	hop_dec(p->l3, end, p->t.family);
	__builtin_memcpy(eth->h_dest, dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, smac, ETH_ALEN);
	return bpf_redirect_map(&tx_ports, ifindex, XDP_PASS);
}

/* A rewritten packet to a local backend: its next hop, then xmit().
 * VLAN-tagged frames are always passed so the VLAN device strips the
 * tag. */
static __always_inline int forward(struct xdp_md *ctx, struct zh_pkt *p, void *data, void *end, __be16 dport,
				   struct ct_value *ct, __u64 now)
{
	struct bpf_fib_lookup fib = {}; /* zeroing is cheap; the verifier wants it */

	if (p->vlan || !hop_ok(p->l3, end, p->t.family))
		return XDP_PASS;
	if (nexthop(ctx, p->l3, end, p->t.family, p->t.proto, p->t.sport, dport, ct, now, &fib))
		return XDP_PASS;
	return xmit(p, data, end, fib.ifindex, fib.dmac, fib.smac);
}

/* An established hit to a valid local backend with a known next hop (the
 * fast paths): counters, rewrite, and on as forward() does with a cached
 * next hop. */
static __always_inline int hit_out(struct zh_pkt *p, void *data, void *end, const struct backend *be, __u32 svc,
				   __u32 be_id, __u32 ifindex, const __u8 *dmac, const __u8 *smac)
{
	stats_add(svc, p->len, 0, 0, 0);
	stats_add(zh_max_services + be_id, p->len, 0, 0, 0);
	if (dnat(p, end, be) || !hop_ok(p->l3, end, p->t.family))
		return XDP_PASS;
	return xmit(p, data, end, ifindex, dmac, smac);
}
