//! Whole-model checks: every tensor ferrite dequantizes must hash to the same sha256 (of its
//! little-endian f32 bytes) as the `gguf` Python package's dequantization of the same file
//! (for types the package lacks, Q1_0 and Q2_0, the script's independent numpy decoder; the
//! JSON names the reference per type). The hashes are committed (tests/data/*.json, written
//! by scripts/make_quant_vectors.py), so equality here means every value of every tensor has
//! the same bits as the reference.
//!
//! - the tiny llama.cpp-quantized models in `<reference>/tiny` (one per type): all tensors;
//! - the two real models: the two smallest tensors of every type they contain, and every
//!   tensor in the `#[ignore]`d `real_models_all_tensors` (about a minute in release mode);
//! - Q2_0's layout against llama.cpp's own quantizer: its tiny file must decode to within
//!   half a quantization step of the f32 model it was made from.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use ferrite_gguf::{GgmlType, GgufFile, TensorInfo};
use ferrite_quant::formats::f16_to_f32;
use sha2::{Digest, Sha256};

/// sha256 of a tensor's dequantized little-endian f32 bytes, decoded a slice of blocks at a
/// time so that even the largest embedding never needs its full f32 copy in memory.
fn tensor_sha256(file: &GgufFile, t: &TensorInfo) -> String {
    let data = file.tensor_data(t);
    let (bs, ts) = (t.ty.block_size() as usize, t.ty.type_size() as usize);
    let blocks_per_step = (1 << 16) / bs + 1;
    let mut out = vec![0f32; blocks_per_step * bs];
    let mut bytes = Vec::with_capacity(out.len() * 4);
    let mut h = Sha256::new();
    for chunk in data.chunks(blocks_per_step * ts) {
        let n = chunk.len() / ts * bs;
        ferrite_quant::dequantize(t.ty, chunk, &mut out[..n])
            .unwrap_or_else(|e| panic!("{}: {e}", t.name));
        bytes.clear();
        for v in &out[..n] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        h.update(&bytes);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares the named tensors of `path` with `expected` (the JSON entry of that file);
/// returns one line per mismatch.
fn check(
    path: &Path,
    expected: &serde_json::Value,
    only: Option<&BTreeSet<String>>,
) -> Vec<String> {
    let file = GgufFile::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let want = expected["tensors"].as_object().expect("tensors");
    let have: BTreeSet<&str> = file.tensors().iter().map(|t| t.name.as_str()).collect();
    let listed: BTreeSet<&str> = want.keys().map(String::as_str).collect();
    assert_eq!(
        have,
        listed,
        "{}: tensor names differ from the reference",
        path.display()
    );
    let mut bad = Vec::new();
    for t in file.tensors() {
        if only.is_some_and(|o| !o.contains(&t.name)) {
            continue;
        }
        let w = &want[&t.name];
        assert_eq!(w["type"].as_str(), Some(t.ty.name()), "{}: type", t.name);
        assert_eq!(
            w["n_elements"].as_u64(),
            Some(t.n_elements),
            "{}: size",
            t.name
        );
        let got = tensor_sha256(&file, t);
        if got != w["sha256"].as_str().unwrap() {
            let first = ferrite_quant::dequantize_tensor(&file, t).unwrap();
            let first: Vec<String> = first
                .iter()
                .take(4)
                .map(|v| format!("{:08x}", v.to_bits()))
                .collect();
            bad.push(format!(
                "{} {} ({}): sha256 differs; first bits {first:?}, reference {}",
                path.display(),
                t.name,
                t.ty,
                w["first_bits"]
            ));
        }
    }
    bad
}

#[test]
fn tiny_models_match_gguf_py_for_every_tensor() {
    let json = common::read_json("tiny_models.json");
    let files = json["files"].as_object().unwrap();
    let dir = ferrite_testdata::reference_dir().join("tiny");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".gguf"))
        .collect();
    on_disk.sort();
    assert!(
        on_disk.len() >= 20,
        "only {} tiny models in {}",
        on_disk.len(),
        dir.display()
    );
    let mut bad = Vec::new();
    let mut types = BTreeSet::new();
    for name in &on_disk {
        let path = dir.join(name);
        let entry = files
            .get(name)
            .unwrap_or_else(|| panic!("{name}: no reference hashes; rerun the script"));
        for t in entry["tensors"].as_object().unwrap().values() {
            types.insert(t["type"].as_str().unwrap().to_string());
        }
        bad.extend(check(&path, entry, None));
    }
    assert_eq!(
        on_disk.len(),
        files.len(),
        "hashes list files that are gone: {:?}",
        files.keys()
    );
    assert!(
        bad.is_empty(),
        "{} tensors differ:\n{}",
        bad.len(),
        bad.join("\n")
    );
    eprintln!("tiny models: {} files, types {types:?}", on_disk.len());
}

/// The Q2_0 decoders here (Rust and the script's numpy one) both follow one description of
/// the format, so this checks that description against llama.cpp itself:
/// tiny-llama-Q2_0.gguf is `llama-quantize --pure` of tiny-llama-f32.gguf, which rounds each
/// weight to the nearest step of its block, so every decoded weight lies within |d| / 2 of
/// its source (plus the f16 rounding of d: measured worst 0.5002 |d|). A wrong element order,
/// code offset or sign puts weights a whole step or more away.
#[test]
fn tiny_q2_0_decodes_within_half_a_step_of_its_f32_source() {
    let dir = ferrite_testdata::reference_dir().join("tiny");
    let quant = GgufFile::open(dir.join("tiny-llama-Q2_0.gguf")).unwrap();
    let source = GgufFile::open(dir.join("tiny-llama-f32.gguf")).unwrap();
    let mut tensors = 0;
    let mut worst = 0f32;
    for t in quant.tensors().iter().filter(|t| t.ty == GgmlType::Q2_0) {
        let s = source
            .tensor(&t.name)
            .unwrap_or_else(|| panic!("{}: not in the f32 model", t.name));
        assert_eq!(s.ty, GgmlType::F32, "{}", t.name);
        let x = ferrite_quant::dequantize_tensor(&source, s).unwrap();
        let v = ferrite_quant::dequantize_tensor(&quant, t).unwrap();
        assert_eq!(x.len(), v.len(), "{}: element count", t.name);
        let blocks = quant.tensor_data(t).chunks_exact(18);
        for (k, (b, (x, v))) in blocks.zip(x.chunks(64).zip(v.chunks(64))).enumerate() {
            let d = f16_to_f32(u16::from_le_bytes([b[0], b[1]])).abs();
            for (j, (x, v)) in x.iter().zip(v).enumerate() {
                let steps = (v - x).abs() / d;
                assert!(
                    steps <= 0.501,
                    "{} block {k} element {j}: decoded {v}, source {x}, d {d} ({steps} steps)",
                    t.name
                );
                worst = worst.max(steps);
            }
        }
        tensors += 1;
    }
    assert_eq!(tensors, 16, "Q2_0 tensors in the tiny file");
    eprintln!("Q2_0: {tensors} tensors, worst |decoded - source| = {worst} |d|");
}

fn real_model(key: &str, path: &Path, sample: bool) {
    let json = common::read_json("real_models.json");
    let entry = &json["models"][key];
    assert!(entry.is_object(), "{key}: no reference hashes");
    let only = sample.then(|| {
        // The two smallest tensors of each type.
        let mut by_type = std::collections::BTreeMap::<&str, Vec<(u64, String)>>::new();
        for (name, t) in entry["tensors"].as_object().unwrap() {
            by_type
                .entry(t["type"].as_str().unwrap())
                .or_default()
                .push((t["n_elements"].as_u64().unwrap(), name.clone()));
        }
        by_type
            .into_values()
            .flat_map(|mut v| {
                v.sort();
                v.into_iter().take(2).map(|(_, n)| n)
            })
            .collect::<BTreeSet<String>>()
    });
    let bad = check(path, entry, only.as_ref());
    assert!(
        bad.is_empty(),
        "{} tensors differ:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn real_models_sample_of_every_type() {
    real_model("smollm2", &ferrite_testdata::smollm2(), true);
    real_model("gemma3", &ferrite_testdata::gemma3(), true);
}

#[test]
#[ignore = "slow: dequantizes all ~600M weights of both real models (run with --ignored)"]
fn real_models_all_tensors() {
    real_model("smollm2", &ferrite_testdata::smollm2(), false);
    real_model("gemma3", &ferrite_testdata::gemma3(), false);
}
