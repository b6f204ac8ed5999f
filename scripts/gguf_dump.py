#!/usr/bin/env python3
"""Dump a GGUF file's header as JSON with the reference `gguf` Python package.

The dump is what ferrite's reader and `ferrite inspect --json` are compared against
(crates/gguf/tests/real_models.rs, crates/cli/tests/inspect.rs). Format:

  version, alignment, data_offset, n_kv, n_tensors
  metadata: [{key, type, value}] in file order; type is u8 i8 u16 i16 u32 i32 u64 i64 f32 f64
            bool string array. Arrays: {key, type: "array", element_type, len, sha256, and either
            value (len <= 64) or head/tail (first and last 5 elements)}. sha256 is over the
            elements encoded as GGUF stores them (little-endian numbers, bools as one byte,
            strings as u64 length + UTF-8), computed from the decoded values.
            Non-finite floats are written as the strings "nan", "inf", "-inf".
  tensors:  [{name, type, shape (ggml order, ne[0] first), n_elements, n_bytes,
              offset (relative to the data section), file_offset, sha256 (of the data bytes)}]

Usage: scripts/gguf_dump.py MODEL.gguf > dump.json
"""
import hashlib
import json
import math
import os
import struct
import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType

SUMMARY_OVER = 64
HEAD = 5

NAMES = {
    GGUFValueType.UINT8: "u8", GGUFValueType.INT8: "i8", GGUFValueType.UINT16: "u16",
    GGUFValueType.INT16: "i16", GGUFValueType.UINT32: "u32", GGUFValueType.INT32: "i32",
    GGUFValueType.UINT64: "u64", GGUFValueType.INT64: "i64", GGUFValueType.FLOAT32: "f32",
    GGUFValueType.FLOAT64: "f64", GGUFValueType.BOOL: "bool", GGUFValueType.STRING: "string",
    GGUFValueType.ARRAY: "array",
}
NUMPY = {
    "u8": "<u1", "i8": "<i1", "u16": "<u2", "i16": "<i2", "u32": "<u4", "i32": "<i4",
    "u64": "<u8", "i64": "<i8", "f32": "<f4", "f64": "<f8",
}


def scalar(ty, v):
    if ty in ("f32", "f64"):
        v = float(v)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if ty == "bool":
        return bool(v)
    if ty == "string":
        return v
    return int(v)


def encode(ty, values):
    if ty == "string":
        out = bytearray()
        for s in values:
            b = s.encode("utf-8")
            out += struct.pack("<Q", len(b)) + b
        return bytes(out)
    if ty == "bool":
        return bytes(1 if v else 0 for v in values)
    return np.array(values, dtype=NUMPY[ty]).tobytes()


def field_entry(field):
    ty = NAMES[field.types[0]]
    if ty != "array":
        return {"key": field.name, "type": ty, "value": scalar(ty, field.contents())}
    if len(field.types) != 2:
        raise SystemExit(f"{field.name}: nested arrays are not dumped")
    et = NAMES[field.types[1]]
    values = field.contents()
    entry = {
        "key": field.name, "type": "array", "element_type": et, "len": len(values),
        "sha256": hashlib.sha256(encode(et, values)).hexdigest(),
    }
    conv = [scalar(et, v) for v in values]
    if len(values) <= SUMMARY_OVER:
        entry["value"] = conv
    else:
        entry["head"] = conv[:HEAD]
        entry["tail"] = conv[-HEAD:]
    return entry


def main():
    path = sys.argv[1]
    r = GGUFReader(path)
    metadata = [field_entry(f) for name, f in r.fields.items() if not name.startswith("GGUF.")]
    tensors = []
    for t in r.tensors:
        raw = np.asarray(r.data[t.data_offset:t.data_offset + t.n_bytes])
        tensors.append({
            "name": t.name, "type": t.tensor_type.name, "shape": [int(d) for d in t.shape],
            "n_elements": int(t.n_elements), "n_bytes": int(t.n_bytes),
            "offset": int(t.data_offset - r.data_offset), "file_offset": int(t.data_offset),
            "sha256": hashlib.sha256(raw.tobytes()).hexdigest(),
        })
    doc = {
        "file": os.path.basename(path),
        "file_size": os.path.getsize(path),
        "version": int(r.fields["GGUF.version"].contents()),
        "alignment": int(r.alignment),
        "data_offset": int(r.data_offset),
        "n_kv": len(metadata),
        "n_tensors": len(tensors),
        "metadata": metadata,
        "tensors": tensors,
    }
    json.dump(doc, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
