/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Services and the choice of a backend: the VIP filter, the service
 * lookup, source ranges, ClientIP affinity and Maglev. Nothing here
 * records a flow (conntrack.h does).
 */
#pragma once

#include <bpf/bpf_helpers.h>

#include "maps.h"

/* ---------------------------------------------------------- services -- */

/* x: the IPv4 address, or the XOR of an IPv6 address's four words. */
static __always_inline int maybe_vip_x(__u32 x)
{
	__u32 bit = (x * 0x9e3779b1U) >> 12;
	__u32 word = bit >> 6;
	__u64 *w = bpf_map_lookup_elem(&vip_filter, &word);

	return w && (*w & (1ULL << (bit & 63)));
}

/* The filter: 0 proves the destination is no VIP. */
static __always_inline int maybe_vip(const struct tuple *t)
{
	__u32 x = t->daddr[0];

	if (t->family == ZH_AF_INET6)
		x ^= t->daddr[1] ^ t->daddr[2] ^ t->daddr[3];
	return maybe_vip_x(x);
}

/* The service the flow addresses (VIP, port, protocol), or NULL. */
static __always_inline struct svc_value *service_get(const struct tuple *t)
{
	struct svc_key key = {
		.port = t->dport,
		.proto = t->proto,
		.family = t->family,
	};

	__builtin_memcpy(key.addr, t->daddr, 16);
	return bpf_map_lookup_elem(&services, &key);
}

/* A source refused by its service's ranges: counted here, dropped by the
 * caller. */
static __always_inline int src_denied(__u32 svc, const struct tuple *t)
{
	struct src_key k = {
		.prefixlen = 32 + (t->family == ZH_AF_INET ? 32 : 128),
		.svc = svc,
	};

	__builtin_memcpy(k.addr, t->saddr, 16);
	if (bpf_map_lookup_elem(&src_ranges, &k))
		return 0;
	struct counters *s = bpf_map_lookup_elem(&stats, &svc);
	if (s)
		s->denied++;
	return 1;
}

/* ---------------------------------------------------------- backends -- */

/* Backend slot *id, if it still belongs to service svc and is of the
 * flow's family: a removed backend is zeroed by the loader, a reused id
 * belongs to another service, so a stale reference finds nothing. */
static __always_inline struct backend *backend_get(const __u32 *id, __u32 svc, __u8 family)
{
	struct backend *be = bpf_map_lookup_elem(&backends, id);

	if (!be || be->family != family || be->svc != svc)
		return 0;
	return be;
}

/* A backend the fast paths can send to on their own: local, and of a
 * service without source ranges (checked per packet by the full path). */
static __always_inline struct backend *backend_fast(const __u32 *id, __u32 svc, __u8 family)
{
	struct backend *be = backend_get(id, svc, family);

	if (!be || (be->flags & (ZH_BE_REMOTE | ZH_BE_SVC_SRC_RANGES)))
		return 0;
	return be;
}

/* ------------------------------------------------------------ Maglev -- */

static __always_inline __u32 rol32(__u32 x, int r)
{
	return (x << r) | (x >> (32 - r));
}

/* murmur3 rounds: cheap and well mixed; only this program needs it. */
static __always_inline __u32 mm_mix(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51;
	k = rol32(k, 15);
	k *= 0x1b873593;
	h ^= k;
	h = rol32(h, 13);
	return h * 5 + 0xe6546b64;
}

/* Client address and port only: every node picks the same backend for a
 * flow, whichever VIP or node it arrives at. Without the port (ClientIP
 * affinity) every flow of a client hashes alike. */
static __always_inline __u32 flow_hash_port(const struct tuple *t, int port)
{
	__u32 h = zh_seed;

	h = mm_mix(h, t->saddr[0]);
	if (t->family == ZH_AF_INET6) {
		h = mm_mix(h, t->saddr[1]);
		h = mm_mix(h, t->saddr[2]);
		h = mm_mix(h, t->saddr[3]);
	}
	if (port)
		h = mm_mix(h, t->sport);
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

static __always_inline __u32 flow_hash(const struct tuple *t)
{
	return flow_hash_port(t, 1);
}

static __always_inline struct backend *maglev_pick(const struct svc_value *svc, const struct tuple *t, __u32 *be_id)
{
	__u32 slot = flow_hash_port(t, !(svc->flags & ZH_SVC_AFFINITY)) % zh_maglev_m;
	struct maglev_key k = {
		.table = svc->id * 2 + (svc->active & 1),
		.chunk = slot / zh_chunk_slots,
	};
	__u32 off = slot - k.chunk * zh_chunk_slots;
	__u32 *tbl = bpf_map_lookup_elem(&maglev, &k);

	if (!tbl) {
		/* The loader deletes the old table right after the flip; a
		 * packet that read the old `active` finds the new one. */
		k.table ^= 1;
		tbl = bpf_map_lookup_elem(&maglev, &k);
		if (!tbl)
			return 0;
	}
	/* The compiler knows off < zh_chunk_slots; the verifier must see it. */
	barrier_var(off);
	if (off >= zh_chunk_slots)
		return 0;
	*be_id = tbl[off];
	return backend_get(be_id, svc->id, t->family);
}

/* A backend on this node for a flow another node sent here by
 * encapsulation, when this node's own Maglev pick is not local: that node
 * chose a backend here, and the two tables differ for as long as the
 * speakers take to apply the same endpoint change (the receiving speaker
 * may still see the sender's new backend as not ready, or the other way
 * round). Any local backend of the service serves a new flow; dropping it,
 * and recording the drop in conntrack, would lose the flow's retransmits
 * too. The set lists ready local backends, or, when there are none, the
 * local ones still in place (not ready yet, or terminating). */
static __always_inline struct backend *local_pick(const struct svc_value *svc, const struct tuple *t, __u32 *be_id)
{
	struct maglev_key k = {.table = svc->id, .chunk = ZH_LOCAL_CHUNK};
	__u32 *set = bpf_map_lookup_elem(&maglev, &k);

	if (!set)
		return 0;
	__u32 n = set[0];

	if (n == 0 || n > ZH_LOCAL_MAX)
		return 0;
	__u32 i = 1 + flow_hash(t) % n;

	if (i > ZH_LOCAL_MAX || i >= zh_chunk_slots)
		return 0;
	/* After the check: the access must use the register it bounded. */
	barrier_var(i);
	*be_id = set[i & 31];
	struct backend *be = backend_get(be_id, svc->id, t->family);

	if (!be || (be->flags & ZH_BE_REMOTE))
		return 0;
	return be;
}

/* ---------------------------------------------------------- affinity -- */

/* ClientIP affinity: the backend this client's last flow took, if that
 * was within the service's timeout and the backend could still be chosen
 * (there, not terminating, local in Local mode or when decapsulated). */
static __always_inline struct backend *affinity_get(const struct svc_value *svc, const struct tuple *t,
						    __u32 *be_id, __u32 decapped, __u64 now)
{
	struct aff_key k = {.svc = svc->id, .family = t->family};

	__builtin_memcpy(k.addr, t->saddr, 16);
	struct aff_value *a = bpf_map_lookup_elem(&affinity, &k);
	if (!a || now - a->last_used > (__u64)svc->affinity_timeout * NSEC_PER_SEC)
		return 0;
	struct backend *be = backend_get(&a->backend, svc->id, t->family);
	if (!be || (be->flags & ZH_BE_TERMINATING))
		return 0;
	if (((svc->flags & ZH_SVC_LOCAL) || decapped) && !(be->flags & ZH_BE_LOCAL))
		return 0;
	*be_id = a->backend;
	return be;
}

static __always_inline void affinity_set(const struct svc_value *svc, const struct tuple *t, __u32 be_id, __u64 now)
{
	struct aff_key k = {.svc = svc->id, .family = t->family};
	struct aff_value v = {.backend = be_id, .last_used = now};

	__builtin_memcpy(k.addr, t->saddr, 16);
	bpf_map_update_elem(&affinity, &k, &v, BPF_ANY);
}

/* A new flow's backend: the client's affinity entry, else Maglev. NULL
 * when the service has none to give. */
static __always_inline struct backend *backend_choose(const struct svc_value *svc, const struct tuple *t,
						      __u32 *be_id, __u32 decapped)
{
	if (!(svc->flags & ZH_SVC_AFFINITY)) {
		struct backend *be = svc->count ? maglev_pick(svc, t, be_id) : 0;

		if (decapped && (!be || (be->flags & ZH_BE_REMOTE)))
			be = local_pick(svc, t, be_id);
		return be;
	}

	__u64 ns = bpf_ktime_get_ns();
	struct backend *be = affinity_get(svc, t, be_id, decapped, ns);
	if (!be && svc->count)
		be = maglev_pick(svc, t, be_id);
	if (decapped && (!be || (be->flags & ZH_BE_REMOTE)))
		be = local_pick(svc, t, be_id);
	/* Refreshed by every new flow of the client, like kube-proxy's
	 * "recent" match: a client stays while it keeps connecting. */
	if (be)
		affinity_set(svc, t, *be_id, ns);
	return be;
}
