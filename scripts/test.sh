#!/usr/bin/env bash
# The one command that runs every test (the README's test command; .ci/run calls it).
# Installs the Python reference packages the cross-check tests use, fetches the real models
# into the git-ignored cache if missing, then runs the whole workspace's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -r scripts/requirements.txt >&2
scripts/fetch-models.sh all >/dev/null
scripts/make-arch-fixtures.sh
cargo test --workspace --all-targets "$@"
# The forward pass's ops pick their SIMD level once per process: run them again on the
# lower levels this CPU has (a level it lacks falls back to the next one down).
for isa in avx2 scalar; do
  FERRITE_ISA=$isa cargo test -q -p ferrite-engine --lib "$@" ops::
done
cargo test --workspace --doc "$@"
# The aarch64 kernels, cross-compiled and run under emulation (skipped, saying why, where
# the cross tools cannot be had).
scripts/test-aarch64.sh
