//! The ggml block formats with one scale per block: the original 32-element Q4_0, Q4_1,
//! Q5_0, Q5_1, Q8_0, Q8_1 (one f16 scale, optionally an f16 minimum), and the low-bit Q1_0
//! (128 sign bits, one f16 scale) and Q2_0 (64 two-bit codes, one f16 scale).
//!
//! Layouts (bytes): Q4_0 `d, qs[16]`; Q4_1 `d, m, qs[16]`; Q5_0 `d, qh[4], qs[16]`;
//! Q5_1 `d, m, qh[4], qs[16]`; Q8_0 `d, qs[32]`; Q8_1 `d, s, qs[32]` (36 bytes as in ggml's
//! C struct; `s` = d * sum(qs) is for dot products and plays no part in the values);
//! Q1_0 `d, qs[16]`; Q2_0 `d, qs[16]` (element `j` is the two bits at `2 * (j % 4)` of
//! `qs[j / 4]`). In the 4/5-bit types, element `j < 16` is the low nibble of `qs[j]` and
//! element `j + 16` its high nibble; the fifth bit of element `j` is bit `j` of `qh`.

use super::{f16_at, row_fn, u32_at};

pub fn dequantize_block_q4_0(b: &[u8; 18], out: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for j in 0..16 {
        let q = b[2 + j];
        out[j] = d * f32::from(i16::from(q & 0x0f) - 8);
        out[j + 16] = d * f32::from(i16::from(q >> 4) - 8);
    }
}

pub fn dequantize_block_q4_1(b: &[u8; 20], out: &mut [f32; 32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for j in 0..16 {
        let q = b[4 + j];
        out[j] = d * f32::from(q & 0x0f) + m;
        out[j + 16] = d * f32::from(q >> 4) + m;
    }
}

pub fn dequantize_block_q5_0(b: &[u8; 22], out: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let qh = u32_at(b, 2);
    for j in 0..16 {
        let q = b[6 + j];
        let lo = (q & 0x0f) | ((((qh >> j) & 1) as u8) << 4);
        let hi = (q >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
        out[j] = d * f32::from(i16::from(lo) - 16);
        out[j + 16] = d * f32::from(i16::from(hi) - 16);
    }
}

pub fn dequantize_block_q5_1(b: &[u8; 24], out: &mut [f32; 32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = u32_at(b, 4);
    for j in 0..16 {
        let q = b[8 + j];
        let lo = (q & 0x0f) | ((((qh >> j) & 1) as u8) << 4);
        let hi = (q >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
        out[j] = d * f32::from(lo) + m;
        out[j + 16] = d * f32::from(hi) + m;
    }
}

pub fn dequantize_block_q8_0(b: &[u8; 34], out: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for (o, &q) in out.iter_mut().zip(&b[2..]) {
        *o = d * f32::from(q as i8);
    }
}

pub fn dequantize_block_q8_1(b: &[u8; 36], out: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for (o, &q) in out.iter_mut().zip(&b[4..]) {
        *o = d * f32::from(q as i8);
    }
}

/// Bit `j` (LSB first) selects `+d` (1) or `-d` (0); ggml negates rather than multiplying by
/// -1, which matters only for the sign of a NaN scale.
pub fn dequantize_block_q1_0(b: &[u8; 18], out: &mut [f32; 128]) {
    let d = f16_at(b, 0);
    for (j, o) in out.iter_mut().enumerate() {
        *o = if (b[2 + j / 8] >> (j % 8)) & 1 != 0 {
            d
        } else {
            -d
        };
    }
}

/// Code `q` (0..=3) stands for `(q - 1) * d`: -d, 0, +d, +2d. Computed as that product (the
/// format's definition), so code 1 gives `0 * d`: a negative zero for a negative scale and
/// NaN for an infinite one, as the independent reference computes it too.
pub fn dequantize_block_q2_0(b: &[u8; 18], out: &mut [f32; 64]) {
    let d = f16_at(b, 0);
    for (j, o) in out.iter_mut().enumerate() {
        let q = (b[2 + j / 4] >> (2 * (j % 4))) & 3;
        *o = d * (f32::from(q) - 1.0);
    }
}

row_fn!(dequantize_row_q4_0, dequantize_block_q4_0, 18, 32);
row_fn!(dequantize_row_q4_1, dequantize_block_q4_1, 20, 32);
row_fn!(dequantize_row_q5_0, dequantize_block_q5_0, 22, 32);
row_fn!(dequantize_row_q5_1, dequantize_block_q5_1, 24, 32);
row_fn!(dequantize_row_q8_0, dequantize_block_q8_0, 34, 32);
row_fn!(dequantize_row_q8_1, dequantize_block_q8_1, 36, 32);
row_fn!(dequantize_row_q1_0, dequantize_block_q1_0, 18, 128);
row_fn!(dequantize_row_q2_0, dequantize_block_q2_0, 18, 64);
