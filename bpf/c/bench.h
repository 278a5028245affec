/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Benchmark builds only (zh_bench_restore): PROG_TEST_RUN repeats on the
 * same frame, so the cases that move its start (encapsulation,
 * decapsulation) save the frame's first bytes before the run and put the
 * frame back after it.
 */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"

static __always_inline int bench_save(struct xdp_md *ctx)
{
	__u32 k = 0;
	struct bench_saved *sv = bpf_map_lookup_elem(&bench_buf, &k);
	void *data = (void *)(long)ctx->data;

	if (!sv || data + ZH_RESTORE_LEN > (void *)(long)ctx->data_end)
		return -1;
	__builtin_memcpy(sv->head, data, ZH_RESTORE_LEN);
	sv->len = (long)ctx->data_end - (long)ctx->data;
	return 0;
}

static __always_inline int bench_restore(struct xdp_md *ctx)
{
	__u32 k = 0;
	struct bench_saved *sv = bpf_map_lookup_elem(&bench_buf, &k);

	if (!sv)
		return -1;
	/* Only the front moves (adjust_head), so the length tells by how much. */
	long cur = (long)ctx->data_end - (long)ctx->data;
	barrier_var(cur); /* a scalar, not packet pointer arithmetic */
	long grown = cur - sv->len;
	if (grown > -256 && grown < 256 && grown != 0 && bpf_xdp_adjust_head(ctx, (int)grown))
		return -1;
	void *data = (void *)(long)ctx->data;
	if (data + ZH_RESTORE_LEN > (void *)(long)ctx->data_end)
		return -1;
	__builtin_memcpy(data, sv->head, ZH_RESTORE_LEN);
	return 0;
}
