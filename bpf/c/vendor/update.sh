#!/usr/bin/env bash
# Refreshes the headers the datapath is compiled against, so that the BPF
# object depends on this directory and not on the -dev packages installed
# where it is built (bpf/gen.go compiles with -nostdinc -Ic/vendor).
#
#   update.sh UAPI LIBBPF
#
# UAPI    the kernel's installed UAPI headers (a directory holding linux/ and
#         asm-generic/): the output of `make headers_install
#         INSTALL_HDR_PATH=DIR` in a kernel tree (then DIR/include), or
#         /usr/include from linux-libc-dev.
# LIBBPF  the directory holding libbpf's bpf_helpers.h: src/ of a libbpf
#         tree, or /usr/include/bpf from libbpf-dev.
#
# What is copied is what the program includes: every <linux/...> and
# <bpf/...> named in bpf/c, and what those include in turn. The asm/ headers
# are written here, not copied: the object is built for little-endian BPF
# (bpf2go -target bpfel), not for the build host's architecture, so each is
# the generic one, as the kernel's headers_install makes them for an
# architecture without its own. The licence texts in LICENSES/ stay as they
# are. Run it, rebuild (make generate-bpf) and commit both.
set -euo pipefail

if (($# != 2)); then
	sed -n '4,13p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
fi
uapi=$(cd "$1" && pwd)
libbpf=$(cd "$2" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
prog=$(dirname "$here")

for f in "$uapi/linux/types.h" "$uapi/asm-generic/types.h" "$libbpf/bpf_helpers.h"; do
	[[ -f $f ]] || {
		echo "update.sh: $f not found" >&2
		exit 1
	}
done

# The headers FILE names: <dir/name.h> for dir in linux, asm, asm-generic
# and bpf; when FILE is libbpf's header HEADER, also "name.h", a sibling.
includes() {
	local file=$1 header=${2:-}
	sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*<\(\(linux\|asm\|asm-generic\|bpf\)\/[^>]*\)>.*/\1/p' "$file"
	if [[ $header == bpf/* ]]; then
		sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"/]*\)".*/bpf\/\1/p' "$file"
	fi
}

# asm/NAME.h for little-endian, 64-bit BPF.
asm_header() {
	local name=$1
	echo "/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */"
	echo "/* Written by update.sh: the generic asm/$name for little-endian, 64-bit BPF. */"
	case $name in
	byteorder.h) echo "#include <linux/byteorder/little_endian.h>" ;;
	bitsperlong.h)
		echo "#define __BITS_PER_LONG 64"
		echo "#include <asm-generic/bitsperlong.h>"
		;;
	*) echo "#include <asm-generic/$name>" ;;
	esac
}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

declare -A seen=()
queue=()
for f in "$prog"/*.c "$prog"/*.h; do
	[[ -f $f ]] || continue
	while read -r h; do
		queue+=("$h")
	done < <(includes "$f")
done
while ((${#queue[@]})); do
	h=${queue[0]}
	queue=("${queue[@]:1}")
	[[ -n ${seen[$h]:-} ]] && continue
	seen[$h]=1
	mkdir -p "$stage/$(dirname "$h")"
	case $h in
	asm/*)
		asm_header "${h#asm/}" >"$stage/$h"
		;;
	bpf/*)
		src=$libbpf/${h#bpf/}
		[[ -f $src ]] || {
			echo "update.sh: $h: no ${src}" >&2
			exit 1
		}
		cp "$src" "$stage/$h"
		;;
	*)
		src=$uapi/$h
		[[ -f $src ]] || {
			echo "update.sh: $h: no ${src}" >&2
			exit 1
		}
		cp "$src" "$stage/$h"
		;;
	esac
	while read -r n; do
		queue+=("$n")
	done < <(includes "$stage/$h" "$h")
done

# Where they came from, for the next reader and the next refresh.
kver=unknown
if [[ -f $uapi/linux/version.h ]]; then
	kver=$(awk '/LINUX_VERSION_MAJOR/{a=$3} /LINUX_VERSION_PATCHLEVEL/{b=$3} /LINUX_VERSION_SUBLEVEL/{c=$3}
		END{if (a != "") print a "." b "." c}' "$uapi/linux/version.h")
	[[ -n $kver ]] || kver=$(awk '/LINUX_VERSION_CODE/{v=$3; print int(v/65536) "." int(v/256)%256 "." v%256}' "$uapi/linux/version.h")
fi
lver=unknown
if [[ -f $libbpf/libbpf_version.h ]]; then
	lver=$(awk '/LIBBPF_MAJOR_VERSION/{a=$3} /LIBBPF_MINOR_VERSION/{b=$3} END{print a "." b}' "$libbpf/libbpf_version.h")
fi
sums=$(cd "$stage" && find . -type f | sed 's|^\./||' | LC_ALL=C sort | xargs sha256sum)
printf 'linux UAPI %s\nlibbpf %s\n%s\n' "$kver" "$lver" "$sums" >"$stage/SOURCES"

for d in linux asm asm-generic bpf; do
	rm -rf "${here:?}/$d"
	[[ -d $stage/$d ]] && cp -r "$stage/$d" "$here/$d"
done
cp "$stage/SOURCES" "$here/SOURCES"
echo "update.sh: linux UAPI $kver, libbpf $lver: $(wc -l <<<"$sums") headers in $here"
