#!/usr/bin/env bash
# Regenerates the F32 tiny multi-architecture fixtures (not shipped with the reference data)
# into the git-ignored models/arch/ with the reference's own method script. Needs the SmolLM2
# model (for its tokenizer) and the pip `gguf` + `numpy` packages. Does nothing when present.
set -euo pipefail
cd "$(dirname "$0")/.."
models="${FERRITE_MODELS:-models}"
ref="${FERRITE_REFERENCE:-../shared/reference}"
out="$models/arch"
if ls "$out"/tiny-{qwen2,qwen3,gemma3,smollm3,phi3,llama-moe,mistral3,gemma2}-F32.gguf >/dev/null 2>&1; then
    exit 0
fi
mkdir -p "$out"
scripts/fetch-models.sh smollm2 >/dev/null
python3 "$ref/arch/method/make_tiny_arch.py" "$models/SmolLM2-135M-Instruct.Q4_1.gguf" "$out" >&2
