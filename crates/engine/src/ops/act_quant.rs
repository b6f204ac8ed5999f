//! Rounding of activations to the 8-bit block grid llama.cpp's CPU backend multiplies a
//! weight type with (its "vec_dot_type"): Q8_0 blocks of 32 with an f16 scale, or Q8_K blocks
//! of 256 with an f32 scale; F16/BF16 weights see activations rounded to that type.
//!
//! Quantized models are numerically fragile and llama.cpp's logits carry this rounding, so
//! matching it keeps ferrite's quantized logits several times closer to the reference. The
//! rounding is idempotent: kernels that quantize activations themselves get the same values.

use ferrite_gguf::GgmlType;
use half::{bf16, f16};

/// The activation grid a weight type's dot products use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActGrid {
    F32,
    F16,
    BF16,
    /// 32-element blocks, `d = f16(amax / 127)` (Q8_0 and Q8_1 share the values).
    Q8_0,
    /// 256-element blocks, `d = max / -127` in f32.
    Q8K,
}

pub fn grid_for(ty: GgmlType) -> ActGrid {
    use GgmlType::*;
    match ty {
        F16 => ActGrid::F16,
        BF16 => ActGrid::BF16,
        Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | IQ4_NL | MXFP4 => ActGrid::Q8_0,
        Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S | IQ1_S
        | IQ1_M | IQ4_XS | TQ1_0 | TQ2_0 => ActGrid::Q8K,
        _ => ActGrid::F32,
    }
}

/// Rounds `x` (rows of `k`) onto the grid in place.
pub fn round_to_grid(grid: ActGrid, x: &mut [f32], k: usize) {
    match grid {
        ActGrid::F32 => {}
        ActGrid::F16 => x.iter_mut().for_each(|v| *v = f16::from_f32(*v).to_f32()),
        ActGrid::BF16 => x.iter_mut().for_each(|v| *v = bf16::from_f32(*v).to_f32()),
        ActGrid::Q8_0 if k.is_multiple_of(32) => {
            for b in x.chunks_exact_mut(32) {
                let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = f16::from_f32(amax / 127.0).to_f32();
                let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
                for v in b {
                    *v = (*v * id).round_ties_even() * d;
                }
            }
        }
        ActGrid::Q8K if k.is_multiple_of(256) => {
            for b in x.chunks_exact_mut(256) {
                let max = b
                    .iter()
                    .copied()
                    .fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
                if max == 0.0 {
                    b.fill(0.0);
                    continue;
                }
                let iscale = -127.0 / max;
                let d = 1.0 / iscale;
                for v in b {
                    *v = (*v * iscale).round_ties_even().min(127.0) * d;
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_idempotent_and_close() {
        for grid in [ActGrid::Q8_0, ActGrid::Q8K, ActGrid::F16, ActGrid::BF16] {
            let x: Vec<f32> = (0..512)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let mut a = x.clone();
            round_to_grid(grid, &mut a, 512);
            let mut b = a.clone();
            round_to_grid(grid, &mut b, 512);
            assert_eq!(a, b, "{grid:?}");
            for (p, q) in x.iter().zip(&a) {
                assert!(
                    (p - q).abs() <= 7.2 / 127.0 * 0.51 + 1e-6,
                    "{grid:?} {p} {q}"
                );
            }
        }
    }
}
