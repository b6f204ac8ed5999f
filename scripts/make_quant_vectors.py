#!/usr/bin/env python3
"""Generates the committed reference data the ferrite-quant dequantization tests compare with.

The reference is the `gguf` Python package's numpy dequantization (`gguf.quants.dequantize`,
version pinned in scripts/requirements.txt). Where that package has no dequantizer, the
expected values come from an independent numpy rendering of the format definition written
here (see INDEPENDENT below), never from ferrite's Rust code.

Types the package's enum does not list at all (EXTRA below: Q2_0, an extra type of the llama.cpp
build that made ../shared/reference/tiny) get vectors from their independent decoder too. Files
GGUFReader refuses because they name such a type are read with the minimal header parser here
(read_gguf_tensors); it is checked against GGUFReader on a file both can read.

Writes, under crates/quant/tests/data/:
  vectors/<TYPE>.bin      b"FQV1", u32 type id, u32 n_blocks, the raw blocks, then the
                          expected f32 values (little-endian), for every type ferrite knows.
  vectors/manifest.json   per type: file, block count, which reference produced it; plus the
                          sha256 of the F16 and BF16 decodings of all 65536 bit patterns.
  tiny_models.json        per file of ../shared/reference/tiny and per tensor: sha256 of the
                          little-endian f32 bytes of the reference dequantization, and which
                          reader parsed the file.
  real_models.json        the same for the two real models (all tensors).

Usage: python3 scripts/make_quant_vectors.py [--skip-models]
Environment: FERRITE_REFERENCE (default ../shared/reference), FERRITE_MODELS (default models/).
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
from enum import IntEnum
from importlib.metadata import version
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "crates/quant/tests/data"
GGUF_VERSION = version("gguf")



class EXTRA(IntEnum):
    """ggml types gguf-py's GGMLQuantizationType lacks; members behave like its members (an
    int id and a .name), so the rest of the script treats both alike."""
    Q2_0 = 42  # f16 d, u8 qs[16]: 64 two-bit codes q, value (q - 1) * d


ALL_TYPES = [*Q, *EXTRA]


def type_by_id(type_id: int):
    try:
        return Q(type_id)
    except ValueError:
        return EXTRA(type_id)


def type_by_name(name: str):
    return Q[name] if name in Q.__members__ else EXTRA[name]


# ggml's C block sizes (the file-format authority). The package lists Q8_1 as 40 bytes; the C
# struct (two f16 + 32 int8) is 36, and that is what files hold.
SIZES = {t: gguf.GGML_QUANT_SIZES[t] for t in Q}
SIZES[Q.Q8_1] = (32, 36)
SIZES[EXTRA.Q2_0] = (64, 18)

F16_SPECIALS = [
    0x0000, 0x8000,  # +0, -0
    0x0001, 0x8001, 0x03FF,  # smallest subnormals, largest subnormal
    0x0400, 0x7BFF, 0xFBFF,  # smallest normal, +-max
    0x7C00, 0xFC00,  # +-inf
    0x7E00, 0x7D00, 0xFE01,  # quiet NaN, signalling NaN, negative NaN with payload
    0x3C00, 0xBC00,  # +-1
]
F32_SPECIALS = [
    0x00000000, 0x80000000, 0x00000001, 0x007FFFFF, 0x7F7FFFFF, 0x7F800000, 0xFF800000,
    0x7FC00000, 0x7F800001, 0x3F800000, 0xBF800000,
]
E8M0_SPECIALS = [0, 1, 2, 126, 127, 128, 254, 255]
UE4M3_SPECIALS = [0x00, 0x01, 0x07, 0x08, 0x38, 0x7E, 0x7F, 0x80, 0xFF]

# Where each type keeps its scales: (byte offset, kind). Kinds: f16, f32, e8m0, ue4m3, iq1m
# (IQ1_M's f16 scale is the top nibbles of the four u16 words at 48..56).
SCALES = {
    Q.Q4_0: [(0, "f16")], Q.Q4_1: [(0, "f16"), (2, "f16")], Q.Q5_0: [(0, "f16")],
    Q.Q5_1: [(0, "f16"), (2, "f16")], Q.Q8_0: [(0, "f16")], Q.Q8_1: [(0, "f16"), (2, "f16")],
    Q.Q1_0: [(0, "f16")], EXTRA.Q2_0: [(0, "f16")],
    Q.Q2_K: [(80, "f16"), (82, "f16")], Q.Q3_K: [(108, "f16")], Q.Q4_K: [(0, "f16"), (2, "f16")],
    Q.Q5_K: [(0, "f16"), (2, "f16")], Q.Q6_K: [(208, "f16")], Q.Q8_K: [(0, "f32")],
    Q.IQ2_XXS: [(0, "f16")], Q.IQ2_XS: [(0, "f16")], Q.IQ2_S: [(0, "f16")],
    Q.IQ3_XXS: [(0, "f16")], Q.IQ3_S: [(0, "f16")], Q.IQ1_S: [(0, "f16")], Q.IQ1_M: [(48, "iq1m")],
    Q.IQ4_NL: [(0, "f16")], Q.IQ4_XS: [(0, "f16")], Q.TQ1_0: [(52, "f16")], Q.TQ2_0: [(64, "f16")],
    Q.MXFP4: [(0, "e8m0")], Q.NVFP4: [(0, "ue4m3"), (1, "ue4m3"), (2, "ue4m3"), (3, "ue4m3")],
}
SPECIALS = {"f16": F16_SPECIALS, "iq1m": F16_SPECIALS, "f32": F32_SPECIALS,
            "e8m0": E8M0_SPECIALS, "ue4m3": UE4M3_SPECIALS}


def normal_scale(rng: np.random.Generator, kind: str) -> int:
    """A typical, finite scale as stored bits."""
    if kind in ("f16", "iq1m"):
        return int(np.float16(rng.normal(0, 0.02)).view(np.uint16))
    if kind == "f32":
        return int(np.float32(rng.normal(0, 0.02)).view(np.uint32))
    if kind == "e8m0":
        return int(rng.integers(110, 130))
    return int(rng.integers(0x08, 0x7E))  # ue4m3, normal range


def put_scale(block: np.ndarray, at: int, kind: str, bits: int) -> None:
    if kind == "f16":
        block[at:at + 2] = np.frombuffer(struct.pack("<H", bits), np.uint8)
    elif kind == "f32":
        block[at:at + 4] = np.frombuffer(struct.pack("<I", bits), np.uint8)
    elif kind in ("e8m0", "ue4m3"):
        block[at] = bits
    elif kind == "iq1m":
        words = block[at:at + 8].copy().view(np.uint16)
        for w in range(4):
            nib = (bits >> (4 * w)) & 0xF
            words[w] = (words[w] & 0x0FFF) | (nib << 12)
        block[at:at + 8] = words.view(np.uint8)
    else:
        raise ValueError(kind)


# ---- IQ grid sweeps: blocks whose grid indices run through every row of the grid ----------

def sweep_blocks(qt: Q, rng: np.random.Generator) -> list[np.ndarray]:
    ts = SIZES[qt][1]

    def fresh() -> np.ndarray:
        b = rng.integers(0, 256, ts, dtype=np.uint8)
        for at, kind in SCALES[qt]:
            put_scale(b, at, kind, normal_scale(rng, kind))
        return b

    out = []
    if qt == Q.IQ2_XXS:  # 8 x (4 grid bytes, u32 signs+scale)
        for k in range(256 // 32):
            b = fresh()
            for ib in range(8):
                for l in range(4):
                    b[2 + 8 * ib + l] = k * 32 + ib * 4 + l
            out.append(b)
    elif qt == Q.IQ2_XS:  # u16: 9-bit index | 7-bit sign code
        for k in range(512 // 32):
            b = fresh()
            qs = b[2:66].copy().view(np.uint16)
            for i in range(32):
                qs[i] = (qs[i] & 0xFE00) | (k * 32 + i)
            b[2:66] = qs.view(np.uint8)
            out.append(b)
    elif qt == Q.IQ2_S:  # qs byte + 2 bits of qh[i/4]
        for k in range(1024 // 32):
            b = fresh()
            b[66:74] = 0
            for i in range(32):
                idx = k * 32 + i
                b[2 + i] = idx & 0xFF
                b[66 + i // 4] |= (idx >> 8) << (2 * (i % 4))
            out.append(b)
    elif qt == Q.IQ3_XXS:  # 64 index bytes
        for k in range(256 // 64):
            b = fresh()
            b[2:66] = np.arange(k * 64, k * 64 + 64, dtype=np.uint8)
            out.append(b)
    elif qt == Q.IQ3_S:  # qs byte + 1 bit of qh[i/8]
        for k in range(512 // 64):
            b = fresh()
            b[66:74] = 0
            for i in range(64):
                idx = k * 64 + i
                b[2 + i] = idx & 0xFF
                b[66 + i // 8] |= (idx >> 8) << (i % 8)
            out.append(b)
    elif qt == Q.IQ1_S:  # qs byte + 3 bits of the group's u16 qh
        for k in range(2048 // 32):
            b = fresh()
            qh = b[34:50].copy().view(np.uint16)
            qh &= 0xF000
            for ib in range(8):
                for l in range(4):
                    idx = k * 32 + ib * 4 + l
                    b[2 + 4 * ib + l] = idx & 0xFF
                    qh[ib] |= (idx >> 8) << (3 * l)
            b[34:50] = qh.view(np.uint8)
            out.append(b)
    elif qt == Q.IQ1_M:  # qs byte + 3 bits of a qh nibble
        for k in range(2048 // 32):
            b = fresh()
            for i in range(32):
                idx = k * 32 + i
                b[i] = idx & 0xFF
                sh = 4 * (i % 2)
                b[32 + i // 2] = (int(b[32 + i // 2]) & (0xFF ^ (0x7 << sh))) | ((idx >> 8) << sh)
            out.append(b)
    return out


def make_blocks(qt) -> np.ndarray:
    bs, ts = SIZES[qt]
    rng = np.random.default_rng(1000 + int(qt))
    blocks: list[np.ndarray] = []
    if bs == 1:  # element types: random values plus their edge values
        blocks = edge_elements(qt, rng)
        return np.concatenate(blocks).reshape(-1, ts)
    scales = SCALES[qt]
    kinds = {k for _, k in scales}
    specials = SPECIALS[next(iter(kinds))]
    # 1. every special scale value in every scale field, random codes
    for s in specials:
        b = rng.integers(0, 256, ts, dtype=np.uint8)
        for at, kind in scales:
            put_scale(b, at, kind, s)
        blocks.append(b)
    # 2. scale fields drawn independently from the specials (e.g. d finite, dmin infinite)
    for _ in range(6):
        b = rng.integers(0, 256, ts, dtype=np.uint8)
        for at, kind in scales:
            put_scale(b, at, kind, int(rng.choice(specials)))
        blocks.append(b)
    # 3. min and max codes: all-zero and all-one bytes, with typical and raw scales
    for fill in (0x00, 0xFF):
        b = np.full(ts, fill, dtype=np.uint8)
        blocks.append(b.copy())
        for at, kind in scales:
            put_scale(b, at, kind, normal_scale(rng, kind))
        blocks.append(b)
    # 4. random codes with typical scales, and fully random bytes
    for _ in range(6):
        b = rng.integers(0, 256, ts, dtype=np.uint8)
        for at, kind in scales:
            put_scale(b, at, kind, normal_scale(rng, kind))
        blocks.append(b)
    for _ in range(3):
        blocks.append(rng.integers(0, 256, ts, dtype=np.uint8))
    blocks += sweep_blocks(qt, rng)
    return np.stack(blocks)


def edge_elements(qt: Q, rng: np.random.Generator) -> list[np.ndarray]:
    def u8(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a).view(np.uint8)

    if qt == Q.F32:
        vals = np.array(F32_SPECIALS + [0xFF800001, 0x80000001], np.uint32)
        return [u8(vals), u8(rng.normal(0, 1, 64).astype(np.float32))]
    if qt in (Q.F16, Q.BF16):  # the full sweeps are checked through their hashes
        return [u8(np.array(F16_SPECIALS, np.uint16)), u8(rng.integers(0, 65536, 64).astype(np.uint16))]
    if qt == Q.F64:
        f = [0.0, -0.0, 1.0, -1.0, 1e-300, -1e-300, 1e300, -1e300, float("inf"), float("-inf"),
             3.4028235677973366e38, 3.4028235e38 * 1.0000001, 1.401298464324817e-45, 7e-46, 2.1e-45,
             1.0000000596046448, 1.0000001788139343]  # ties around f32 roundings
        bits = [0x7FF8000000000000, 0x7FF0000000000001, 0xFFF8000000000123, 0x7FF4000000000000]
        vals = np.concatenate([np.array(f, np.float64).view(np.uint64), np.array(bits, np.uint64)])
        return [u8(vals), u8(rng.normal(0, 1e3, 64))]
    info = np.iinfo({Q.I8: np.int8, Q.I16: np.int16, Q.I32: np.int32, Q.I64: np.int64}[qt])
    dt = info.dtype
    edge = [0, 1, -1, info.min, info.max, info.min + 1, info.max - 1]
    if info.bits >= 32:  # values that round when narrowed to f32 (ties to even)
        edge += [2**24 + 1, 2**24 + 3, -(2**24 + 1), 2**25 + 2, 2**31 - 64, 2**31 - 65]
        if info.bits == 64:
            edge += [2**53 + 1, 2**63 - 2**39, 2**63 - 2**39 - 1, -(2**62) - 1]
    vals = np.array(edge, dtype=dt)
    rand = rng.integers(info.min, info.max, 64, dtype=dt, endpoint=True)
    return [u8(vals), u8(rand)]


# ---- references ----------------------------------------------------------------------------

# Types the package cannot dequantize, and how their expected values are derived instead.
INDEPENDENT = {
    Q.Q8_1: "independent numpy (this script): f16 d * int8 q per element; the f16 s is unused",
    Q.Q8_K: "independent numpy (this script): f32 d * int8 q per element; bsums unused",
    Q.Q1_0: "independent numpy (this script): bit j (LSB first) of qs ? d : -d (ggml dequantize_row_q1_0)",
    EXTRA.Q2_0: "independent numpy (this script): q = bits 2*(j%4).. of qs[j/4], value (q - 1) * d "
                "(not in gguf-py's type enum)",
    Q.F64: "numpy astype(float32) of the float64 values (gguf has no dequantizer for it)",
    Q.I8: "numpy astype(float32) of the int8 values (gguf has no dequantizer for it)",
    Q.I16: "numpy astype(float32) of the int16 values (gguf has no dequantizer for it)",
    Q.I32: "numpy astype(float32) of the int32 values (gguf has no dequantizer for it)",
    Q.I64: "numpy astype(float32) of the int64 values (gguf has no dequantizer for it)",
}
VALUE_DTYPES = {Q.F64: np.float64, Q.I8: np.int8, Q.I16: np.int16, Q.I32: np.int32, Q.I64: np.int64}


def reference(qt, raw: np.ndarray) -> np.ndarray:
    """Expected f32 values (flat) for `raw`, a uint8 array of whole blocks."""
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    with np.errstate(all="ignore"):
        if qt in VALUE_DTYPES:
            return raw.view(VALUE_DTYPES[qt]).astype(np.float32).ravel()
        if qt == Q.Q8_1:
            b = raw.reshape(-1, 36)
            d = b[:, 0:2].copy().view(np.float16).astype(np.float32)
            return (d * b[:, 4:].copy().view(np.int8).astype(np.float32)).ravel()
        if qt == Q.Q8_K:
            b = raw.reshape(-1, 292)
            d = b[:, 0:4].copy().view(np.float32)
            return (d * b[:, 4:260].copy().view(np.int8).astype(np.float32)).ravel()
        if qt == Q.Q1_0:
            b = raw.reshape(-1, 18)
            d = b[:, 0:2].copy().view(np.float16).astype(np.float32)
            bits = np.unpackbits(b[:, 2:], axis=-1, bitorder="little").astype(bool)
            return np.where(bits, d, -d).astype(np.float32).ravel()
        if qt == EXTRA.Q2_0:
            b = raw.reshape(-1, 18)
            d = b[:, 0:2].copy().view(np.float16).astype(np.float32)
            shifts = np.array([0, 2, 4, 6], np.uint8)
            codes = ((b[:, 2:, None] >> shifts) & 3).reshape(-1, 64)  # element 4*i + k
            return ((codes.astype(np.float32) - np.float32(1)) * d).astype(np.float32).ravel()
        bs, ts = SIZES[qt]
        return gguf.quants.dequantize(raw.reshape(-1, ts), qt).astype(np.float32, copy=False).ravel()


def reference_name(qt) -> str:
    return INDEPENDENT.get(qt, f"gguf {GGUF_VERSION} gguf.quants.dequantize")


# ---- outputs -------------------------------------------------------------------------------

def write_vectors() -> None:
    out = DATA / "vectors"
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"generator": "scripts/make_quant_vectors.py", "gguf": GGUF_VERSION,
                "numpy": np.__version__, "types": {}}
    for qt in ALL_TYPES:
        blocks = make_blocks(qt)
        expected = reference(qt, blocks)
        bs, ts = SIZES[qt]
        assert blocks.shape[1] == ts and expected.size == blocks.shape[0] * bs, qt.name
        payload = (b"FQV1" + struct.pack("<II", int(qt), blocks.shape[0]) + blocks.tobytes()
                   + expected.astype("<f4").tobytes())
        (out / f"{qt.name}.bin").write_bytes(payload)
        manifest["types"][qt.name] = {"file": f"{qt.name}.bin", "n_blocks": int(blocks.shape[0]),
                                      "reference": reference_name(qt)}
    sweep = np.arange(65536, dtype=np.uint16).view(np.uint8)
    manifest["sweeps"] = {
        name: {"input": "the 65536 u16 bit patterns in increasing order, little-endian",
               "reference": reference_name(qt),
               "sha256": hashlib.sha256(reference(qt, sweep).astype("<f4").tobytes()).hexdigest()}
        for name, qt in (("F16", Q.F16), ("BF16", Q.BF16))
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {len(manifest['types'])} vector files to {out}")


# ---- reading GGUF files -----------------------------------------------------------------------

class MiniTensor:
    """What hash_model needs of a tensor: the fields GGUFReader's ReaderTensor offers."""

    def __init__(self, name: str, tensor_type: int, shape: list[int], n_elements: int,
                 data: np.ndarray):
        self.name, self.tensor_type, self.shape = name, tensor_type, shape
        self.n_elements, self.data = n_elements, data


def read_gguf_tensors(path: Path) -> list[MiniTensor]:
    """Minimal GGUF (v2/v3, little-endian) parser: skips the metadata except
    general.alignment and returns every tensor's name, type id, dims and raw bytes. Only for
    files GGUFReader refuses (a type id its enum lacks)."""
    buf = np.memmap(path, dtype=np.uint8, mode="r")
    pos = 0

    def take(fmt: str):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return vals[0] if len(vals) == 1 else vals

    def string() -> str:
        nonlocal pos
        n = take("Q")
        s = bytes(buf[pos:pos + n]).decode("utf-8")
        pos += n
        return s

    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}

    def value(vtype: int):
        if vtype in scalar:
            return take(scalar[vtype])
        if vtype == 8:
            return string()
        if vtype == 9:
            etype, n = take("IQ")
            return [value(etype) for _ in range(n)]
        raise ValueError(f"{path}: unknown metadata value type {vtype} at byte {pos}")

    magic, ver = take("4sI")
    if magic != b"GGUF" or ver not in (2, 3):
        raise ValueError(f"{path}: not a little-endian GGUF v2/v3 file ({magic!r}, version {ver})")
    n_tensors, n_kv = take("QQ")
    alignment = 32
    for _ in range(n_kv):
        key = string()
        val = value(take("I"))
        if key == "general.alignment":
            alignment = int(val)
    infos = []
    for _ in range(n_tensors):
        name = string()
        dims = [take("Q") for _ in range(take("I"))]
        infos.append((name, take("I"), dims, take("Q")))
    data_start = -(-pos // alignment) * alignment
    tensors = []
    for name, type_id, dims, offset in infos:
        n = int(np.prod(dims, dtype=np.uint64))
        bs, ts = SIZES[type_by_id(type_id)]
        assert n % bs == 0, f"{path}: {name}: {n} elements is not whole blocks of {bs}"
        at = data_start + offset
        nbytes = n // bs * ts
        assert at + nbytes <= buf.size, f"{path}: {name}: data runs past the end of the file"
        tensors.append(MiniTensor(name, type_id, dims, n, buf[at:at + nbytes]))
    return tensors


def check_parser_against_gguf_reader(path: Path) -> None:
    """read_gguf_tensors must see what GGUFReader sees in a file both can read."""
    mine = read_gguf_tensors(path)
    theirs = GGUFReader(path).tensors
    assert [t.name for t in mine] == [t.name for t in theirs], path
    for a, b in zip(mine, theirs):
        assert a.tensor_type == int(b.tensor_type), (path, a.name)
        assert a.shape == [int(x) for x in b.shape], (path, a.name)
        assert a.n_elements == int(b.n_elements), (path, a.name)
        assert np.array_equal(a.data, np.asarray(b.data).view(np.uint8).ravel()), (path, a.name)


# ---- outputs: model hashes ---------------------------------------------------------------------

def hash_model(path: Path) -> dict:
    """Per tensor: type, element count, sha256 of the reference f32 bytes, first values."""
    extra = {}
    try:
        tensors_in = GGUFReader(path).tensors
    except ValueError as e:  # e.g. a type id this package does not know
        tensors_in = read_gguf_tensors(path)
        extra["reader"] = (f"read_gguf_tensors (this script), as gguf {GGUF_VERSION} GGUFReader "
                           f"refuses the file: {e}")
    tensors = {}
    for t in tensors_in:
        qt = type_by_id(int(t.tensor_type))
        vals = reference(qt, np.asarray(t.data).view(np.uint8))
        assert vals.size == int(t.n_elements), t.name
        le = vals.astype("<f4")
        tensors[t.name] = {
            "type": qt.name, "n_elements": int(t.n_elements),
            "sha256": hashlib.sha256(le.tobytes()).hexdigest(),
            "first_bits": [f"{int(x):08x}" for x in le[:4].view(np.uint32)],
        }
    types = sorted({v["type"] for v in tensors.values()})
    return {**extra,
            "references": {name: reference_name(type_by_name(name)) for name in types},
            "tensors": tensors}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def write_model_hashes() -> None:
    ref = Path(os.environ.get("FERRITE_REFERENCE", REPO.parent / "shared/reference"))
    # The fallback parser must agree with GGUFReader where both can read (same layout as the
    # Q2_0 file: llama-quantize --pure output of the same model).
    check_parser_against_gguf_reader(ref / "tiny/tiny-llama-Q1_0.gguf")
    tiny = {}
    for p in sorted((ref / "tiny").glob("*.gguf")):
        entry = {"sha256": file_sha256(p), **hash_model(p)}
        tiny[p.name] = entry
        print(p.name, len(entry["tensors"]), entry.get("reader", ""))
    (DATA / "tiny_models.json").write_text(json.dumps({"gguf": GGUF_VERSION, "files": tiny}, indent=1) + "\n")

    models = Path(os.environ.get("FERRITE_MODELS", REPO / "models"))
    real = {}
    for key, name in (("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"), ("gemma3", "gemma-3-270m-q4_k_m.gguf")):
        p = models / name
        real[key] = {"file": name, "sha256": file_sha256(p), **hash_model(p)}
        print(name, len(real[key]["tensors"]))
    (DATA / "real_models.json").write_text(json.dumps({"gguf": GGUF_VERSION, "models": real}, indent=1) + "\n")


def main() -> None:
    write_vectors()
    if "--skip-models" not in sys.argv:
        write_model_hashes()


if __name__ == "__main__":
    main()
