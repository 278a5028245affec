/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/* Written by update.sh: the generic asm/bitsperlong.h for little-endian, 64-bit BPF. */
#define __BITS_PER_LONG 64
#include <asm-generic/bitsperlong.h>
