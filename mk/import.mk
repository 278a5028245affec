# `zerohop import metallb` (internal/metallbimport, cmd/zerohop/import.go):
# golden conversions of real-world-shaped MetalLB manifests, a check that
# the testdata sets every MetalLB field the importer reads, and every
# produced object created in a real kube-apiserver with zerohop's CRDs.
# About 20 s. ZEROHOP_UPDATE_GOLDEN=1 rewrites the golden files.

.PHONY: test-import

test-import:
	$(GO) test -count=1 -timeout 3m ./internal/metallbimport/
	$(GO) test -count=1 -timeout 1m -run '^TestImport' ./cmd/zerohop/

# test-import runs the package; test-go leaves it alone.
TEST_EXCLUDE_PKGS += github.com/zerohop/zerohop/internal/metallbimport$$
TEST_TARGETS += test-import
