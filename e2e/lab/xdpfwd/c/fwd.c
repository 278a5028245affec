// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The lab's forwarding in XDP, so that frames reach a node's uplink as a
 * NIC driver hands them to XDP: as frames, never as socket buffers that
 * the receiving veth would have to copy into an XDP buffer first.
 *
 *   zh_lab_route   the router: bpf_fib_lookup (ECMP by the kernel's own
 *                  multipath hash over the 5-tuple), TTL / hop limit down,
 *                  the next hop's MACs, redirect. What it cannot forward
 *                  (for the router itself, no neighbour yet, TTL at its
 *                  end, too big, not IP, link-local or multicast) is
 *                  passed to the kernel, which forwards, answers or sends
 *                  the ICMP error as before.
 *   zh_lab_switch  the node segment: a frame to a known unicast MAC goes
 *                  straight to that host's port; everything else (ARP,
 *                  neighbour discovery, broadcast, multicast, unknown
 *                  MACs) is passed to the Linux bridge, which floods and
 *                  learns as before.
 *
 * Redirected frames carry no checksum offload state: the lab turns
 * transmit checksum offload off on every sender whose frames these
 * programs forward, as a NIC finishes a checksum before the wire.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10

/* Interfaces frames may be redirected to. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} ports SEC(".maps");

/* The switch's forwarding table: a host's MAC -> the port it is behind. */
struct mac_key {
	__u8 mac[6];
	__u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct mac_key);
	__type(value, __u32);
} fdb SEC(".maps");

struct fwd_counts {
	__u64 forwarded; /* redirected */
	__u64 passed;    /* left to the kernel */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fwd_counts);
} counts SEC(".maps");

static __always_inline int counted(int forwarded, int verdict)
{
	__u32 k = 0;
	struct fwd_counts *c = bpf_map_lookup_elem(&counts, &k);

	if (c) {
		if (forwarded)
			c->forwarded++;
		else
			c->passed++;
	}
	return verdict;
}

#define PASS counted(0, XDP_PASS)

/* TCP and UDP ports for the multipath hash, when the header is there. */
static __always_inline void l4_ports(struct bpf_fib_lookup *fib, void *l4, void *end)
{
	__be16 *ports = l4;

	if ((fib->l4_protocol == IPPROTO_TCP || fib->l4_protocol == IPPROTO_UDP) && (void *)(ports + 2) <= end) {
		fib->sport = ports[0];
		fib->dport = ports[1];
	}
}

SEC("xdp")
int zh_lab_route(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct bpf_fib_lookup fib = {};

	if ((void *)(eth + 1) > end)
		return PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end || ip->ihl < 5 || ip->ttl <= 1)
			return PASS;
		__u32 daddr = bpf_ntohl(ip->daddr);
		/* Multicast, broadcast and link-local stay with the kernel. */
		if (daddr >= 0xe0000000 || (daddr >> 16) == 0xa9fe)
			return PASS;
		fib.family = AF_INET;
		fib.tos = ip->tos;
		fib.l4_protocol = ip->protocol;
		fib.tot_len = bpf_ntohs(ip->tot_len);
		fib.ipv4_src = ip->saddr;
		fib.ipv4_dst = ip->daddr;
		if (!(ip->frag_off & bpf_htons(0x1fff)))
			l4_ports(&fib, (void *)ip + ip->ihl * 4, end);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end || ip6->hop_limit <= 1)
			return PASS;
		__u8 d0 = ip6->daddr.in6_u.u6_addr8[0], d1 = ip6->daddr.in6_u.u6_addr8[1];
		__u8 s0 = ip6->saddr.in6_u.u6_addr8[0], s1 = ip6->saddr.in6_u.u6_addr8[1];
		if (d0 == 0xff || (d0 == 0xfe && (d1 & 0xc0) == 0x80) || (s0 == 0xfe && (s1 & 0xc0) == 0x80))
			return PASS;
		fib.family = AF_INET6;
		fib.flowinfo = *(__be32 *)ip6 & bpf_htonl(0x0fffffff);
		fib.l4_protocol = ip6->nexthdr;
		fib.tot_len = bpf_ntohs(ip6->payload_len) + sizeof(*ip6);
		__builtin_memcpy(fib.ipv6_src, &ip6->saddr, 16);
		__builtin_memcpy(fib.ipv6_dst, &ip6->daddr, 16);
		l4_ports(&fib, ip6 + 1, end);
	} else {
		return PASS;
	}
	fib.ifindex = ctx->ingress_ifindex;
	if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS ||
	    !bpf_map_lookup_elem(&ports, &fib.ifindex))
		return PASS;
	/* From here on the packet is forwarded: pointers were checked above. */
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end)
			return PASS;
		__u32 c = ip->check;
		c += bpf_htons(0x0100);
		ip->check = (__u16)(c + (c >= 0xffff));
		ip->ttl--;
	} else {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end)
			return PASS;
		ip6->hop_limit--;
	}
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	int r = bpf_redirect_map(&ports, fib.ifindex, XDP_PASS);
	return counted(r == XDP_REDIRECT, r);
}

SEC("xdp")
int zh_lab_switch(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct mac_key k = {};

	if ((void *)(eth + 1) > end || (eth->h_dest[0] & 1))
		return PASS;
	__builtin_memcpy(k.mac, eth->h_dest, ETH_ALEN);
	__u32 *port = bpf_map_lookup_elem(&fdb, &k);
	if (!port || *port == ctx->ingress_ifindex)
		return PASS;
	int r = bpf_redirect_map(&ports, *port, XDP_PASS);
	return counted(r == XDP_REDIRECT, r);
}
