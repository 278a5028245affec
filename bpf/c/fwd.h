/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Sending a rewritten or encapsulated frame on: the next hop (cached in the
 * flow's conntrack entry, else bpf_fib_lookup; a Pod behind a bridge at its
 * own port), the router's TTL / hop limit, the MAC addresses, and then,
 * for a local Pod, into the Pod without the node's routing (tc's
 * bpf_redirect_peer, or an XDP redirect), else XDP_TX, a redirect, or
 * XDP_PASS for the kernel to route.
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
 * FIB and neighbour lookup per packet. For a local Pod (pod), a bridge the
 * lookup names is replaced by the Pod's port on it (pod_fdb), so the
 * cached interface is the Pod's own. Returns 0 when there is one. */
static __always_inline int nexthop(struct xdp_md *ctx, void *l3, void *end, __u8 family, __u8 proto, __be16 sport,
				   __be16 dport, struct ct_value *ct, __u64 now, struct bpf_fib_lookup *fib, int pod)
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
	if (pod) {
		struct fdb_key fk = {.ifindex = fib->ifindex};

		__builtin_memcpy(fk.mac, fib->dmac, ETH_ALEN);
		__u32 *port = bpf_map_lookup_elem(&pod_fdb, &fk);
		if (port)
			fib->ifindex = *port;
	}
	if (ct) {
		ct->nh_ifindex = fib->ifindex;
		__builtin_memcpy(ct->nh_dmac, fib->dmac, ETH_ALEN);
		__builtin_memcpy(ct->nh_smac, fib->smac, ETH_ALEN);
		ct->nh_until = now + ZH_TICKS;
	}
	return 0;
}

/* Into a Pod by way of tc ingress: the frame goes up as XDP_PASS, its
 * Ethernet source replaced by the mark naming the Pod link (struct
 * pod_link, ZH_MARK*), and zh_tc_ingress sends it into the Pod with
 * bpf_redirect_peer, before the node's IP layer: no routing, no netfilter,
 * no second queue; the Pod's stack receives it in the same softirq. The
 * hop limit goes down here, as the router's would. */
static __always_inline int to_peer(struct zh_pkt *p, void *data, void *end, __u32 slot)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	hop_dec(p->l3, end, p->t.family);
	eth->h_source[0] = ZH_MARK0;
	eth->h_source[1] = ZH_MARK1;
	eth->h_source[2] = ZH_MARK2;
	eth->h_source[3] = ZH_MARK3;
	eth->h_source[4] = slot >> 8;
	eth->h_source[5] = slot;
	DLV_INC(peer, 1);
	return XDP_PASS;
}

/* Out through ifindex as the router would send it, as pod_links says
 * (how, slot): into a Pod's own interface by tc's bpf_redirect_peer, or as
 * an XDP frame to an interface that takes them (tx_ports). Otherwise
 * XDP_PASS: the kernel routes the already-rewritten packet (resolving
 * ARP/ND, sending ICMP errors). */
static __always_inline int xmit_how(struct zh_pkt *p, void *data, void *end, __u32 ifindex, __u32 how, __u32 slot,
				    const __u8 *dmac, const __u8 *smac)
{
	struct ethhdr *eth = data;

	if (how == ZH_POD_PEER)
		return to_peer(p, data, end, slot);
	if (how != ZH_POD_XDP || (void *)(eth + 1) > end || !bpf_map_lookup_elem(&tx_ports, &ifindex)) {
		DLV_INC(stack, 1);
		return XDP_PASS;
	}
	hop_dec(p->l3, end, p->t.family);
	__builtin_memcpy(eth->h_dest, dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, smac, ETH_ALEN);
	DLV_INC(redirect, 1);
	return bpf_redirect_map(&tx_ports, ifindex, XDP_PASS);
}

/* xmit_how with pod_links read for ifindex, which is read for every
 * packet, so that a link removed takes effect at once. */
static __always_inline int xmit(struct zh_pkt *p, void *data, void *end, __u32 ifindex, const __u8 *dmac,
				const __u8 *smac)
{
	struct pod_link *pl = bpf_map_lookup_elem(&pod_links, &ifindex);

	if (!pl)
		return xmit_how(p, data, end, ifindex, 0, 0, dmac, smac);
	return xmit_how(p, data, end, ifindex, pl->how, pl->slot, dmac, smac);
}

/* A rewritten packet to a local backend: its next hop, then xmit().
 * VLAN-tagged frames are always passed so the VLAN device strips the
 * tag. */
static __always_inline int forward(struct xdp_md *ctx, struct zh_pkt *p, void *data, void *end, __be16 dport,
				   struct ct_value *ct, __u64 now)
{
	struct bpf_fib_lookup fib = {}; /* zeroing is cheap; the verifier wants it */

	if (p->vlan || !hop_ok(p->l3, end, p->t.family) ||
	    nexthop(ctx, p->l3, end, p->t.family, p->t.proto, p->t.sport, dport, ct, now, &fib, 1)) {
		DLV_INC(stack, 1);
		return XDP_PASS;
	}
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
	if (dnat(p, end, be))
		return XDP_PASS;
	if (!hop_ok(p->l3, end, p->t.family)) {
		DLV_INC(stack, 1);
		return XDP_PASS;
	}
	return xmit(p, data, end, ifindex, dmac, smac);
}

/* hit_out for a flow_cache hit, which also holds how its interface takes
 * packets: a Pod link's slot is checked against the interface with an
 * array read (inlined), not a hash lookup; a slot emptied or given to
 * another link since sends the packet the long way, through pod_links.
 * An interface that was no Pod link when the cache was filled is taken
 * to be none still: one added is used from the next fill (ZH_TICKS). */
static __always_inline int hit_out_cached(struct zh_pkt *p, void *data, void *end, const struct backend *be,
					  const struct flow_cache_entry *fc)
{
	stats_add(fc->svc, p->len, 0, 0, 0);
	stats_add(zh_max_services + fc->backend, p->len, 0, 0, 0);
	if (dnat(p, end, be))
		return XDP_PASS;
	if (!hop_ok(p->l3, end, p->t.family)) {
		DLV_INC(stack, 1);
		return XDP_PASS;
	}
	if (!fc->how) {
		DLV_INC(stack, 1);
		return XDP_PASS;
	}
	if (fc->how == ZH_POD_PEER) {
		__u32 slot = fc->slot;
		struct pod_slot *ps = bpf_map_lookup_elem(&pod_slots, &slot);

		if (ps && ps->ifindex == fc->nh_ifindex)
			return to_peer(p, data, end, slot);
	}
	return xmit(p, data, end, fc->nh_ifindex, fc->nh_dmac, fc->nh_smac);
}
