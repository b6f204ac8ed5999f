//! # ferrite-quant: the block formats that make GGUF small
//!
//! Dequantization of every ggml tensor type to f32, quantization of the common ones, and the
//! dot-product kernels the forward pass runs on. Each type has a scalar reference
//! implementation; SIMD kernels (x86 AVX2/AVX-512, ARM NEON) are chosen at run time and tested
//! against the scalar path.

pub mod kernels;
pub mod matmul;

use ferrite_gguf::GgmlType;

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
}

/// Dequantizes `out.len()` elements of type `ty` stored in `src` into `out`.
pub fn dequantize(ty: GgmlType, src: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    let n = out.len();
    let need = ty.row_bytes(n as u64).ok_or(QuantError::NotBlockMultiple {
        ty,
        n,
        block: ty.block_size(),
    })? as usize;
    if src.len() != need {
        return Err(QuantError::WrongByteCount {
            ty,
            n,
            need,
            got: src.len(),
        });
    }
    match ty {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes(c.try_into().unwrap());
            }
        }
        GgmlType::F16 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = half::bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::Q8_0 => {
            for (o, b) in out.chunks_exact_mut(32).zip(src.chunks_exact(34)) {
                let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                for (x, &q) in o.iter_mut().zip(&b[2..]) {
                    *x = d * f32::from(q as i8);
                }
            }
        }
        t => return Err(QuantError::Unsupported(t)),
    }
    Ok(())
}
