//! Bit-for-bit comparison of every type's dequantization with committed reference vectors.
//!
//! The vectors (crates/quant/tests/data/vectors, written by scripts/make_quant_vectors.py)
//! hold random but fixed blocks per type, edge cases (zero and negative-zero scales, f16
//! subnormals, infinities and NaNs in every scale field, all-zero and all-one codes) and, for
//! the IQ types, blocks whose grid indices run through every grid row. Expected values come
//! from the `gguf` Python package's numpy dequantization, or for the types it cannot decode
//! (Q8_1, Q8_K, Q1_0, F64, I8..I64) from an independent numpy rendering of the format, as
//! the manifest records per type.
//!
//! Tolerance: none. Every value must have the same f32 bits, NaNs included (payload and
//! sign): the decoders repeat the reference's f32 operations in the same order, so no value
//! is allowed to differ by even one ulp.

mod common;

use ferrite_gguf::types::TYPES;
use ferrite_gguf::GgmlType;
use ferrite_quant::{dequantize, type_traits};

struct Vectors {
    blocks: Vec<u8>,
    expected: Vec<u32>,
    n_blocks: usize,
}

fn load(ty: GgmlType, manifest: &serde_json::Value) -> Vectors {
    let entry = &manifest["types"][ty.name()];
    assert!(entry.is_object(), "{ty}: no vectors in the manifest");
    let bytes = std::fs::read(
        common::data_dir()
            .join("vectors")
            .join(entry["file"].as_str().unwrap()),
    )
    .unwrap();
    assert_eq!(&bytes[..4], b"FQV1");
    let id = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
    let n_blocks = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    assert_eq!(id, ty.id(), "{ty}: vector file names type id {id}");
    assert_eq!(n_blocks as u64, entry["n_blocks"].as_u64().unwrap());
    let split = 12 + n_blocks * ty.type_size() as usize;
    let expected: Vec<u32> = bytes[split..]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(
        expected.len(),
        n_blocks * ty.block_size() as usize,
        "{ty}: truncated vector file"
    );
    Vectors {
        blocks: bytes[12..split].to_vec(),
        expected,
        n_blocks,
    }
}

fn mismatches(ty: GgmlType, got: &[f32], want: &[u32]) -> Vec<String> {
    let bs = ty.block_size() as usize;
    got.iter()
        .zip(want)
        .enumerate()
        // A NaN that arithmetic makes (inf·0, inf − inf from hostile scales) has a sign and
        // payload the CPU picks: x86 (where the vectors were made) gives 0xffc00000, Arm
        // 0x7fc00000. Any NaN matches a NaN; every other value must match to the bit.
        .filter(|(_, (g, w))| g.to_bits() != **w && !(g.is_nan() && f32::from_bits(**w).is_nan()))
        .map(|(i, (g, w))| {
            format!(
                "{ty} block {} element {}: got {:#010x} ({g}), want {w:#010x} ({})",
                i / bs,
                i % bs,
                g.to_bits(),
                f32::from_bits(*w)
            )
        })
        .collect()
}

#[test]
fn every_type_matches_its_reference_bit_for_bit() {
    let manifest = common::read_json("vectors/manifest.json");
    let mut failures = Vec::new();
    let mut checked = Vec::new();
    for info in TYPES {
        let ty = info.ty;
        let v = load(ty, &manifest);
        // Whole buffer at once through the public entry point...
        let mut out = vec![0f32; v.expected.len()];
        dequantize(ty, &v.blocks, &mut out).unwrap();
        failures.extend(mismatches(ty, &out, &v.expected));
        // ...and block by block through the table, which must agree.
        let t = type_traits(ty);
        let mut one = vec![0f32; t.block_size];
        for (k, b) in v.blocks.chunks_exact(t.type_size).enumerate() {
            (t.dequantize_row)(b, &mut one);
            let want = &v.expected[k * t.block_size..(k + 1) * t.block_size];
            failures.extend(
                mismatches(ty, &one, want)
                    .into_iter()
                    .map(|m| format!("alone: {m}")),
            );
        }
        checked.push(format!("{ty}:{}", v.n_blocks));
    }
    let mut per_type = std::collections::BTreeMap::<&str, usize>::new();
    for f in &failures {
        let name = f
            .trim_start_matches("alone: ")
            .split(' ')
            .next()
            .unwrap_or("");
        *per_type.entry(name).or_default() += 1;
    }
    assert!(
        failures.is_empty(),
        "{} mismatches ({per_type:?}), first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(40)].join("\n")
    );
    eprintln!("checked {}", checked.join(" "));
}

#[test]
fn f16_and_bf16_match_for_all_65536_patterns() {
    let manifest = common::read_json("vectors/manifest.json");
    let src: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
    for ty in [GgmlType::F16, GgmlType::BF16] {
        let mut out = vec![0f32; 65536];
        dequantize(ty, &src, &mut out).unwrap();
        let want = manifest["sweeps"][ty.name()]["sha256"].as_str().unwrap();
        assert_eq!(common::sha256_f32(&out), want, "{ty} sweep");
    }
}
