#!/usr/bin/env bash
# Cross-builds vigie-agent for FreeBSD 14 amd64 (pfSense CE 2.7+, Plus 23.x+) on Debian 12.
#
#   packaging/freebsd/build.sh            # dist build: target/freebsd-cross/x86_64-unknown-freebsd/dist/vigie-agent
#   packaging/freebsd/build.sh --check    # type-check only (what CI runs)
#
# Tools go to $FREEBSD_TOOLS (default ~/.cache/vigie-freebsd-cross), outside the repository:
# Debian's rustc-web with its matching standard library source (std is rebuilt for FreeBSD
# with -Zbuild-std), and zig (from PyPI) as C compiler and linker. FreeBSD base libraries
# that zig does not ship (libpcap) are linked against stubs with the real SONAMEs.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
T=${FREEBSD_TOOLS:-$HOME/.cache/vigie-freebsd-cross}
mkdir -p "$T"
T=$(cd "$T" && pwd)

mode=build
[ "${1:-}" = "--check" ] && { mode=check; shift; }

if [ ! -x "$T/root/usr/bin/rustc" ]; then
  # The compiler, its std source and its LLVM must come from one Debian release of
  # rustc-web; ask apt which one is current rather than pinning a version that the
  # security archive may have replaced.
  V=$(apt-cache policy rustc-web | awk '/Candidate:/ {print $2}')
  [ -n "$V" ] && [ "$V" != "(none)" ] || { echo "build.sh: no rustc-web in apt (run apt-get update)" >&2; exit 1; }
  MM=$(echo "$V" | sed -E 's/^([0-9]+\.[0-9]+).*/\1/')
  LLVM=$(apt-cache depends "libstd-rust-web-$MM=$V" | awk '/Depends: libllvm/ {print $2; exit}')
  [ -n "$LLVM" ] || { echo "build.sh: cannot tell which libllvm rustc-web $V needs" >&2; exit 1; }
  mkdir -p "$T/debs"
  (cd "$T/debs" && apt-get download -q "rustc-web=$V" "cargo-web=$V" "libstd-rust-web-$MM=$V" \
     "libstd-rust-web-dev=$V" "rust-web-src=$V" "$LLVM" \
     libgit2-1.5 libhttp-parser2.9 libmbedcrypto7 libmbedtls14 libmbedx509-1)
  for d in "$T"/debs/*.deb; do dpkg-deb -x "$d" "$T/root"; done
fi
[ -x "$T/venv/bin/python3" ] || { python3 -m venv "$T/venv" && "$T/venv/bin/pip" install -q ziglang==0.17.1; }

export PATH="$T/root/usr/bin:$T/venv/bin:$PATH" LD_LIBRARY_PATH="$T/root/usr/lib/x86_64-linux-gnu"
export RUSTC_BOOTSTRAP=1 ZIG_GLOBAL_CACHE_DIR="$T/zig-cache" FREEBSD_STUBS="$T/stubs"
packaging/freebsd/mkstubs.sh "$FREEBSD_STUBS"
W="$root/packaging/freebsd"
export CARGO_TARGET_X86_64_UNKNOWN_FREEBSD_LINKER="$W/zigcc.sh"
export CC_x86_64_unknown_freebsd="$W/zigcc.sh" AR_x86_64_unknown_freebsd="$W/zigar.sh"
# The pcap crate must not probe or dlopen the build machine's libpcap.
export LIBPCAP_VER=1.10.4 LIBPCAP_LIBDIR="$FREEBSD_STUBS"
tdir=${FREEBSD_TARGET_DIR:-target/freebsd-cross}
mkdir -p "$tdir"
tdir=$(cd "$tdir" && pwd)
# No path of the build machine in the binary (generated code lives in the target folder).
export CARGO_TARGET_X86_64_UNKNOWN_FREEBSD_RUSTFLAGS="--remap-path-prefix=$tdir=/target \
  --remap-path-prefix=$root=. \
  --remap-path-prefix=$T/root/usr/lib/rustlib/src/rust=/rustc/src \
  --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}/registry/src=/cargo"
common=(-j"${JOBS:-2}" -p vigie-agent --target x86_64-unknown-freebsd
        --target-dir "$tdir" -Zbuild-std=std,panic_abort)
if [ "$mode" = check ]; then
  cargo check "${common[@]}" "$@"
else
  cargo build "${common[@]}" --profile "${PROFILE:-dist}" "$@"
  echo "built $tdir/x86_64-unknown-freebsd/${PROFILE:-dist}/vigie-agent"
fi
