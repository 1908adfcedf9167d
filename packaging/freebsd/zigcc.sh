#!/usr/bin/env bash
# C compiler and linker for x86_64-unknown-freebsd: zig cc targeting the FreeBSD 14.0 ABI.
# libgcc_s is not shipped by zig; its LLVM libunwind (linked statically) replaces it.
set -euo pipefail
args=()
for a in "$@"; do
  case "$a" in
    -lgcc_s) args+=(-lunwind) ;;
    --target=*) ;;
    *) args+=("$a") ;;
  esac
done
exec python3 -m ziglang cc -target x86_64-freebsd.14.0-none ${FREEBSD_STUBS:+-L"$FREEBSD_STUBS"} "${args[@]}"
