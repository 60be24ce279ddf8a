#!/usr/bin/env bash
# Packs the rowflow binary and every shared library it loads except glibc's own into one archive for
#   spark-submit --archives rowflow-linux-x86_64.tar.gz#rowflow …
# Executors then run rowflow/bin/rowflow with LD_LIBRARY_PATH=rowflow/lib (rowflow.spark.RowflowBinary(
# "rowflow/bin/rowflow", lib_dir="rowflow/lib")), so they need no Swift toolchain, OpenBLAS or zstd: only a glibc
# at least as new as the build machine's. A name ending in .tar is written uncompressed (fast; for tests).
# Usage: package-rowflow.sh [path/to/rowflow] [out.tar.gz]
set -euo pipefail
bin=${1:-.build/release/rowflow}
out=${2:-rowflow-linux-$(uname -m).tar.gz}
[ -x "$bin" ] || { echo "package-rowflow.sh: no executable at $bin (make build first)" >&2; exit 66; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$tmp/lib"
cp "$(readlink -f "$bin")" "$tmp/bin/rowflow"
ldd "$bin" | awk '/=> \// { print $3 }' | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|ld-linux*) continue ;;  # glibc: the node's own
  esac
  cp -L "$lib" "$tmp/lib/"
done
if ldd "$bin" | grep -q "not found"; then echo "package-rowflow.sh: $bin has unresolved libraries" >&2; exit 1; fi
case "$out" in *.tar) flags=-cf ;; *) flags=-czf ;; esac
tar -C "$tmp" $flags "$out" bin lib
echo "$out: bin/rowflow and $(ls "$tmp/lib" | wc -l) libraries, $(du -h "$out" | cut -f1)"
