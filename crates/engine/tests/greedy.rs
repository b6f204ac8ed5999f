//! Real models, teacher-forced against llama.cpp's greedy paths
//! (`../shared/reference/greedy-*.json`), fed as llama-server fed them (the prompt as one
//! batch, then each generated token alone). At every generated position we take ferrite's
//! log-probability of llama.cpp's chosen token: the mean difference must stay ≤ 0.1 nats, the
//! 95th percentile ≤ 0.25, the worst ≤ 1.5, and ferrite's argmax must equal llama.cpp's
//! wherever llama.cpp's top-1/top-2 gap exceeds 1 nat. The f16-KV files (llama.cpp defaults)
//! are compared with ferrite's f16 KV cache, the f32 ones with f32.
//!
//! Why these bounds: the 8-bit activation quantization between layers turns last-bit float
//! differences into whole quantization steps, so the single worst position moves with nothing
//! but summation order. Measured on these files: mean 0.028–0.039 and p95 0.09–0.15 whichever
//! kernels run, while the worst position ranged 0.26–0.96 nats (AVX-512 vs AVX2 attention
//! sums, prompt GEMM vs row kernels) and one near-tie (llama.cpp gap 0.53) flipped. A real
//! defect (wrong RoPE, norm or quantization) moves the mean and p95 by whole nats.

use std::path::PathBuf;

use ferrite_engine::sampling::log_softmax;
use ferrite_engine::{KvType, Model, SessionOptions};

fn check(model_path: PathBuf, reference: &str, kv_type: KvType, max_cases: usize) {
    let path = ferrite_testdata::reference_dir().join(reference);
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let model = Model::load(&model_path, Default::default()).unwrap();
    let (mut worst, mut sum, mut n, mut mismatches) = (0f32, 0f64, 0usize, Vec::new());
    let mut all_d: Vec<f32> = Vec::new();
    for (ci, case) in r["results"]
        .as_array()
        .unwrap()
        .iter()
        .take(max_cases)
        .enumerate()
    {
        let ids = |k: &str| -> Vec<u32> {
            case[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        };
        let prompt = ids("prompt_ids");
        let steps = case["per_step_top5_logprobs"].as_array().unwrap();
        let mut s = model
            .session(SessionOptions {
                n_ctx: Some(prompt.len() + steps.len()),
                kv_type,
                ..Default::default()
            })
            .unwrap();
        // As llama-server made the reference: the prompt as one batch, then each of its
        // chosen tokens one at a time (so batch and single-token kernels both run).
        let mut row = s.eval(&prompt).unwrap().to_vec();
        for (i, step) in steps.iter().enumerate() {
            if i > 0 {
                let prev = steps[i - 1]["id"].as_u64().unwrap() as u32;
                row = s.eval(&[prev]).unwrap().to_vec();
            }
            let nv = row.len();
            let lp = log_softmax(&row);
            let id = step["id"].as_u64().unwrap() as usize;
            let d = (lp[id] - step["logprob"].as_f64().unwrap() as f32).abs();
            worst = worst.max(d);
            all_d.push(d);
            sum += f64::from(d);
            n += 1;
            let top = step["top"].as_array().unwrap();
            let gap = top[0]["logprob"].as_f64().unwrap() - top[1]["logprob"].as_f64().unwrap();
            let ours = (0..nv).max_by(|&a, &b| lp[a].total_cmp(&lp[b])).unwrap();
            if gap > 1.0 && ours != top[0]["id"].as_u64().unwrap() as usize {
                mismatches.push((ci, i, gap));
            }
        }
    }
    let mean = sum / n as f64;
    all_d.sort_by(f32::total_cmp);
    let p95 = all_d[all_d.len() * 95 / 100];
    eprintln!("{reference}: {n} positions, worst |Δlogprob| {worst:.4}, p95 {p95:.4}, mean {mean:.4}, argmax mismatches {mismatches:?}");
    assert!(mean <= 0.1, "{reference}: mean {mean}");
    assert!(p95 <= 0.25, "{reference}: 95th percentile {p95}");
    assert!(worst <= 1.5, "{reference}: worst {worst}");
    assert!(mismatches.is_empty(), "{reference}: {mismatches:?}");
}

// With the reference (scalar) matmul all 5 prompts of all 4 files take ~10 minutes on 2 shared
// cores, so the default tests check the first prompt of each file and the ignored ones all.

fn smollm2(max_cases: usize) {
    check(
        ferrite_testdata::smollm2(),
        "greedy-smollm2.json",
        KvType::F16,
        max_cases,
    );
    check(
        ferrite_testdata::smollm2(),
        "greedy-smollm2.f32kv-noflash.json",
        KvType::F32,
        max_cases,
    );
}

fn gemma3(max_cases: usize) {
    check(
        ferrite_testdata::gemma3(),
        "greedy-gemma3.json",
        KvType::F16,
        max_cases,
    );
    check(
        ferrite_testdata::gemma3(),
        "greedy-gemma3.f32kv-noflash.json",
        KvType::F32,
        max_cases,
    );
}

// Every reference prompt runs in the default suite (about 30 s for both models with the SIMD
// kernels; it needed an ignored test while matmul was the dequantizing reference).
#[test]
fn smollm2_teacher_forced_all_prompts() {
    smollm2(usize::MAX);
}

#[test]
fn gemma3_teacher_forced_all_prompts() {
    gemma3(usize::MAX);
}
