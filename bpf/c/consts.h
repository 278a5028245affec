/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The program's own constants, all of them: map sizes, times, the protocol
 * numbers the UAPI headers lack, what the parser found (ZK_*), and the
 * verdicts the XDP stages hand each other. The map layouts and the flags
 * the loader writes into them are shared with Go and live in zerohop.h.
 */
#pragma once

/* ------------------------------------------------------------ sizes -- */

/* Defaults; the loader resizes the maps at load time. */
#define ZH_DEF_SERVICES 16384
#define ZH_DEF_BACKENDS 65536
#define ZH_DEF_FLOWS 131072
#define ZH_DEF_MAGLEV 16381
#define ZH_DEF_SRC_RANGES 65536
/* Pod interfaces (and bridged Pods) a node can deliver to directly. */
#define ZH_DEF_POD_LINKS 4096
/* Maglev slots per chunk: one chunk fits one 4 KiB allocation. */
#define ZH_CHUNK_MAX 1000
/* The maglev map's chunk number for a service's local set (key table =
 * the service id): no table has that many chunks. */
#define ZH_LOCAL_CHUNK 0xffffffffU
/* Local backends a local set holds (after its count). */
#define ZH_LOCAL_MAX 16
/* flow_cache slots, a power of two: the slot is a hash's top bits. */
#define ZH_FCACHE_BITS 11
/* vip_filter: 2^20 bits in 64-bit words (128 KiB). */
#define ZH_FILTER_WORDS 16384
/* tc egress: bytes made linear before parsing. */
#define ZH_TC_PULL_LEN 128
/* Benchmark builds: bytes of the frame saved and put back per run. */
#define ZH_RESTORE_LEN 64

/* ------------------------------------------------------------ times -- */

#define NSEC_PER_SEC 1000000000ULL
/* Conntrack times are jiffies (bpf_jiffies64 is inlined by the verifier,
 * a clock helper is a call): 256 of them are 0.26 s at HZ=1000, 1 s at
 * HZ=250, 2.6 s at HZ=100, all fine for a next-hop cache. */
#define ZH_TICKS 256

/* ------------------------------------------------ protocol numbers -- */

/* Address families of bpf_fib_lookup (sys/socket.h is libc's). */
#define AF_INET 2
#define AF_INET6 10

/* IPv4 frag_off (host order); net/ip.h is not UAPI. */
#define ZH_IP_DF 0x4000
#define ZH_IP_MF 0x2000
#define ZH_IP_OFFSET 0x1FFF

/* IPv6 fragment header frag_off (host order): offset << 3 | M. */
#define ZH_IP6_OFFSET 0xFFF8
#define ZH_IP6_MF 0x0001

/* IPv6 hop-by-hop, destination options and routing headers stepped over
 * before the upper-layer (or fragment) header: a bounded walk the
 * verifier can follow (Cilium's IPV6_MAX_HEADERS is 4 too). More than
 * that is passed untouched. */
#define ZH_IP6_MAX_EXTHDRS 4

/* TCP flags byte (offset 13). */
#define ZH_TCP_FIN 0x01
#define ZH_TCP_SYN 0x02
#define ZH_TCP_RST 0x04
#define ZH_TCP_ACK 0x10

/* linux/icmp.h pulls in libc headers; the few ICMP numbers needed: */
#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_FRAG_NEEDED 4
#define ICMP_ECHO 8
#define ICMPV6_PKT_TOOBIG 2
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129

/* skb->pkt_type of a frame addressed to this host (linux/if_packet.h). */
#define ZH_PACKET_HOST 0

/* tcx: go on to the next program (linux/pkt_cls.h has it from 6.6). */
#define ZH_TCX_NEXT (-1)

/* ---------------------------------------------------- packet kinds -- */

/* What the parser found (struct zh_pkt's kind). ZK_L4 has ports; the
 * others are special cases. */
#define ZK_L4 0       /* TCP/UDP with ports (maybe a first fragment) */
#define ZK_FRAG 1     /* a later fragment: ports come from the first */
#define ZK_ICMP_ERR 2 /* frag-needed / packet-too-big; t is the quoted flow, client -> VIP */
#define ZK_ECHO 3     /* echo request */
#define ZK_IPIP 4     /* IPv4 in IPv4 (protocol 4) or IPv6 in IPv6 (41) */
#define ZK_EXTHDR 5   /* IPv6 extension headers, not walked (ZH_EXTHDR_STOP) */

/* What parse() does with IPv6 extension headers (parse.h). */
#define ZH_EXTHDR_STOP 0 /* report them (ZK_EXTHDR): the fast stages */
#define ZH_EXTHDR_WALK 1 /* step over them */

/* ------------------------------------------------- stage verdicts -- */

/* What one XDP stage hands the next in zh_xdp (never returned to the
 * kernel): above every XDP action. */
#define ZH_FAST 0x100     /* front: for zh_fast (conntrack) */
#define ZH_SLOW 0x101     /* zh_fast: for zh_lb, which decides everything */
#define ZH_DECAP 0x102    /* IP-in-IP: for decap */
#define ZH_DECAPPED 0x103 /* decap: the frame now holds the inner packet */
#define ZH_REJECT 0x104   /* zh_lb: a new flow of the reject share, for zh_reject */
