//! The AVX-512 VNNI panel microkernel: [`PANEL_ROWS`] weight rows × up to [`ACT_TILE`]
//! activation rows, on 512-bit vectors (lane `r` = weight row `r`).
//!
//! Per group of `G` elements and activation row: `G/4` `vpdpbusd` (the panel's four codes
//! of every row × four broadcast activation bytes), then one convert, one multiply and two
//! fused multiply-adds for all sixteen weight rows together. Eight activation rows give eight
//! independent accumulator chains, enough to hide `vpdpbusd`'s latency.
//!
//! Also the one-row form of the same arithmetic ([`group_sums`]).

use std::arch::x86_64::*;
use std::ptr::read_unaligned;

use super::{Acts, Panel, ACT_TILE, PANEL_ROWS};

/// Fills `tile[t]` for `t < nt` with the panel's rows · activation row `b0 + t`.
///
/// # Safety
/// The CPU must support AVX2, FMA, AVX-512 F/BW/VL/VNNI; `panel` must hold a panel of `k`
/// elements with groups of `g` (16 or 32), and `acts` rows `b0..b0 + nt` of `k` codes and
/// `k / g` groups.
pub(super) unsafe fn panel_tile(
    panel: &Panel,
    acts: &Acts,
    k: usize,
    g: usize,
    b0: usize,
    nt: usize,
    tile: &mut [[f32; PANEL_ROWS]; ACT_TILE],
) {
    debug_assert!(panel.codes.len() * 4 >= k * PANEL_ROWS);
    debug_assert!(acts.codes.len() >= (b0 + nt) * k);
    let mut t = 0;
    while t < nt {
        let out = &mut tile[t..];
        let step = match (nt - t, g) {
            (8.., 32) => run::<8, 32>(panel, acts, k, b0 + t, out),
            (8.., _) => run::<8, 16>(panel, acts, k, b0 + t, out),
            (4.., 32) => run::<4, 32>(panel, acts, k, b0 + t, out),
            (4.., _) => run::<4, 16>(panel, acts, k, b0 + t, out),
            (2.., 32) => run::<2, 32>(panel, acts, k, b0 + t, out),
            (2.., _) => run::<2, 16>(panel, acts, k, b0 + t, out),
            (_, 32) => run::<1, 32>(panel, acts, k, b0 + t, out),
            (_, _) => run::<1, 16>(panel, acts, k, b0 + t, out),
        };
        t += step;
    }
}

#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn run<const T: usize, const G: usize>(
    panel: &Panel,
    acts: &Acts,
    k: usize,
    b: usize,
    out: &mut [[f32; PANEL_ROWS]],
) -> usize {
    let ng = k / G;
    let quads = G / 4;
    let codes = panel.codes.as_ptr() as *const u8;
    let a: [*const i8; T] = std::array::from_fn(|t| acts.codes.as_ptr().add((b + t) * k));
    let da: [*const f32; T] = std::array::from_fn(|t| acts.da.as_ptr().add((b + t) * ng));
    let sa: [*const f32; T] = std::array::from_fn(|t| acts.sa.as_ptr().add((b + t) * ng));
    let mut facc = [_mm512_setzero_ps(); T];
    for grp in 0..ng {
        let mut iacc = [_mm512_setzero_si512(); T];
        for qd in 0..quads {
            let wv = _mm512_loadu_si512(codes.add((grp * quads + qd) * 4 * PANEL_ROWS) as *const _);
            let e = grp * G + qd * 4;
            for t in 0..T {
                let av = _mm512_set1_epi32(read_unaligned(a[t].add(e) as *const i32));
                iacc[t] = _mm512_dpbusd_epi32(iacc[t], wv, av);
            }
        }
        let dv = _mm512_loadu_ps(panel.d.as_ptr().add(grp * PANEL_ROWS));
        let mv = _mm512_loadu_ps(panel.m.as_ptr().add(grp * PANEL_ROWS));
        for t in 0..T {
            let s = _mm512_mul_ps(dv, _mm512_set1_ps(*da[t].add(grp)));
            facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iacc[t]), s, facc[t]);
            facc[t] = _mm512_fmadd_ps(mv, _mm512_set1_ps(*sa[t].add(grp)), facc[t]);
        }
    }
    for (t, acc) in facc.iter().enumerate() {
        _mm512_storeu_ps(out[t].as_mut_ptr(), *acc);
    }
    T
}

/// `Σ_groups (Σ q·a)·(d·da) + m·sa` for one weight row (codes `q`, per group `d`, `m`) and
/// one activation row (codes `a`, per group `da`, `sa`), groups of `g` (16 or 32), each
/// group's two terms added with a fused multiply-add in the order of [`panel_tile`]: the
/// result is that lane's, bit for bit. Each group's integer sum is one `vpdpbusd` and a
/// horizontal add (a plain loop the compiler widened took 60% of a short batch's time).
///
/// # Safety
/// The CPU must support AVX2, FMA, AVX-512 F/BW/VL/VNNI; `a` must be as long as `q`, and
/// the four scale slices hold `q.len() / g` groups.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn group_sums(
    q: &[u8],
    d: &[f32],
    m: &[f32],
    a: &[i8],
    da: &[f32],
    sa: &[f32],
    g: usize,
) -> f32 {
    debug_assert!(g == 16 || g == 32);
    debug_assert!(q.len() == a.len() && q.len() / g <= d.len().min(m.len()));
    debug_assert!(q.len() / g <= da.len().min(sa.len()));
    let (qp, ap) = (q.as_ptr(), a.as_ptr());
    let mut acc = 0f32;
    for grp in 0..q.len() / g {
        let at = grp * g;
        let lanes = if g == 32 {
            let qv = _mm256_loadu_si256(qp.add(at) as *const __m256i);
            let av = _mm256_loadu_si256(ap.add(at) as *const __m256i);
            let s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), qv, av);
            _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s))
        } else {
            let qv = _mm_loadu_si128(qp.add(at) as *const __m128i);
            let av = _mm_loadu_si128(ap.add(at) as *const __m128i);
            _mm_dpbusd_epi32(_mm_setzero_si128(), qv, av)
        };
        let pairs = _mm_add_epi32(lanes, _mm_unpackhi_epi64(lanes, lanes));
        let isum = _mm_cvtsi128_si32(_mm_add_epi32(pairs, _mm_srli_epi64::<32>(pairs)));
        acc = (isum as f32).mul_add(d[grp] * da[grp], acc);
        acc = m[grp].mul_add(sa[grp], acc);
    }
    acc
}
