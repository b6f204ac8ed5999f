//! aarch64 kernels: NEON (every aarch64 CPU has it) and NEON with the Armv8.2 dot-product
//! extension (`sdot`: sixteen 8-bit products summed into four 32-bit lanes in one
//! instruction; Apple M-series, Graviton 2+, Cortex-A55/A76 and later).
//!
//! Every kernel body is generic over the 8-bit multiply-accumulate (`Mac`: `sdot`, or
//! widening multiplies and pairwise adds where the CPU lacks it) and over the number of
//! activation rows `N` it handles per pass: a weight block is decoded once and multiplied
//! into `N` accumulators (prompt batches use `N = TILE`). Each row's arithmetic is the same
//! whatever `N` is, so one row and a tile agree to the bit.
//!
//! How each family sums:
//! - 32-element blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL): the block's 32-bit lanes,
//!   converted to f32, go into two per-row f32x4 accumulators (even and odd blocks, so one
//!   block's FMA does not wait for the previous one's), reduced at the end of the row.
//! - k-quants and IQ4_XS: each sub-block's lanes are multiplied by its integer scale into
//!   one i32x4 per block (exact), reduced to the block's integer sum, and that is scaled and
//!   summed in f32 exactly as [`super::scalar`] does, so these agree with the reference to
//!   the bit.
//! - F32, F16, BF16: f32x4 FMAs, four accumulators per row.
//!
//! `sdot` and the f16 conversion (`fcvtl`) are written as inline assembly: Rust's
//! `vdotq_s32` and `float16x4_t` intrinsics are not stable yet.
//!
//! Safety contract of every body: `w` holds whole weight blocks, and every `a[r]` holds
//! exactly as many elements (in its activation format) as `w`. [`super::Kernel`] checks this
//! before calling, and the entry points are only reachable through a `Kernel` built after
//! [`super::Isa::supported`] confirmed the CPU features.

use std::arch::aarch64::*;
use std::arch::asm;
use std::ptr::read_unaligned;

use ferrite_gguf::GgmlType;

use super::layout::*;
use super::scalar::{iq4_xs_scale, k4_scale_min, q3_k_scales};
use super::{DotFn, Isa, RowsFn, TileFn, TILE};

/// The 8-bit multiply-accumulate: the four lanes of the result sum to the lanes of `acc`
/// plus `Σ_{i<16} a[i]·b[i]` (how the products spread over the lanes differs by flavour;
/// every caller only uses the lanes' total or scales all four alike).
trait Mac {
    unsafe fn mac(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t;
}

/// Plain NEON: widening 8×8→16-bit multiplies, pairwise-added into the 32-bit lanes.
struct Widening;
/// The dot-product extension's `sdot`.
struct Sdot;

impl Mac for Widening {
    #[inline(always)]
    unsafe fn mac(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // |a·b| ≤ 128·128 fits an i16 lane.
        let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        let hi = vmull_high_s8(a, b);
        vpadalq_s16(vpadalq_s16(acc, lo), hi)
    }
}

impl Mac for Sdot {
    #[inline(always)]
    unsafe fn mac(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // SAFETY: only instantiated in the `dotprod` entry points (see `entry!`).
        asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack)
        );
        acc
    }
}

#[inline(always)]
unsafe fn u16_at(p: *const u8) -> u16 {
    read_unaligned(p as *const u16)
}

#[inline(always)]
unsafe fn f32_at(p: *const u8) -> f32 {
    read_unaligned(p as *const f32)
}

/// Four f16 values (as bits) converted to f32 with one `fcvtl`.
#[inline(always)]
pub(crate) unsafe fn f16x4(v: uint16x4_t) -> float32x4_t {
    let out: float32x4_t;
    // SAFETY: FCVTL (half to single) is base Armv8-A floating point, present on every
    // aarch64 CPU; it reads and writes vector registers only.
    asm!(
        "fcvtl {out:v}.4s, {v:v}.4h",
        out = out(vreg) out,
        v = in(vreg) v,
        options(pure, nomem, nostack)
    );
    out
}

#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    vgetq_lane_f32::<0>(f16x4(vdup_n_u16(u16_at(p))))
}

#[inline(always)]
unsafe fn s8(p: *const u8) -> int8x16_t {
    vld1q_s8(p as *const i8)
}

/// The low and high nibbles of 16 bytes: elements 0..16 and 16..32 of a 4-bit block.
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> (uint8x16_t, uint8x16_t) {
    let v = vld1q_u8(p);
    (vandq_u8(v, vdupq_n_u8(0x0f)), vshrq_n_u8::<4>(v))
}

/// The fifth bits of Q5_0/Q5_1 (bit `j` of the 32-bit `qh` for element `j`) as 0 or 16 per
/// byte, for elements 0..16 and 16..32.
#[inline(always)]
unsafe fn fifth_bits(qh: u32) -> (uint8x16_t, uint8x16_t) {
    const LO: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
    const BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    let bytes = vreinterpretq_u8_u32(vdupq_n_u32(qh));
    let lo = vld1q_u8(LO.as_ptr());
    let hi = vaddq_u8(lo, vdupq_n_u8(2));
    let bit = vld1q_u8(BIT.as_ptr());
    let sixteen = vdupq_n_u8(16);
    let f0 = vandq_u8(vtstq_u8(vqtbl1q_u8(bytes, lo), bit), sixteen);
    let f1 = vandq_u8(vtstq_u8(vqtbl1q_u8(bytes, hi), bit), sixteen);
    (f0, f1)
}

/// A 32-element block's weights as signed bytes: elements 0..16 and 16..32.
type Decoded = (int8x16_t, int8x16_t);

/// Rows of 32-element blocks of `WB` bytes against Q8_0 (`MIN = false`) or Q8_1 (`MIN =
/// true`: the weights carry a minimum `m` at byte 2 and the activations `s = d·Σq` at byte
/// 2) activations; `decode` gives a block's signed values.
#[inline(always)]
unsafe fn blocks32<M: Mac, const N: usize, const WB: usize, const MIN: bool>(
    w: &[u8],
    a: [&[u8]; N],
    decode: impl Fn(*const u8) -> Decoded,
) -> [f32; N] {
    let nb = w.len() / WB;
    let zero = vdupq_n_f32(0.0);
    let (mut even, mut odd) = ([zero; N], [zero; N]);
    let mut mins = [0f32; N];
    let mut i = 0;
    while i + 2 <= nb {
        block32::<M, N, WB, MIN>(w, a, i, &decode, &mut even, &mut mins);
        block32::<M, N, WB, MIN>(w, a, i + 1, &decode, &mut odd, &mut mins);
        i += 2;
    }
    if i < nb {
        block32::<M, N, WB, MIN>(w, a, i, &decode, &mut even, &mut mins);
    }
    let mut out = [0f32; N];
    for r in 0..N {
        out[r] = vaddvq_f32(vaddq_f32(even[r], odd[r])) + mins[r];
    }
    out
}

/// Block `i` of [`blocks32`] into each row's accumulator.
#[inline(always)]
unsafe fn block32<M: Mac, const N: usize, const WB: usize, const MIN: bool>(
    w: &[u8],
    a: [&[u8]; N],
    i: usize,
    decode: &impl Fn(*const u8) -> Decoded,
    acc: &mut [float32x4_t; N],
    mins: &mut [f32; N],
) {
    let (ab, qa) = if MIN {
        (Q8_1_BYTES, 4)
    } else {
        (Q8_0_BYTES, 2)
    };
    let wp = w.as_ptr().add(i * WB);
    let (q0, q1) = decode(wp);
    let (dw, mw) = (u16_at(wp), if MIN { u16_at(wp.add(2)) } else { 0 });
    for r in 0..N {
        let ap = a[r].as_ptr().add(i * ab);
        let p = M::mac(vdupq_n_s32(0), q0, s8(ap.add(qa)));
        let p = M::mac(p, q1, s8(ap.add(qa + 16)));
        let sa = if MIN { u16_at(ap.add(2)) } else { 0 };
        let scales: [u16; 4] = [dw, u16_at(ap), mw, sa];
        let sc = f16x4(vld1_u16(scales.as_ptr()));
        let d = vgetq_lane_f32::<0>(sc) * vgetq_lane_f32::<1>(sc);
        acc[r] = vfmaq_n_f32(acc[r], vcvtq_f32_s32(p), d);
        if MIN {
            mins[r] += vgetq_lane_f32::<2>(sc) * vgetq_lane_f32::<3>(sc);
        }
    }
}

#[inline(always)]
unsafe fn q4_0<M: Mac, const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    blocks32::<M, N, Q4_0_BYTES, false>(w, a, |p| {
        let (lo, hi) = nibbles(p.add(2));
        let eight = vdupq_n_s8(8);
        (
            vsubq_s8(vreinterpretq_s8_u8(lo), eight),
            vsubq_s8(vreinterpretq_s8_u8(hi), eight),
        )
    })
}

#[inline(always)]
unsafe fn q4_1<M: Mac, const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    blocks32::<M, N, Q4_1_BYTES, true>(w, a, |p| {
        let (lo, hi) = nibbles(p.add(4));
        (vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi))
    })
}

#[inline(always)]
unsafe fn q5_0<M: Mac, const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    blocks32::<M, N, Q5_0_BYTES, false>(w, a, |p| {
        let (lo, hi) = nibbles(p.add(6));
        let (f0, f1) = fifth_bits(read_unaligned(p.add(2) as *const u32));
        let sixteen = vdupq_n_s8(16);
        (
            vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(lo, f0)), sixteen),
            vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(hi, f1)), sixteen),
        )
    })
}

#[inline(always)]
unsafe fn q5_1<M: Mac, const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    blocks32::<M, N, Q5_1_BYTES, true>(w, a, |p| {
        let (lo, hi) = nibbles(p.add(8));
        let (f0, f1) = fifth_bits(read_unaligned(p.add(4) as *const u32));
        (
            vreinterpretq_s8_u8(vorrq_u8(lo, f0)),
            vreinterpretq_s8_u8(vorrq_u8(hi, f1)),
        )
    })
}

#[inline(always)]
unsafe fn q8_0<M: Mac, const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    blocks32::<M, N, Q8_0_BYTES, false>(w, a, |p| (s8(p.add(2)), s8(p.add(18))))
}

#[inline(always)]
unsafe fn iq4_nl<M: Mac, const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    blocks32::<M, N, IQ4_NL_BYTES, false>(w, a, |p| {
        let table = vld1q_s8(KVALUES_IQ4NL.as_ptr());
        let (lo, hi) = nibbles(p.add(2));
        (vqtbl1q_s8(table, lo), vqtbl1q_s8(table, hi))
    })
}

/// The Q8_K activation codes of elements `e..e + 16` of block `i`.
#[inline(always)]
unsafe fn q8k(a: &[u8], i: usize, e: usize) -> int8x16_t {
    s8(a.as_ptr().add(i * Q8_K_BYTES + 4 + e))
}

/// Σ over sub-blocks `j` of `m_j`·(the activations' sum over sub-block `j`), for the
/// 16-element partial sums Q8_K stores: `pair` sums adjacent ones (32-element sub-blocks).
#[inline(always)]
unsafe fn min_sum(a: &[u8], i: usize, mins: &[i32], pair: bool) -> i32 {
    let bs = a.as_ptr().add(i * Q8_K_BYTES + 260);
    let bsum = |j: usize| i32::from(read_unaligned(bs.add(2 * j) as *const i16));
    let mut s = 0;
    for (j, m) in mins.iter().enumerate() {
        s += m * if pair {
            bsum(2 * j) + bsum(2 * j + 1)
        } else {
            bsum(j)
        };
    }
    s
}

/// Rows of 256-element blocks of `WB` bytes against Q8_K activations: `block(weights, i,
/// a)` gives block `i`'s f32 term for each row, and the terms are summed in block order as
/// [`super::scalar`] sums them.
#[inline(always)]
unsafe fn blocks256<const N: usize, const WB: usize>(
    w: &[u8],
    a: [&[u8]; N],
    mut block: impl FnMut(*const u8, usize, [&[u8]; N]) -> [f32; N],
) -> [f32; N] {
    let nb = w.len() / WB;
    let mut s = [0f32; N];
    for i in 0..nb {
        let t = block(w.as_ptr().add(i * WB), i, a);
        for r in 0..N {
            s[r] += t[r];
        }
    }
    s
}

/// The eight (scale, minimum) pairs of a Q4_K/Q5_K block.
#[inline(always)]
unsafe fn k4_scales(wp: *const u8) -> ([i32; 8], [i32; 8]) {
    let scales = std::slice::from_raw_parts(wp.add(4), 12);
    let (mut sc, mut mn) = ([0i32; 8], [0i32; 8]);
    for j in 0..8 {
        (sc[j], mn[j]) = k4_scale_min(scales, j);
    }
    (sc, mn)
}

/// A Q4_K/Q5_K block's f32 term per row from its sub-block integer sums (`isum`).
#[inline(always)]
unsafe fn k4_finish<const N: usize>(
    wp: *const u8,
    i: usize,
    a: [&[u8]; N],
    isum: [int32x4_t; N],
    mn: &[i32; 8],
) -> [f32; N] {
    let (dw, dmin) = (f16_at(wp), f16_at(wp.add(2)));
    let mut t = [0f32; N];
    for r in 0..N {
        let da = f32_at(a[r].as_ptr().add(i * Q8_K_BYTES));
        let (d, m) = (dw * da, dmin * da);
        let msum = min_sum(a[r], i, mn, true);
        t[r] = d * vaddvq_s32(isum[r]) as f32 - m * msum as f32;
    }
    t
}

#[inline(always)]
unsafe fn q4_k<M: Mac, const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    blocks256::<N, Q4_K_BYTES>(w, a, |wp, i, a| {
        let (sc, mn) = k4_scales(wp);
        let mut isum = [vdupq_n_s32(0); N];
        for c in 0..4 {
            // 32 code bytes: sub-block 2c in the low nibbles, 2c + 1 in the high ones.
            let (l0, h0) = nibbles(wp.add(16 + 32 * c));
            let (l1, h1) = nibbles(wp.add(32 + 32 * c));
            let q = [l0, l1, h0, h1];
            for r in 0..N {
                let e = 64 * c;
                let p = M::mac(vdupq_n_s32(0), vreinterpretq_s8_u8(q[0]), q8k(a[r], i, e));
                let p = M::mac(p, vreinterpretq_s8_u8(q[1]), q8k(a[r], i, e + 16));
                isum[r] = vmlaq_n_s32(isum[r], p, sc[2 * c]);
                let p = M::mac(
                    vdupq_n_s32(0),
                    vreinterpretq_s8_u8(q[2]),
                    q8k(a[r], i, e + 32),
                );
                let p = M::mac(p, vreinterpretq_s8_u8(q[3]), q8k(a[r], i, e + 48));
                isum[r] = vmlaq_n_s32(isum[r], p, sc[2 * c + 1]);
            }
        }
        k4_finish(wp, i, a, isum, &mn)
    })
}

#[inline(always)]
unsafe fn q5_k<M: Mac, const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    blocks256::<N, Q5_K_BYTES>(w, a, |wp, i, a| {
        let (sc, mn) = k4_scales(wp);
        let qh = [vld1q_u8(wp.add(16)), vld1q_u8(wp.add(32))];
        let sixteen = vdupq_n_u8(16);
        let mut isum = [vdupq_n_s32(0); N];
        for c in 0..4 {
            let (l0, h0) = nibbles(wp.add(48 + 32 * c));
            let (l1, h1) = nibbles(wp.add(64 + 32 * c));
            for (j, halves) in [(2 * c, [l0, l1]), (2 * c + 1, [h0, h1])] {
                // Bit j of qh[e] is the fifth bit of element e of sub-block j.
                let bit = vdupq_n_u8(1 << j);
                let fifth = |h: usize| vandq_u8(vtstq_u8(qh[h], bit), sixteen);
                let q0 = vreinterpretq_s8_u8(vorrq_u8(halves[0], fifth(0)));
                let q1 = vreinterpretq_s8_u8(vorrq_u8(halves[1], fifth(1)));
                for r in 0..N {
                    let p = M::mac(vdupq_n_s32(0), q0, q8k(a[r], i, 32 * j));
                    let p = M::mac(p, q1, q8k(a[r], i, 32 * j + 16));
                    isum[r] = vmlaq_n_s32(isum[r], p, sc[j]);
                }
            }
        }
        k4_finish(wp, i, a, isum, &mn)
    })
}

#[inline(always)]
unsafe fn q6_k<M: Mac, const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    blocks256::<N, Q6_K_BYTES>(w, a, |wp, i, a| {
        let dw = f16_at(wp.add(208));
        let mut isum = [vdupq_n_s32(0); N];
        let (mask, three, off) = (vdupq_n_u8(0x0f), vdupq_n_u8(3), vdupq_n_s8(32));
        for half in 0..2 {
            let ql = wp.add(64 * half);
            let qh = wp.add(128 + 32 * half);
            for quarter in 0..4 {
                for sub in 0..2 {
                    let low = vld1q_u8(ql.add(32 * (quarter % 2) + 16 * sub));
                    let low = if quarter < 2 {
                        vandq_u8(low, mask)
                    } else {
                        vshrq_n_u8::<4>(low)
                    };
                    let high = vld1q_u8(qh.add(16 * sub));
                    let high = match quarter {
                        0 => vandq_u8(high, three),
                        1 => vandq_u8(vshrq_n_u8::<2>(high), three),
                        2 => vandq_u8(vshrq_n_u8::<4>(high), three),
                        _ => vshrq_n_u8::<6>(high),
                    };
                    let q = vorrq_u8(low, vshlq_n_u8::<4>(high));
                    let q = vsubq_s8(vreinterpretq_s8_u8(q), off);
                    let e = 128 * half + 32 * quarter + 16 * sub;
                    let sc = i32::from(*wp.add(192 + e / 16) as i8);
                    for r in 0..N {
                        let p = M::mac(vdupq_n_s32(0), q, q8k(a[r], i, e));
                        isum[r] = vmlaq_n_s32(isum[r], p, sc);
                    }
                }
            }
        }
        scaled_sums(dw, i, a, isum)
    })
}

/// A block's f32 term per row for the types without minimums (Q3_K, Q6_K, IQ4_XS): the
/// weights' scale `dw` times the activations' times the block's integer sum, as
/// [`super::scalar`] multiplies them.
#[inline(always)]
unsafe fn scaled_sums<const N: usize>(
    dw: f32,
    i: usize,
    a: [&[u8]; N],
    isum: [int32x4_t; N],
) -> [f32; N] {
    let mut t = [0f32; N];
    for r in 0..N {
        let d = dw * f32_at(a[r].as_ptr().add(i * Q8_K_BYTES));
        t[r] = d * vaddvq_s32(isum[r]) as f32;
    }
    t
}

/// The 2-bit codes of elements `e..e + 16` (`e = 128·half + 32·shift + 16·sub`) of a
/// Q2_K/Q3_K plane.
#[inline(always)]
unsafe fn two_bits(plane: *const u8, half: usize, shift: usize, sub: usize) -> uint8x16_t {
    let v = vld1q_u8(plane.add(32 * half + 16 * sub));
    let v = match shift {
        0 => v,
        1 => vshrq_n_u8::<2>(v),
        2 => vshrq_n_u8::<4>(v),
        _ => vshrq_n_u8::<6>(v),
    };
    vandq_u8(v, vdupq_n_u8(3))
}

#[inline(always)]
unsafe fn q2_k<M: Mac, const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    blocks256::<N, Q2_K_BYTES>(w, a, |wp, i, a| {
        let (dw, dmin) = (f16_at(wp.add(80)), f16_at(wp.add(82)));
        let mut mn = [0i32; 16];
        for (j, m) in mn.iter_mut().enumerate() {
            *m = i32::from(*wp.add(j) >> 4);
        }
        let mut isum = [vdupq_n_s32(0); N];
        for half in 0..2 {
            for shift in 0..4 {
                for sub in 0..2 {
                    let q = vreinterpretq_s8_u8(two_bits(wp.add(16), half, shift, sub));
                    let e = 128 * half + 32 * shift + 16 * sub;
                    let sc = i32::from(*wp.add(e / 16) & 0x0f);
                    for r in 0..N {
                        let p = M::mac(vdupq_n_s32(0), q, q8k(a[r], i, e));
                        isum[r] = vmlaq_n_s32(isum[r], p, sc);
                    }
                }
            }
        }
        let mut t = [0f32; N];
        for r in 0..N {
            let da = f32_at(a[r].as_ptr().add(i * Q8_K_BYTES));
            let msum = min_sum(a[r], i, &mn, false);
            t[r] = da * dw * vaddvq_s32(isum[r]) as f32 - da * dmin * msum as f32;
        }
        t
    })
}

#[inline(always)]
unsafe fn q3_k<M: Mac, const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    blocks256::<N, Q3_K_BYTES>(w, a, |wp, i, a| {
        let dw = f16_at(wp.add(108));
        let scales = q3_k_scales(std::slice::from_raw_parts(wp.add(96), 12));
        let hmask = [vld1q_u8(wp), vld1q_u8(wp.add(16))];
        let four = vdupq_n_u8(4);
        let mut isum = [vdupq_n_s32(0); N];
        for half in 0..2 {
            for shift in 0..4 {
                // A clear bit in hmask means the value is 4 lower.
                let bit = vdupq_n_u8(1 << (4 * half + shift));
                for (sub, hm) in hmask.iter().enumerate() {
                    let low = two_bits(wp.add(32), half, shift, sub);
                    let minus = vbicq_u8(four, vtstq_u8(*hm, bit));
                    let q = vsubq_s8(vreinterpretq_s8_u8(low), vreinterpretq_s8_u8(minus));
                    let e = 128 * half + 32 * shift + 16 * sub;
                    for r in 0..N {
                        let p = M::mac(vdupq_n_s32(0), q, q8k(a[r], i, e));
                        isum[r] = vmlaq_n_s32(isum[r], p, scales[e / 16]);
                    }
                }
            }
        }
        scaled_sums(dw, i, a, isum)
    })
}

#[inline(always)]
unsafe fn iq4_xs<M: Mac, const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    blocks256::<N, IQ4_XS_BYTES>(w, a, |wp, i, a| {
        let dw = f16_at(wp);
        let block = std::slice::from_raw_parts(wp, IQ4_XS_BYTES);
        let table = vld1q_s8(KVALUES_IQ4NL.as_ptr());
        let mut isum = [vdupq_n_s32(0); N];
        for ib in 0..8 {
            let (lo, hi) = nibbles(wp.add(8 + 16 * ib));
            let (q0, q1) = (vqtbl1q_s8(table, lo), vqtbl1q_s8(table, hi));
            let sc = iq4_xs_scale(block, ib);
            for r in 0..N {
                let p = M::mac(vdupq_n_s32(0), q0, q8k(a[r], i, 32 * ib));
                let p = M::mac(p, q1, q8k(a[r], i, 32 * ib + 16));
                isum[r] = vmlaq_n_s32(isum[r], p, sc);
            }
        }
        scaled_sums(dw, i, a, isum)
    })
}

/// Rows of floats (`EB` bytes each) against rows of the same type: 16 elements per step
/// into four f32x4 accumulators per row, then the tail one element at a time.
#[inline(always)]
unsafe fn float_rows<const N: usize, const EB: usize>(
    w: &[u8],
    a: [&[u8]; N],
    four: impl Fn(*const u8) -> float32x4_t,
    one: impl Fn(*const u8) -> f32,
) -> [f32; N] {
    let k = w.len() / EB;
    let zero = vdupq_n_f32(0.0);
    let mut acc = [[zero; 4]; N];
    let mut i = 0;
    while i + 16 <= k {
        for (v, slot) in (0..4).map(|v| (v, i + 4 * v)) {
            let wv = four(w.as_ptr().add(slot * EB));
            for r in 0..N {
                acc[r][v] = vfmaq_f32(acc[r][v], wv, four(a[r].as_ptr().add(slot * EB)));
            }
        }
        i += 16;
    }
    let mut out = [0f32; N];
    for r in 0..N {
        let s = vaddq_f32(
            vaddq_f32(acc[r][0], acc[r][1]),
            vaddq_f32(acc[r][2], acc[r][3]),
        );
        out[r] = vaddvq_f32(s);
    }
    while i < k {
        let wv = one(w.as_ptr().add(i * EB));
        for r in 0..N {
            out[r] += wv * one(a[r].as_ptr().add(i * EB));
        }
        i += 1;
    }
    out
}

#[inline(always)]
unsafe fn f32_rows<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    float_rows::<N, 4>(w, a, |p| vld1q_f32(p as *const f32), |p| f32_at(p))
}

#[inline(always)]
unsafe fn f16_rows<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    float_rows::<N, 2>(w, a, |p| f16x4(vld1_u16(p as *const u16)), |p| f16_at(p))
}

#[inline(always)]
unsafe fn bf16_rows<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    float_rows::<N, 2>(
        w,
        a,
        |p| vreinterpretq_f32_u32(vshll_n_u16::<16>(vld1_u16(p as *const u16))),
        |p| f32::from_bits(u32::from(u16_at(p)) << 16),
    )
}

// ---------------------------------------------------------------------------------------
// The entry points, two per type (NEON, NEON + dotprod), generic over N.

macro_rules! entry {
    ($name:ident, |$w:ident, $a:ident| $neon:expr, $dot:expr) => {
        mod $name {
            use super::*;

            /// # Safety
            /// The rows meet the module's contract (NEON is part of every aarch64 CPU).
            #[target_feature(enable = "neon")]
            pub(super) unsafe fn neon<const N: usize>($w: &[u8], $a: [&[u8]; N]) -> [f32; N] {
                $neon
            }

            /// # Safety
            /// The CPU has the dot-product extension, and the rows meet the module's contract.
            #[target_feature(enable = "neon,dotprod")]
            pub(super) unsafe fn dot<const N: usize>($w: &[u8], $a: [&[u8]; N]) -> [f32; N] {
                $dot
            }

            /// # Safety
            /// As [`neon`], for each of the `out.len()` rows of `row_bytes` bytes in `w`.
            #[target_feature(enable = "neon")]
            pub(super) unsafe fn neon_rows(w: &[u8], row_bytes: usize, a: &[u8], out: &mut [f32]) {
                for (o, $w) in out.iter_mut().zip(w.chunks_exact(row_bytes)) {
                    let $a = [a];
                    const N: usize = 1;
                    *o = $neon[0];
                }
            }

            /// # Safety
            /// As [`dot`], for each of the `out.len()` rows of `row_bytes` bytes in `w`.
            #[target_feature(enable = "neon,dotprod")]
            pub(super) unsafe fn dot_rows(w: &[u8], row_bytes: usize, a: &[u8], out: &mut [f32]) {
                for (o, $w) in out.iter_mut().zip(w.chunks_exact(row_bytes)) {
                    let $a = [a];
                    const N: usize = 1;
                    *o = $dot[0];
                }
            }
        }
    };
}

macro_rules! int_entry {
    ($name:ident, $body:ident) => {
        entry!(
            $name,
            |w, a| $body::<Widening, N>(w, a),
            $body::<Sdot, N>(w, a)
        );
    };
}

int_entry!(q4_0_entry, q4_0);
int_entry!(q4_1_entry, q4_1);
int_entry!(q5_0_entry, q5_0);
int_entry!(q5_1_entry, q5_1);
int_entry!(q8_0_entry, q8_0);
int_entry!(iq4nl_entry, iq4_nl);
int_entry!(q2k_entry, q2_k);
int_entry!(q3k_entry, q3_k);
int_entry!(q4k_entry, q4_k);
int_entry!(q5k_entry, q5_k);
int_entry!(q6k_entry, q6_k);
int_entry!(iq4xs_entry, iq4_xs);
entry!(f16_entry, |w, a| f16_rows::<N>(w, a), f16_rows::<N>(w, a));
entry!(
    bf16_entry,
    |w, a| bf16_rows::<N>(w, a),
    bf16_rows::<N>(w, a)
);
entry!(f32_entry, |w, a| f32_rows::<N>(w, a), f32_rows::<N>(w, a));

macro_rules! pick {
    ($isa:expr, $m:ident) => {
        match $isa {
            // SAFETY (all six closures): `kernel` is only called by `super::kernel_for`
            // after `Isa::supported` confirmed the features, and `Kernel::dot`, `dot_tile`
            // and `dot_rows` check the row lengths before calling these.
            Isa::Neon => (
                (|w: &[u8], a: &[u8]| unsafe { $m::neon::<1>(w, [a])[0] }) as DotFn,
                (|w: &[u8], a: [&[u8]; TILE]| unsafe { $m::neon::<TILE>(w, a) }) as TileFn,
                (|w: &[u8], rb, a: &[u8], o: &mut [f32]| unsafe { $m::neon_rows(w, rb, a, o) })
                    as RowsFn,
            ),
            _ => (
                (|w: &[u8], a: &[u8]| unsafe { $m::dot::<1>(w, [a])[0] }) as DotFn,
                (|w: &[u8], a: [&[u8]; TILE]| unsafe { $m::dot::<TILE>(w, a) }) as TileFn,
                (|w: &[u8], rb, a: &[u8], o: &mut [f32]| unsafe { $m::dot_rows(w, rb, a, o) })
                    as RowsFn,
            ),
        }
    };
}

/// The dot, tile and many-row functions of `ty` at `isa` (`Neon` or `NeonDot`; the caller
/// has checked that the CPU supports it).
pub(super) fn kernel(ty: GgmlType, isa: Isa) -> Option<(DotFn, TileFn, RowsFn)> {
    if !matches!(isa, Isa::Neon | Isa::NeonDot) {
        return None;
    }
    Some(match ty {
        GgmlType::Q4_0 => pick!(isa, q4_0_entry),
        GgmlType::Q4_1 => pick!(isa, q4_1_entry),
        GgmlType::Q5_0 => pick!(isa, q5_0_entry),
        GgmlType::Q5_1 => pick!(isa, q5_1_entry),
        GgmlType::Q8_0 => pick!(isa, q8_0_entry),
        GgmlType::IQ4_NL => pick!(isa, iq4nl_entry),
        GgmlType::Q2_K => pick!(isa, q2k_entry),
        GgmlType::Q3_K => pick!(isa, q3k_entry),
        GgmlType::Q4_K => pick!(isa, q4k_entry),
        GgmlType::Q5_K => pick!(isa, q5k_entry),
        GgmlType::Q6_K => pick!(isa, q6k_entry),
        GgmlType::IQ4_XS => pick!(isa, iq4xs_entry),
        GgmlType::F16 => pick!(isa, f16_entry),
        GgmlType::BF16 => pick!(isa, bf16_entry),
        GgmlType::F32 => pick!(isa, f32_entry),
        _ => return None,
    })
}
