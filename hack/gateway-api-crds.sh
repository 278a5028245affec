#!/usr/bin/env bash
# Copies the Gateway API's standard channel, exactly as the module that
# go.mod requires (sigs.k8s.io/gateway-api) ships it in config/crd/standard,
# into the chart: the CRDs to files/gateway-api/crds/ and the
# ValidatingAdmissionPolicy that guards their upgrades to
# files/gateway-api/. The files are the API's own artefacts and are not
# edited; `make generate-check` fails when they differ from the module's.
set -euo pipefail
cd "$(dirname "$0")/.."

mod=sigs.k8s.io/gateway-api
go mod download "$mod"
src=$(go list -m -f '{{.Dir}}' "$mod")/config/crd/standard
version=$(go list -m -f '{{.Version}}' "$mod")
[[ -d "$src" ]] || { echo "gateway-api-crds: $src not found" >&2; exit 1; }

out=charts/zerohop/files/gateway-api
rm -rf "$out"
mkdir -p "$out/crds"
n=0
for f in "$src"/*.yaml; do
	name=$(basename "$f")
	case "$name" in
	kustomization.yaml) continue ;;
	*_vap_*) install -m 0644 "$f" "$out/$name" ;;
	*)
		install -m 0644 "$f" "$out/crds/$name"
		n=$((n + 1))
		;;
	esac
done
grep -q "bundle-version: $version\$" "$out"/crds/*.yaml || {
	echo "gateway-api-crds: the CRDs do not carry bundle-version $version" >&2
	exit 1
}
echo "gateway-api-crds: $n CRDs of $mod $version (standard channel) in $out"
