//! Quantization: f32 rows → ggml blocks, for the types ferrite can write.
//!
//! One file per family of formats, each exposing a per-block function with the same shape
//! (`fn(x: &[f32], qw: Option<&[f32]>, out: &mut [u8])`), gathered in [`QUANTIZERS`]: the
//! per-type table the public entry points dispatch through. `x` is exactly one block of
//! elements, `out` exactly one block of bytes, `qw` (when present) the importance of each of
//! `x`'s columns (the "imatrix" idea: the mean squared activation each weight column sees).
//!
//! The algorithms follow the ideas of ggml's reference quantizers (scale searches that minimise
//! weighted squared error) so that files written here decode with the same quality as
//! llama.cpp's; the simple types are bit-identical to the `gguf` Python package.

mod float;
mod iq4;
mod kquants;
pub(crate) use kquants::pack_scales_6bit;
mod legacy;
mod mxfp4;
mod search;
mod ternary;

use ferrite_gguf::GgmlType;

/// Why a quantization request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantizeError {
    #[error("quantizing to {0} is not supported")]
    Unsupported(GgmlType),
    #[error("{ty}: {n} elements is not a whole number of {block}-element blocks")]
    NotBlockMultiple { ty: GgmlType, n: usize, block: u64 },
    #[error("{ty}: {n} elements need {need} bytes of output, got {got}")]
    WrongByteCount {
        ty: GgmlType,
        n: usize,
        need: usize,
        got: usize,
    },
    #[error("{ty}: {n} elements is not a whole number of rows of {row} (the imatrix length)")]
    RowMismatch { ty: GgmlType, n: usize, row: usize },
    #[error("importance vector has a non-finite or negative entry at column {0}")]
    BadImportance(usize),
}

/// Quantizes one block: `x` has `block_size` elements, `out` has `type_size` bytes.
pub type BlockQuantizer = fn(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]);

/// Every type ferrite can quantize to, with its block function.
pub const QUANTIZERS: &[(GgmlType, BlockQuantizer)] = &[
    (GgmlType::F32, float::f32_block),
    (GgmlType::F16, float::f16_block),
    (GgmlType::BF16, float::bf16_block),
    (GgmlType::Q4_0, legacy::q4_0),
    (GgmlType::Q4_1, legacy::q4_1),
    (GgmlType::Q5_0, legacy::q5_0),
    (GgmlType::Q5_1, legacy::q5_1),
    (GgmlType::Q8_0, legacy::q8_0),
    (GgmlType::Q8_1, legacy::q8_1),
    (GgmlType::Q2_K, kquants::q2_k),
    (GgmlType::Q3_K, kquants::q3_k),
    (GgmlType::Q4_K, kquants::q4_k),
    (GgmlType::Q5_K, kquants::q5_k),
    (GgmlType::Q6_K, kquants::q6_k),
    (GgmlType::Q8_K, kquants::q8_k),
    (GgmlType::IQ4_NL, iq4::iq4_nl),
    (GgmlType::IQ4_XS, iq4::iq4_xs),
    (GgmlType::TQ1_0, ternary::tq1_0),
    (GgmlType::TQ2_0, ternary::tq2_0),
    (GgmlType::MXFP4, mxfp4::mxfp4),
];

/// The block function for `ty`, if ferrite can quantize to it.
pub fn quantizer(ty: GgmlType) -> Option<BlockQuantizer> {
    QUANTIZERS.iter().find(|(t, _)| *t == ty).map(|(_, f)| *f)
}

/// Whether ferrite can quantize to `ty`.
pub fn can_quantize(ty: GgmlType) -> bool {
    quantizer(ty).is_some()
}

/// Whether `ty`'s quantizer makes use of an importance vector (others ignore it).
pub fn uses_imatrix(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q2_K
            | GgmlType::Q3_K
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
            | GgmlType::IQ4_NL
            | GgmlType::IQ4_XS
    )
}

/// Quantizes whole rows of `src` into `out`.
///
/// Without an importance vector `src` only needs to be a whole number of blocks. With one,
/// `imatrix.len()` is the row length: `src` must be a whole number of such rows, and column
/// `c` of every row is weighted by `imatrix[c]`.
pub fn quantize(
    ty: GgmlType,
    src: &[f32],
    imatrix: Option<&[f32]>,
    out: &mut [u8],
) -> Result<(), QuantizeError> {
    let f = quantizer(ty).ok_or(QuantizeError::Unsupported(ty))?;
    check_sizes(ty, src.len(), out.len())?;
    let bs = ty.block_size() as usize;
    let ts = ty.type_size() as usize;
    match imatrix {
        None => {
            for (x, o) in src.chunks_exact(bs).zip(out.chunks_exact_mut(ts)) {
                f(x, None, o);
            }
        }
        Some(qw) => {
            let row = qw.len();
            if row == 0 || !row.is_multiple_of(bs) || !src.len().is_multiple_of(row) {
                return Err(QuantizeError::RowMismatch {
                    ty,
                    n: src.len(),
                    row,
                });
            }
            check_importance(qw)?;
            let row_bytes = row / bs * ts;
            for (xr, or) in src.chunks_exact(row).zip(out.chunks_exact_mut(row_bytes)) {
                for ((x, w), o) in xr
                    .chunks_exact(bs)
                    .zip(qw.chunks_exact(bs))
                    .zip(or.chunks_exact_mut(ts))
                {
                    f(x, Some(w), o);
                }
            }
        }
    }
    Ok(())
}

/// Quantizes one row; `imatrix`, when given, has one entry per element of `src`.
pub fn quantize_row(
    ty: GgmlType,
    src: &[f32],
    imatrix: Option<&[f32]>,
    out: &mut [u8],
) -> Result<(), QuantizeError> {
    if let Some(qw) = imatrix {
        if qw.len() != src.len() {
            return Err(QuantizeError::RowMismatch {
                ty,
                n: src.len(),
                row: qw.len(),
            });
        }
    }
    quantize(ty, src, imatrix, out)
}

fn check_sizes(ty: GgmlType, n: usize, got: usize) -> Result<(), QuantizeError> {
    let need = ty
        .row_bytes(n as u64)
        .ok_or(QuantizeError::NotBlockMultiple {
            ty,
            n,
            block: ty.block_size(),
        })? as usize;
    if need != got {
        return Err(QuantizeError::WrongByteCount { ty, n, need, got });
    }
    Ok(())
}

fn check_importance(qw: &[f32]) -> Result<(), QuantizeError> {
    match qw.iter().position(|w| !w.is_finite() || *w < 0.0) {
        Some(i) => Err(QuantizeError::BadImportance(i)),
        None => Ok(()),
    }
}

/// Stores `v` as a little-endian IEEE half at `out[..2]`.
#[inline]
fn put_f16(out: &mut [u8], v: f32) {
    out[..2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
}

/// Reads back a half stored by [`put_f16`]: the scale a decoder will actually use.
#[inline]
fn f16_round(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}

/// Round to nearest, ties to even (what ggml's `nearest_int` does with its float trick).
#[inline]
fn nearest_int(v: f32) -> i32 {
    v.round_ties_even() as i32
}

#[cfg(test)]
mod tests;
