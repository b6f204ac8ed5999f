//! RMSNorm: `x / sqrt(mean(x²) + eps) * w`.

/// Normalizes one row in place and multiplies by `w`.
pub fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    debug_assert_eq!(x.len(), w.len());
    // Accumulate in f64 like ggml so long rows do not lose precision; in four interleaved
    // sums, so the additions do not wait on each other (a sequential f64 chain made the
    // norms ~4% of a prompt). Their order changes the f64 sum by ~1e-16 relative, which
    // the f32 mean does not see.
    let mut acc = [0f64; 4];
    let quads = x.chunks_exact(4);
    let tail: f64 = quads.remainder().iter().map(|&v| f64::from(v * v)).sum();
    for q in quads {
        for (a, &v) in acc.iter_mut().zip(q) {
            *a += f64::from(v * v);
        }
    }
    let ss = (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail;
    let mean = (ss / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for (v, &g) in x.iter_mut().zip(w) {
        *v = *v * scale * g;
    }
}

/// RMSNorm of every `w.len()`-wide row of `x` (per-token, or per-head for q/k norm).
pub fn rms_norm_rows(x: &mut [f32], w: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(w.len()) {
        rms_norm(row, w, eps);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_rms_after_norm() {
        let mut x = vec![1.0, -2.0, 3.0, -4.0];
        rms_norm(&mut x, &[1.0; 4], 0.0);
        let ms: f32 = x.iter().map(|v| v * v).sum::<f32>() / 4.0;
        assert!((ms - 1.0).abs() < 1e-6);
        assert!((x[0] - 1.0 / 7.5f32.sqrt()).abs() < 1e-6);
    }
}
