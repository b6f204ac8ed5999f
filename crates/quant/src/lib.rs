//! # ferrite-quant: the block formats that make GGUF small
//!
//! Dequantization of every ggml tensor type to f32, quantization of the common ones, and the
//! dot-product kernels the forward pass runs on. Each type has a scalar reference
//! implementation in [`formats`] (one module per family), reached through the per-type table
//! in [`traits`]; SIMD kernels plug into the same table and are tested against the scalar
//! path.
//!
//! ```no_run
//! let file = ferrite_gguf::GgufFile::open("model.gguf")?;
//! let info = file.tensor("token_embd.weight").unwrap();
//! let values: Vec<f32> = ferrite_quant::dequantize_tensor(&file, info)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod formats;
pub mod gemm;
pub mod kernels;
pub mod matmul;
pub mod pool;
pub mod quantize;
pub mod repack;
pub mod traits;

use ferrite_gguf::{GgmlType, GgufFile, TensorInfo};

pub use traits::{type_traits, TypeTraits};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantError {
    #[error("dequantizing {0} is not supported yet")]
    Unsupported(GgmlType),
    #[error("{ty}: {n} elements is not a whole number of {block}-element blocks")]
    NotBlockMultiple { ty: GgmlType, n: usize, block: u64 },
    #[error("{ty}: {n} elements need {need} bytes, got {got}")]
    WrongByteCount {
        ty: GgmlType,
        n: usize,
        need: usize,
        got: usize,
    },
    #[error("tensor '{name}': {n_elements} elements do not fit in memory on this machine")]
    TooLarge { name: String, n_elements: u64 },
}

/// Dequantizes `out.len()` elements of type `ty` stored in `src` into `out`.
///
/// `src` must hold exactly the bytes of those elements (whole blocks); anything else is an
/// error, never a partial decode.
pub fn dequantize(ty: GgmlType, src: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    let n = out.len();
    let need = ty.row_bytes(n as u64).ok_or(QuantError::NotBlockMultiple {
        ty,
        n,
        block: ty.block_size(),
    })?;
    if src.len() as u64 != need {
        return Err(QuantError::WrongByteCount {
            ty,
            n,
            need: usize::try_from(need).unwrap_or(usize::MAX),
            got: src.len(),
        });
    }
    (type_traits(ty).dequantize_row)(src, out);
    Ok(())
}

/// Dequantizes a whole tensor of `file` into a new vector, in GGUF element order
/// (`dims[0]` fastest).
pub fn dequantize_tensor(file: &GgufFile, info: &TensorInfo) -> Result<Vec<f32>, QuantError> {
    // The reader checked that the tensor's bytes lie within the file and match its element
    // count, so the allocation is bounded by the file's size times the type's expansion.
    let n = usize::try_from(info.n_elements).map_err(|_| QuantError::TooLarge {
        name: info.name.clone(),
        n_elements: info.n_elements,
    })?;
    let mut out = vec![0f32; n];
    dequantize(info.ty, file.tensor_data(info), &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_lengths_are_errors_for_every_type() {
        for info in ferrite_gguf::types::TYPES {
            let (bs, ts) = (info.block_size as usize, info.type_size as usize);
            let src = vec![0u8; 2 * ts];
            let mut out = vec![0f32; 2 * bs];
            assert_eq!(dequantize(info.ty, &src, &mut out), Ok(()));
            assert!(matches!(
                dequantize(info.ty, &src[..2 * ts - 1], &mut out),
                Err(QuantError::WrongByteCount { .. })
            ));
            let mut longer = src.clone();
            longer.push(0);
            assert!(matches!(
                dequantize(info.ty, &longer, &mut out),
                Err(QuantError::WrongByteCount { .. })
            ));
            if bs > 1 {
                let mut odd = vec![0f32; 2 * bs - 1];
                assert!(matches!(
                    dequantize(info.ty, &src, &mut odd),
                    Err(QuantError::NotBlockMultiple { .. })
                ));
            }
        }
    }
}
