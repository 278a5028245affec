/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Internet checksums, updated incrementally (RFC 1624) where a header is
 * rewritten in place, summed in full where one is built from scratch.
 */
#pragma once

#include <linux/types.h>

static __always_inline __u16 csum_fold(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

/* Ones'-complement sum of replacing word `from` by `to` (RFC 1624 eqn. 3
 * terms ~m + m'). Byte order does not matter for ones'-complement sums as
 * long as old and new are read the same way, so raw loads are used. */
static __always_inline __u32 csum_diff32(__u32 sum, __u32 from, __u32 to)
{
	sum += (~from & 0xffff) + (~from >> 16);
	sum += (to & 0xffff) + (to >> 16);
	return sum;
}

static __always_inline __u32 csum_diff16(__u32 sum, __u16 from, __u16 to)
{
	return sum + (__u16)~from + to;
}

/* HC' = ~(~HC + diff). */
static __always_inline __u16 csum_apply(__u16 check, __u32 diff)
{
	return ~csum_fold((__u16)~check + diff);
}

/* Sum of a 20-byte IPv4 header, for a header built from scratch. */
static __always_inline __u16 csum_ip4_hdr(void *hdr)
{
	__u16 *w = hdr;
	__u32 s = 0;

#pragma unroll
	for (int i = 0; i < 10; i++)
		s += w[i];
	return ~csum_fold(s);
}
