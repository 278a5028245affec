#!/usr/bin/env bash
# Installs what zerohop's build, tests and lab need, and nothing twice:
# Debian packages that are missing, and Go tools built from the module proxy
# into $ZEROHOP_CACHE/bin. Safe to run again; prints what it does.
set -euo pipefail

cd "$(dirname "$0")/.."
ZEROHOP_CACHE=${ZEROHOP_CACHE:-$HOME/.cache/zerohop}
BIN=$ZEROHOP_CACHE/bin
export GOMODCACHE=${GOMODCACHE:-$ZEROHOP_CACHE/go/mod}
export GOCACHE=${GOCACHE:-$ZEROHOP_CACHE/go/build}
mkdir -p "$BIN"

# Pinned tool versions. Changing one rebuilds it.
CONTROLLER_GEN_VERSION=v0.23.0
GOLANGCI_LINT_VERSION=v2.15.0
HELM_VERSION=v3.22.0
KUBERNETES_VERSION=$(awk '/^require k8s.io\/kubernetes /{print $3}' tools/apiserver/go.mod)

say() { printf 'deps: %s\n' "$*"; }

# prometheus: for its promtool, which checks and unit-tests the chart's
# alerts (test-chart); its service is kept off like FRR's and etcd's.
debian_packages=(clang-19 llvm-19 bpftool xdp-tools frr etcd-server
	iproute2 iputils-ping tcpdump ca-certificates git make gcc libc6-dev iptables nftables prometheus)
missing=()
for p in "${debian_packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
if ((${#missing[@]})); then
	say "installing Debian packages: ${missing[*]}"
	if [[ $(id -u) -ne 0 ]]; then
		echo "deps: need root to install Debian packages" >&2
		exit 1
	fi
	apt-get update -qq
	# The frr, etcd-server and prometheus packages would start their system services;
	# the tests run their own instances, so keep the system ones off.
	policy=/usr/sbin/policy-rc.d
	had_policy=false
	[[ -e $policy ]] && had_policy=true
	$had_policy || printf '#!/bin/sh\nexit 101\n' >"$policy"
	$had_policy || chmod +x "$policy"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
	$had_policy || rm -f "$policy"
else
	say "Debian packages present"
fi

# go_tool NAME VERSION PACKAGE: go install PACKAGE@VERSION into $BIN unless
# that version is already there (recorded in a stamp file).
go_tool() {
	local name=$1 version=$2 pkg=$3 stamp=$BIN/.$1.version
	if [[ -x $BIN/$name && -f $stamp && $(cat "$stamp") == "$version" ]]; then
		say "$name $version present"
		return
	fi
	say "building $name $version (first run only)"
	local start=$SECONDS
	GOBIN=$BIN go install "$pkg@$version"
	echo "$version" >"$stamp"
	say "built $name in $((SECONDS - start))s"
}

go_tool controller-gen "$CONTROLLER_GEN_VERSION" sigs.k8s.io/controller-tools/cmd/controller-gen
go_tool golangci-lint "$GOLANGCI_LINT_VERSION" github.com/golangci/golangci-lint/v2/cmd/golangci-lint
go_tool helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm

# The Kubernetes binaries the tests and the lab run (kube-apiserver, and for
# the lab's cluster kube-controller-manager, kube-scheduler and kube-proxy)
# are built from k8s.io/kubernetes in their own module (tools/apiserver),
# whose go.mod points every staging module at its published version. One
# `go build` for all four lets them share the compile of what they have in
# common (most of it): cold, on a busy 2-core machine, the four took 918 s
# where kube-apiserver alone took 616 s.
kube_bins=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy)
stamp=$BIN/.kubernetes.version
want="$KUBERNETES_VERSION-stamped ${kube_bins[*]}"
have=true
for b in "${kube_bins[@]}"; do
	[[ -x $BIN/$b ]] || have=false
done
if $have && [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
	say "${kube_bins[*]} $KUBERNETES_VERSION present"
else
	say "building ${kube_bins[*]} $KUBERNETES_VERSION (first run only, about 15 min on 2 cores)"
	start=$SECONDS
	# The version is stamped as the Kubernetes release build does, so that
	# clients (helm's kubeVersion check, discovery) see v1.37.x, not v0.0.0.
	minor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2)
	pkg=k8s.io/component-base/version
	pkgs=()
	for b in "${kube_bins[@]}"; do
		pkgs+=("k8s.io/kubernetes/cmd/$b")
	done
	# Built aside and renamed into place, so that a test running one of
	# the old binaries meanwhile is not disturbed.
	tmp=$(mktemp -d "$BIN/.kube-build.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	(cd tools/apiserver && go build -ldflags "-X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean" \
		-o "$tmp/" "${pkgs[@]}")
	for b in "${kube_bins[@]}"; do
		mv -f "$tmp/$b" "$BIN/$b"
	done
	echo "$want" >"$stamp"
	say "built ${kube_bins[*]} in $((SECONDS - start))s"
fi
say "all present in $BIN"
