//! The original 32-element block formats: one f16 scale (and for the `_1` types an f16
//! minimum) per block, chosen from the block's extremes.
//!
//! Q4_0/Q5_0 put the element of largest magnitude exactly on the most negative code, so the
//! asymmetric code range (-8..7, -16..15) is used in full on that side. These are the
//! conventions of ggml's reference quantizers, which the `gguf` Python package reproduces
//! bit for bit; so does this file (tests/quantize_reference.rs checks it).

use super::put_f16;

/// The element of largest magnitude, keeping its sign (first one wins a tie, so an all-zero
/// block keeps the sign of its first zero, as numpy's `argmax` does).
fn signed_absmax(x: &[f32]) -> f32 {
    let mut amax = x[0].abs();
    let mut max = x[0];
    for &v in &x[1..] {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    max
}

fn inv(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

fn min_max(x: &[f32]) -> (f32, f32) {
    x.iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// Symmetric codes `0..=cmax` around `offset`: `q = trunc(x/d + offset + 0.5)`, clamped.
fn sym_codes(x: &[f32], nlevels: f32, cmax: u8, out_q: &mut [u8; 32]) -> f32 {
    let d = signed_absmax(x) / -nlevels;
    let id = inv(d);
    for (q, &v) in out_q.iter_mut().zip(x) {
        // The float → u8 cast truncates (saturating at 0 for negatives), as C's `(int8_t)`
        // cast does for the in-range values that reach it.
        *q = ((v * id + (nlevels + 0.5)) as u8).min(cmax);
    }
    d
}

/// Asymmetric codes from the block minimum: `q = trunc((x - min)/d + 0.5)`, clamped.
fn asym_codes(x: &[f32], cmax: u8, out_q: &mut [u8; 32]) -> (f32, f32) {
    let (min, max) = min_max(x);
    // A block of signed zeros stores +0 as its minimum (as the `gguf` package does).
    let (min, max) = (min + 0.0, max + 0.0);
    let d = (max - min) / f32::from(cmax);
    let id = inv(d);
    for (q, &v) in out_q.iter_mut().zip(x) {
        *q = (((v - min) * id + 0.5) as u8).min(cmax);
    }
    (d, min)
}

/// Low nibbles of elements 0..16, high nibbles of elements 16..32.
fn pack_nibbles(q: &[u8; 32], out: &mut [u8]) {
    for j in 0..16 {
        out[j] = (q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4);
    }
}

/// Bit 4 of every code, element `j` at bit `j`.
fn high_bits(q: &[u8; 32]) -> [u8; 4] {
    let mut qh = 0u32;
    for (j, &v) in q.iter().enumerate() {
        qh |= u32::from(v >> 4) << j;
    }
    qh.to_le_bytes()
}

pub(super) fn q4_0(x: &[f32], _qw: Option<&[f32]>, out: &mut [u8]) {
    let mut q = [0u8; 32];
    let d = sym_codes(x, 8.0, 15, &mut q);
    put_f16(&mut out[0..2], d);
    pack_nibbles(&q, &mut out[2..18]);
}

pub(super) fn q4_1(x: &[f32], _qw: Option<&[f32]>, out: &mut [u8]) {
    let mut q = [0u8; 32];
    let (d, m) = asym_codes(x, 15, &mut q);
    put_f16(&mut out[0..2], d);
    put_f16(&mut out[2..4], m);
    pack_nibbles(&q, &mut out[4..20]);
}

pub(super) fn q5_0(x: &[f32], _qw: Option<&[f32]>, out: &mut [u8]) {
    let mut q = [0u8; 32];
    let d = sym_codes(x, 16.0, 31, &mut q);
    put_f16(&mut out[0..2], d);
    out[2..6].copy_from_slice(&high_bits(&q));
    pack_nibbles(&q, &mut out[6..22]);
}

pub(super) fn q5_1(x: &[f32], _qw: Option<&[f32]>, out: &mut [u8]) {
    let mut q = [0u8; 32];
    let (d, m) = asym_codes(x, 31, &mut q);
    put_f16(&mut out[0..2], d);
    put_f16(&mut out[2..4], m);
    out[4..8].copy_from_slice(&high_bits(&q));
    pack_nibbles(&q, &mut out[8..24]);
}

/// Codes `round(x / d)` with `d = max|x| / 127`, rounding half away from zero (C `roundf`).
fn q8_codes(x: &[f32], out_q: &mut [u8]) -> (f32, i32) {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = inv(d);
    let mut sum = 0i32;
    for (q, &v) in out_q.iter_mut().zip(x) {
        let c = (v * id).round() as i8;
        sum += i32::from(c);
        *q = c as u8;
    }
    (d, sum)
}

pub(super) fn q8_0(x: &[f32], _qw: Option<&[f32]>, out: &mut [u8]) {
    let (d, _) = q8_codes(x, &mut out[2..34]);
    put_f16(&mut out[0..2], d);
}

/// Q8_1 (ggml's C layout, 36 bytes): f16 `d`, f16 `s = d * Σq`, 32 codes. The sum lets a dot
/// product with an asymmetric (`_1`) block apply its minimum once per block.
pub(super) fn q8_1(x: &[f32], _qw: Option<&[f32]>, out: &mut [u8]) {
    let (d, sum) = q8_codes(x, &mut out[4..36]);
    put_f16(&mut out[0..2], d);
    put_f16(&mut out[2..4], sum as f32 * d);
}
