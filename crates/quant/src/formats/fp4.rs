//! The 4-bit float types: weights are E2M1 codes (1 sign, 2 exponent, 1 mantissa bit) times
//! a block scale.
//!
//! ggml stores the E2M1 values doubled, as small integers (`KVALUES_FP4`), and halves the
//! scale to compensate. MXFP4 `e, qs[16]` (17 bytes, 32 weights): E8M0 scale `2^(e-127)`,
//! low nibbles are elements 0..16, high nibbles 16..32. NVFP4 `d[4], qs[32]` (36 bytes,
//! 64 weights): one unsigned E4M3 scale per 16 weights; sub-block `s` uses `qs[8s..8s+8]`,
//! low nibbles first, then high nibbles.

use super::row_fn;

/// Twice the E2M1 values, indexed by the 4-bit code.
pub const KVALUES_FP4: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// Half of the E8M0 scale `2^(e-127)`, built from its bits: `2^(e-128)` is a normal f32 for
/// `e >= 2` and a subnormal for `e` 0 and 1. (No NaN: e = 255 is read as 2^127.)
#[inline]
pub fn e8m0_to_f32_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000u32 << e
    } else {
        (u32::from(e) - 1) << 23
    };
    f32::from_bits(bits)
}

/// Half of an unsigned E4M3 scale (4 exponent bits, bias 7, 3 mantissa bits). Bit 7 is not
/// part of the format and is ignored; 0x7F (the E4M3 NaN) reads as zero, as in ggml.
#[inline]
pub fn ue4m3_to_f32_half(x: u8) -> f32 {
    if x == 0 || x == 0x7f {
        return 0.0;
    }
    let exp = i32::from((x >> 3) & 0x0f);
    let man = f32::from(x & 7);
    // Both branches are exact in f32 (small integers times powers of two).
    let raw = if exp == 0 {
        man * pow2(-9)
    } else {
        (1.0 + man / 8.0) * pow2(exp - 7)
    };
    raw * 0.5
}

/// `2^k` for a normal-range `k`, built from its bits so that it is exact by construction.
#[inline]
fn pow2(k: i32) -> f32 {
    f32::from_bits(((k + 127) as u32) << 23)
}

pub fn dequantize_block_mxfp4(b: &[u8; 17], out: &mut [f32; 32]) {
    let d = e8m0_to_f32_half(b[0]);
    for j in 0..16 {
        let q = b[1 + j];
        out[j] = d * f32::from(KVALUES_FP4[usize::from(q & 0x0f)]);
        out[j + 16] = d * f32::from(KVALUES_FP4[usize::from(q >> 4)]);
    }
}

pub fn dequantize_block_nvfp4(b: &[u8; 36], out: &mut [f32; 64]) {
    for (s, sub) in out.chunks_exact_mut(16).enumerate() {
        let d = ue4m3_to_f32_half(b[s]);
        for j in 0..8 {
            let q = b[4 + 8 * s + j];
            sub[j] = d * f32::from(KVALUES_FP4[usize::from(q & 0x0f)]);
            sub[j + 8] = d * f32::from(KVALUES_FP4[usize::from(q >> 4)]);
        }
    }
}

row_fn!(dequantize_row_mxfp4, dequantize_block_mxfp4, 17, 32);
row_fn!(dequantize_row_nvfp4, dequantize_block_nvfp4, 36, 64);
