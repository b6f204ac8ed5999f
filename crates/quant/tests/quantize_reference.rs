//! Quantizers against references nobody here wrote.
//!
//! - Bit-exact: every type the `gguf` Python package (0.19.0) can quantize gives the same bytes
//!   as its quantizer on fixed rows incl. edge cases (`scripts/quant_rmse_reference.py` wrote
//!   `tests/data/quantize/`).
//! - Quality: on the tiny llama model's F32 tensors, ferrite's round-trip RMSE is at most 1.02×
//!   that of llama.cpp's own quantization of the same tensors (`../shared/reference/tiny`),
//!   for every type llama.cpp made there; on SmolLM2 tensors and random rows at most 1.02× the
//!   `gguf` package's.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ferrite_gguf::{GgmlType, GgufFile};
use ferrite_quant::dequantize;
use ferrite_quant::quantize::quantize;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/quantize")
}

fn read_f32(path: &std::path::Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn rmse(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let s: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum();
    (s / a.len() as f64).sqrt()
}

fn round_trip(ty: GgmlType, x: &[f32], imatrix: Option<&[f32]>) -> Vec<f32> {
    let mut q = vec![0u8; ty.row_bytes(x.len() as u64).unwrap() as usize];
    quantize(ty, x, imatrix, &mut q).unwrap();
    let mut y = vec![0f32; x.len()];
    dequantize(ty, &q, &mut y).unwrap_or_else(|e| panic!("dequantize {ty}: {e}"));
    y
}

fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(data_dir().join("rmse.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

const PY_TYPES: &[&str] = &[
    "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "TQ1_0", "TQ2_0", "MXFP4",
];

#[test]
fn bytes_equal_the_gguf_python_quantizer() {
    let x = read_f32(&data_dir().join("input.f32"));
    for name in PY_TYPES {
        let ty = GgmlType::from_name(name).unwrap();
        let want = std::fs::read(data_dir().join(format!("{name}.bin"))).unwrap();
        let mut got = vec![0u8; ty.row_bytes(x.len() as u64).unwrap() as usize];
        quantize(ty, &x, None, &mut got).unwrap();
        assert_eq!(got.len(), want.len(), "{name}: size");
        let ts = ty.type_size() as usize;
        let bs = ty.block_size() as usize;
        let bad: Vec<usize> = (0..got.len() / ts)
            .filter(|&b| got[b * ts..(b + 1) * ts] != want[b * ts..(b + 1) * ts])
            .collect();
        assert!(
            bad.is_empty(),
            "{name}: {} of {} blocks differ, first at block {} (elements {}..): got {:?} want {:?}",
            bad.len(),
            got.len() / ts,
            bad[0],
            bad[0] * bs,
            &got[bad[0] * ts..(bad[0] + 1) * ts],
            &want[bad[0] * ts..(bad[0] + 1) * ts]
        );
    }
}

/// `ours ≤ 1.02 × theirs`, with an absolute floor for references that are (near) exact.
fn check_ratio(what: &str, ours: f64, theirs: f64) {
    eprintln!("{what}: ferrite {ours:.6e} reference {theirs:.6e}");
    assert!(
        ours <= 1.02 * theirs + 1e-9,
        "{what}: ferrite RMSE {ours:.6e} > 1.02 × reference {theirs:.6e} (ratio {:.4})",
        ours / theirs
    );
}

#[test]
fn rmse_on_random_rows_matches_gguf_python() {
    let reference = reference();
    let x = read_f32(&data_dir().join("input.f32"));
    let x = &x[..48 * 256];
    for name in PY_TYPES {
        let ty = GgmlType::from_name(name).unwrap();
        let theirs = reference["random"][name].as_f64().unwrap();
        let ours = rmse(x, &round_trip(ty, x, None));
        check_ratio(&format!("random rows, {name}"), ours, theirs);
    }
}

fn tiny_f32() -> GgufFile {
    let path = ferrite_testdata::reference_dir().join("tiny/tiny-llama-f32.gguf");
    GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn f32_tensor(file: &GgufFile, name: &str) -> Vec<f32> {
    let t = file.tensor(name).unwrap();
    assert_eq!(t.ty, GgmlType::F32);
    file.tensor_data(t)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn rmse_on_tiny_llama_within_2_percent_of_llama_cpp() {
    let reference = reference();
    let file = tiny_f32();
    let per_type = reference["llama_cpp_tiny"].as_object().unwrap();
    let mut failures = Vec::new();
    for (name, tensors) in per_type {
        let ty = GgmlType::from_name(name).unwrap();
        let (mut sum_ours, mut sum_theirs, mut count) = (0.0, 0.0, 0.0);
        for (tensor, theirs) in tensors.as_object().unwrap() {
            let x = f32_tensor(&file, tensor);
            let ours = rmse(&x, &round_trip(ty, &x, None));
            let theirs = theirs.as_f64().unwrap();
            sum_ours += ours * ours * x.len() as f64;
            count += x.len() as f64;
            sum_theirs += theirs * theirs * x.len() as f64;
            if ours > 1.02 * theirs {
                failures.push(format!("{name} {tensor}: {ours:.6e} vs {theirs:.6e}"));
            }
        }
        eprintln!(
            "tiny llama, {name}: ferrite {:.6e} llama.cpp {:.6e} (ratio {:.4})",
            (sum_ours / count).sqrt(),
            (sum_theirs / count).sqrt(),
            (sum_ours / sum_theirs).sqrt()
        );
    }
    assert!(
        failures.is_empty(),
        "worse than 1.02× llama.cpp: {failures:#?}"
    );
}

#[test]
fn rmse_on_smollm2_tensors_matches_gguf_python() {
    let reference = reference();
    let file = GgufFile::open(ferrite_testdata::smollm2()).unwrap();
    let tensors = reference["smollm2"].as_object().unwrap();
    for (name, r) in tensors {
        let t = file.tensor(name).unwrap();
        let rows = r["rows"].as_u64().unwrap() as usize;
        let row_len = t.row_len() as usize;
        let row_bytes = t.ty.row_bytes(row_len as u64).unwrap() as usize;
        let mut x = vec![0f32; rows * row_len];
        dequantize(t.ty, &file.tensor_data(t)[..rows * row_bytes], &mut x).unwrap();
        let per_type: BTreeMap<String, f64> = r["rmse"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
            .collect();
        for (ty_name, theirs) in per_type {
            let ty = GgmlType::from_name(&ty_name).unwrap();
            let ours = rmse(&x, &round_trip(ty, &x, None));
            check_ratio(&format!("{name}, {ty_name}"), ours, theirs);
        }
    }
}

/// The k-quant searches follow ggml's reference algorithms closely enough that, without an
/// importance vector, the bytes equal llama-quantize's output (as do the simpler types') for every 2-D tensor of the tiny
/// model (made with `--pure`, no imatrix).
#[test]
fn k_quants_equal_llama_quantize_bytes_on_tiny_llama() {
    let f32_file = tiny_f32();
    for (ty, file) in [
        (GgmlType::Q2_K, "Q2_K"),
        (GgmlType::Q3_K, "Q3_K_S"),
        (GgmlType::Q4_K, "Q4_K_S"),
        (GgmlType::Q5_K, "Q5_K_S"),
        (GgmlType::Q6_K, "Q6_K"),
        (GgmlType::Q4_0, "Q4_0"),
        (GgmlType::Q4_1, "Q4_1"),
        (GgmlType::Q5_0, "Q5_0"),
        (GgmlType::Q5_1, "Q5_1"),
        (GgmlType::Q8_0, "Q8_0"),
        (GgmlType::TQ1_0, "TQ1_0"),
        (GgmlType::TQ2_0, "TQ2_0"),
        (GgmlType::MXFP4, "MXFP4"),
    ] {
        let path = ferrite_testdata::reference_dir().join(format!("tiny/tiny-llama-{file}.gguf"));
        let quantized = GgufFile::open(&path).unwrap();
        for t in quantized.tensors().iter().filter(|t| t.dims.len() == 2) {
            assert_eq!(t.ty, ty, "{file}: {}", t.name);
            let x = f32_tensor(&f32_file, &t.name);
            let mut got = vec![0u8; ty.row_bytes(x.len() as u64).unwrap() as usize];
            quantize(ty, &x, None, &mut got).unwrap();
            let want = quantized.tensor_data(t);
            let ts = ty.type_size() as usize;
            let differ = got
                .chunks_exact(ts)
                .zip(want.chunks_exact(ts))
                .filter(|(a, b)| a != b)
                .count();
            assert_eq!(
                differ, 0,
                "{ty} {}: {differ} blocks differ from llama.cpp",
                t.name
            );
        }
    }
}
