/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Address translation: the client's packet to the backend (destination
 * NAT, in place in XDP) and the Pod's reply back to the VIP (source NAT,
 * with the skb helpers in tc).
 */
#pragma once

#include <linux/bpf.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>

#include "csum.h"
#include "parse.h"

/* Destination NAT in place. Checksums are updated incrementally; a UDP/IPv4
 * zero checksum ("none") stays zero, and a computed zero is sent as 0xffff.
 * A later fragment has no L4 header: the first fragment's checksum covered
 * the whole datagram and was adjusted there, so only the address changes. */
static __always_inline int dnat4(struct zh_pkt *p, void *end, const struct backend *be)
{
	struct iphdr *ip = p->l3;
	__u16 *l4csum = p->l4 + p->csum_off;
	__be16 *dport = p->l4 + 2;

	if ((void *)(ip + 1) > end || (void *)(l4csum + 1) > end || (void *)(dport + 1) > end)
		return -1;

	__u32 addr_diff = csum_diff32(0, ip->daddr, be->addr[0]);
	ip->check = csum_apply(ip->check, addr_diff);
	if (p->kind == ZK_FRAG) {
		ip->daddr = be->addr[0];
		return 0;
	}

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

/* The TCP/UDP checksum covers the destination through the pseudo-header:
 * with extension headers that is the final destination, the one in the
 * fixed header (parse.h passes routing headers with segments left). */
static __always_inline int dnat6(struct zh_pkt *p, void *end, const struct backend *be)
{
	struct ipv6hdr *ip6 = p->l3;
	__u16 *l4csum = p->l4 + p->csum_off;
	__be16 *dport = p->l4 + 2;
	__u32 *d = (__u32 *)&ip6->daddr;

	if ((void *)(ip6 + 1) > end)
		return -1;
	if (p->kind == ZK_FRAG) {
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
	if (p->t.proto == IPPROTO_UDP && c == 0)
		c = 0xffff;
	*l4csum = c;
#pragma unroll
	for (int i = 0; i < 4; i++)
		d[i] = be->addr[i];
	*dport = be->port;
	return 0;
}

static __always_inline int dnat(struct zh_pkt *p, void *end, const struct backend *be)
{
	return p->t.family == ZH_AF_INET ? dnat4(p, end, be) : dnat6(p, end, be);
}

/* The Pod's reply back to VIP:port. The helpers keep CHECKSUM_PARTIAL skbs
 * (Pod-generated, offloaded) correct: only the pseudo-header part changes
 * for those. They invalidate packet pointers: nothing of p but offsets and
 * the tuple is used. */
static __always_inline void snat_skb(struct __sk_buff *skb, const struct zh_pkt *p, const struct revnat_value *rv)
{
	__u32 csum_at = p->l4_off + p->csum_off;
	__u64 mangled = p->t.proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	__be16 old_port = p->t.sport, new_port = rv->port;
	__u32 new_addr[4];

	__builtin_memcpy(new_addr, rv->addr, 16);
	if (p->t.family == ZH_AF_INET) {
		__u32 old_addr = p->t.saddr[0];

		if (bpf_l4_csum_replace(skb, csum_at, old_addr, new_addr[0], BPF_F_PSEUDO_HDR | mangled | 4))
			return;
		if (bpf_l3_csum_replace(skb, p->l3_off + offsetof(struct iphdr, check), old_addr, new_addr[0], 4))
			return;
		bpf_skb_store_bytes(skb, p->l3_off + offsetof(struct iphdr, saddr), &new_addr[0], 4, 0);
	} else {
		__s64 diff = bpf_csum_diff((__be32 *)p->t.saddr, 16, new_addr, 16, 0);

		if (bpf_l4_csum_replace(skb, csum_at, 0, diff, BPF_F_PSEUDO_HDR | mangled))
			return;
		bpf_skb_store_bytes(skb, p->l3_off + offsetof(struct ipv6hdr, saddr), new_addr, 16, 0);
	}
	bpf_l4_csum_replace(skb, csum_at, old_port, new_port, mangled | 2);
	bpf_skb_store_bytes(skb, p->l4_off, &new_port, 2, 0);
}
