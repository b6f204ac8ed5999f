//! The ternary types: weights in {-1, 0, 1} times one f16 scale per 256 elements.
//!
//! TQ2_0 `qs[64], d` (66 bytes): 2 bits per weight, code - 1. TQ1_0 `qs[48], qh[4], d`
//! (54 bytes): five (four in `qh`) base-3 digits per byte, stored as a fixed-point fraction
//! of 3^5 so that digit `l` is recovered by multiplying the byte by 3^l (mod 256) and taking
//! the top bits of `3 * byte`.

use super::{f16_at, row_fn};

const POW3: [u8; 5] = [1, 3, 9, 27, 81];

/// Digit `l` of a TQ1_0 byte, as -1, 0 or 1.
#[inline]
fn trit(byte: u8, l: usize) -> i8 {
    let q = byte.wrapping_mul(POW3[l]);
    ((u16::from(q) * 3) >> 8) as i8 - 1
}

pub fn dequantize_block_tq1_0(b: &[u8; 54], out: &mut [f32; 256]) {
    let d = f16_at(b, 52);
    // Elements 0..160: bytes 0..32, digit-major; 160..240: bytes 32..48; 240..256: qh.
    for l in 0..5 {
        for m in 0..32 {
            out[l * 32 + m] = d * f32::from(trit(b[m], l));
        }
        for m in 0..16 {
            out[160 + l * 16 + m] = d * f32::from(trit(b[32 + m], l));
        }
    }
    for l in 0..4 {
        for m in 0..4 {
            out[240 + l * 4 + m] = d * f32::from(trit(b[48 + m], l));
        }
    }
}

pub fn dequantize_block_tq2_0(b: &[u8; 66], out: &mut [f32; 256]) {
    let d = f16_at(b, 64);
    for (e, o) in out.iter_mut().enumerate() {
        let (half, r) = (e / 128, e % 128);
        let q = (b[half * 32 + r % 32] >> (2 * (r / 32))) & 3;
        *o = d * f32::from(q as i8 - 1);
    }
}

row_fn!(dequantize_row_tq1_0, dequantize_block_tq1_0, 54, 256);
row_fn!(dequantize_row_tq2_0, dequantize_block_tq2_0, 66, 256);
