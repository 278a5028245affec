#!/usr/bin/env bash
# Checks the image build without a Docker engine: lints the Dockerfile with
# BuildKit's rules (tools/dockerlint), then runs the Dockerfile's build
# commands on a copy of exactly the files .dockerignore lets into the build
# context, and checks that the result is a static binary that runs.
set -euo pipefail
cd "$(dirname "$0")/.."

(cd tools/dockerlint && go test -count=1 ./... && go run . ../../Dockerfile)

ctx=$(mktemp -d /tmp/zh-image-ctx.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
# The directories .dockerignore admits (lines "!dir/"), minus the
# directories it then leaves out again (lines "dir/") and test files.
mapfile -t admitted < <(sed -n 's|^!\([^*]*\)$|\1|p' .dockerignore)
mapfile -t excluded < <(sed -n 's|^\([^!#*][^*]*/\)$|:(exclude)\1|p' .dockerignore)
git ls-files -- "${admitted[@]}" "${excluded[@]}" | grep -Ev '_test\.go$|/testdata/' |
	tar -cf - -T - | tar -xf - -C "$ctx"
[[ -z "$(find "$ctx" -path "$ctx/e2e" -o -path "$ctx/internal/apiserver" -o -path "$ctx/bpf/c")" ]] || {
	echo "image-check: the build context holds lab or C sources" >&2
	exit 1
}
echo "image-check: build context has $(find "$ctx" -type f | wc -l) files"
(cd "$ctx" && CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath \
	-ldflags "-s -w -X github.com/zerohop/zerohop/internal/version.Version=v0.0.0-image-check" \
	-o "$ctx/out/zerohop" ./cmd/zerohop)
if ldd "$ctx/out/zerohop" >/dev/null 2>&1; then
	echo "image-check: binary is dynamically linked" >&2
	exit 1
fi
"$ctx/out/zerohop" version | grep -q 'v0.0.0-image-check'
echo "image-check: static binary builds from the image context and runs"
