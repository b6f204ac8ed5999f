#!/usr/bin/env bash
# Lists the calls that the AVX-512 weight kernels' entry points (kernels::x86::*) make, in a
# built binary (default: target/release/ferrite); exits 1 if there are any besides the
# panic paths. Their bodies are `#[inline(always)]` generics, but a helper that is not
# (a closure passed to `array::from_fn` or `array::map`, which does not inherit the
# caller's target features) can stay out of line after an unrelated change grows the
# crate, and cost a third of a kernel's speed with no change to its code: that happened to
# packed Q4_K once. scripts/bench.sh runs this before measuring.
# Usage: scripts/check-kernel-calls.sh [BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/ferrite}
command -v objdump >/dev/null || { echo "objdump not found: kernel calls not checked" >&2; exit 0; }
calls=$(objdump -d --no-show-raw-insn -C "$bin" | awk '
  /^[0-9a-f]+ <.*>:$/ { fn = $0 }
  $2 ~ /^call/ && fn ~ /ferrite_quant::kernels::x86::/ && $0 !~ /_DYNAMIC|panic|_Unwind/ { print fn, "->", $3, $4 }')
if [ -n "$calls" ]; then
  echo "kernel entry points that call out of line (slow):" >&2
  echo "$calls" | sort | uniq -c >&2
  exit 1
fi
