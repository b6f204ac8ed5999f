//! Block layouts and their scalar reference dequantizers, one module per family.
//!
//! Every decoder takes one block as a fixed-size array (`&[u8; TYPE_SIZE]`) and fills a
//! fixed-size output (`&mut [f32; BLOCK_SIZE]`), so it cannot read outside its block: the
//! compiler checks every index against the array length. The row functions walk whole
//! blocks with `chunks_exact`, so trailing bytes that do not form a block are never read.
//!
//! The arithmetic of each decoder follows the `gguf` Python package's numpy dequantization
//! operation by operation (same f32 products in the same order, no fused multiply-add), which
//! is what makes the results bit-identical to it; the reference tests depend on this.

pub mod float;
pub mod fp4;
pub mod iquants;
pub mod kquants;
pub mod legacy;
pub mod tables;
pub mod ternary;

/// Converts IEEE binary16 bits to f32 exactly, keeping NaN payloads (a signalling NaN stays
/// signalling), as numpy's `float16 -> float32` cast does. `half` and the F16C instruction
/// quiet signalling NaNs, which would break bit-equality with the reference.
#[inline]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x03ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: value = man * 2^-24, normalise into an f32 mantissa.
            let shift = man.leading_zeros() - 21; // places to bring the top bit to bit 10
            let man = (man << shift) & 0x03ff;
            let exp = 127 - 15 + 1 - shift;
            sign | (exp << 23) | (man << 13)
        }
        (0x1f, _) => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// Reads the little-endian f16 at `b[at..at + 2]` as f32.
#[inline]
pub(crate) fn f16_at<const N: usize>(b: &[u8; N], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

#[inline]
pub(crate) fn u16_at<const N: usize>(b: &[u8; N], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

#[inline]
pub(crate) fn u32_at<const N: usize>(b: &[u8; N], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Applies a block decoder to every whole block of `src`, writing consecutive runs of `out`.
/// Stops at whichever of the two runs out first; callers check the lengths beforehand.
#[inline]
pub(crate) fn each_block<const B: usize, const N: usize>(
    src: &[u8],
    out: &mut [f32],
    decode: impl Fn(&[u8; B], &mut [f32; N]),
) {
    for (b, o) in src.chunks_exact(B).zip(out.chunks_exact_mut(N)) {
        // `chunks_exact` yields slices of exactly B and N items, so both conversions succeed.
        if let (Ok(b), Ok(o)) = (b.try_into(), o.try_into()) {
            decode(b, o);
        }
    }
}

/// Defines `pub fn $row(src: &[u8], out: &mut [f32])` over a block decoder.
macro_rules! row_fn {
    ($(#[$m:meta])* $row:ident, $block:ident, $bytes:expr, $elems:expr) => {
        $(#[$m])*
        pub fn $row(src: &[u8], out: &mut [f32]) {
            $crate::formats::each_block::<{ $bytes }, { $elems }>(src, out, $block);
        }
    };
}
pub(crate) use row_fn;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion_is_exact_for_every_pattern() {
        // Every finite f16 is exactly representable in f64; compare the value, then the
        // special cases by bits.
        for h in 0..=u16::MAX {
            let f = f16_to_f32(h);
            let exp = (h >> 10) & 0x1f;
            let man = f64::from(h & 0x3ff);
            let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
            match exp {
                0x1f if man == 0.0 => assert_eq!(f, sign as f32 * f32::INFINITY),
                0x1f => assert_eq!(
                    f.to_bits(),
                    (u32::from(h & 0x8000) << 16) | 0x7f80_0000 | (u32::from(h & 0x3ff) << 13)
                ),
                0 => assert_eq!(f64::from(f), sign * man * 2f64.powi(-24), "{h:#06x}"),
                e => assert_eq!(
                    f64::from(f),
                    sign * (1.0 + man / 1024.0) * 2f64.powi(i32::from(e) - 15),
                    "{h:#06x}"
                ),
            }
            assert_eq!(f.is_sign_negative(), h & 0x8000 != 0);
        }
    }
}
