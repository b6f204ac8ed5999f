#!/usr/bin/env bash
# Generates the synthetic ~1.1B llama model (embedding 2048, 22 layers, FFN 5632, 32 heads,
# 4 KV heads, SmolLM2's tokenizer and 49152-token vocabulary; random seeded weights) with
# ferrite's writer and quantizer, into the git-ignored models/ cache:
#   models/synth-1b-{F16,Q4_0,Q4_K_M,Q8_0}.gguf
# Usage: scripts/gen-synth-1b.sh [TYPE...]   (default: Q4_0 Q4_K_M Q8_0)
# Needs SmolLM2-135M-Instruct.Q4_1.gguf in $FERRITE_MODELS or models/ (scripts/fetch-models.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
models="${FERRITE_MODELS:-models}"
tok="$models/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$tok" ] || { echo "missing $tok (run scripts/fetch-models.sh)" >&2; exit 1; }
mkdir -p models
types=("$@")
[ ${#types[@]} -gt 0 ] || types=(Q4_0 Q4_K_M Q8_0)
cargo build -q --release -p ferrite-cli --example synth_model
for t in "${types[@]}"; do
  out="models/synth-1b-$t.gguf"
  if [ -f "$out" ]; then echo "$out exists"; continue; fi
  echo "writing $out"
  ./target/release/examples/synth_model --tokenizer-from "$tok" --type "$t" --out "$out.tmp" 2>/dev/null
  mv "$out.tmp" "$out"
done
