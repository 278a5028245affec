/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/* Written by update.sh: the generic asm/byteorder.h for little-endian, 64-bit BPF. */
#include <linux/byteorder/little_endian.h>
