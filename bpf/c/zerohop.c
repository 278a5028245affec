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
 *                 echo requests to a VIP are answered, a new flow in a
 *                 service's reject share gets a TCP reset (XDP_TX).
 *   zh_tc_ingress tcx ingress on the uplink: a frame XDP rewrote for a local
 *                 Pod, marked in its metadata, goes into the Pod by
 *                 bpf_redirect_peer, ahead of the node's routing and
 *                 netfilter.
 *   zh_tc_pod     tcx ingress on a Pod link: the Pod's reply -> SNAT back
 *                 to VIP -> straight out of the uplink (bpf_redirect_neigh),
 *                 so neither direction meets the node's routing and
 *                 netfilter.
 *   zh_tc_egress  tcx egress on the uplink: a Pod reply that came through
 *                 the stack -> SNAT back to VIP (and the SYN-ACK's MSS
 *                 clamped for encapsulated flows).
 *
 * This file holds the entry points as sequences of stages; each concern
 * lives in its own header:
 *
 *   zerohop.h    map layouts and flags shared with Go (bpf2go -type)
 *   consts.h     every other constant: sizes, protocol numbers, packet
 *                kinds (ZK_*), the verdicts stages hand on (ZH_*)
 *   maps.h       load-time constants, the maps, counters
 *   parse.h      the parser, used by every path: Ethernet/VLAN, IPv4,
 *                IPv6 and its extension headers, TCP/UDP, ICMP
 *   csum.h       checksum arithmetic
 *   backend.h    VIP filter, service lookup, source ranges, affinity,
 *                Maglev
 *   conntrack.h  conntrack and revnat records, the flow cache, fragment
 *                records, zh_new_flow
 *   nat.h        destination NAT (XDP) and the reply's source NAT (tc)
 *   fwd.h        next hop (cached or bpf_fib_lookup), TTL, redirect
 *   encap.h      IP-in-IP encapsulation and decapsulation, MSS clamp
 *   icmp.h       echo replies, frag-needed / packet-too-big relay
 *   reject.h     the reject share's answer: a TCP reset, else a drop
 *   bench.h      the benchmark builds' frame restore
 *   vendor/      kernel UAPI and libbpf headers (the only ones used)
 *
 * Speed shapes the XDP stages: an established IPv4 hit is served from
 * flow_cache inline in zh_xdp (front), with no call but the tx_ports
 * check; then zh_fast (one conntrack lookup); then zh_lb, which decides
 * everything. Each parses the frame again with the same parser; the
 * first two stop at the first thing they do not serve.
 *
 * Verification cost shapes the calls: zh_lb is one global function
 * (verified once, called for the frame and again for a decapsulated
 * inner packet), and so is the new-flow choice (zh_new_flow, whatever
 * packet kind led to it); encap and decap are separate frames so the
 * 512-byte stack limit holds across the call chain; the IPv6 extension
 * header walk and the TCP option walk are bounded to four.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "backend.h"
#include "bench.h"
#include "consts.h"
#include "conntrack.h"
#include "encap.h"
#include "fwd.h"
#include "icmp.h"
#include "maps.h"
#include "nat.h"
#include "parse.h"
#include "reject.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* ------------------------------------------------------- XDP stages -- */

/* Stage 1, inline in zh_xdp, ahead of any call: a packet that is neither
 * IP-in-IP nor possibly for a VIP costs the fixed IP header and one
 * filter read, and an established IPv4 flow found in flow_cache is
 * forwarded right here: no map call at all but the tx_ports check.
 * Whatever this cannot judge goes on, untouched, to zh_fast (IPv6 always:
 * it has no flow cache). */
static __always_inline int front(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct zh_pkt p = {};
	struct ethhdr *eth = data;

	/* The mark is ours alone: tc ingress trusts it (to_peer in fwd.h). */
	if ((void *)(eth + 1) <= end && eth->h_source[0] == ZH_MARK0 && eth->h_source[1] == ZH_MARK1 &&
	    eth->h_source[2] == ZH_MARK2 && eth->h_source[3] == ZH_MARK3) {
		DLV_INC(spoofed, 1);
		return XDP_DROP;
	}
	__be16 ethertype = parse_eth(&p, data, end);

	if (ethertype == bpf_htons(ETH_P_IPV6)) {
		if (parse_ip6_hdr(&p, data, end))
			return XDP_PASS;
		if (ip_in_ip(&p))
			return ZH_DECAP;
		return maybe_vip(&p.t) ? ZH_FAST : XDP_PASS;
	}
	if (ethertype != bpf_htons(ETH_P_IP) || parse_ip4_hdr(&p, data, end))
		return XDP_PASS;
	if (ip_in_ip(&p))
		return ZH_DECAP;
	if (!maybe_vip(&p.t))
		return XDP_PASS;
	if (zh_ct_bypass)
		return ZH_FAST;
	if (parse_ip4(&p, end, end) || parse_l4(&p, end))
		return XDP_PASS;
	if (!plain_l4(&p))
		return ZH_FAST;
	struct flow_cache_entry *fc = fcache_get(&p.t);
	if (!fc)
		return ZH_FAST;
	struct backend *be = backend_fast(&fc->backend, fc->svc, ZH_AF_INET);
	if (!be)
		return ZH_FAST;
	return hit_out_cached(&p, data, end, be, fc);
}

/* Stage 2: an established flow to a local backend of a service without
 * source ranges, with a cached next hop, costs the conntrack lookup, the
 * backend slot, the counters, the rewrite and the tx_ports check (and
 * fills the flow's flow_cache slot for the next packets). New flows,
 * VLAN tags, fragments, IPv6 extension headers, ICMP, remote or
 * restricted backends, no cached next hop go on, untouched, to zh_lb. A global function of its own
 * rather than inline in zh_xdp: its frame then does not add to the
 * deepest call chain (zh_xdp, zh_lb, zh_new_flow), which must stay within
 * 512 bytes of stack. */
__attribute__((noinline)) int zh_fast(struct xdp_md *ctx)
{
	if (!ctx)
		return ZH_SLOW;
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct zh_pkt p = {};

	if (parse(&p, data, end, end, ZH_EXTHDR_STOP))
		return XDP_PASS;
	if (zh_ct_bypass || !plain_l4(&p))
		return ZH_SLOW;
	struct ct_value *ct = bpf_map_lookup_elem(&conntrack, &p.t);
	if (!ct)
		return ZH_SLOW;
	struct backend *be = backend_fast(&ct->backend, ct->svc, p.t.family);
	if (!be)
		return ZH_SLOW;
	/* Only with a cached next hop: forward()'s FIB lookup (and its
	 * 64-byte argument) stay in zh_lb. */
	__u64 now = bpf_jiffies64();
	if (ct->nh_until <= now)
		return ZH_SLOW;
	if (now - ct->last_seen > ZH_TICKS)
		ct->last_seen = now;
	if (p.t.family == ZH_AF_INET)
		fcache_fill(&p.t, ct);
	return hit_out(&p, data, end, be, ct->svc, ct->backend, ct->nh_ifindex, ct->nh_dmac, ct->nh_smac);
}

/* Stage 3, one packet in full: the special kinds, then conntrack, else the
 * service and a new flow, then the rewrite and forward or the
 * encapsulation. decapped: the frame came out of a peer's encapsulation,
 * so it must end on a local backend. */
static __always_inline int lb(struct xdp_md *ctx, __u32 decapped)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct zh_pkt p = {};

	if (parse(&p, data, end, end, ZH_EXTHDR_WALK))
		return XDP_PASS;
	if (p.kind == ZK_IPIP)
		return decapped ? XDP_PASS : ZH_DECAP;
	/* For the frame as it came, front() has read the filter. */
	if (decapped && !maybe_vip(&p.t))
		return XDP_PASS;

	__u64 now = bpf_jiffies64();
	if (p.kind == ZK_ECHO)
		return decapped ? XDP_PASS : echo_reply(&p, data, end);
	if (p.kind == ZK_ICMP_ERR)
		return icmp_relay(ctx, &p, data, end, decapped, now);
	if (p.kind == ZK_FRAG && frag_follow(&p))
		return XDP_PASS;

	struct ct_value *ct = 0;
	int denied = 0;
	struct backend *be = ct_lookup(&p, &ct, now, &denied);
	if (denied)
		return XDP_DROP;
	if (!be) {
		struct svc_value *svc = service_get(&p.t);

		if (!svc)
			return XDP_PASS;
		/* Before anything is recorded: a refused source leaves no flow. */
		if ((svc->flags & ZH_SVC_SRC_RANGES) && src_denied(svc->id, &p.t))
			return XDP_DROP;
		__u32 be_id = zh_new_flow(&p.t, svc, now, p.len, (decapped ? 1 : 0) | (__u32)p.tcp_flags << 8);
		/* A decapsulated packet's node chose a backend here; this
		 * table disagrees for a moment: dropped, never answered from
		 * the wrong node. */
		if (be_id == ZH_BE_REJECT)
			return decapped ? XDP_DROP : ZH_REJECT;
		if (!be_id)
			return XDP_DROP;
		be = backend_get(&be_id, svc->id, p.t.family);
		if (!be)
			return XDP_DROP;
	}
	if (p.frag)
		frag_record(&p);

	if (be->flags & ZH_BE_REMOTE)
		return encap_remote(ctx, &p, be, ct, decapped);
	if (dnat(&p, end, be))
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

/* The stages in order: each returns an XDP action, which ends the run, or
 * hands the frame to the next (ZH_*). */
static __always_inline int zh_xdp_run(struct xdp_md *ctx)
{
	int r = front(ctx);

	if (r == ZH_FAST)
		r = zh_fast(ctx);
	if (r == ZH_SLOW)
		r = zh_lb(ctx, 0);
	if (r == ZH_DECAP)
		r = decap(ctx);
	if (r == ZH_DECAPPED)
		r = zh_lb(ctx, 1);
	if (r == ZH_REJECT)
		r = zh_reject(ctx);
	return r;
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

/* ----------------------------------------------------- tc ingress -- */

/* What XDP (to_peer in fwd.h) rewrote and marked for a Pod on this node:
 * into the Pod's own interface, whose other end is in the Pod's
 * namespace, with the MACs a router's frame to the Pod would carry. The
 * kernel hands the packet to the Pod's stack right away; the node's IP
 * layer never sees it. Anything unmarked, or not addressed to this host
 * (a promiscuous uplink), goes on. */
SEC("tcx/ingress")
int zh_tc_ingress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end || eth->h_source[0] != ZH_MARK0 || eth->h_source[1] != ZH_MARK1 ||
	    eth->h_source[2] != ZH_MARK2 || eth->h_source[3] != ZH_MARK3 || skb->pkt_type != ZH_PACKET_HOST)
		return ZH_TCX_NEXT;
	__u32 slot = (__u32)eth->h_source[4] << 8 | eth->h_source[5];
	struct pod_slot *ps = bpf_map_lookup_elem(&pod_slots, &slot);
	if (!ps || !ps->ifindex)
		return ZH_TCX_NEXT;
	__builtin_memcpy(eth->h_source, ps->host_mac, ETH_ALEN);
	if (ps->pod_mac[0] | ps->pod_mac[1] | ps->pod_mac[2] | ps->pod_mac[3] | ps->pod_mac[4] | ps->pod_mac[5])
		__builtin_memcpy(eth->h_dest, ps->pod_mac, ETH_ALEN);
	DLV_INC(peer_tc, skb->gso_segs > 1 ? skb->gso_segs : 1);
	return bpf_redirect_peer(ps->ifindex, 0);
}

/* ------------------------------------------------------ tc egress -- */

/* The Pod's reply of a recorded flow: source back to VIP:port. Fragmented
 * replies are not rewritten (docs/datapath.md). */
/* A Pod's reply of a recorded flow, parsed (p) and its revnat record, or
 * NULL. Fragmented replies are not rewritten (docs/datapath.md). */
static __always_inline struct revnat_value *reply_of(struct __sk_buff *skb, struct zh_pkt *p, void **endp)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;

	/* A Pod's packets normally have linear headers; pull them when not,
	 * and give up quietly if the packet is shorter. */
	if (data + ZH_TC_PULL_LEN > end && skb->len > (__u32)(end - data)) {
		bpf_skb_pull_data(skb, skb->len < ZH_TC_PULL_LEN ? skb->len : ZH_TC_PULL_LEN);
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
	}
	/* Only the headers need be linear: lengths are checked against the
	 * skb's, or a reply longer than the pulled part would go out
	 * unrewritten. */
	__u32 len = skb->len;
	if (len > 0xffff) /* GSO; the verifier wants a bounded offset */
		len = 0xffff;
	if (parse(p, data, end, data + len, ZH_EXTHDR_WALK) || p->kind != ZK_L4 || p->frag)
		return 0;
	struct revnat_value *rv = bpf_map_lookup_elem(&revnat, &p->t);
	if (!rv || rv->family != p->t.family)
		return 0;
	*endp = end;
	return rv;
}

/* The reply's source back to VIP:port, and for an encapsulated flow's
 * SYN-ACK the MSS clamped (before the rewrite's helpers, which
 * invalidate packet pointers). */
static __always_inline void reply_rewrite(struct __sk_buff *skb, struct zh_pkt *p, void *end,
					  const struct revnat_value *rv)
{
	if ((rv->flags & ZH_RV_ENCAP) && p->t.proto == IPPROTO_TCP && (p->tcp_flags & ZH_TCP_SYN))
		mss_clamp_tc(skb, p, end);
	snat_skb(skb, p, rv);
}

/* tcx ingress on a Pod link (the Pod's host-side veth), attached by
 * SetPodLinks: the Pod's reply of a balanced flow goes from here straight
 * out of the uplink the FIB names, rewritten (source back to VIP:port, the
 * router's hop) and sent to the next hop by bpf_redirect_neigh. The
 * node's routing and netfilter see neither direction of the flow, so its
 * connection tracking never meets a reply it did not see the start of
 * (which it would call invalid, and rules such as kube-proxy's drop).
 * What the FIB cannot send on (TTL at its end, too big, no route) goes on
 * to the node's stack, and tc egress on the uplink rewrites it there. */
SEC("tcx/ingress")
int zh_tc_pod(struct __sk_buff *skb)
{
	struct zh_pkt p = {};
	void *end = 0;
	struct revnat_value *rv = reply_of(skb, &p, &end);

	if (!rv)
		return ZH_TCX_NEXT;
	if (!hop_ok(p.l3, end, p.t.family))
		return ZH_TCX_NEXT;
	struct bpf_fib_lookup fib = {.l4_protocol = p.t.proto, .sport = rv->port, .dport = p.t.dport,
				     .ifindex = skb->ingress_ifindex};
	/* A GSO packet's length is its segments'; the uplink segments it. */
	fib.tot_len = skb->gso_segs > 1 ? 0 : p.len;
	if (p.t.family == ZH_AF_INET) {
		fib.family = AF_INET;
		fib.ipv4_src = rv->addr[0];
		fib.ipv4_dst = p.t.daddr[0];
	} else {
		fib.family = AF_INET6;
		__builtin_memcpy(fib.ipv6_src, rv->addr, 16);
		__builtin_memcpy(fib.ipv6_dst, p.t.daddr, 16);
	}
	if (bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_SKIP_NEIGH) != BPF_FIB_LKUP_RET_SUCCESS)
		return ZH_TCX_NEXT;
	__u8 family = p.t.family;
	__u32 l3_off = p.l3_off;
	reply_rewrite(skb, &p, end, rv);
	/* The router's hop, with the skb helpers: the rewrite invalidated
	 * the packet pointers. */
	if (family == ZH_AF_INET) {
		__u8 ttl;

		if (bpf_skb_load_bytes(skb, l3_off + offsetof(struct iphdr, ttl), &ttl, 1))
			return ZH_TCX_NEXT;
		__u8 nttl = ttl - 1;
		bpf_l3_csum_replace(skb, l3_off + offsetof(struct iphdr, check), bpf_htons((__u16)ttl << 8),
				    bpf_htons((__u16)nttl << 8), 2);
		bpf_skb_store_bytes(skb, l3_off + offsetof(struct iphdr, ttl), &nttl, 1, 0);
	} else {
		__u8 hl;

		if (bpf_skb_load_bytes(skb, l3_off + offsetof(struct ipv6hdr, hop_limit), &hl, 1))
			return ZH_TCX_NEXT;
		hl--;
		bpf_skb_store_bytes(skb, l3_off + offsetof(struct ipv6hdr, hop_limit), &hl, 1, 0);
	}
	struct bpf_redir_neigh nh = {};
	if (family == ZH_AF_INET) {
		nh.nh_family = AF_INET;
		nh.ipv4_nh = fib.ipv4_dst; /* the gateway, when there is one */
	} else {
		nh.nh_family = AF_INET6;
		__builtin_memcpy(nh.ipv6_nh, fib.ipv6_dst, 16);
	}
	DLV_INC(reply_tc, skb->gso_segs > 1 ? skb->gso_segs : 1);
	return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
}

/* tcx egress on the uplink: the Pod's reply that came through the node's
 * stack (a Pod that is no Pod link, --direct-to-pods off) back to
 * VIP:port. */
SEC("tcx/egress")
int zh_tc_egress(struct __sk_buff *skb)
{
	struct zh_pkt p = {};
	void *end = 0;
	struct revnat_value *rv = reply_of(skb, &p, &end);

	if (rv)
		reply_rewrite(skb, &p, end, rv);
	return ZH_TCX_NEXT;
}
