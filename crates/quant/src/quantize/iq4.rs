//! IQ4_NL and IQ4_XS: 4-bit codes indexing a fixed non-uniform table of 16 levels (denser near
//! zero, where trained weights concentrate), times a per-block scale.
//!
//! IQ4_NL has one f16 scale per 32 elements; IQ4_XS groups eight such blocks in a 256-element
//! super-block with an f16 scale and a 6-bit signed integer scale per 32.

use super::search::GROUP_MAX_EPS;
use super::{f16_round, nearest_int, put_f16};

/// The 16 levels (ggml's `kvalues_iq4nl`), ascending.
pub(crate) const IQ4_LEVELS: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// Nearest level for each half-unit cell `(k/2 − 128, (k+1)/2 − 128]`. Midpoints between
/// levels are multiples of 1/2, so no cell straddles one, and a value exactly on a midpoint
/// (a cell's right end) goes to the lower level.
const NEAREST: [u8; 512] = {
    let mut t = [0u8; 512];
    let mut k = 0;
    while k < 512 {
        // The cell's interior point 2v = k − 256 + 1/2, times 4 to stay in integers.
        let v4 = 2 * (k as i32 - 256) + 1;
        let mut best = 0;
        let mut i = 1;
        while i < 16 {
            let d_best = (v4 - 4 * IQ4_LEVELS[best] as i32).abs();
            let d_i = (v4 - 4 * IQ4_LEVELS[i] as i32).abs();
            if d_i < d_best {
                best = i;
            }
            i += 1;
        }
        t[k] = best as u8;
        k += 1;
    }
    t
};

/// Index of the level nearest to `v` (the lower one on a tie).
#[inline]
fn nearest_level(v: f32) -> u8 {
    let k = ((2.0 * v).ceil() + 255.0).clamp(0.0, 511.0);
    NEAREST[k as usize]
}

/// Element weights: the squares of the values without importance, otherwise
/// `qw · sqrt(σ² + x²)` with `σ²` twice the super-block's mean square.
fn weights(x: &[f32], qw: Option<&[f32]>, sigma2: f32, w: &mut [f32]) {
    match qw {
        Some(qw) => {
            for ((wi, &v), &q) in w.iter_mut().zip(x).zip(qw) {
                *wi = q * (sigma2 + v * v).sqrt();
            }
        }
        None => {
            for (wi, &v) in w.iter_mut().zip(x) {
                *wi = v * v;
            }
        }
    }
}

/// Best float scale of a 32-element block: tries inverse scales that put the extreme value
/// near either end of the table and keeps the least-squares scale of the best rounding.
fn block_scale(x: &[f32], w: &[f32]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        return 0.0;
    }
    let fit = |id: f32| -> (f32, f32) {
        let (mut sqx, mut sq2) = (0.0f32, 0.0f32);
        for (&v, &wi) in x.iter().zip(w) {
            let q = f32::from(IQ4_LEVELS[nearest_level(id * v) as usize]);
            sqx += wi * q * v;
            sq2 += wi * q * q;
        }
        (sqx, sq2)
    };
    let (mut d, mut best) = (0.0f32, 0.0f32);
    let lo = f32::from(IQ4_LEVELS[0]);
    let hi = f32::from(IQ4_LEVELS[15]);
    for end in [lo, hi] {
        for step in -7..=7 {
            let (sqx, sq2) = fit((end + step as f32) / max);
            if sq2 > 0.0 && sqx * sqx > best * sq2 {
                d = sqx / sq2;
                best = d * sqx;
            }
        }
    }
    d
}

fn codes(x: &[f32], d: f32, out_l: &mut [u8]) {
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (l, &v) in out_l.iter_mut().zip(x) {
        *l = nearest_level(id * v);
    }
}

fn pack(l: &[u8], out: &mut [u8]) {
    for j in 0..16 {
        out[j] = l[j] | (l[j + 16] << 4);
    }
}

fn mean_square(x: &[f32]) -> f32 {
    x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32
}

pub(super) fn iq4_nl(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let mut w = [0.0f32; 32];
    weights(x, qw, 2.0 * mean_square(x), &mut w);
    let d = block_scale(x, &w);
    put_f16(&mut out[0..2], d);
    let mut l = [0u8; 32];
    // Zero maps to the code nearest zero, which is what a zero scale decodes anyway.
    codes(x, f16_round(d), &mut l);
    pack(&l, &mut out[2..18]);
}

pub(super) fn iq4_xs(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let mut w = [0.0f32; 256];
    weights(x, qw, 2.0 * mean_square(x), &mut w);
    let mut scales = [0.0f32; 8];
    for j in 0..8 {
        scales[j] = block_scale(&x[32 * j..32 * j + 32], &w[32 * j..32 * j + 32]);
    }
    let (mut amax, mut max_scale) = (0.0f32, 0.0f32);
    for &s in &scales {
        if s.abs() > amax {
            amax = s.abs();
            max_scale = s;
        }
    }
    out[..8].fill(0);
    let d = -max_scale / 32.0;
    put_f16(&mut out[0..2], d);
    let dr = f16_round(d);
    let id = if dr != 0.0 { 1.0 / dr } else { 0.0 };
    let mut scales_h = 0u16;
    let mut l = [0u8; 32];
    for j in 0..8 {
        let ls = nearest_int(id * scales[j]).clamp(-32, 31);
        let code = (ls + 32) as u8;
        out[4 + j / 2] |= (code & 0x0f) << (4 * (j % 2));
        scales_h |= u16::from(code >> 4) << (2 * j);
        codes(&x[32 * j..32 * j + 32], dr * ls as f32, &mut l);
        pack(&l, &mut out[8 + 16 * j..24 + 16 * j]);
    }
    out[2..4].copy_from_slice(&scales_h.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table lookup equals a plain nearest search (lower level on ties) on a fine grid
    /// that includes every midpoint.
    #[test]
    fn nearest_level_table_matches_direct_search() {
        for k in -600..=600 {
            for v in [k as f32 / 4.0, k as f32 / 4.0 + 0.01, k as f32 / 4.0 - 0.01] {
                let mut best = 0;
                for (i, &level) in IQ4_LEVELS.iter().enumerate().skip(1) {
                    let di = (v - f32::from(level)).abs();
                    if di < (v - f32::from(IQ4_LEVELS[best])).abs() {
                        best = i;
                    }
                }
                assert_eq!(nearest_level(v), best as u8, "v = {v}");
            }
        }
    }
}
