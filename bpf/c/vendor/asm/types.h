/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/* Written by update.sh: the generic asm/types.h for little-endian, 64-bit BPF. */
#include <asm-generic/types.h>
