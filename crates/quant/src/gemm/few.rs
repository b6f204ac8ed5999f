//! The panel GEMM's arithmetic for a few activation rows against packed weights, read
//! straight from their packed layout ([`crate::repack`]): no panel, no decoded copy.
//!
//! Why: the server runs every prompt token through the GEMM, so that a prompt gets the same
//! bits whether it arrives whole or in pieces between other requests'
//! ([`crate::matmul::BatchInvariant`]). A piece of one to a few tokens (a prompt that
//! extends a cached one by a little) then paid for decoding every weight into panel codes:
//! on the 1B shape one activation row took 14× the generation kernel's time, decoding and
//! copying being 57% of it. Here the weights are read as the generation kernels read them.
//!
//! How: sixty-four weight rows per call, in sets of sixteen. For each row, the generation kernels' loads and
//! `vpdpbusd` leave per-group integer sums, one group per lane; those, and each group's `D`
//! and `M` (`w = D·q + M`, computed with the float operations of
//! [`super::decode`]), go to a row-major scratch. Then, sixteen groups at a time, 16×16
//! transposes turn them into lanes = weight rows, and the microkernel's float chain runs
//! over the groups in order: `acc = fma(Σq·a, D·da, acc)`, `acc = fma(M, sa, acc)`, the
//! same operations on the same values as a panel lane, so every result is the panel's to
//! the bit (integer sums do not depend on their order, and the codes are the panel's
//! unsigned ones). The tests of [`crate::matmul`] compare them.
//!
//! Measured (`cargo bench -p ferrite-quant --bench kernels -- tg/1b`, 2 threads, one
//! activation row, the 1B FFN shape): Q4_0 1.57 ms → 0.20 ms, Q4_K 1.47 → 0.18, Q6_K 2.09
//! → 0.31, where the generation kernels take 0.09-0.12 ms. Behind the server on the 1.1B
//! Q4_0 model a one-token prompt piece went from 114 to 37 ms, three tokens from ~150 to 55.
//! Q4_1 (the default SmolLM2), added later: `tg/1b/Q4_1-packed-gemm-row` 5.4 → 26-30 GiB/s,
//! and behind the server a request that extends a cached prompt by a few tokens 21.6 → 10.9
//! ms (median of 8 requests, 2 threads).

use std::arch::x86_64::*;
use std::ptr::read_unaligned;

use ferrite_gguf::GgmlType;

use super::{Acts, PANEL_ROWS};
use crate::kernels::act::k_grouped;
use crate::kernels::layout::{Q4_K_BYTES, Q6_K_BYTES};
use crate::kernels::zmm::{
    q4_k_group_header, Packed, Q4_0Packed, Q4_1Packed, Q5_0Packed, Q8_0Packed, K_MIN, K_SCALE,
};
use crate::repack::{GROUP, K_GROUP};

/// Activation rows one pass handles (their integer sums stay in registers per weight row).
pub(super) const MAX_ROWS: usize = 4;

/// Whether [`matmul_rows`] reads packed rows of `ty`.
pub(super) fn supported(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q8_0
            | GgmlType::Q4_K
            | GgmlType::Q6_K
    )
}

/// Elements of one packed group of `ty` (the unit the weight loops step by).
fn group_elems(ty: GgmlType) -> usize {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q8_0 => 32 * GROUP,
        GgmlType::Q4_K | GgmlType::Q6_K => 256 * K_GROUP,
        _ => unreachable!("{ty} is not supported here"),
    }
}

/// Bytes of one activation row's codes in [`regroup`]'s layout, for rows of `k` elements.
pub(super) fn regrouped_len(ty: GgmlType, k: usize) -> usize {
    let elems = group_elems(ty);
    k.div_ceil(elems) * elems
}

/// One activation row's codes (`a`, element order) in the order the packed weights' registers
/// meet them, zero-padded to whole packed groups (`out`: [`regrouped_len`] bytes).
/// - Q4_0, Q4_1, Q5_0, Q8_0: per group of four blocks, the blocks' elements 0..16 one after the
///   other, then their elements 16..32.
/// - Q4_K, Q6_K: per group of two blocks, eight 64-byte registers; register `t` holds
///   elements `4t..4t + 4` of each 32-element sub-block, sub-block `l` in 32-bit lane `l`.
pub(super) fn regroup(ty: GgmlType, a: &[i8], out: &mut [i8]) {
    let elems = group_elems(ty);
    out.fill(0);
    let k = a.len();
    for (g, dst) in out.chunks_exact_mut(elems).enumerate() {
        let base = g * elems;
        let mut put = |at: usize, e: usize| {
            if base + e < k {
                dst[at] = a[base + e];
            }
        };
        if elems == 32 * GROUP {
            for b in 0..GROUP {
                for j in 0..16 {
                    put(16 * b + j, 32 * b + j);
                    put(64 + 16 * b + j, 32 * b + 16 + j);
                }
            }
        } else {
            // The values' places in a Q8_KGrouped activation group (its first 512 bytes).
            for b in 0..K_GROUP {
                for e in 0..256 {
                    put(k_grouped::value(b, e), 256 * b + e);
                }
            }
        }
    }
}

/// Per-thread scratch: per weight row of the chunk, its groups' integer sums (one run per
/// activation row), `D` and `M`, row-major with a stride of whole transposes.
#[derive(Default)]
pub(super) struct Scratch {
    sums: Vec<f32>,
    d: Vec<f32>,
    m: Vec<f32>,
}

/// Independent float chains per activation row in the last step: one per sixteen weight
/// rows. A chain is two dependent FMAs per group; four of them overlap their latencies
/// (10-15% less time than one on the 1B shapes, `tg/1b/*-packed-gemm-row`).
const CHAINS: usize = 4;

/// Weight rows one call of [`matmul_rows`] handles.
pub(super) const ROWS: usize = PANEL_ROWS * CHAINS;

/// `y[b][r - rows.start]` for `r` in `rows` (at most [`ROWS`]) and `b < n_b` (at most
/// [`MAX_ROWS`]): packed weight rows `rows` of `w` (`row_bytes` each, `k` elements, groups
/// of `g`) times activation rows `b0..b0 + n_b` of `acts`, whose codes `regrouped` holds in
/// [`regroup`]'s layout (`stride` bytes per row).
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI; `w` must hold packed
/// rows of `ty` with `k` elements, `acts` rows `b0..b0 + n_b` of `k` codes and `k / g`
/// groups, and `regrouped` the same rows regrouped.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn matmul_rows(
    ty: GgmlType,
    w: &[u8],
    row_bytes: usize,
    rows: std::ops::Range<usize>,
    k: usize,
    g: usize,
    acts: &Acts,
    regrouped: &[i8],
    stride: usize,
    b0: usize,
    n_b: usize,
    scratch: &mut Scratch,
) -> [[f32; ROWS]; MAX_ROWS] {
    debug_assert!(n_b <= MAX_ROWS && rows.len() <= ROWS);
    let ng = k / g;
    // Rounded up to what the widest packed group writes (Q6_K: 32 groups).
    let gpad = ng.next_multiple_of(32);
    let Scratch { sums, d, m } = scratch;
    let sums_stride = ROWS * gpad;
    sums.resize(MAX_ROWS * sums_stride, 0.0);
    d.resize(ROWS * gpad, 0.0);
    m.resize(ROWS * gpad, 0.0);
    let mut x = [regrouped.as_ptr(); MAX_ROWS];
    for (b, x) in x.iter_mut().enumerate() {
        *x = regrouped.as_ptr().add((b0 + b.min(n_b - 1)) * stride);
    }
    for (r, row) in rows.clone().enumerate() {
        let p = w.as_ptr().add(row * row_bytes);
        let out = RowOut {
            sums: sums.as_mut_ptr().add(r * gpad),
            sums_stride,
            d: d.as_mut_ptr().add(r * gpad),
            m: m.as_mut_ptr().add(r * gpad),
        };
        match ty {
            GgmlType::Q4_0 => row_q32::<Q4_0Packed>(p, k / 32, &x, n_b, -8.0, &out),
            GgmlType::Q4_1 => row_q32::<Q4_1Packed>(p, k / 32, &x, n_b, 0.0, &out),
            GgmlType::Q5_0 => row_q32::<Q5_0Packed>(p, k / 32, &x, n_b, -16.0, &out),
            GgmlType::Q8_0 => row_q32::<Q8_0Packed>(p, k / 32, &x, n_b, -128.0, &out),
            GgmlType::Q4_K => row_q4_k(p, k / 256, &x, n_b, &out),
            GgmlType::Q6_K => row_q6_k(p, k / 256, &x, n_b, &out),
            _ => unreachable!("{ty} is not supported here"),
        }
    }
    // Lanes past `rows` hold whatever the scratch held: computed, never returned.
    let chains = rows.len().div_ceil(PANEL_ROWS);
    let mut acc = [[_mm512_setzero_ps(); CHAINS]; MAX_ROWS];
    let mut dt = [[_mm512_setzero_ps(); 16]; CHAINS];
    let mut mt = [[_mm512_setzero_ps(); 16]; CHAINS];
    let mut st = [[_mm512_setzero_ps(); 16]; CHAINS];
    for j0 in (0..ng).step_by(16) {
        let nj = 16.min(ng - j0);
        for h in 0..chains {
            let at = PANEL_ROWS * h * gpad + j0;
            dt[h] = transpose16(load16(d.as_ptr().add(at), gpad));
            mt[h] = transpose16(load16(m.as_ptr().add(at), gpad));
        }
        for (b, acc) in acc.iter_mut().enumerate().take(n_b) {
            for (h, st) in st.iter_mut().enumerate().take(chains) {
                let at = b * sums_stride + PANEL_ROWS * h * gpad + j0;
                *st = transpose16(load16(sums.as_ptr().add(at), gpad));
            }
            let (da, sa) = (
                &acts.da[(b0 + b) * ng + j0..][..nj],
                &acts.sa[(b0 + b) * ng + j0..][..nj],
            );
            for j in 0..nj {
                let (da, sa) = (_mm512_set1_ps(da[j]), _mm512_set1_ps(sa[j]));
                for h in 0..chains {
                    let s = _mm512_mul_ps(dt[h][j], da);
                    acc[h] = _mm512_fmadd_ps(st[h][j], s, acc[h]);
                    acc[h] = _mm512_fmadd_ps(mt[h][j], sa, acc[h]);
                }
            }
        }
    }
    let mut y = [[0f32; ROWS]; MAX_ROWS];
    for (yb, acc) in y.iter_mut().zip(acc).take(n_b) {
        for (h, acc) in acc.iter().enumerate() {
            _mm512_storeu_ps(yb.as_mut_ptr().add(PANEL_ROWS * h), *acc);
        }
    }
    y
}

/// Where one weight row's per-group values go: integer sums (as f32, exact) at
/// `sums + b · sums_stride` for activation row `b`, and `D`, `M`.
struct RowOut {
    sums: *mut f32,
    sums_stride: usize,
    d: *mut f32,
    m: *mut f32,
}

impl RowOut {
    /// Stores groups `at..at + 16`.
    #[inline(always)]
    unsafe fn put(&self, at: usize, sums: &[__m512i; MAX_ROWS], n_b: usize, d: __m512, m: __m512) {
        for (b, s) in sums.iter().enumerate().take(n_b) {
            _mm512_storeu_ps(
                self.sums.add(b * self.sums_stride + at),
                _mm512_cvtepi32_ps(*s),
            );
        }
        _mm512_storeu_ps(self.d.add(at), d);
        _mm512_storeu_ps(self.m.add(at), m);
    }
}

/// Lane `n` takes lane `4·(n % 4) + n / 4`: a 4×4 transpose of 32-bit lanes.
static TRANSPOSE4: [u32; 16] = [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15];

/// One packed row of a 32-element type (`nb` blocks): sixteen blocks (four packed groups)
/// per step. `D` is the block's scale, `M = offset · D` (the stored offset, negated), or for
/// a type with mins (Q4_1) the block's min.
#[inline(always)]
unsafe fn row_q32<W: Packed>(
    p: *const u8,
    nb: usize,
    x: &[*const i8; MAX_ROWS],
    n_b: usize,
    offset: f32,
    out: &RowOut,
) {
    let n_groups = nb.div_ceil(GROUP);
    let order = _mm512_loadu_si512(TRANSPOSE4.as_ptr() as *const __m512i);
    let mut set = 0;
    while set * 4 < n_groups {
        let mut part = [[_mm512_setzero_si512(); 4]; MAX_ROWS];
        let (mut scales, mut mins) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for i in 0..4 {
            let grp = 4 * set + i;
            if grp >= n_groups {
                break;
            }
            let at = p.add(grp * W::GROUP_BYTES);
            let left = nb - grp * GROUP;
            let ([lo, hi], sc) = if left >= GROUP {
                W::decode(at)
            } else {
                W::decode_short(at, left)
            };
            scales = insert128(scales, sc, i);
            if W::MINS {
                let mn = if left >= GROUP {
                    W::mins(at)
                } else {
                    W::mins_short(at, left)
                };
                mins = insert128(mins, mn, i);
            }
            for (b, part) in part.iter_mut().enumerate().take(n_b) {
                let xp = x[b].add(grp * 128);
                let xl = _mm512_loadu_si512(xp as *const __m512i);
                let xh = _mm512_loadu_si512(xp.add(64) as *const __m512i);
                let s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, xl);
                part[i] = _mm512_dpbusd_epi32(s, hi, xh);
            }
        }
        // part[i] holds block L of packed group i in lanes 4L..4L + 4; fold each block's
        // four lanes, leaving block 4i + L in lane 4L + i, then put the blocks in order.
        let mut sums = [_mm512_setzero_si512(); MAX_ROWS];
        for (s, [p0, p1, p2, p3]) in sums.iter_mut().zip(part).take(n_b) {
            let t01 =
                _mm512_add_epi32(_mm512_unpacklo_epi32(p0, p1), _mm512_unpackhi_epi32(p0, p1));
            let t23 =
                _mm512_add_epi32(_mm512_unpacklo_epi32(p2, p3), _mm512_unpackhi_epi32(p2, p3));
            let u = _mm512_add_epi32(
                _mm512_unpacklo_epi64(t01, t23),
                _mm512_unpackhi_epi64(t01, t23),
            );
            *s = _mm512_permutexvar_epi32(order, u);
        }
        let m = if W::MINS {
            mins
        } else {
            _mm512_mul_ps(scales, _mm512_set1_ps(offset))
        };
        out.put(16 * set, &sums, n_b, scales, m);
        set += 1;
    }
}

/// `v` with its 128-bit lane `i` replaced by `x`.
#[inline(always)]
unsafe fn insert128(v: __m512, x: __m128, i: usize) -> __m512 {
    match i {
        0 => _mm512_insertf32x4::<0>(v, x),
        1 => _mm512_insertf32x4::<1>(v, x),
        2 => _mm512_insertf32x4::<2>(v, x),
        _ => _mm512_insertf32x4::<3>(v, x),
    }
}

/// One packed Q4_K row of `nb` blocks: per packed group its 16 sub-blocks of 32 are 16
/// groups, lane `l` = group `l`. `D = d·sc`, `M = -(dmin·mn)`.
#[inline(always)]
unsafe fn row_q4_k(p: *const u8, nb: usize, x: &[*const i8; MAX_ROWS], n_b: usize, out: &RowOut) {
    const BYTES: usize = K_GROUP * Q4_K_BYTES;
    let m4 = _mm512_set1_epi8(0x0f);
    // Lanes of block 0 take `[d₀, dmin₀, d₁, dmin₁]`'s element 0 (1), block 1's element 2 (3).
    let (k_d, k_dmin) = (
        _mm512_load_si512(K_SCALE.0.as_ptr() as *const __m512i),
        _mm512_load_si512(K_MIN.0.as_ptr() as *const __m512i),
    );
    for grp in 0..nb.div_ceil(K_GROUP) {
        let wp = p.add(grp * BYTES);
        let mut lo = [_mm512_setzero_si512(); MAX_ROWS];
        let mut hi = [_mm512_setzero_si512(); MAX_ROWS];
        for c in 0..4 {
            let v = _mm512_loadu_si512(wp.add(64 * c) as *const __m512i);
            // High nibbles multiplied in place: `hi` sums 16× their products.
            let (cl, ch) = (_mm512_and_si512(v, m4), _mm512_andnot_si512(m4, v));
            for b in 0..n_b {
                let xp = x[b].add(grp * 512);
                let xl = _mm512_loadu_si512(xp.add(64 * c) as *const __m512i);
                let xh = _mm512_loadu_si512(xp.add(64 * (c + 4)) as *const __m512i);
                lo[b] = _mm512_dpbusd_epi32(lo[b], cl, xl);
                hi[b] = _mm512_dpbusd_epi32(hi[b], ch, xh);
            }
        }
        let mut sums = [_mm512_setzero_si512(); MAX_ROWS];
        for b in 0..n_b {
            sums[b] = _mm512_add_epi32(lo[b], _mm512_srai_epi32::<4>(hi[b]));
        }
        let (sc, mn, dd) = q4_k_group_header(wp.add(256));
        let dd = _mm512_castps128_ps512(dd);
        let d = _mm512_mul_ps(_mm512_permutexvar_ps(k_d, dd), _mm512_cvtepi32_ps(sc));
        let dmin = _mm512_mul_ps(_mm512_permutexvar_ps(k_dmin, dd), _mm512_cvtepi32_ps(mn));
        // The sign flipped (as `-(dmin·mn)`, -0 for 0), with AVX-512 F's integer XOR.
        let sign = _mm512_set1_epi32(i32::MIN);
        let m = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(dmin), sign));
        out.put(16 * grp, &sums, n_b, d, m);
    }
}

/// Lane `n` of a Q6_K packed group's first (then second) block in group order: sub-block
/// `n / 2`'s first 16 elements (from the first source) or last 16 (from the second).
static Q6_FIRST: [u32; 16] = [0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23];
static Q6_SECOND: [u32; 16] = [8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31];

/// One packed Q6_K row of `nb` blocks: groups of 16 elements, two per sub-block lane, so a
/// packed group fills 32 groups. `D = d·sc`, `M = -32·D`.
#[inline(always)]
unsafe fn row_q6_k(p: *const u8, nb: usize, x: &[*const i8; MAX_ROWS], n_b: usize, out: &RowOut) {
    const BYTES: usize = K_GROUP * Q6_K_BYTES;
    let m4 = _mm512_set1_epi8(0x0f);
    let m30 = _mm512_set1_epi8(0x30);
    let (first, second) = (
        _mm512_loadu_si512(Q6_FIRST.as_ptr() as *const __m512i),
        _mm512_loadu_si512(Q6_SECOND.as_ptr() as *const __m512i),
    );
    // `low | (high & 0x30)`, bitwise.
    const LOW_OR_HIGH_BITS: i32 = 0xf8;
    for grp in 0..nb.div_ceil(K_GROUP) {
        let wp = p.add(grp * BYTES);
        let high = [
            _mm512_loadu_si512(wp.add(256) as *const __m512i),
            _mm512_loadu_si512(wp.add(320) as *const __m512i),
        ];
        let mut lo = [_mm512_setzero_si512(); MAX_ROWS];
        let mut hi = [_mm512_setzero_si512(); MAX_ROWS];
        for c in 0..4 {
            let v = _mm512_loadu_si512(wp.add(64 * c) as *const __m512i);
            let low = [
                _mm512_and_si512(v, m4),
                _mm512_and_si512(_mm512_srli_epi16::<4>(v), m4),
            ];
            let mut codes = [_mm512_setzero_si512(); 2];
            for half in 0..2 {
                // Bits 2c..2c+2 of each byte to bits 4..6.
                let h = match c {
                    0 => _mm512_slli_epi16::<4>(high[half]),
                    1 => _mm512_slli_epi16::<2>(high[half]),
                    2 => high[half],
                    _ => _mm512_srli_epi16::<2>(high[half]),
                };
                codes[half] = _mm512_ternarylogic_epi32::<LOW_OR_HIGH_BITS>(low[half], h, m30);
            }
            for b in 0..n_b {
                let xp = x[b].add(grp * 512);
                let xl = _mm512_loadu_si512(xp.add(64 * c) as *const __m512i);
                let xh = _mm512_loadu_si512(xp.add(64 * (c + 4)) as *const __m512i);
                lo[b] = _mm512_dpbusd_epi32(lo[b], codes[0], xl);
                hi[b] = _mm512_dpbusd_epi32(hi[b], codes[1], xh);
            }
        }
        let sc = [
            _mm512_cvtepi8_epi32(_mm_loadu_si128(wp.add(384) as *const __m128i)),
            _mm512_cvtepi8_epi32(_mm_loadu_si128(wp.add(400) as *const __m128i)),
        ];
        let dd = [
            half::f16::from_bits(read_unaligned(wp.add(416) as *const u16)).to_f32(),
            half::f16::from_bits(read_unaligned(wp.add(418) as *const u16)).to_f32(),
        ];
        for (blk, order) in [first, second].into_iter().enumerate() {
            let mut sums = [_mm512_setzero_si512(); MAX_ROWS];
            for b in 0..n_b {
                sums[b] = _mm512_permutex2var_epi32(lo[b], order, hi[b]);
            }
            let scale = _mm512_cvtepi32_ps(_mm512_permutex2var_epi32(sc[0], order, sc[1]));
            let d = _mm512_mul_ps(_mm512_set1_ps(dd[blk]), scale);
            let m = _mm512_mul_ps(_mm512_set1_ps(-32.0), d);
            out.put(32 * grp + 16 * blk, &sums, n_b, d, m);
        }
    }
}

/// Sixteen vectors of 16 floats, `stride` floats apart from `p`. (A loop, not
/// `array::from_fn`: its closure would not inherit the caller's target features, and the
/// loads would become calls.)
#[inline(always)]
unsafe fn load16(p: *const f32, stride: usize) -> [__m512; 16] {
    let mut v = [_mm512_setzero_ps(); 16];
    for (r, v) in v.iter_mut().enumerate() {
        *v = _mm512_loadu_ps(p.add(r * stride));
    }
    v
}

/// A 16×16 transpose: lane `c` of output `r` is lane `r` of input `c`.
#[inline(always)]
unsafe fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // u[4i + c] holds, in 128-bit lane q, column 4q + c of rows 4i..4i + 4.
    let pd = _mm512_castps_pd;
    let ps = _mm512_castpd_ps;
    let mut u = [_mm512_setzero_ps(); 16];
    for i in 0..4 {
        let (a, b, c, d) = (
            pd(t[4 * i]),
            pd(t[4 * i + 1]),
            pd(t[4 * i + 2]),
            pd(t[4 * i + 3]),
        );
        u[4 * i] = ps(_mm512_unpacklo_pd(a, c));
        u[4 * i + 1] = ps(_mm512_unpackhi_pd(a, c));
        u[4 * i + 2] = ps(_mm512_unpacklo_pd(b, d));
        u[4 * i + 3] = ps(_mm512_unpackhi_pd(b, d));
    }
    // Then a 4×4 transpose of 128-bit lanes across u[c], u[4 + c], u[8 + c], u[12 + c].
    let mut out = [_mm512_setzero_ps(); 16];
    for c in 0..4 {
        let (a, b, cc, d) = (u[c], u[4 + c], u[8 + c], u[12 + c]);
        let s0 = _mm512_shuffle_f32x4::<0b01_00_01_00>(a, b);
        let s1 = _mm512_shuffle_f32x4::<0b01_00_01_00>(cc, d);
        let s2 = _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b);
        let s3 = _mm512_shuffle_f32x4::<0b11_10_11_10>(cc, d);
        out[c] = _mm512_shuffle_f32x4::<0b10_00_10_00>(s0, s1);
        out[4 + c] = _mm512_shuffle_f32x4::<0b11_01_11_01>(s0, s1);
        out[8 + c] = _mm512_shuffle_f32x4::<0b10_00_10_00>(s2, s3);
        out[12 + c] = _mm512_shuffle_f32x4::<0b11_01_11_01>(s2, s3);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose16_transposes() {
        if !super::super::available() {
            return;
        }
        let m: Vec<f32> = (0..256).map(|i| i as f32).collect();
        // SAFETY: AVX-512 was detected just above; every load reads 16 floats of `m`.
        let got = unsafe {
            let rows = std::array::from_fn(|r| _mm512_loadu_ps(m.as_ptr().add(16 * r)));
            transpose16(rows).map(|v| {
                let mut o = [0f32; 16];
                _mm512_storeu_ps(o.as_mut_ptr(), v);
                o
            })
        };
        for (c, col) in got.iter().enumerate() {
            for (r, &v) in col.iter().enumerate() {
                assert_eq!(v, m[16 * r + c], "output {c} lane {r}");
            }
        }
    }
}
