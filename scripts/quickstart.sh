#!/usr/bin/env bash
# Fetch the default model (SmolLM2-135M-Instruct Q4_1) if it is missing, build ferrite and run a
# prompt on it. Usage: scripts/quickstart.sh ["PROMPT"] [more `ferrite run` flags]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bash "$repo/scripts/fetch-models.sh" smollm2 >/dev/null
model=${FERRITE_MODELS:-$repo/models}/SmolLM2-135M-Instruct.Q4_1.gguf
prompt=${1:-"The three primary colors are"}
shift || true
cd "$repo"
exec cargo run --release -q -p ferrite-cli -- run "$model" -p "$prompt" -n 64 "$@"
