/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ICMP for VIPs: echo requests answered here, and frag-needed /
 * packet-too-big about a VIP flow relayed to the flow's backend so path
 * MTU discovery works through the load balancer. parse.h classifies them
 * (ZK_ECHO, ZK_ICMP_ERR) and turns a quoted flow around.
 */
#pragma once

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>

#include "backend.h"
#include "csum.h"
#include "encap.h"
#include "fwd.h"
#include "maps.h"
#include "parse.h"

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
 * backend (conntrack, else Maglev on the quoted header with addresses
 * swapped, creating no flow) and hand the error to it, rewritten as if the
 * Pod's own packet had caused it: outer destination and quoted source
 * become the Pod's address and port. The quoted L4 checksum is left
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
		be = backend_get(&be_id, ct->svc, p->t.family);
	}
	if (!be) {
		struct svc_value *svc = service_get(&p->t);

		if (svc && svc->count)
			be = maglev_pick(svc, &p->t, &be_id);
	}
	if (!be) {
		EV_INC(icmp_no_flow);
		return XDP_PASS;
	}
	if (be->flags & ZH_BE_REMOTE) {
		if (!decapped)
			EV_INC(icmp_relay);
		return encap_remote(ctx, p, be, 0, decapped);
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
			/* pseudo-header destination and quoted source */
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
