#!/usr/bin/env bash
# Builds link-time stub libraries for FreeBSD base libraries that zig does not ship.
# For each stubs/LIB.syms (one function name per line) and stubs/LIB.soname, writes
# OUT/LIB.so: empty functions under the real SONAME. The agent records NEEDED LIB.so.N and
# loads the real base library on the router; a function missing from a list fails the link
# here, at build time, not at start-up on a router.
set -euo pipefail
out=${1:?usage: mkstubs.sh OUT}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
for syms in "$here"/stubs/*.syms; do
  lib=$(basename "$syms" .syms)
  soname=$(cat "$here/stubs/$lib.soname")
  src="$out/$lib.c"
  sed -e 's/.*/void &(void) {}/' "$syms" > "$src"
  python3 -m ziglang cc -target x86_64-freebsd.14.0-none -shared -nostdlib -fPIC \
    -Wl,-soname,"$soname" -o "$out/$lib.so" "$src"
done
