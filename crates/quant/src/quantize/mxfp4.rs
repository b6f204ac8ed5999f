//! MXFP4 (OCP microscaling): 32 FP4 (E2M1) values sharing one power-of-two scale (E8M0).
//!
//! The shared exponent is `floor(log2 amax) − 2`, which puts the block's largest magnitude in
//! E2M1's top binade (4..8 times the scale; above 6 it rounds to 6); every element then takes
//! the nearest of the 16 E2M1 values, as the `gguf` Python package does (tests compare bit for
//! bit).

/// E2M1 values, doubled so they are integers (ggml's `kvalues_mxfp4`); code = index.
const E2M1_X2: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// Half the value of an E8M0 exponent byte, `2^(e - 128)`, including the subnormal f32 range.
fn e8m0_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000u32 << e
    } else {
        u32::from(e - 1) << 23
    };
    f32::from_bits(bits)
}

pub(super) fn mxfp4(x: &[f32], _qw: Option<&[f32]>, out: &mut [u8]) {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let e = if amax > 0.0 && amax.is_finite() {
        (amax.log2().floor() - 2.0 + 127.0).clamp(0.0, 254.0) as u8
    } else {
        0
    };
    let d = e8m0_half(e);
    let mut q = [0u8; 32];
    for (qi, &v) in q.iter_mut().zip(x) {
        let mut best = 0u8;
        let mut best_err = f32::INFINITY;
        for (k, &kv) in E2M1_X2.iter().enumerate() {
            let err = (d * f32::from(kv) - v).abs();
            if err < best_err {
                best_err = err;
                best = k as u8;
            }
        }
        *qi = best;
    }
    out[0] = e;
    for j in 0..16 {
        out[1 + j] = q[j] | (q[j + 16] << 4);
    }
}
