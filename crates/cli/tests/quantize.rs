//! `ferrite quantize` end to end.
//!
//! - On the tiny llama model's F32 file, `--pure` output equals llama-quantize's files in
//!   `../shared/reference/tiny` byte for byte in every tensor (Q2_K, Q3_K_S, Q4_K_S, Q5_K_S,
//!   Q6_K, Q4_0, Q8_0), with the same `general.file_type`.
//! - SmolLM2 (Q4_1, requantized with `--allow-requantize`) to Q8_0, Q4_0, Q4_K_M and IQ4_XS:
//!   the output opens with ferrite_gguf, has llama.cpp's mixture choices and fallbacks, and
//!   every tensor dequantizes back within its type's expected error of the original
//!   (dequantized to F32). The default test uses the embeddings and the first two blocks (the
//!   model's metadata unchanged); the ignored `whole_smollm2` test runs the whole model.
//! - An imatrix (llama-imatrix's GGUF for the tiny model) lowers the importance-weighted error.
//! - Refusals: quantized input without `--allow-requantize`, unknown types.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ferrite_gguf::writer::write;
use ferrite_gguf::{GgmlType, GgufFile, TensorSpec, Value};

fn ferrite(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(args)
        .output()
        .expect("run ferrite")
}

fn run_ok(args: &[&str]) -> String {
    let out = ferrite(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "ferrite {args:?} failed:\n{stderr}");
    stderr
}

fn tmp(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name)
}

fn tiny(name: &str) -> PathBuf {
    ferrite_testdata::reference_dir().join("tiny").join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn file_type(f: &GgufFile) -> u64 {
    f.metadata().get_u64("general.file_type").unwrap().unwrap()
}

#[test]
fn pure_output_equals_llama_quantize_on_tiny_llama() {
    for (target, file) in [
        ("Q2_K", "Q2_K"),
        ("Q3_K_S", "Q3_K_S"),
        ("Q4_K_S", "Q4_K_S"),
        ("Q5_K_S", "Q5_K_S"),
        ("Q6_K", "Q6_K"),
        ("Q4_0", "Q4_0"),
        ("Q8_0", "Q8_0"),
    ] {
        let out = tmp(&format!("tiny-{target}.gguf"));
        let src = tiny("tiny-llama-f32.gguf");
        run_ok(&["quantize", "-q", "--pure", s(&src), s(&out), target]);
        let ours = GgufFile::open(&out).unwrap();
        let theirs = GgufFile::open(tiny(&format!("tiny-llama-{file}.gguf"))).unwrap();
        assert_eq!(
            file_type(&ours),
            file_type(&theirs),
            "{target}: general.file_type"
        );
        assert_eq!(ours.tensors().len(), theirs.tensors().len());
        for t in theirs.tensors() {
            let o = ours.tensor(&t.name).unwrap();
            assert_eq!((o.ty, &o.dims), (t.ty, &t.dims), "{target} {}", t.name);
            assert!(
                ours.tensor_data(o) == theirs.tensor_data(t),
                "{target} {}: bytes differ from llama-quantize's",
                t.name
            );
        }
    }
}

/// Largest acceptable RMSE of a re-quantized tensor relative to its RMS, per output type:
/// about the bits-per-weight figure for Gaussian-like weights (a b-bit code with one scale per
/// block of 32 has a relative RMSE near 2^(1-b)), with margin for heavy tails.
fn rel_bound(ty: GgmlType) -> f64 {
    match ty {
        GgmlType::F32 => 0.0,
        GgmlType::F16 => 1e-3,
        GgmlType::Q8_0 => 0.01,
        GgmlType::Q6_K => 0.03,
        GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q5_K => 0.06,
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4_K | GgmlType::IQ4_NL | GgmlType::IQ4_XS => {
            0.12
        }
        t => panic!("no bound for {t}"),
    }
}

fn dequant(f: &GgufFile, name: &str) -> Vec<f32> {
    ferrite_quant::dequantize_tensor(f, f.tensor(name).unwrap()).unwrap()
}

/// Opens `out`, checks every tensor against `src` and returns (name, type, relative RMSE).
fn check_round_trip(src: &GgufFile, out: &Path, ftype: u64) -> Vec<(String, GgmlType, f64)> {
    let q = GgufFile::open(out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    assert_eq!(file_type(&q), ftype);
    assert_eq!(q.tensors().len(), src.tensors().len());
    let mut report = Vec::new();
    for t in src.tensors() {
        let o = q.tensor(&t.name).unwrap();
        assert_eq!(o.dims, t.dims, "{}", t.name);
        if t.dims.len() == 1 {
            assert_eq!(o.ty, t.ty, "{}: 1-D tensors are copied", t.name);
            assert!(q.tensor_data(o) == src.tensor_data(t), "{}", t.name);
            continue;
        }
        let (x, y) = (dequant(src, &t.name), dequant(&q, &t.name));
        let (mut se, mut ss) = (0f64, 0f64);
        for (a, b) in x.iter().zip(&y) {
            se += (f64::from(*a) - f64::from(*b)).powi(2);
            ss += f64::from(*a).powi(2);
        }
        let rel = (se / ss).sqrt();
        assert!(
            rel <= rel_bound(o.ty),
            "{} as {}: relative RMSE {rel:.4} > {}",
            t.name,
            o.ty,
            rel_bound(o.ty)
        );
        report.push((t.name.clone(), o.ty, rel));
    }
    report
}

/// SmolLM2 cut to its embeddings and first two blocks, metadata unchanged (so the mixture
/// rules see the real layer count), written to a temporary file.
fn mini_smollm2() -> PathBuf {
    let path = tmp("smollm2-mini.gguf");
    let src = GgufFile::open(ferrite_testdata::smollm2()).unwrap();
    let keep: Vec<_> = src
        .tensors()
        .iter()
        .filter(|t| {
            t.name == "token_embd.weight"
                || t.name == "output_norm.weight"
                || t.name.starts_with("blk.0.")
                || t.name.starts_with("blk.1.")
        })
        .collect();
    let tensors: Vec<(TensorSpec, &[u8])> = keep
        .iter()
        .map(|t| {
            (
                TensorSpec::new(t.name.clone(), &t.dims, t.ty),
                src.tensor_data(t),
            )
        })
        .collect();
    let f = std::fs::File::create(&path).unwrap();
    write(std::io::BufWriter::new(f), src.metadata(), &tensors).unwrap();
    path
}

fn types_of(path: &Path) -> std::collections::HashMap<String, GgmlType> {
    GgufFile::open(path)
        .unwrap()
        .tensors()
        .iter()
        .map(|t| (t.name.clone(), t.ty))
        .collect()
}

fn smollm2_targets(src_path: &Path, tag: &str) {
    let src = GgufFile::open(src_path).unwrap();
    for (target, ftype) in [("Q8_0", 7), ("Q4_0", 2), ("Q4_K_M", 15), ("IQ4_XS", 30)] {
        let out = tmp(&format!("{tag}-{target}.gguf"));
        let log = run_ok(&[
            "quantize",
            "-q",
            "--allow-requantize",
            "--threads",
            "2",
            s(src_path),
            s(&out),
            target,
        ]);
        let report = check_round_trip(&src, &out, ftype);
        let worst = report.iter().fold(0f64, |a, r| a.max(r.2));
        eprintln!("{tag} {target}: worst relative RMSE {worst:.4}");
        let ty = types_of(&out);
        // SmolLM2: rows of 576 (not a multiple of 256), ffn_down rows of 1536, tied output,
        // 9 heads / 3 KV heads, 30 layers.
        let expect: &[(&str, GgmlType)] = match target {
            "Q8_0" => &[
                ("token_embd.weight", GgmlType::Q8_0),
                ("blk.0.attn_q.weight", GgmlType::Q8_0),
            ],
            // The tied embedding is the output: Q6_K, which falls back to Q8_0 for 576.
            "Q4_0" => &[
                ("token_embd.weight", GgmlType::Q8_0),
                ("blk.0.attn_q.weight", GgmlType::Q4_0),
                ("blk.1.ffn_down.weight", GgmlType::Q4_0),
            ],
            // attn_v/ffn_down get more bits (Q6_K; 576-wide → Q8_0) in the first and last
            // eighth of the layers present and every third between: layers 0-2 of 30, layer
            // 1 of 2. Other 576-wide Q4_K tensors fall back to Q5_0.
            "Q4_K_M" if tag == "whole" => &[
                ("token_embd.weight", GgmlType::Q8_0),
                ("blk.0.attn_v.weight", GgmlType::Q8_0),
                ("blk.0.ffn_down.weight", GgmlType::Q6_K),
                ("blk.3.ffn_down.weight", GgmlType::Q4_K),
                ("blk.5.ffn_down.weight", GgmlType::Q6_K),
                ("blk.0.attn_q.weight", GgmlType::Q5_0),
                ("blk.0.ffn_up.weight", GgmlType::Q5_0),
            ],
            "Q4_K_M" => &[
                ("token_embd.weight", GgmlType::Q8_0),
                ("blk.0.attn_v.weight", GgmlType::Q5_0),
                ("blk.1.attn_v.weight", GgmlType::Q8_0),
                ("blk.0.ffn_down.weight", GgmlType::Q4_K),
                ("blk.1.ffn_down.weight", GgmlType::Q6_K),
                ("blk.0.attn_q.weight", GgmlType::Q5_0),
                ("blk.0.ffn_up.weight", GgmlType::Q5_0),
            ],
            "IQ4_XS" => &[
                ("token_embd.weight", GgmlType::Q8_0),
                ("blk.0.ffn_down.weight", GgmlType::IQ4_XS),
                ("blk.0.attn_q.weight", GgmlType::IQ4_NL),
                ("blk.0.attn_v.weight", GgmlType::IQ4_NL),
            ],
            _ => unreachable!(),
        };
        for (name, want) in expect {
            assert_eq!(ty[*name], *want, "{target}: {name}");
        }
        if target == "Q4_K_M" {
            assert!(
                log.contains("with rows that are not a multiple of Q4_K's block of 256 use Q5_0: ")
                    && log
                        .lines()
                        .filter(|l| l.contains("not a multiple of"))
                        .count()
                        <= 2,
                "fallbacks are reported:\n{log}"
            );
        }
    }
}

#[test]
fn smollm2_requantized_round_trips_within_expected_error() {
    smollm2_targets(&mini_smollm2(), "mini");
}

/// The whole model (slow: about a minute per target on 2 cores). Run before releases.
#[test]
#[ignore]
fn whole_smollm2() {
    smollm2_targets(&ferrite_testdata::smollm2(), "whole");
}

#[test]
fn refuses_requantizing_without_the_flag_and_unknown_types() {
    let out = tmp("refused.gguf");
    let o = ferrite(&["quantize", s(&ferrite_testdata::smollm2()), s(&out), "Q4_0"]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("already quantized") && e.contains("--allow-requantize"),
        "{e}"
    );
    assert!(!out.exists());

    let o = ferrite(&["quantize", s(&tiny("tiny-llama-f32.gguf")), s(&out), "Q9_9"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown quantization type 'Q9_9'"));
}

/// llama-imatrix's file for the tiny model, read by `--imatrix`, must lower the error that
/// matters: squared error weighted by each column's mean squared activation.
#[test]
fn imatrix_lowers_activation_weighted_error() {
    let src_path = tiny("tiny-llama-f32.gguf");
    let imatrix_path = tiny("method/imatrix-full.gguf");
    let (plain, weighted) = (tmp("tiny-q3-plain.gguf"), tmp("tiny-q3-imatrix.gguf"));
    run_ok(&["quantize", "-q", s(&src_path), s(&plain), "Q3_K_M"]);
    run_ok(&[
        "quantize",
        "-q",
        "--imatrix",
        s(&imatrix_path),
        s(&src_path),
        s(&weighted),
        "Q3_K_M",
    ]);
    let src = GgufFile::open(&src_path).unwrap();
    let imat = GgufFile::open(&imatrix_path).unwrap();
    let (p, w) = (
        GgufFile::open(&plain).unwrap(),
        GgufFile::open(&weighted).unwrap(),
    );
    let (mut err_plain, mut err_weighted) = (0f64, 0f64);
    for t in src.tensors().iter().filter(|t| t.dims.len() == 2) {
        let Some(sums) = imat.tensor(&format!("{}.in_sum2", t.name)) else {
            continue;
        };
        let sums = ferrite_quant::dequantize_tensor(&imat, sums).unwrap();
        let x = dequant(&src, &t.name);
        let (yp, yw) = (dequant(&p, &t.name), dequant(&w, &t.name));
        let row = t.dims[0] as usize;
        for i in 0..x.len() {
            let c = f64::from(sums[i % row]);
            err_plain += c * (f64::from(x[i]) - f64::from(yp[i])).powi(2);
            err_weighted += c * (f64::from(x[i]) - f64::from(yw[i])).powi(2);
        }
    }
    eprintln!("imatrix: weighted error {err_weighted:.4e} vs {err_plain:.4e} without");
    assert!(
        err_weighted < 0.98 * err_plain,
        "{err_weighted} vs {err_plain}"
    );
    assert!(matches!(
        p.metadata().get("general.file_type"),
        Some(Value::U32(12))
    ));
}
