//! Rotary position embeddings, normal (adjacent pairs) and NeoX (halves) styles, with frequency
//! base/scale, partial rotation (`n_rot < head_dim`), per-pair frequency factors (Llama 3.1
//! `rope_freqs`) and YaRN, following ggml's `rope_yarn` definition.

use crate::models::config::{Rope, RopeStyle};

/// Rotates `x` (`[n_tok, n_heads, head_dim]`) in place; token `t` is at position `pos[t]`.
pub fn rope(
    x: &mut [f32],
    n_heads: usize,
    head_dim: usize,
    pos: &[usize],
    r: &Rope,
    freq_factors: Option<&[f32]>,
) {
    let half = r.n_rot / 2;
    let mut cs = vec![(0f32, 0f32); half];
    let theta_scale = r.base.powf(-2.0 / r.n_rot as f32);
    for (t, tok) in x.chunks_exact_mut(n_heads * head_dim).enumerate() {
        // f32 with the frequency advanced by repeated multiplication, as ggml does: quantized
        // models amplify ulp-level differences (an activation crossing a rounding boundary),
        // so matching the arithmetic keeps ferrite bit-close to llama.cpp.
        let mut theta_p = pos[t] as f32;
        for (i, c) in cs.iter_mut().enumerate() {
            let theta_extrap = match freq_factors {
                Some(ff) => theta_p / ff[i],
                None => theta_p,
            };
            let theta_interp = r.freq_scale * theta_extrap;
            let mut theta = theta_interp;
            let mut mscale = r.attn_factor;
            if let Some(y) = r.yarn.filter(|y| y.ext_factor != 0.0) {
                let [lo, hi] = y.corr_dims;
                let v = (i as f32 - lo) / (hi - lo).max(0.001);
                let ramp = (1.0 - v.clamp(0.0, 1.0)) * y.ext_factor;
                theta = theta_interp * (1.0 - ramp) + theta_extrap * ramp;
                mscale *= 1.0 + 0.1 * (1.0 / r.freq_scale).ln();
            }
            *c = (theta.cos() * mscale, theta.sin() * mscale);
            theta_p *= theta_scale;
        }
        for head in tok.chunks_exact_mut(head_dim) {
            match r.style {
                RopeStyle::Normal => {
                    for (pair, &(c, s)) in head[..r.n_rot].chunks_exact_mut(2).zip(&cs) {
                        let (a, b) = (pair[0], pair[1]);
                        pair[0] = a * c - b * s;
                        pair[1] = a * s + b * c;
                    }
                }
                RopeStyle::Neox => {
                    let (lo, hi) = head[..r.n_rot].split_at_mut(half);
                    for ((a, b), &(c, s)) in lo.iter_mut().zip(hi.iter_mut()).zip(&cs) {
                        let (x0, x1) = (*a, *b);
                        *a = x0 * c - x1 * s;
                        *b = x0 * s + x1 * c;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(style: RopeStyle) -> Rope {
        Rope {
            style,
            n_rot: 4,
            base: 10000.0,
            freq_scale: 1.0,
            attn_factor: 1.0,
            yarn: None,
        }
    }

    #[test]
    fn position_zero_is_identity_and_norm_is_kept() {
        for style in [RopeStyle::Normal, RopeStyle::Neox] {
            let orig = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
            let mut x = orig.clone();
            rope(&mut x, 1, 6, &[0], &plain(style), None);
            assert_eq!(x, orig);
            rope(&mut x, 1, 6, &[7], &plain(style), None);
            let n0: f32 = orig[..4].iter().map(|v| v * v).sum();
            let n1: f32 = x[..4].iter().map(|v| v * v).sum();
            assert!((n0 - n1).abs() < 1e-4);
            assert_eq!(&x[4..], &orig[4..], "dims past n_rot are untouched");
        }
    }

    #[test]
    fn normal_rotates_adjacent_pairs_by_pos_times_theta() {
        let mut x = vec![1.0, 0.0, 1.0, 0.0];
        rope(&mut x, 1, 4, &[3], &plain(RopeStyle::Normal), None);
        // pair 0: theta = 3; pair 1: theta = 3 * 10000^(-1/2) = 0.03
        assert!((x[0] - 3f32.cos()).abs() < 1e-6 && (x[1] - 3f32.sin()).abs() < 1e-6);
        assert!((x[2] - 0.03f32.cos()).abs() < 1e-6 && (x[3] - 0.03f32.sin()).abs() < 1e-6);
    }
}
