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
cargo test --workspace --doc "$@"
