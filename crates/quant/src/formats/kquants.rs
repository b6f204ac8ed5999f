//! The k-quants: 256-element super-blocks split into sub-blocks of 16 or 32 elements, each
//! with its own small integer scale (and minimum) multiplied by f16 super-block scales.
//!
//! Layouts (bytes): Q2_K `scales[16], qs[64], d, dmin` (84); Q3_K `hmask[32], qs[64],
//! scales[12], d` (110); Q4_K `d, dmin, scales[12], qs[128]` (144); Q5_K `d, dmin,
//! scales[12], qh[32], qs[128]` (176); Q6_K `ql[128], qh[64], scales[16] (i8), d` (210);
//! Q8_K `d (f32), qs[256] (i8), bsums[16] (i16)` (292; `bsums` only serve dot products).
//!
//! The 2-bit planes (Q2_K, Q3_K low bits, Q6_K high bits) interleave: within each half of
//! the block (128 elements), element `32 * l + m` sits in bits `2l..2l+2` of byte `m`.

use super::{f16_at, row_fn};

pub fn dequantize_block_q2_k(b: &[u8; 84], out: &mut [f32; 256]) {
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    for (e, o) in out.iter_mut().enumerate() {
        let sc = b[e / 16];
        let dl = d * f32::from(sc & 0x0f);
        let ml = dmin * f32::from(sc >> 4);
        let (half, r) = (e / 128, e % 128);
        let q = (b[16 + half * 32 + r % 32] >> (2 * (r / 32))) & 3;
        *o = dl * f32::from(q) - ml;
    }
}

/// The sixteen 6-bit Q3_K scales: low nibbles in bytes 0..8 (elements 0..8 low, 8..16 high
/// nibble), the top two bits in bytes 8..12, two bits per sub-block.
fn q3_k_scales(s: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let low = if i < 8 { s[i] & 0x0f } else { s[i - 8] >> 4 };
        let high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        *o = ((low | (high << 4)) as i8) - 32;
    }
    out
}

pub fn dequantize_block_q3_k(b: &[u8; 110], out: &mut [f32; 256]) {
    let d = f16_at(b, 108);
    let scales = q3_k_scales(&b[96..108]);
    for (e, o) in out.iter_mut().enumerate() {
        let dl = d * f32::from(scales[e / 16]);
        let (half, r) = (e / 128, e % 128);
        let low = ((b[32 + half * 32 + r % 32] >> (2 * (r / 32))) & 3) as i8;
        // A clear high bit means "subtract 4": the stored bit is the complement.
        let high = (b[e % 32] >> (e / 32)) & 1;
        let q = low - if high == 0 { 4 } else { 0 };
        *o = dl * f32::from(q);
    }
}

/// Scale and minimum (6 bits each) of sub-block `j` of Q4_K/Q5_K, from the 12 packed bytes:
/// sub-blocks 0..4 in the low 6 bits of bytes `j` and `j + 4`, sub-blocks 4..8 from the
/// nibbles of bytes 8..12 plus the top two bits of bytes `j - 4` and `j`.
#[inline]
fn k4_scale_min(s: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (s[j] & 0x3f, s[j + 4] & 0x3f)
    } else {
        (
            (s[j + 4] & 0x0f) | ((s[j - 4] >> 2) & 0x30),
            (s[j + 4] >> 4) | ((s[j] >> 2) & 0x30),
        )
    }
}

pub fn dequantize_block_q4_k(b: &[u8; 144], out: &mut [f32; 256]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    for (j, sub) in out.chunks_exact_mut(32).enumerate() {
        let (sc, m) = k4_scale_min(&b[4..16], j);
        let dl = d * f32::from(sc);
        let ml = dmin * f32::from(m);
        // Sub-blocks 2i and 2i+1 share 32 bytes: low nibbles, then high nibbles.
        let qs = &b[16 + (j / 2) * 32..16 + (j / 2) * 32 + 32];
        let shift = 4 * (j % 2);
        for (o, &q) in sub.iter_mut().zip(qs) {
            *o = dl * f32::from((q >> shift) & 0x0f) - ml;
        }
    }
}

pub fn dequantize_block_q5_k(b: &[u8; 176], out: &mut [f32; 256]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let qh = &b[16..48];
    for (j, sub) in out.chunks_exact_mut(32).enumerate() {
        let (sc, m) = k4_scale_min(&b[4..16], j);
        let dl = d * f32::from(sc);
        let ml = dmin * f32::from(m);
        let qs = &b[48 + (j / 2) * 32..48 + (j / 2) * 32 + 32];
        let shift = 4 * (j % 2);
        for (k, o) in sub.iter_mut().enumerate() {
            let q = ((qs[k] >> shift) & 0x0f) | (((qh[k] >> j) & 1) << 4);
            *o = dl * f32::from(q) - ml;
        }
    }
}

pub fn dequantize_block_q6_k(b: &[u8; 210], out: &mut [f32; 256]) {
    let d = f16_at(b, 208);
    for (e, o) in out.iter_mut().enumerate() {
        let dl = d * f32::from(b[192 + e / 16] as i8);
        let (half, r) = (e / 128, e % 128);
        let low = (b[half * 64 + r % 64] >> (4 * (r / 64))) & 0x0f;
        let high = (b[128 + half * 32 + r % 32] >> (2 * (r / 32))) & 3;
        let q = ((low | (high << 4)) as i8) - 32;
        *o = dl * f32::from(q);
    }
}

pub fn dequantize_block_q8_k(b: &[u8; 292], out: &mut [f32; 256]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for (o, &q) in out.iter_mut().zip(&b[4..260]) {
        *o = d * f32::from(q as i8);
    }
}

row_fn!(dequantize_row_q2_k, dequantize_block_q2_k, 84, 256);
row_fn!(dequantize_row_q3_k, dequantize_block_q3_k, 110, 256);
row_fn!(dequantize_row_q4_k, dequantize_block_q4_k, 144, 256);
row_fn!(dequantize_row_q5_k, dequantize_block_q5_k, 176, 256);
row_fn!(dequantize_row_q6_k, dequantize_block_q6_k, 210, 256);
row_fn!(dequantize_row_q8_k, dequantize_block_q8_k, 292, 256);
