#!/usr/bin/env python3
"""Reference data for ferrite's quantizers (crates/quant/tests/quantize_reference.rs).

Writes into crates/quant/tests/data/quantize/:
  input.f32      fixed rows of 256 float32 (little-endian): 48 seeded random rows, then edge
                 cases (zeros, constants, spikes, rounding ties, tiny and huge magnitudes)
  <TYPE>.bin     gguf-py's quantization of input.f32 for every type it can quantize
                 (bit-exact comparison)
  rmse.json      round-trip RMSE (quantize with gguf-py, dequantize with gguf-py):
                 - "random": over the 48 random rows, per type gguf-py can quantize
                 - "smollm2": over the first 64 rows of a few SmolLM2 tensors (dequantized
                   from the Q4_1 file by gguf-py), per type gguf-py can quantize
                 - "llama_cpp_tiny": per 2-D tensor of the tiny llama model, the RMSE of
                   llama.cpp's own quantization (the files in ../shared/reference/tiny, made by
                   llama-quantize --pure from tiny-llama-f32.gguf, no imatrix) against the F32
                   original: the yardstick for the types gguf-py cannot quantize.

Usage: python3 scripts/quant_rmse_reference.py [SMOLLM2_GGUF] [REFERENCE_DIR]
"""
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf import quants

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates/quant/tests/data/quantize")
SMOLLM2 = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.environ.get("FERRITE_MODELS", os.path.join(ROOT, "models")), "SmolLM2-135M-Instruct.Q4_1.gguf")
REF = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "../shared/reference")

PY_TYPES = ["F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "TQ1_0", "TQ2_0", "MXFP4"]
SMOLLM2_TENSORS = ["blk.0.attn_q.weight", "blk.3.ffn_down.weight", "token_embd.weight"]
SMOLLM2_ROWS = 64
TINY_FILES = {
    "Q4_0": "Q4_0", "Q4_1": "Q4_1", "Q5_0": "Q5_0", "Q5_1": "Q5_1", "Q8_0": "Q8_0",
    "Q2_K": "Q2_K", "Q3_K": "Q3_K_S", "Q4_K": "Q4_K_S", "Q5_K": "Q5_K_S", "Q6_K": "Q6_K",
    "IQ4_NL": "IQ4_NL", "IQ4_XS": "IQ4_XS", "TQ1_0": "TQ1_0", "TQ2_0": "TQ2_0", "MXFP4": "MXFP4",
}
N_RANDOM = 48


def inputs() -> np.ndarray:
    rng = np.random.default_rng(20240601)
    rows = []
    for i in range(N_RANDOM):
        scale = [1.0, 0.02, 300.0][i % 3]
        if i % 4 == 3:
            r = rng.laplace(0.0, scale, 256)  # heavy tails, like real weights
        else:
            r = rng.normal(0.0, scale, 256)
        if i % 8 == 5:
            r = np.abs(r) + 0.1 * scale  # all positive: exercises the `_1` minimum
        rows.append(r)
    j = np.arange(256)
    rows += [
        np.zeros(256),
        np.full(256, 0.5),
        np.full(256, -3.25),
        np.where(j == 77, 5.0, 0.0),                  # one spike
        np.where(j % 32 == 0, -2.0, 0.01),             # a spike per block
        ((j % 17) - 8) * 0.25 + 0.125,                 # values on rounding boundaries
        (j % 16 - 8).astype(np.float64),               # exact integers
        rng.normal(0, 1e-6, 256),                      # f16-subnormal scales
        rng.normal(0, 1e-9, 256),                      # scales that underflow f16
        rng.normal(0, 1e4, 256),                       # scales near f16's top
        np.where(j % 2 == 0, -0.0, 0.0),               # signed zeros
        np.linspace(-1, 1, 256),
        np.linspace(0, 7, 256),
        rng.normal(0, 1, 256) * (j % 32 < 16),         # half-block zeros
        rng.standard_t(2, 256),                        # outliers
        rng.uniform(-1, 1, 256),
    ]
    return np.stack(rows).astype(np.float32)


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def round_trip(x: np.ndarray, ty: str) -> np.ndarray:
    q = quants.quantize(x, T[ty])
    return quants.dequantize(q, T[ty]).reshape(x.shape)


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    x = inputs()
    x.tofile(os.path.join(OUT, "input.f32"))
    result = {"random": {}, "smollm2": {}, "llama_cpp_tiny": {}}
    for ty in PY_TYPES:
        q = quants.quantize(x, T[ty])
        np.ascontiguousarray(q).view(np.uint8).tofile(os.path.join(OUT, f"{ty}.bin"))
        r = x[:N_RANDOM]
        result["random"][ty] = rmse(r, round_trip(r, ty))

    reader = gguf.GGUFReader(SMOLLM2)
    by_name = {t.name: t for t in reader.tensors}
    for name in SMOLLM2_TENSORS:
        t = by_name[name]
        src = quants.dequantize(t.data, t.tensor_type)[:SMOLLM2_ROWS].astype(np.float32)
        result["smollm2"][name] = {
            "source_type": t.tensor_type.name,
            "rows": SMOLLM2_ROWS,
            "row_len": int(src.shape[1]),
            "rmse": {ty: rmse(src, round_trip(src, ty)) for ty in PY_TYPES
                     if src.shape[1] % gguf.GGML_QUANT_SIZES[T[ty]][0] == 0},
        }

    tiny = os.path.join(REF, "tiny")
    f32 = {t.name: np.array(t.data, dtype=np.float32) for t in gguf.GGUFReader(os.path.join(tiny, "tiny-llama-f32.gguf")).tensors}
    for ty, file in TINY_FILES.items():
        r = gguf.GGUFReader(os.path.join(tiny, f"tiny-llama-{file}.gguf"))
        per = {}
        for t in r.tensors:
            if len(t.shape) != 2:
                continue
            assert t.tensor_type.name == ty, (file, t.name, t.tensor_type.name)
            deq = quants.dequantize(t.data, t.tensor_type)
            per[t.name] = rmse(f32[t.name].reshape(deq.shape), deq)
        result["llama_cpp_tiny"][ty] = per

    with open(os.path.join(OUT, "rmse.json"), "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
