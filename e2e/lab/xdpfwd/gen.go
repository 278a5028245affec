// Package xdpfwd is the lab's forwarding in XDP: the router's (a FIB
// lookup and a redirect, ECMP included) and the node segment's (a
// redirect by destination MAC), so that node uplinks receive frames the
// way a NIC driver hands them to XDP (docs/lab.md, "Ingress"). It is lab
// code: the zerohop binary never links it.
package xdpfwd

// The objects and Go bindings are committed; `make generate` (mk/bpf.mk)
// rebuilds them with clang-19 against bpf/c/vendor only, so that a clean
// checkout builds without a C toolchain and generate-check catches a
// stale object.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package xdpfwd -type fwd_counts -type mac_key fwd c/fwd.c -- -nostdinc -I../../../bpf/c/vendor -Wall -Werror
