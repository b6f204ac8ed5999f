//! f32 vector primitives for the engine's non-matmul operations (attention's `q·k` and
//! `Σ p·v`, and the tiles of `tile`): the engine is compiled for baseline x86-64, where
//! these loops get 128-bit SSE at best, so they are dispatched here to AVX-512 / AVX2
//! versions chosen at run time.

mod tile;

pub use tile::{gemm_acc, softmax_rows, softmax_tile, Elems};

#[cfg(target_arch = "x86_64")]
use super::Isa;

/// `Σ a[i]·b[i]` over the common length.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    #[cfg(target_arch = "x86_64")]
    match Isa::best() {
        // SAFETY: `best` only returns a level whose CPU features were detected.
        Isa::Avx512Vnni => return unsafe { x86::dot512(a, b) },
        // SAFETY: as above.
        Isa::Avx2 => return unsafe { x86::dot256(a, b) },
        Isa::Scalar | Isa::Neon | Isa::NeonDot => {}
    }
    dot_scalar(a, b)
}

/// `y[i] += alpha · x[i]` over the common length.
#[inline]
pub fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    let n = y.len().min(x.len());
    let (y, x) = (&mut y[..n], &x[..n]);
    #[cfg(target_arch = "x86_64")]
    match Isa::best() {
        // SAFETY: `best` only returns a level whose CPU features were detected.
        Isa::Avx512Vnni => return unsafe { x86::axpy512(y, alpha, x) },
        // SAFETY: as above.
        Isa::Avx2 => return unsafe { x86::axpy256(y, alpha, x) },
        Isa::Scalar | Isa::Neon | Isa::NeonDot => {}
    }
    axpy_scalar(y, alpha, x)
}

/// SwiGLU, `gate[i] ← silu(gate[i]) · up[i]` with `silu(x) = x / (1 + e^−x)`, over the
/// common length. The SIMD versions use the tiles' polynomial `exp` (within about 1 ulp);
/// libm's scalar `exp` per element was ~6% of a SmolLM2 prompt.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let (gate, up) = (&mut gate[..n], &up[..n]);
    #[cfg(target_arch = "x86_64")]
    match Isa::best() {
        // SAFETY: `best` only returns a level whose CPU features were detected.
        Isa::Avx512Vnni => return unsafe { x86::swiglu512(gate, up) },
        // SAFETY: as above.
        Isa::Avx2 => return unsafe { x86::swiglu256(gate, up) },
        Isa::Scalar | Isa::Neon | Isa::NeonDot => {}
    }
    swiglu_scalar(gate, up)
}

fn swiglu_scalar(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn axpy_scalar(y: &mut [f32], alpha: f32, x: &[f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o += alpha * v;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::tile::x86::{exp256, exp512};

    /// Callers guarantee `gate.len() == up.len()` and AVX-512F/BW/VL.
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn swiglu512(gate: &mut [f32], up: &[f32]) {
        let n = gate.len();
        let (pg, pu) = (gate.as_mut_ptr(), up.as_ptr());
        let one = _mm512_set1_ps(1.0);
        let mut i = 0;
        while i < n {
            let m: __mmask16 = if n - i >= 16 {
                0xffff
            } else {
                ((1u32 << (n - i)) - 1) as u16
            };
            let x = _mm512_maskz_loadu_ps(m, pg.add(i));
            let e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), x));
            let y = _mm512_mul_ps(
                _mm512_div_ps(x, _mm512_add_ps(one, e)),
                _mm512_maskz_loadu_ps(m, pu.add(i)),
            );
            _mm512_mask_storeu_ps(pg.add(i), m, y);
            i += 16;
        }
    }

    /// Callers guarantee `gate.len() == up.len()` and AVX2 + FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn swiglu256(gate: &mut [f32], up: &[f32]) {
        let n = gate.len();
        let (pg, pu) = (gate.as_mut_ptr(), up.as_ptr());
        let one = _mm256_set1_ps(1.0);
        let mut i = 0;
        while i + 8 <= n {
            let x = _mm256_loadu_ps(pg.add(i));
            let e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), x));
            let y = _mm256_mul_ps(
                _mm256_div_ps(x, _mm256_add_ps(one, e)),
                _mm256_loadu_ps(pu.add(i)),
            );
            _mm256_storeu_ps(pg.add(i), y);
            i += 8;
        }
        super::swiglu_scalar(&mut gate[i..], &up[i..]);
    }

    /// Callers guarantee `a.len() == b.len()` and AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dot512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut i = 0;
        while i + 32 <= n {
            s0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), s0);
            s1 = _mm512_fmadd_ps(
                _mm512_loadu_ps(pa.add(i + 16)),
                _mm512_loadu_ps(pb.add(i + 16)),
                s1,
            );
            i += 32;
        }
        if i + 16 <= n {
            s0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), s0);
            i += 16;
        }
        if i < n {
            let m: __mmask16 = (1u32 << (n - i)) as u16 - 1;
            s1 = _mm512_fmadd_ps(
                _mm512_maskz_loadu_ps(m, pa.add(i)),
                _mm512_maskz_loadu_ps(m, pb.add(i)),
                s1,
            );
        }
        _mm512_reduce_add_ps(_mm512_add_ps(s0, s1))
    }

    /// Callers guarantee `y.len() == x.len()` and AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn axpy512(y: &mut [f32], alpha: f32, x: &[f32]) {
        let n = y.len();
        let (py, px) = (y.as_mut_ptr(), x.as_ptr());
        let a = _mm512_set1_ps(alpha);
        let mut i = 0;
        while i + 16 <= n {
            let v = _mm512_fmadd_ps(a, _mm512_loadu_ps(px.add(i)), _mm512_loadu_ps(py.add(i)));
            _mm512_storeu_ps(py.add(i), v);
            i += 16;
        }
        if i < n {
            let m: __mmask16 = (1u32 << (n - i)) as u16 - 1;
            let v = _mm512_fmadd_ps(
                a,
                _mm512_maskz_loadu_ps(m, px.add(i)),
                _mm512_maskz_loadu_ps(m, py.add(i)),
            );
            _mm512_mask_storeu_ps(py.add(i), m, v);
        }
    }

    /// Callers guarantee `a.len() == b.len()` and AVX2 + FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot256(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
            s1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 8)),
                _mm256_loadu_ps(pb.add(i + 8)),
                s1,
            );
            i += 16;
        }
        if i + 8 <= n {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
            i += 8;
        }
        let s = _mm256_add_ps(s0, s1);
        let x = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
        let x = _mm_add_ps(x, _mm_movehl_ps(x, x));
        let x = _mm_add_ss(x, _mm_movehdup_ps(x));
        let mut r = _mm_cvtss_f32(x);
        while i < n {
            r += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        r
    }

    /// Callers guarantee `y.len() == x.len()` and AVX2 + FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn axpy256(y: &mut [f32], alpha: f32, x: &[f32]) {
        let n = y.len();
        let (py, px) = (y.as_mut_ptr(), x.as_ptr());
        let a = _mm256_set1_ps(alpha);
        let mut i = 0;
        while i + 8 <= n {
            let v = _mm256_fmadd_ps(a, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)));
            _mm256_storeu_ps(py.add(i), v);
            i += 8;
        }
        while i < n {
            *py.add(i) += alpha * *px.add(i);
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length's tail, inputs from −100 to 100 (e^−x saturating both ways): each
    /// level within 4 ulps-ish (2e-6 relative) of libm's scalar SwiGLU.
    #[test]
    fn simd_swiglu_matches_scalar_for_every_length() {
        for n in 0..70 {
            let gate: Vec<f32> = (0..n).map(|i| (i as f32 - 35.0) * 2.9).collect();
            let up: Vec<f32> = (0..n).map(|i| ((i * 53 % 19) as f32 - 9.0) / 5.0).collect();
            let mut want = gate.clone();
            swiglu_scalar(&mut want, &up);
            #[cfg(target_arch = "x86_64")]
            for isa in [Isa::Avx2, Isa::Avx512Vnni] {
                if !isa.supported() {
                    continue;
                }
                let mut got = gate.clone();
                // SAFETY: the features were just detected.
                unsafe {
                    if isa == Isa::Avx2 {
                        x86::swiglu256(&mut got, &up)
                    } else {
                        x86::swiglu512(&mut got, &up)
                    }
                }
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 2e-6 * w.abs() + 1e-30,
                        "{isa:?} n={n} [{i}] {g} vs {w} (x {})",
                        gate[i]
                    );
                }
            }
        }
    }

    #[test]
    fn simd_dot_and_axpy_match_scalar_for_every_length() {
        for n in 0..70 {
            let a: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
                .collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 53 % 19) as f32 - 9.0) / 5.0).collect();
            let mag: f32 = a.iter().zip(&b).map(|(x, y)| (x * y).abs()).sum();
            let want = dot_scalar(&a, &b);
            assert!((dot(&a, &b) - want).abs() <= 1e-5 * mag + 1e-6, "dot n={n}");
            let mut y1 = b.clone();
            let mut y2 = b.clone();
            axpy(&mut y1, 0.75, &a);
            axpy_scalar(&mut y2, 0.75, &a);
            for (p, q) in y1.iter().zip(&y2) {
                assert!((p - q).abs() <= 1e-6 * (1.0 + q.abs()), "axpy n={n}");
            }
            #[cfg(target_arch = "x86_64")]
            for isa in [Isa::Avx2, Isa::Avx512Vnni] {
                if !isa.supported() {
                    continue;
                }
                // SAFETY: the features were just detected.
                let (d, mut y3) = unsafe {
                    let mut y3 = b.clone();
                    if isa == Isa::Avx2 {
                        x86::axpy256(&mut y3, 0.75, &a);
                        (x86::dot256(&a, &b), y3)
                    } else {
                        x86::axpy512(&mut y3, 0.75, &a);
                        (x86::dot512(&a, &b), y3)
                    }
                };
                assert!((d - want).abs() <= 1e-5 * mag + 1e-6, "{isa:?} dot n={n}");
                for (p, q) in y3.iter_mut().zip(&y2) {
                    assert!(
                        (*p - *q).abs() <= 1e-6 * (1.0 + q.abs()),
                        "{isa:?} axpy n={n}"
                    );
                }
            }
        }
    }
}
