package bpf

// The objects and Go bindings are committed; `make generate` (mk/bpf.mk)
// rebuilds them with clang-19 so that a clean checkout builds without a C
// toolchain and a stale object is caught by generate-check.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package bpf -type svc_key -type svc_value -type backend -type tuple -type ct_value -type revnat_value -type counters -type dp_config -type maglev_key -type node_cfg -type peer_key -type frag_key -type frag_value -type vip_key -type event_counts -type src_key -type aff_key -type aff_value -type flow_cache_entry -type pod_link -type pod_slot -type fdb_key -type delivery_counts zh c/zerohop.c -- -nostdinc -Ic/vendor -Wall -Werror
