/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The load-time constants and every map, with the small accessors for
 * counters and the node entry. Value layouts are in zerohop.h.
 */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "consts.h"
#include "zerohop.h"

/* Load-time constants (.rodata, frozen): the verifier sees them as known
 * values, so zh_chunk_slots bounds table indexing and zh_ct_bypass is removed as
 * dead code when false. */
volatile const __u32 zh_maglev_m = ZH_DEF_MAGLEV;
volatile const __u32 zh_chunk_slots = ZH_CHUNK_MAX;
volatile const __u32 zh_seed = 0;
volatile const __u32 zh_max_services = ZH_DEF_SERVICES;
/* Test-only: ignore conntrack hits so a repeated packet measures the
 * new-flow path (bench-xdp). Never set in production. */
volatile const __u32 zh_ct_bypass = 0;
/* Test-only: put the frame back as it came after each run, so a repeated
 * PROG_TEST_RUN can measure encapsulation and decapsulation (which move
 * the frame's start). Never set in production. */
volatile const __u32 zh_bench_restore = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ZH_DEF_SERVICES);
	__type(key, struct svc_key);
	__type(value, struct svc_value);
} services SEC(".maps");

/* Maglev tables, stored in chunks of zh_chunk_slots slots: table t, chunk c
 * holds slots [c*zh_chunk_slots, (c+1)*zh_chunk_slots). A hash map without
 * preallocation keeps memory proportional to the services that exist, each
 * chunk fits one 4 KiB allocation, and updates need no RCU wait (map-in-map
 * updates do, which made 100k services take minutes). Table t of service s
 * is s*2 or s*2+1; the loader fills the inactive one before flipping.
 * Key {s, ZH_LOCAL_CHUNK} is service s's local set: a count, then the ids
 * of its backends on this node (see local_pick). */
struct maglev_key {
	__u32 table;
	__u32 chunk;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 2 * ZH_DEF_SERVICES * 17 + ZH_DEF_SERVICES);
	__type(key, struct maglev_key);
	__type(value, __u32[ZH_CHUNK_MAX]); /* resized at load */
} maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ZH_DEF_BACKENDS);
	__type(key, __u32);
	__type(value, struct backend);
} backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, ZH_DEF_FLOWS);
	__type(key, struct tuple);
	__type(value, struct ct_value);
} conntrack SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, ZH_DEF_FLOWS);
	__type(key, struct tuple);
	__type(value, struct revnat_value);
} revnat SEC(".maps");

/* See struct flow_cache_entry. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1 << ZH_FCACHE_BITS);
	__type(key, __u32);
	__type(value, struct flow_cache_entry);
} flow_cache SEC(".maps");

/* Index: service id, or max_services + backend id. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ZH_DEF_SERVICES + ZH_DEF_BACKENDS);
	__type(key, __u32);
	__type(value, struct counters);
} stats SEC(".maps");

/* Interfaces known to accept XDP redirects (the loader's caller decides). */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u32);
} tx_ports SEC(".maps");

/* Pods' host-side interfaces and how each takes balanced packets; the
 * speaker keeps the ZH_POD_PEER ones (Pod veths it finds on the node),
 * EnableRedirect the ZH_POD_XDP ones. Read for every packet to a local
 * backend, so that a removed interface takes effect at once. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ZH_DEF_POD_LINKS);
	__type(key, __u32); /* ifindex */
	__type(value, struct pod_link);
} pod_links SEC(".maps");

/* Indexed by pod_link.slot: an array, so tc's read is inlined. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ZH_DEF_POD_LINKS);
	__type(key, __u32);
	__type(value, struct pod_slot);
} pod_slots SEC(".maps");

/* Pods behind a bridge: see struct fdb_key. Read once per next-hop
 * lookup, not per packet: the flow caches the port. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ZH_DEF_POD_LINKS);
	__type(key, struct fdb_key);
	__type(value, __u32); /* the port's ifindex */
} pod_fdb SEC(".maps");

/* New flows each service's reject share refused (index: service id). A
 * map of its own: stats keeps its layout, so a datapath pinned by an
 * earlier version is taken over in place. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ZH_DEF_SERVICES);
	__type(key, __u32);
	__type(value, __u64);
} rejects SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dp_config);
} config SEC(".maps");

/* A 2^20-bit (128 KiB) filter over VIP addresses: a clear bit proves the packet is
 * not for a VIP at the cost of one inlined array read, so pass-through
 * traffic never pays for a hash lookup. The loader sets a bit before the
 * first service of an address is added and clears it after the last one
 * is gone, so the filter has no false negatives. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ZH_FILTER_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} vip_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct node_cfg);
} node SEC(".maps");

/* Outer source prefixes of the other nodes: only encapsulation from these is
 * taken apart; protocol 4/41 from anywhere else is passed untouched. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, struct peer_key);
	__type(value, __u32);
} peers SEC(".maps");

/* ClientIP session affinity of the services flagged ZH_SVC_AFFINITY. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, ZH_DEF_FLOWS);
	__type(key, struct aff_key);
	__type(value, struct aff_value);
} affinity SEC(".maps");

/* loadBalancerSourceRanges of the services flagged ZH_SVC_SRC_RANGES. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, ZH_DEF_SRC_RANGES);
	__type(key, struct src_key);
	__type(value, __u32);
} src_ranges SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct frag_key);
	__type(value, struct frag_value);
} frags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ZH_DEF_SERVICES);
	__type(key, struct vip_key);
	__type(value, __u32);
} vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event_counts);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct delivery_counts);
} delivery SEC(".maps");

/* Benchmark builds only (zh_bench_restore): the frame's first bytes and
 * length. Kept in the map across the run, not in registers: the run then
 * has the registers (and so the stack) it has in a production build. */
struct bench_saved {
	__u8 head[ZH_RESTORE_LEN];
	__s64 len;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bench_saved);
} bench_buf SEC(".maps");

/* ------------------------------------------------------- accessors -- */

#define EV_INC(field)                                              \
	do {                                                       \
		__u32 k_ = 0;                                      \
		struct event_counts *e_ = bpf_map_lookup_elem(&events, &k_); \
		if (e_)                                            \
			e_->field++;                               \
	} while (0)

#define DLV_INC(field, n)                                                \
	do {                                                             \
		__u32 k_ = 0;                                            \
		struct delivery_counts *d_ = bpf_map_lookup_elem(&delivery, &k_); \
		if (d_)                                                  \
			d_->field += (n);                                \
	} while (0)

/* Counters of a service (idx = its id) or a backend (zh_max_services + id). */
static __always_inline void stats_add(__u32 idx, __u32 len, __u32 drop, __u32 miss, __u32 flow)
{
	struct counters *s = bpf_map_lookup_elem(&stats, &idx);

	if (!s)
		return;
	if (drop) {
		s->drops++;
		return;
	}
	s->packets++;
	s->bytes += len;
	s->ct_miss += miss;
	s->flows += flow;
}

static __always_inline struct node_cfg *node_get(void)
{
	__u32 k = 0;

	return bpf_map_lookup_elem(&node, &k);
}
