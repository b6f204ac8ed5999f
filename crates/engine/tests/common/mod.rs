//! Shared helpers of the engine's reference tests: `.npy` reading and logit comparisons.
#![allow(dead_code)]

use std::path::Path;

use ferrite_engine::{KvType, Model, SessionOptions};

/// Reads a little-endian float32 `.npy` file: (shape, data).
pub fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&b[..6], b"\x93NUMPY", "{}: not npy", path.display());
    let (hlen, start) = if b[6] == 1 {
        (u16::from_le_bytes([b[8], b[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize,
            12,
        )
    };
    let header = std::str::from_utf8(&b[start..start + hlen]).unwrap();
    assert!(
        header.contains("'<f4'"),
        "{}: not float32: {header}",
        path.display()
    );
    assert!(header.contains("'fortran_order': False"));
    let shape_s = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape_s
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let data: Vec<f32> = b[start + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(data.len(), shape.iter().product::<usize>());
    (shape, data)
}

/// Logits for `ids`: all at once (`batched`) or one token per call.
pub fn run_logits(model: &std::sync::Arc<Model>, ids: &[u32], batched: bool) -> Vec<f32> {
    let mut s = model
        .session(SessionOptions {
            n_ctx: Some(64),
            kv_type: KvType::F32,
            n_threads: Some(2),
            ..Default::default()
        })
        .unwrap();
    if batched {
        s.eval_all(ids).unwrap()
    } else {
        let mut out = Vec::new();
        for &id in ids {
            out.extend_from_slice(s.eval(&[id]).unwrap());
        }
        out
    }
}

/// Worst figures of one comparison.
#[derive(Debug, Default, Clone, Copy)]
pub struct Diff {
    pub max_abs: f32,
    pub max_rel_l2: f32,
    /// Positions with llama.cpp top1-top2 margin > 0.1 whose argmax differs.
    pub argmax_mismatch: usize,
    /// The largest llama.cpp top1-top2 margin among those mismatches.
    pub worst_mismatch_margin: f32,
}

fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

fn margin(x: &[f32]) -> f32 {
    let mut s: Vec<f32> = x.to_vec();
    s.sort_by(|a, b| b.total_cmp(a));
    s[0] - s[1]
}

pub fn compare(ours: &[f32], reference: &[f32], n_vocab: usize) -> Diff {
    assert_eq!(ours.len(), reference.len());
    let mut d = Diff::default();
    for (o, r) in ours
        .chunks_exact(n_vocab)
        .zip(reference.chunks_exact(n_vocab))
    {
        let mut num = 0f64;
        let mut den = 0f64;
        for (&a, &b) in o.iter().zip(r) {
            d.max_abs = d.max_abs.max((a - b).abs());
            num += f64::from(a - b).powi(2);
            den += f64::from(b).powi(2);
        }
        d.max_rel_l2 = d.max_rel_l2.max((num / den).sqrt() as f32);
        if std::env::var_os("FERRITE_DEBUG_ROWS").is_some() {
            let m = o.iter().zip(r).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            eprint!("{m:.1e} ");
        }
        if margin(r) > 0.1 && argmax(o) != argmax(r) {
            d.argmax_mismatch += 1;
            d.worst_mismatch_margin = d.worst_mismatch_margin.max(margin(r));
        }
    }
    d
}

/// The criteria for a weight type: F32 max abs ≤ 1e-3; F16/BF16 ≤ 0.05; quantized
/// relative L2 per position ≤ 0.05 with the same argmax where llama.cpp's margin > 0.1.
pub fn check(ty: &str, d: &Diff) -> Result<(), String> {
    let ok = match ty {
        "F32" => d.max_abs <= 1e-3,
        "F16" | "BF16" => d.max_abs <= 0.05,
        _ => d.max_rel_l2 <= 0.05 && d.argmax_mismatch == 0,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{ty}: {d:?}"))
    }
}
