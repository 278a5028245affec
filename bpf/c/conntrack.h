/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Flows: conntrack (client -> VIP, which backend) and revnat (Pod ->
 * client, which VIP) entries, the per-CPU flow cache in front of
 * conntrack, and the records that let later fragments follow the first.
 */
#pragma once

#include <bpf/bpf_helpers.h>

#include "backend.h"
#include "maps.h"
#include "parse.h"

/* --------------------------------------------------------- conntrack -- */

/* Established flow: conntrack alone names the backend (and the service, for
 * counters), so the packet costs one hash lookup. The entry is honoured
 * while its backend slot still belongs to the same service: a removed
 * backend is zeroed by the loader and its flows choose again. */
static __always_inline struct backend *ct_lookup(struct zh_pkt *p, struct ct_value **ctp, __u64 now, int *denied)
{
	struct ct_value *ct = bpf_map_lookup_elem(&conntrack, &p->t);
	struct backend *be;

	if (zh_ct_bypass || !ct)
		return 0;
	be = backend_get(&ct->backend, ct->svc, p->t.family);
	if (!be)
		return 0;
	/* Source ranges bind established flows too: a range removed cuts
	 * its clients off, as kube-proxy's rules would. */
	if ((be->flags & ZH_BE_SVC_SRC_RANGES) && src_denied(ct->svc, &p->t)) {
		*denied = 1;
		return 0;
	}
	if (now - ct->last_seen > ZH_TICKS)
		ct->last_seen = now;
	*ctp = ct;
	stats_add(ct->svc, p->len, 0, 0, 0);
	stats_add(zh_max_services + ct->backend, p->len, 0, 0, 0);
	return be;
}

/* Record a new flow both ways: conntrack for the client's packets and, for
 * a local backend, revnat for the Pod's replies (a remote backend's reply
 * leaves its own node: nothing to undo here). */
static __always_inline void ct_create(const struct tuple *t, const struct svc_value *svc, const struct backend *be,
				      __u32 be_id, __u64 now, __u32 decapped)
{
	{
		struct ct_value nct = {
			.backend = be_id,
			.svc = svc->id,
			.last_seen = now,
		};

		bpf_map_update_elem(&conntrack, t, &nct, BPF_ANY);
	}
	if (be->flags & ZH_BE_REMOTE)
		return;
	struct tuple rk = {};
	__builtin_memcpy(rk.saddr, be->addr, 16);
	__builtin_memcpy(rk.daddr, t->saddr, 16);
	rk.sport = be->port;
	rk.dport = t->sport;
	rk.proto = t->proto;
	rk.family = t->family;
	struct revnat_value rv = {
		.port = t->dport,
		.family = t->family,
		.flags = decapped ? ZH_RV_ENCAP : 0,
		.svc = svc->id,
	};
	__builtin_memcpy(rv.addr, t->daddr, 16);
	bpf_map_update_elem(&revnat, &rk, &rv, BPF_ANY);
}

/* New flow (or one whose backend is gone): a backend from the service,
 * then the flow recorded both ways. Returns the backend id, 0 (never a
 * backend) when the service cannot take it; the caller drops (counted);
 * ZH_BE_REJECT when the flow falls in the service's reject share: the
 * caller rejects it (counted here, in rejects).
 * A global function: verified once on its own (its records stay off the
 * caller's stack, which also holds encap()'s), whatever path led here.
 * It gets the tuple, not the whole zh_pkt: the verifier forgets what a
 * global function may have overwritten, which must not include the
 * packet pointers. bits: decapsulated (bit 0), TCP flags (bits 8-15). */
__attribute__((noinline)) int zh_new_flow(const struct tuple *t, const struct svc_value *svc, __u64 now, __u32 len,
					  __u32 bits)
{
	__u32 decapped = bits & 1;
	__u8 tcp_flags = bits >> 8;
	__u32 be_id = 0;

	if (!t || !svc)
		return 0;
	__u32 miss = t->proto == IPPROTO_TCP && (tcp_flags & (ZH_TCP_SYN | ZH_TCP_ACK)) != ZH_TCP_SYN;
	struct backend *be = backend_choose(svc, t, &be_id, decapped);
	if (!be && be_id == ZH_BE_REJECT) {
		/* The reject share: nothing recorded, so each segment of the
		 * flow hashes to it again while the table holds it. */
		__u32 idx = svc->id;
		__u64 *n = bpf_map_lookup_elem(&rejects, &idx);

		if (n)
			(*n)++;
		return (int)ZH_BE_REJECT;
	}
	if (!be) {
		if (decapped)
			EV_INC(decap_no_local);
		stats_add(svc->id, 0, 1, 0, 0);
		return 0;
	}
	ct_create(t, svc, be, be_id, now, decapped);
	stats_add(svc->id, len, 0, miss, 1);
	stats_add(zh_max_services + be_id, len, 0, miss, 1);
	return be_id;
}

/* -------------------------------------------------------- flow cache -- */

/* flow_cache slot of an IPv4 flow (ports as loaded from the L4 header). */
static __always_inline __u32 fcache_slot(__u32 saddr, __u32 daddr, __u32 ports)
{
	__u32 h = (saddr ^ rol32(daddr, 16)) * 0x9e3779b1U;

	h = (h ^ ports) * 0x85ebca6bU;
	return h >> (32 - ZH_FCACHE_BITS);
}

static __always_inline __u32 fcache_ports(const struct tuple *t)
{
	return (__u32)t->sport | (__u32)t->dport << 16;
}

/* The cached entry of an IPv4 flow while its next hop is fresh, or NULL. */
static __always_inline struct flow_cache_entry *fcache_get(const struct tuple *t)
{
	__u32 ports = fcache_ports(t);
	__u32 slot = fcache_slot(t->saddr[0], t->daddr[0], ports);
	struct flow_cache_entry *fc = bpf_map_lookup_elem(&flow_cache, &slot);

	if (!fc || fc->saddr != t->saddr[0] || fc->daddr != t->daddr[0] || *(__u32 *)&fc->sport != ports ||
	    fc->proto != t->proto)
		return 0;
	if (fc->nh_until <= bpf_jiffies64())
		return 0;
	return fc;
}

/* Copy an established IPv4 flow's conntrack entry (with its next hop)
 * into its slot, for the next packets. */
static __always_inline void fcache_fill(const struct tuple *t, const struct ct_value *ct)
{
	__u32 slot = fcache_slot(t->saddr[0], t->daddr[0], fcache_ports(t));
	struct flow_cache_entry *fc = bpf_map_lookup_elem(&flow_cache, &slot);

	if (!fc)
		return;
	fc->saddr = t->saddr[0];
	fc->daddr = t->daddr[0];
	fc->sport = t->sport;
	fc->dport = t->dport;
	fc->proto = t->proto;
	fc->nh_until = ct->nh_until;
	fc->backend = ct->backend;
	fc->svc = ct->svc;
	fc->nh_ifindex = ct->nh_ifindex;
	__builtin_memcpy(fc->nh_dmac, ct->nh_dmac, ETH_ALEN);
	__builtin_memcpy(fc->nh_smac, ct->nh_smac, ETH_ALEN);
	struct pod_link *pl = bpf_map_lookup_elem(&pod_links, &fc->nh_ifindex);
	fc->how = pl ? pl->how : 0;
	fc->slot = pl ? pl->slot : 0;
}

/* --------------------------------------------------------- fragments -- */

/* Fragment records, out of line: the common path never builds a key. */
static __attribute__((noinline)) struct frag_value *frag_lookup(struct zh_pkt *p)
{
	struct frag_key fk = {.id = p->frag_id, .proto = p->t.proto, .family = p->t.family};

	__builtin_memcpy(fk.saddr, p->t.saddr, 16);
	__builtin_memcpy(fk.daddr, p->t.daddr, 16);
	return bpf_map_lookup_elem(&frags, &fk);
}

static __attribute__((noinline)) void frag_record(struct zh_pkt *p)
{
	struct frag_key fk = {.id = p->frag_id, .proto = p->t.proto, .family = p->t.family};
	struct frag_value fv = {.sport = p->t.sport, .dport = p->t.dport};

	__builtin_memcpy(fk.saddr, p->t.saddr, 16);
	__builtin_memcpy(fk.daddr, p->t.daddr, 16);
	bpf_map_update_elem(&frags, &fk, &fv, BPF_ANY);
	EV_INC(frag_first);
}

/* A later fragment takes its ports from the first fragment's record; -1
 * when there is none (it overtook the first, or the record was evicted). */
static __always_inline int frag_follow(struct zh_pkt *p)
{
	struct frag_value *fv = frag_lookup(p);

	if (!fv) {
		EV_INC(frag_miss);
		return -1;
	}
	p->t.sport = fv->sport;
	p->t.dport = fv->dport;
	EV_INC(frag_hit);
	return 0;
}
