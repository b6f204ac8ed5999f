//! The k-quants: 256-element super-blocks split into sub-blocks of 16 or 32, each with its own
//! small integer scale (and for Q2_K/Q4_K/Q5_K a minimum), the integer scales themselves scaled
//! by one f16 per super-block.
//!
//! Quantization is two-level: first the best float scale (and minimum) of every sub-block is
//! searched for, then those are quantized to their 4/6/8-bit codes, and finally every element is
//! re-coded against the scale a decoder will actually see (f16 super-block scale × integer
//! sub-block scale), so rounding of the scales does not bias the codes.
//!
//! Without an importance vector the per-element weights of the searches are heuristics that
//! favour large values; with one, they are `imatrix[col] · sqrt(σ² + x²)` (σ² the super-block's
//! mean square), and the sub-block scales are quantized minimising the importance-weighted
//! error too.

use super::search::{asymmetric, positive, symmetric, symmetric_refined};
use super::{f16_round, nearest_int, put_f16};

const QK_K: usize = 256;

fn mean_square(x: &[f32]) -> f32 {
    x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32
}

/// Importance-derived weights of one super-block: `qw · sqrt(σ² + x²)`.
fn imatrix_weights(x: &[f32], qw: &[f32], sigma2: f32) -> [f32; QK_K] {
    let mut w = [0.0f32; QK_K];
    for i in 0..QK_K {
        w[i] = qw[i] * (sigma2 + x[i] * x[i]).sqrt();
    }
    w
}

/// The 12-byte packing of eight 6-bit scales and eight 6-bit minimums (Q4_K, Q5_K).
pub(crate) fn pack_scales_6bit(sc: &[u8; 8], m: &[u8; 8], out: &mut [u8]) {
    out[..12].fill(0);
    for j in 0..8 {
        if j < 4 {
            out[j] = sc[j];
            out[j + 4] = m[j];
        } else {
            out[j + 4] = (sc[j] & 0x0f) | ((m[j] & 0x0f) << 4);
            out[j - 4] |= (sc[j] >> 4) << 6;
            out[j] |= (m[j] >> 4) << 6;
        }
    }
}

/// Per-sub-block float scales and minimums of a Q4_K/Q5_K super-block, quantized to 6 bits.
/// Returns (d, dmin, scale codes, min codes).
fn scales_32(x: &[f32], qw: Option<&[f32]>, nmax: i32) -> (f32, f32, [u8; 8], [u8; 8]) {
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let mut codes = [0u8; 32];
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    match qw {
        None => {
            for j in 0..8 {
                let xs = &x[32 * j..32 * j + 32];
                let av = mean_square(xs).sqrt();
                let mut w = [0.0f32; 32];
                for (wi, v) in w.iter_mut().zip(xs) {
                    *wi = av + v.abs();
                }
                let (rmin, rdelta, nstep) = if nmax == 15 {
                    (-1.0, 0.1, 20)
                } else {
                    (-0.5, 0.1, 15)
                };
                (scales[j], mins[j]) =
                    asymmetric(xs, &w, nmax, &mut codes, rmin, rdelta, nstep, false);
            }
            let max_scale = scales.iter().copied().fold(0.0f32, f32::max);
            let max_min = mins.iter().copied().fold(0.0f32, f32::max);
            let inv_scale = if max_scale > 0.0 {
                63.0 / max_scale
            } else {
                0.0
            };
            let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
            for j in 0..8 {
                ls[j] = nearest_int(inv_scale * scales[j]).clamp(0, 63) as u8;
                lm[j] = nearest_int(inv_min * mins[j]).clamp(0, 63) as u8;
            }
            (max_scale / 63.0, max_min / 63.0, ls, lm)
        }
        Some(qw) => {
            let w = imatrix_weights(x, qw, 2.0 * mean_square(x));
            let mut sw = [0.0f32; 8];
            for j in 0..8 {
                let xs = &x[32 * j..32 * j + 32];
                let ws = &w[32 * j..32 * j + 32];
                sw[j] = ws.iter().sum();
                (scales[j], mins[j]) = asymmetric(xs, ws, nmax, &mut codes, -0.9, 0.05, 36, false);
            }
            let d = positive(&scales, &sw, 63, &mut ls);
            let dmin = positive(&mins, &sw, 63, &mut lm);
            (d, dmin, ls, lm)
        }
    }
}

/// Final codes `0..=nmax` of a super-block against the stored (rounded) scales.
fn codes_asym(
    x: &[f32],
    d: f32,
    dmin: f32,
    sc: &[u8],
    m: &[u8],
    sub: usize,
    nmax: i32,
) -> [u8; QK_K] {
    let mut l = [0u8; QK_K];
    for j in 0..QK_K / sub {
        let ds = d * f32::from(sc[j]);
        if ds == 0.0 {
            continue;
        }
        let dm = dmin * f32::from(m[j]);
        for i in sub * j..sub * (j + 1) {
            l[i] = nearest_int((x[i] + dm) / ds).clamp(0, nmax) as u8;
        }
    }
    l
}

/// Q4_K: d, dmin (f16), 12 bytes of 6-bit scales/mins, 128 bytes of 4-bit codes. Codes of
/// sub-blocks 2k and 2k+1 share bytes 32k..32k+32 (low and high nibble).
pub(super) fn q4_k(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let (d, dmin, ls, lm) = scales_32(x, qw, 15);
    put_f16(&mut out[0..2], d);
    put_f16(&mut out[2..4], dmin);
    pack_scales_6bit(&ls, &lm, &mut out[4..16]);
    let l = codes_asym(x, f16_round(d), f16_round(dmin), &ls, &lm, 32, 15);
    let qs = &mut out[16..144];
    for c in 0..4 {
        for i in 0..32 {
            qs[32 * c + i] = l[64 * c + i] | (l[64 * c + 32 + i] << 4);
        }
    }
}

/// Q5_K: like Q4_K plus 32 bytes holding bit 4 of every code (sub-block `j` in bit `j`).
pub(super) fn q5_k(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let (d, dmin, ls, lm) = scales_32(x, qw, 31);
    put_f16(&mut out[0..2], d);
    put_f16(&mut out[2..4], dmin);
    pack_scales_6bit(&ls, &lm, &mut out[4..16]);
    let l = codes_asym(x, f16_round(d), f16_round(dmin), &ls, &lm, 32, 31);
    let (qh, qs) = out[16..176].split_at_mut(32);
    qh.fill(0);
    for c in 0..4 {
        for i in 0..32 {
            let (a, b) = (l[64 * c + i], l[64 * c + 32 + i]);
            qs[32 * c + i] = (a & 0x0f) | ((b & 0x0f) << 4);
            qh[i] |= ((a >> 4) << (2 * c)) | ((b >> 4) << (2 * c + 1));
        }
    }
}

/// Q2_K: 16 bytes of (4-bit scale | 4-bit min << 4), 64 bytes of 2-bit codes, d, dmin.
pub(super) fn q2_k(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let mut scales = [0.0f32; 16];
    let mut mins = [0.0f32; 16];
    let mut codes = [0u8; 16];
    let mut ls = [0u8; 16];
    let mut lm = [0u8; 16];
    let (d, dmin);
    match qw {
        None => {
            for j in 0..16 {
                let xs = &x[16 * j..16 * j + 16];
                let mut w = [0.0f32; 16];
                for (wi, v) in w.iter_mut().zip(xs) {
                    *wi = v.abs();
                }
                (scales[j], mins[j]) = asymmetric(xs, &w, 3, &mut codes, -0.5, 0.1, 15, true);
            }
            let max_scale = scales.iter().copied().fold(0.0f32, f32::max);
            let max_min = mins.iter().copied().fold(0.0f32, f32::max);
            let inv_scale = if max_scale > 0.0 {
                15.0 / max_scale
            } else {
                0.0
            };
            let inv_min = if max_min > 0.0 { 15.0 / max_min } else { 0.0 };
            for j in 0..16 {
                ls[j] = nearest_int(inv_scale * scales[j]).clamp(0, 15) as u8;
                lm[j] = nearest_int(inv_min * mins[j]).clamp(0, 15) as u8;
            }
            d = max_scale / 15.0;
            dmin = max_min / 15.0;
        }
        Some(qw) => {
            let w = imatrix_weights(x, qw, mean_square(x));
            let mut sw = [0.0f32; 16];
            for j in 0..16 {
                let xs = &x[16 * j..16 * j + 16];
                let ws = &w[16 * j..16 * j + 16];
                sw[j] = ws.iter().sum();
                (scales[j], mins[j]) = asymmetric(xs, ws, 3, &mut codes, -0.9, 0.05, 36, false);
            }
            d = positive(&scales, &sw, 15, &mut ls);
            dmin = positive(&mins, &sw, 15, &mut lm);
        }
    }
    for j in 0..16 {
        out[j] = ls[j] | (lm[j] << 4);
    }
    put_f16(&mut out[80..82], d);
    put_f16(&mut out[82..84], dmin);
    let l = codes_asym(x, f16_round(d), f16_round(dmin), &ls, &lm, 16, 3);
    let qs = &mut out[16..80];
    for h in 0..2 {
        for i in 0..32 {
            let b = 128 * h + i;
            qs[32 * h + i] = l[b] | (l[b + 32] << 2) | (l[b + 64] << 4) | (l[b + 96] << 6);
        }
    }
}

/// Q3_K: 32 bytes of code bit 2 (high mask), 64 bytes of 2-bit code low parts, 12 bytes of
/// 6-bit signed (offset 32) sub-block scales, f16 d. Codes are `q + 4` for `q in -4..4`.
pub(super) fn q3_k(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let mut scales = [0.0f32; 16];
    let mut codes = [0i8; 16];
    let mut lsc = [0i8; 16];
    let d = match qw {
        None => {
            for j in 0..16 {
                scales[j] = symmetric_refined(&x[16 * j..16 * j + 16], 4, &mut codes);
            }
            let (mut amax, mut max_scale) = (0.0f32, 0.0f32);
            for &s in &scales {
                if s.abs() > amax {
                    amax = s.abs();
                    max_scale = s;
                }
            }
            if amax > 0.0 {
                let iscale = -32.0 / max_scale;
                for j in 0..16 {
                    lsc[j] = (nearest_int(iscale * scales[j]).clamp(-32, 31) + 32) as i8;
                }
                1.0 / iscale
            } else {
                lsc.fill(32);
                0.0
            }
        }
        Some(qw) => {
            let w = imatrix_weights(x, qw, 2.0 * mean_square(x));
            let mut sw = [0.0f32; 16];
            for j in 0..16 {
                let ws = &w[16 * j..16 * j + 16];
                sw[j] = ws.iter().sum();
                scales[j] = symmetric(&x[16 * j..16 * j + 16], ws, 4, &mut codes);
            }
            symmetric(&scales, &sw, 32, &mut lsc)
        }
    };
    let sc = &mut out[96..108];
    sc.fill(0);
    for j in 0..16 {
        let l = lsc[j] as u8;
        if j < 8 {
            sc[j] = l & 0x0f;
        } else {
            sc[j - 8] |= (l & 0x0f) << 4;
        }
        sc[8 + j % 4] |= (l >> 4) << (2 * (j / 4));
    }
    put_f16(&mut out[108..110], d);
    let dr = f16_round(d);
    let mut l = [4u8; QK_K];
    for (j, &sc) in lsc.iter().enumerate() {
        let ds = dr * (i32::from(sc) - 32) as f32;
        if ds == 0.0 {
            continue;
        }
        for i in 16 * j..16 * j + 16 {
            l[i] = (nearest_int(x[i] / ds).clamp(-4, 3) + 4) as u8;
        }
    }
    let (hmask, rest) = out.split_at_mut(32);
    hmask.fill(0);
    for (k, &v) in l.iter().enumerate() {
        if v > 3 {
            hmask[k % 32] |= 1 << (k / 32);
        }
    }
    let qs = &mut rest[..64];
    for h in 0..2 {
        for i in 0..32 {
            let b = 128 * h + i;
            let lo = |k: usize| l[k] & 3;
            qs[32 * h + i] = lo(b) | (lo(b + 32) << 2) | (lo(b + 64) << 4) | (lo(b + 96) << 6);
        }
    }
}

/// Q6_K: 128 bytes of code low nibbles, 64 bytes of code high 2-bit parts, 16 signed 8-bit
/// sub-block scales, f16 d. Codes are `q + 32` for `q in -32..32`.
pub(super) fn q6_k(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let mut scales = [0.0f32; 16];
    let mut codes = [0i8; 16];
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        let mut w = [0.0f32; 16];
        match qw {
            Some(qw) => w.copy_from_slice(&qw[16 * j..16 * j + 16]),
            None => {
                for (wi, v) in w.iter_mut().zip(xs) {
                    *wi = v * v;
                }
            }
        }
        scales[j] = symmetric(xs, &w, 32, &mut codes);
    }
    let (mut amax, mut max_scale) = (0.0f32, 0.0f32);
    for &s in &scales {
        if s.abs() > amax {
            amax = s.abs();
            max_scale = s;
        }
    }
    let mut lsc = [0i8; 16];
    let d = if amax > 0.0 {
        let iscale = -128.0 / max_scale;
        for j in 0..16 {
            lsc[j] = nearest_int(iscale * scales[j]).clamp(-128, 127) as i8;
        }
        1.0 / iscale
    } else {
        0.0
    };
    for j in 0..16 {
        out[192 + j] = lsc[j] as u8;
    }
    put_f16(&mut out[208..210], d);
    let dr = f16_round(d);
    let mut l = [32u8; QK_K];
    for (j, &sc) in lsc.iter().enumerate() {
        let ds = dr * f32::from(sc);
        if ds == 0.0 {
            continue;
        }
        for i in 16 * j..16 * j + 16 {
            l[i] = (nearest_int(x[i] / ds).clamp(-32, 31) + 32) as u8;
        }
    }
    let (ql, rest) = out.split_at_mut(128);
    let qh = &mut rest[..64];
    for h in 0..2 {
        for i in 0..32 {
            let b = 128 * h + i;
            let (q1, q2, q3, q4) = (l[b], l[b + 32], l[b + 64], l[b + 96]);
            ql[64 * h + i] = (q1 & 0x0f) | ((q3 & 0x0f) << 4);
            ql[64 * h + 32 + i] = (q2 & 0x0f) | ((q4 & 0x0f) << 4);
            qh[32 * h + i] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
}

/// Q8_K (the activation format of k-quant dot products): f32 d, 256 i8 codes, and the 16
/// sums of each run of 16 codes as i16.
pub(super) fn q8_k(x: &[f32], _qw: Option<&[f32]>, out: &mut [u8]) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 || !amax.is_finite() {
        out.fill(0);
        return;
    }
    let iscale = -127.0 / max;
    out[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    let mut sums = [0i16; 16];
    for (i, &v) in x.iter().enumerate() {
        let q = nearest_int(iscale * v).clamp(-128, 127) as i8;
        out[4 + i] = q as u8;
        sums[i / 16] += i16::from(q);
    }
    for (j, s) in sums.iter().enumerate() {
        out[260 + 2 * j..262 + 2 * j].copy_from_slice(&s.to_le_bytes());
    }
}
