//! The per-type function table: one [`TypeTraits`] row per [`GgmlType`], looked up with
//! [`type_traits`]. Dequantization, quantization and the dot-product kernels are reached
//! through it, so adding a kernel for a type means filling in its row, not adding a `match`
//! at every call site.

use ferrite_gguf::GgmlType;

use crate::formats::{float, fp4, iquants, kquants, legacy, ternary};

/// Decodes whole blocks: `src` holds `k` blocks of `type_size` bytes and `out` receives
/// `k * block_size` values. Only whole blocks present in both are touched; callers check
/// the lengths (see [`crate::dequantize`]).
pub type DequantizeRow = fn(src: &[u8], out: &mut [f32]);

/// What ferrite knows how to do with one tensor type.
#[derive(Clone, Copy, Debug)]
pub struct TypeTraits {
    pub ty: GgmlType,
    /// Elements per block.
    pub block_size: usize,
    /// Bytes per block.
    pub type_size: usize,
    /// The scalar reference dequantizer (bit-exact with the `gguf` Python package).
    pub dequantize_row: DequantizeRow,
}

const fn row(
    ty: GgmlType,
    block_size: usize,
    type_size: usize,
    dequantize_row: DequantizeRow,
) -> TypeTraits {
    TypeTraits {
        ty,
        block_size,
        type_size,
        dequantize_row,
    }
}

use GgmlType as T;

static F32: TypeTraits = row(T::F32, 1, 4, float::dequantize_row_f32);
static F16: TypeTraits = row(T::F16, 1, 2, float::dequantize_row_f16);
static BF16: TypeTraits = row(T::BF16, 1, 2, float::dequantize_row_bf16);
static F64: TypeTraits = row(T::F64, 1, 8, float::dequantize_row_f64);
static I8: TypeTraits = row(T::I8, 1, 1, float::dequantize_row_i8);
static I16: TypeTraits = row(T::I16, 1, 2, float::dequantize_row_i16);
static I32: TypeTraits = row(T::I32, 1, 4, float::dequantize_row_i32);
static I64: TypeTraits = row(T::I64, 1, 8, float::dequantize_row_i64);
static Q4_0: TypeTraits = row(T::Q4_0, 32, 18, legacy::dequantize_row_q4_0);
static Q4_1: TypeTraits = row(T::Q4_1, 32, 20, legacy::dequantize_row_q4_1);
static Q5_0: TypeTraits = row(T::Q5_0, 32, 22, legacy::dequantize_row_q5_0);
static Q5_1: TypeTraits = row(T::Q5_1, 32, 24, legacy::dequantize_row_q5_1);
static Q8_0: TypeTraits = row(T::Q8_0, 32, 34, legacy::dequantize_row_q8_0);
static Q8_1: TypeTraits = row(T::Q8_1, 32, 36, legacy::dequantize_row_q8_1);
static Q1_0: TypeTraits = row(T::Q1_0, 128, 18, legacy::dequantize_row_q1_0);
static Q2_0: TypeTraits = row(T::Q2_0, 64, 18, legacy::dequantize_row_q2_0);
static Q2_K: TypeTraits = row(T::Q2_K, 256, 84, kquants::dequantize_row_q2_k);
static Q3_K: TypeTraits = row(T::Q3_K, 256, 110, kquants::dequantize_row_q3_k);
static Q4_K: TypeTraits = row(T::Q4_K, 256, 144, kquants::dequantize_row_q4_k);
static Q5_K: TypeTraits = row(T::Q5_K, 256, 176, kquants::dequantize_row_q5_k);
static Q6_K: TypeTraits = row(T::Q6_K, 256, 210, kquants::dequantize_row_q6_k);
static Q8_K: TypeTraits = row(T::Q8_K, 256, 292, kquants::dequantize_row_q8_k);
static IQ2_XXS: TypeTraits = row(T::IQ2_XXS, 256, 66, iquants::dequantize_row_iq2_xxs);
static IQ2_XS: TypeTraits = row(T::IQ2_XS, 256, 74, iquants::dequantize_row_iq2_xs);
static IQ2_S: TypeTraits = row(T::IQ2_S, 256, 82, iquants::dequantize_row_iq2_s);
static IQ3_XXS: TypeTraits = row(T::IQ3_XXS, 256, 98, iquants::dequantize_row_iq3_xxs);
static IQ3_S: TypeTraits = row(T::IQ3_S, 256, 110, iquants::dequantize_row_iq3_s);
static IQ1_S: TypeTraits = row(T::IQ1_S, 256, 50, iquants::dequantize_row_iq1_s);
static IQ1_M: TypeTraits = row(T::IQ1_M, 256, 56, iquants::dequantize_row_iq1_m);
static IQ4_NL: TypeTraits = row(T::IQ4_NL, 32, 18, iquants::dequantize_row_iq4_nl);
static IQ4_XS: TypeTraits = row(T::IQ4_XS, 256, 136, iquants::dequantize_row_iq4_xs);
static TQ1_0: TypeTraits = row(T::TQ1_0, 256, 54, ternary::dequantize_row_tq1_0);
static TQ2_0: TypeTraits = row(T::TQ2_0, 256, 66, ternary::dequantize_row_tq2_0);
static MXFP4: TypeTraits = row(T::MXFP4, 32, 17, fp4::dequantize_row_mxfp4);
static NVFP4: TypeTraits = row(T::NVFP4, 64, 36, fp4::dequantize_row_nvfp4);

/// The table row of `ty`. The `match` is exhaustive, so a type added to `GgmlType` without
/// a row here does not compile.
pub fn type_traits(ty: GgmlType) -> &'static TypeTraits {
    match ty {
        T::F32 => &F32,
        T::F16 => &F16,
        T::BF16 => &BF16,
        T::F64 => &F64,
        T::I8 => &I8,
        T::I16 => &I16,
        T::I32 => &I32,
        T::I64 => &I64,
        T::Q4_0 => &Q4_0,
        T::Q4_1 => &Q4_1,
        T::Q5_0 => &Q5_0,
        T::Q5_1 => &Q5_1,
        T::Q8_0 => &Q8_0,
        T::Q8_1 => &Q8_1,
        T::Q1_0 => &Q1_0,
        T::Q2_0 => &Q2_0,
        T::Q2_K => &Q2_K,
        T::Q3_K => &Q3_K,
        T::Q4_K => &Q4_K,
        T::Q5_K => &Q5_K,
        T::Q6_K => &Q6_K,
        T::Q8_K => &Q8_K,
        T::IQ2_XXS => &IQ2_XXS,
        T::IQ2_XS => &IQ2_XS,
        T::IQ2_S => &IQ2_S,
        T::IQ3_XXS => &IQ3_XXS,
        T::IQ3_S => &IQ3_S,
        T::IQ1_S => &IQ1_S,
        T::IQ1_M => &IQ1_M,
        T::IQ4_NL => &IQ4_NL,
        T::IQ4_XS => &IQ4_XS,
        T::TQ1_0 => &TQ1_0,
        T::TQ2_0 => &TQ2_0,
        T::MXFP4 => &MXFP4,
        T::NVFP4 => &NVFP4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_a_row_matching_the_gguf_geometry() {
        for info in ferrite_gguf::types::TYPES {
            let t = type_traits(info.ty);
            assert_eq!(t.ty, info.ty);
            assert_eq!(t.block_size as u64, info.block_size, "{}", info.name);
            assert_eq!(t.type_size as u64, info.type_size, "{}", info.name);
        }
    }
}
