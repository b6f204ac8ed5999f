//! Activations, softmax and soft-capping.

use std::sync::OnceLock;

use half::f16;

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `gate[i] = silu(gate[i]) * up[i]`, vectorised where the CPU allows.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    ferrite_quant::kernels::vec::swiglu(gate, up);
}

/// tanh-approximated GELU evaluated the way llama.cpp's CPU backend does: the input rounded to
/// f16, the result rounded to f16 (it reads a 65536-entry f16 table). Matching this keeps gemma
/// logits within 1e-3 of llama.cpp instead of ~3e-3.
///
/// As the result depends only on the f16 input, it is read from a table of every f16 value
/// (256 KiB, built on first use): evaluating `tanh` per element cost gemma ~12% of a prompt.
pub fn gelu_tanh_f16(x: f32) -> f32 {
    if x <= -10.0 {
        return 0.0;
    }
    if x >= 10.0 {
        return x;
    }
    static TABLE: OnceLock<Box<[f32]>> = OnceLock::new();
    let t = TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|b| gelu_tanh_f16_direct(f16::from_bits(b).to_f32()))
            .collect()
    });
    t[usize::from(f16::from_f32(x).to_bits())]
}

/// [`gelu_tanh_f16`] computed for an input already on the f16 grid.
fn gelu_tanh_f16_direct(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let y = 0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044715 * x * x)).tanh());
    f16::from_f32(y).to_f32()
}

/// `gate[i] = gelu(gate[i]) * up[i]`.
pub fn geglu(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = gelu_tanh_f16(*g) * u;
    }
}

/// `cap · tanh(x / cap)` on every element.
pub fn softcap(x: &mut [f32], cap: f32) {
    for v in x {
        *v = cap * (*v / cap).tanh();
    }
}

/// Softmax in place (entries of `-inf` get probability 0). Returns the log of the normalizer
/// relative to the max, so `log p[i] = x[i] - max - ret`.
pub fn softmax_in_place(x: &mut [f32]) -> f32 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += f64::from(*v);
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
    sum.ln() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one() {
        let mut x = vec![1.0, 2.0, f32::NEG_INFINITY, 3.0];
        softmax_in_place(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(x[2], 0.0);
        assert!(x[3] > x[1] && x[1] > x[0]);
    }

    #[test]
    fn gelu_table_equals_direct_evaluation() {
        // |x| < 10: outside, both paths return 0 or x without the table.
        for i in -1900..=1900 {
            let x = i as f32 * 0.00523;
            let want = gelu_tanh_f16_direct(f16::from_f32(x).to_f32());
            assert_eq!(gelu_tanh_f16(x).to_bits(), want.to_bits(), "x={x}");
        }
    }

    #[test]
    fn gelu_close_to_exact() {
        for x in [-3.0f32, -0.5, 0.0, 0.7, 2.5] {
            let exact = 0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044715 * x * x * x)).tanh());
            assert!((gelu_tanh_f16(x) - exact).abs() < 3e-3 * (1.0 + exact.abs()));
        }
    }
}
