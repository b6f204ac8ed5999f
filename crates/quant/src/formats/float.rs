//! Unblocked element types: floats (F32, F16, BF16, F64) and integers (I8..I64) read as
//! values and converted to the nearest f32 (ties to even), as numpy's `astype(float32)` does.
//!
//! NaN bit patterns are kept where the conversion allows it: F32 is copied, F16 and BF16
//! widen exactly (signalling NaNs stay signalling); F64 narrows with the hardware rules.

use super::f16_to_f32;

/// Shared shape of the element-wise rows: `N`-byte little-endian elements, one per output.
#[inline]
fn each_elem<const N: usize>(src: &[u8], out: &mut [f32], conv: impl Fn([u8; N]) -> f32) {
    for (o, c) in out.iter_mut().zip(src.chunks_exact(N)) {
        if let Ok(bytes) = c.try_into() {
            *o = conv(bytes);
        }
    }
}

pub fn dequantize_row_f32(src: &[u8], out: &mut [f32]) {
    each_elem(src, out, f32::from_le_bytes);
}

pub fn dequantize_row_f16(src: &[u8], out: &mut [f32]) {
    each_elem(src, out, |b| f16_to_f32(u16::from_le_bytes(b)));
}

/// bfloat16 is the top half of an f32, so widening is a shift.
pub fn dequantize_row_bf16(src: &[u8], out: &mut [f32]) {
    each_elem(src, out, |b| {
        f32::from_bits(u32::from(u16::from_le_bytes(b)) << 16)
    });
}

pub fn dequantize_row_f64(src: &[u8], out: &mut [f32]) {
    each_elem(src, out, |b| f64::from_le_bytes(b) as f32);
}

pub fn dequantize_row_i8(src: &[u8], out: &mut [f32]) {
    each_elem(src, out, |b: [u8; 1]| f32::from(b[0] as i8));
}

pub fn dequantize_row_i16(src: &[u8], out: &mut [f32]) {
    each_elem(src, out, |b| f32::from(i16::from_le_bytes(b)));
}

pub fn dequantize_row_i32(src: &[u8], out: &mut [f32]) {
    // Rounds to nearest, ties to even, like C's int -> float conversion numpy uses.
    each_elem(src, out, |b| i32::from_le_bytes(b) as f32);
}

pub fn dequantize_row_i64(src: &[u8], out: &mut [f32]) {
    each_elem(src, out, |b| i64::from_le_bytes(b) as f32);
}
