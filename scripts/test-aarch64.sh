#!/usr/bin/env bash
# The aarch64 kernels (NEON, NEON + dotprod) tested on an x86 machine: cross-compiles the
# quant crate's unit tests for aarch64 and runs them under qemu's user-mode emulation, once
# on a CPU with the dot-product extension (every level is tested against the scalar
# reference) and once on one without it (the run-time detection falls back to plain NEON).
# On an aarch64 machine `cargo test` already runs them natively, and this is skipped.
#
# Needs the Rust target, a cross linker and qemu-user; installs them when it can (rustup,
# and apt-get as root), else says what is missing and skips.
# Usage: scripts/test-aarch64.sh [cargo test args...]
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
if [ "$(uname -m)" = aarch64 ]; then
  echo "test-aarch64: native aarch64, the workspace tests already ran the NEON kernels" >&2
  exit 0
fi
have() { command -v "$1" >/dev/null 2>&1; }
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  timeout 300 rustup target add "$target" >&2 || true
fi
if ! have aarch64-linux-gnu-gcc || ! have qemu-aarch64; then
  if [ "$(id -u)" = 0 ] && have apt-get; then
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends \
      gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >/dev/null 2>&1 || true
  fi
fi
missing=()
rustup target list --installed 2>/dev/null | grep -qx "$target" || missing+=("rust target $target")
have aarch64-linux-gnu-gcc || missing+=("aarch64-linux-gnu-gcc (gcc-aarch64-linux-gnu)")
have qemu-aarch64 || missing+=("qemu-aarch64 (qemu-user)")
if [ ${#missing[@]} -gt 0 ]; then
  echo "test-aarch64: SKIPPED, missing: ${missing[*]}" >&2
  exit 0
fi
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
sysroot=/usr/aarch64-linux-gnu
# `max`: every feature qemu emulates, dotprod included; cortex-a72: Armv8.0, no dotprod.
for cpu in max cortex-a72; do
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L $sysroot -cpu $cpu"
  echo "test-aarch64: ferrite-quant unit tests on an emulated $cpu" >&2
  cargo test -q -p ferrite-quant --lib --target "$target" "$@"
done
