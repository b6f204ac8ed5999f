//! x86-64 kernels: AVX2+FMA+F16C, and the same code compiled with AVX-512 VNNI so that the
//! 8-bit multiply-accumulate becomes one `vpdpbusd` (on 256-bit registers, as llama.cpp does;
//! wider vectors do not help a memory-bound matrix-vector product with 32-element blocks).
//!
//! Every kernel body is generic over the multiply-accumulate flavour (`Mac`) and over the
//! number of activation rows `N` it handles per pass: the weight block is loaded and decoded
//! once and multiplied into `N` accumulators (prompt batches use `N = TILE`). The bodies are
//! `#[inline(always)]` and are only ever inlined into the `#[target_feature]` wrappers below,
//! so the intrinsics compile to the instructions those wrappers enable.
//!
//! Safety contract of every body: `w` holds whole weight blocks, and every `a[r]` holds
//! exactly as many elements (in its activation format) as `w`. [`super::Kernel`] checks this
//! before calling, and the wrappers are only reachable through a `Kernel` built after
//! [`super::Isa::supported`] confirmed the CPU features.

use std::arch::x86_64::*;
use std::ptr::read_unaligned;

use ferrite_gguf::GgmlType;

use super::layout::*;
use super::scalar::{iq4_xs_scale, k4_scale_min, q3_k_scales};
use super::{DotFn, Isa, PairsFn, RowsFn, TileFn, TILE};

/// The 8-bit multiply-accumulate: `acc[i] += Σ_{j<4} u[4i+j]·s[4i+j]` (u unsigned, s signed).
trait Mac {
    unsafe fn mac(acc: __m256i, u: __m256i, s: __m256i) -> __m256i;
}

struct Avx2;
struct Vnni;

impl Mac for Avx2 {
    #[inline(always)]
    unsafe fn mac(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        // The pairwise i16 sums cannot saturate: every caller keeps |u|·|s| ≤ 127·128.
        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
        _mm256_add_epi32(acc, p)
    }
}

impl Mac for Vnni {
    #[inline(always)]
    unsafe fn mac(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(acc, u, s)
    }
}

#[inline(always)]
unsafe fn f16_load(p: *const u8) -> f32 {
    f16_mul(p, p).1
}

/// Converts the f16 values at `a` and `b` together, returning `(a·b, b)`.
///
/// Both halves travel in one 32-bit integer moved with `vmovd`, which writes the whole
/// register. Converting a lone f16 (`_mm_cvtsi32_si128` of a `u16`) let LLVM emit `vpinsrw`
/// merging into whatever register it liked, in practice the FMA accumulator: every block's
/// scale then waited for the previous block's FMA, and Q4_0 ran at a third of Q4_K's speed.
#[inline(always)]
unsafe fn f16_mul(a: *const u8, b: *const u8) -> (f32, f32) {
    let ha = u32::from(read_unaligned(a as *const u16));
    let hb = u32::from(read_unaligned(b as *const u16));
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128((ha | (hb << 16)) as i32));
    let hi = _mm_movehdup_ps(v);
    (_mm_cvtss_f32(_mm_mul_ss(v, hi)), _mm_cvtss_f32(hi))
}

#[inline(always)]
unsafe fn f32_load(p: *const u8) -> f32 {
    read_unaligned(p as *const f32)
}

#[inline(always)]
unsafe fn hsum_ps(v: __m256) -> f32 {
    let x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    let x = _mm_add_ss(x, _mm_movehdup_ps(x));
    _mm_cvtss_f32(x)
}

#[inline(always)]
unsafe fn hsum_epi32(v: __m256i) -> i32 {
    hsum128(_mm_add_epi32(
        _mm256_castsi256_si128(v),
        _mm256_extracti128_si256(v, 1),
    ))
}

#[inline(always)]
unsafe fn hsum128(x: __m128i) -> i32 {
    let x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0b01_00_11_10));
    let x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0b10_11_00_01));
    _mm_cvtsi128_si32(x)
}

#[inline(always)]
unsafe fn load256(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// 16 bytes of packed nibbles → 32 bytes: low nibbles first, then high nibbles.
#[inline(always)]
unsafe fn unpack_nibbles(p: *const u8) -> __m256i {
    let raw = _mm_loadu_si128(p as *const __m128i);
    let both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0f))
}

/// Byte `j` = 0xFF if bit `j` of `x` is set, else 0.
#[inline(always)]
unsafe fn bits_to_bytes(x: u32) -> __m256i {
    let v = _mm256_set1_epi32(x as i32);
    let spread = _mm256_setr_epi64x(
        0x0000_0000_0000_0000,
        0x0101_0101_0101_0101,
        0x0202_0202_0202_0202,
        0x0303_0303_0303_0303,
    );
    let bytes = _mm256_shuffle_epi8(v, spread);
    // Each byte position j % 8 keeps every bit but bit j % 8 set: all-ones iff that bit is.
    let bit = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe_u64 as i64);
    _mm256_cmpeq_epi8(_mm256_or_si256(bytes, bit), _mm256_set1_epi64x(-1))
}

/// Signed weights `q` · signed activations `x` via the unsigned×signed instruction.
#[inline(always)]
unsafe fn mac_signed<M: Mac>(acc: __m256i, q_abs: __m256i, q: __m256i, x: __m256i) -> __m256i {
    M::mac(acc, q_abs, _mm256_sign_epi8(x, q))
}

// ---------------------------------------------------------------------------------------
// 32-element block types with Q8_0 / Q8_1 activations.

/// The block scales of one weight block against up to four activation rows, converted from
/// f16 together: lanes `2r` and `2r + 1` hold `d_w·d_a[r]` and `m_w·s_a[r]` (the second only
/// meaningful for the unsigned types, whose blocks start with two f16 values on both sides).
///
/// Converting every row's pair in one `vcvtph2ps` instead of one scalar conversion per scale
/// halves the instructions a prompt-batch tile spends per block and row.
#[inline(always)]
unsafe fn scale_pairs<const N: usize>(wb: *const u8, ab: [*const u8; N]) -> __m256 {
    const { assert!(N <= 4) };
    let w = _mm256_cvtph_ps(_mm_set1_epi32(read_unaligned(wb as *const i32)));
    let a = |r: usize| {
        if r < N {
            read_unaligned(ab[r] as *const i32)
        } else {
            0
        }
    };
    let a = _mm256_cvtph_ps(_mm_setr_epi32(a(0), a(1), a(2), a(3)));
    _mm256_mul_ps(w, a)
}

/// Shared loop of the 32-element types: `decode(block) -> (q, |q|)`; the block's f16 scale
/// is at offset 0 (and its minimum at 2 for the unsigned types). Signed types use the sign
/// trick, unsigned ones add `m_w · s_a` (Q8_1's sum term).
#[inline(always)]
unsafe fn legacy<M: Mac, const N: usize, const WB: usize, const AB: usize>(
    w: &[u8],
    a: [&[u8]; N],
    decode: impl Fn(*const u8) -> (__m256i, __m256i),
    signed: bool,
) -> [f32; N] {
    let nb = w.len() / WB;
    let mut acc = [_mm256_setzero_ps(); N];
    // Lane 2r + 1 accumulates row r's `Σ m_w·s_a` (unsigned types).
    let mut macc = _mm256_setzero_ps();
    for i in 0..nb {
        let wb = w.as_ptr().add(i * WB);
        let (q, q_abs) = decode(wb);
        let ab = super::zmm::row_ptrs(a, i * AB);
        let sp = scale_pairs::<N>(wb, ab);
        if !signed {
            macc = _mm256_add_ps(macc, sp);
        }
        for r in 0..N {
            let x = load256(ab[r].add(AB - 32));
            let p = if signed {
                mac_signed::<M>(_mm256_setzero_si256(), q_abs, q, x)
            } else {
                M::mac(_mm256_setzero_si256(), q, x)
            };
            let s = _mm256_permutevar8x32_ps(sp, _mm256_set1_epi32(2 * r as i32));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), s, acc[r]);
        }
    }
    let mut m = [0f32; 8];
    _mm256_storeu_ps(m.as_mut_ptr(), macc);
    let mut out = [0f32; N];
    for r in 0..N {
        out[r] = hsum_ps(acc[r]) + m[2 * r + 1];
    }
    out
}

#[inline(always)]
unsafe fn q4_0<M: Mac, const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    legacy::<M, N, Q4_0_BYTES, Q8_0_BYTES>(
        w,
        a,
        |b| {
            let q = _mm256_sub_epi8(unpack_nibbles(b.add(2)), _mm256_set1_epi8(8));
            (q, _mm256_abs_epi8(q))
        },
        true,
    )
}

#[inline(always)]
unsafe fn q4_1<M: Mac, const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    legacy::<M, N, Q4_1_BYTES, Q8_1_BYTES>(
        w,
        a,
        |b| {
            let q = unpack_nibbles(b.add(4));
            (q, q)
        },
        false,
    )
}

#[inline(always)]
unsafe fn q5_0<M: Mac, const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    legacy::<M, N, Q5_0_BYTES, Q8_0_BYTES>(
        w,
        a,
        |b| {
            let hi = bits_to_bytes(read_unaligned(b.add(2) as *const u32));
            let q = _mm256_or_si256(
                unpack_nibbles(b.add(6)),
                _mm256_and_si256(hi, _mm256_set1_epi8(0x10)),
            );
            let q = _mm256_sub_epi8(q, _mm256_set1_epi8(16));
            (q, _mm256_abs_epi8(q))
        },
        true,
    )
}

#[inline(always)]
unsafe fn q5_1<M: Mac, const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    legacy::<M, N, Q5_1_BYTES, Q8_1_BYTES>(
        w,
        a,
        |b| {
            let hi = bits_to_bytes(read_unaligned(b.add(4) as *const u32));
            let q = _mm256_or_si256(
                unpack_nibbles(b.add(8)),
                _mm256_and_si256(hi, _mm256_set1_epi8(0x10)),
            );
            (q, q)
        },
        false,
    )
}

#[inline(always)]
unsafe fn q8_0<M: Mac, const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    legacy::<M, N, Q8_0_BYTES, Q8_0_BYTES>(
        w,
        a,
        |b| {
            let q = load256(b.add(2));
            (q, _mm256_abs_epi8(q))
        },
        true,
    )
}

#[inline(always)]
unsafe fn iq4_table() -> __m256i {
    _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i))
}

#[inline(always)]
unsafe fn iq4_nl<M: Mac, const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let table = iq4_table();
    legacy::<M, N, IQ4_NL_BYTES, Q8_0_BYTES>(
        w,
        a,
        |b| {
            let q = _mm256_shuffle_epi8(table, unpack_nibbles(b.add(2)));
            (q, _mm256_abs_epi8(q))
        },
        true,
    )
}

// ---------------------------------------------------------------------------------------
// k-quants and IQ4_XS with Q8_K activations (256-element super-blocks).

/// `Σ u·x` per i16 pair, times a per-16-element scale: lanes 0..8 of `sc` scale elements
/// 0..16, lanes 8..16 elements 16..32.
#[inline(always)]
unsafe fn scaled(u: __m256i, x: __m256i, sc: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), sc)
}

/// An i16 scale vector for one 32-element run covering two 16-element sub-blocks.
#[inline(always)]
unsafe fn sc_pair(lo: i16, hi: i16) -> __m256i {
    _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo))
}

#[inline(always)]
unsafe fn bsums(ab: *const u8) -> __m256i {
    load256(ab.add(260))
}

#[inline(always)]
unsafe fn finish<const N: usize>(acc: [__m256; N], extra: [f32; N]) -> [f32; N] {
    let mut out = [0f32; N];
    for r in 0..N {
        out[r] = hsum_ps(acc[r]) + extra[r];
    }
    out
}

#[inline(always)]
unsafe fn q4_k<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let nb = w.len() / Q4_K_BYTES;
    let mut acc = [_mm256_setzero_ps(); N];
    let mut mins = [0f32; N];
    let m4 = _mm256_set1_epi8(0x0f);
    for i in 0..nb {
        let wb = w.as_ptr().add(i * Q4_K_BYTES);
        let s = std::slice::from_raw_parts(wb.add(4), 12);
        let mut sc = [0i16; 8];
        let mut mn = [0i16; 8];
        for j in 0..8 {
            let (a, b) = k4_scale_min(s, j);
            sc[j] = a as i16;
            mn[j] = b as i16;
        }
        let mn = _mm_loadu_si128(mn.as_ptr() as *const __m128i);
        let (d, dmin) = (f16_load(wb), f16_load(wb.add(2)));
        let mut sumi = [_mm256_setzero_si256(); N];
        for jj in 0..4 {
            let raw = load256(wb.add(16 + 32 * jj));
            let lo = _mm256_and_si256(raw, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
            let slo = _mm256_set1_epi16(sc[2 * jj]);
            let shi = _mm256_set1_epi16(sc[2 * jj + 1]);
            for r in 0..N {
                let ab = a[r].as_ptr().add(i * Q8_K_BYTES + 4 + 64 * jj);
                let p = _mm256_add_epi32(
                    scaled(lo, load256(ab), slo),
                    scaled(hi, load256(ab.add(32)), shi),
                );
                sumi[r] = _mm256_add_epi32(sumi[r], p);
            }
        }
        for r in 0..N {
            let ab = a[r].as_ptr().add(i * Q8_K_BYTES);
            let da = f32_load(ab);
            let bs = bsums(ab);
            let pairs = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
            mins[r] -= dmin * da * hsum128(_mm_madd_epi16(pairs, mn)) as f32;
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[r]), _mm256_set1_ps(d * da), acc[r]);
        }
    }
    finish(acc, mins)
}

#[inline(always)]
unsafe fn q5_k<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let nb = w.len() / Q5_K_BYTES;
    let mut acc = [_mm256_setzero_ps(); N];
    let mut mins = [0f32; N];
    let m4 = _mm256_set1_epi8(0x0f);
    let one = _mm256_set1_epi8(1);
    for i in 0..nb {
        let wb = w.as_ptr().add(i * Q5_K_BYTES);
        let s = std::slice::from_raw_parts(wb.add(4), 12);
        let mut sc = [0i16; 8];
        let mut mn = [0i16; 8];
        for j in 0..8 {
            let (a, b) = k4_scale_min(s, j);
            sc[j] = a as i16;
            mn[j] = b as i16;
        }
        let mn = _mm_loadu_si128(mn.as_ptr() as *const __m128i);
        let (d, dmin) = (f16_load(wb), f16_load(wb.add(2)));
        let qh = load256(wb.add(16));
        let mut sumi = [_mm256_setzero_si256(); N];
        for jj in 0..4 {
            let raw = load256(wb.add(48 + 32 * jj));
            let hlo = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * jj as i32)), one);
            let hhi = _mm256_and_si256(
                _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * jj as i32 + 1)),
                one,
            );
            let lo = _mm256_or_si256(_mm256_and_si256(raw, m4), _mm256_slli_epi16(hlo, 4));
            let hi = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4),
                _mm256_slli_epi16(hhi, 4),
            );
            let slo = _mm256_set1_epi16(sc[2 * jj]);
            let shi = _mm256_set1_epi16(sc[2 * jj + 1]);
            for r in 0..N {
                let ab = a[r].as_ptr().add(i * Q8_K_BYTES + 4 + 64 * jj);
                let p = _mm256_add_epi32(
                    scaled(lo, load256(ab), slo),
                    scaled(hi, load256(ab.add(32)), shi),
                );
                sumi[r] = _mm256_add_epi32(sumi[r], p);
            }
        }
        for r in 0..N {
            let ab = a[r].as_ptr().add(i * Q8_K_BYTES);
            let da = f32_load(ab);
            let bs = bsums(ab);
            let pairs = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
            mins[r] -= dmin * da * hsum128(_mm_madd_epi16(pairs, mn)) as f32;
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[r]), _mm256_set1_ps(d * da), acc[r]);
        }
    }
    finish(acc, mins)
}

#[inline(always)]
unsafe fn q6_k<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let nb = w.len() / Q6_K_BYTES;
    let mut acc = [_mm256_setzero_ps(); N];
    let m4 = _mm256_set1_epi8(0x0f);
    let m2 = _mm256_set1_epi8(0x03);
    for i in 0..nb {
        let wb = w.as_ptr().add(i * Q6_K_BYTES);
        let sc8 = _mm_loadu_si128(wb.add(192) as *const __m128i);
        let sc16 = _mm256_cvtepi8_epi16(sc8);
        let sc: [i8; 16] = read_unaligned(wb.add(192) as *const [i8; 16]);
        let d = f16_load(wb.add(208));
        let mut sumi = [_mm256_setzero_si256(); N];
        for h in 0..2 {
            let ql0 = load256(wb.add(64 * h));
            let ql1 = load256(wb.add(64 * h + 32));
            let qh = load256(wb.add(128 + 32 * h));
            let q = [
                _mm256_or_si256(
                    _mm256_and_si256(ql0, m4),
                    _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(ql1, m4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4),
                ),
            ];
            for (v, qv) in q.iter().enumerate() {
                let j = 8 * h + 2 * v;
                let s = sc_pair(i16::from(sc[j]), i16::from(sc[j + 1]));
                for r in 0..N {
                    let ab = a[r].as_ptr().add(i * Q8_K_BYTES + 4 + 128 * h + 32 * v);
                    sumi[r] = _mm256_add_epi32(sumi[r], scaled(*qv, load256(ab), s));
                }
            }
        }
        for r in 0..N {
            let ab = a[r].as_ptr().add(i * Q8_K_BYTES);
            // The stored 6-bit values are offset by 32: subtract 32 · Σ_j sc_j · bsum_j.
            let off = _mm256_slli_epi32(_mm256_madd_epi16(bsums(ab), sc16), 5);
            let s = _mm256_sub_epi32(sumi[r], off);
            let da = f32_load(ab);
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d * da), acc[r]);
        }
    }
    finish(acc, [0.0; N])
}

/// Q2_K and Q3_K share the 2-bit plane layout; `Q3` adds the high bit (as +4) and the
/// offset of -4 via the block sums.
#[inline(always)]
unsafe fn q2_q3_k<const N: usize, const Q3: bool>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let wbytes = if Q3 { Q3_K_BYTES } else { Q2_K_BYTES };
    let nb = w.len() / wbytes;
    let mut acc = [_mm256_setzero_ps(); N];
    let mut extra = [0f32; N];
    let m2 = _mm256_set1_epi8(0x03);
    let one = _mm256_set1_epi8(1);
    for i in 0..nb {
        let wb = w.as_ptr().add(i * wbytes);
        let mut sc = [0i16; 16];
        let mut mn = [0i16; 16];
        let (d, dmin, qs) = if Q3 {
            let s = q3_k_scales(std::slice::from_raw_parts(wb.add(96), 12));
            for j in 0..16 {
                sc[j] = s[j] as i16;
            }
            (f16_load(wb.add(108)), 0.0, wb.add(32))
        } else {
            for j in 0..16 {
                let b = *wb.add(j);
                sc[j] = i16::from(b & 0x0f);
                mn[j] = i16::from(b >> 4);
            }
            (f16_load(wb.add(80)), f16_load(wb.add(82)), wb.add(16))
        };
        let sc16 = _mm256_loadu_si256(sc.as_ptr() as *const __m256i);
        let mn16 = _mm256_loadu_si256(mn.as_ptr() as *const __m256i);
        let hm = if Q3 {
            load256(wb)
        } else {
            _mm256_setzero_si256()
        };
        let mut sumi = [_mm256_setzero_si256(); N];
        for h in 0..2 {
            let qv = load256(qs.add(32 * h));
            for v in 0..4 {
                let sh = _mm_cvtsi32_si128(2 * v as i32);
                let mut u = _mm256_and_si256(_mm256_srl_epi16(qv, sh), m2);
                if Q3 {
                    let hs = _mm_cvtsi32_si128((4 * h + v) as i32);
                    let hb = _mm256_and_si256(_mm256_srl_epi16(hm, hs), one);
                    u = _mm256_or_si256(u, _mm256_slli_epi16(hb, 2));
                }
                let j = 8 * h + 2 * v;
                let s = sc_pair(sc[j], sc[j + 1]);
                for r in 0..N {
                    let ab = a[r].as_ptr().add(i * Q8_K_BYTES + 4 + 128 * h + 32 * v);
                    sumi[r] = _mm256_add_epi32(sumi[r], scaled(u, load256(ab), s));
                }
            }
        }
        for r in 0..N {
            let ab = a[r].as_ptr().add(i * Q8_K_BYTES);
            let da = f32_load(ab);
            let bs = bsums(ab);
            let s = if Q3 {
                _mm256_sub_epi32(sumi[r], _mm256_slli_epi32(_mm256_madd_epi16(bs, sc16), 2))
            } else {
                extra[r] -= dmin * da * hsum_epi32(_mm256_madd_epi16(bs, mn16)) as f32;
                sumi[r]
            };
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d * da), acc[r]);
        }
    }
    finish(acc, extra)
}

#[inline(always)]
unsafe fn iq4_xs<M: Mac, const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let nb = w.len() / IQ4_XS_BYTES;
    let table = iq4_table();
    let mut acc = [_mm256_setzero_ps(); N];
    for i in 0..nb {
        let wb = w.as_ptr().add(i * IQ4_XS_BYTES);
        let wsl = std::slice::from_raw_parts(wb, IQ4_XS_BYTES);
        let d = f16_load(wb);
        let mut sumi = [_mm256_setzero_si256(); N];
        for ib in 0..8 {
            let q = _mm256_shuffle_epi8(table, unpack_nibbles(wb.add(8 + 16 * ib)));
            let q_abs = _mm256_abs_epi8(q);
            let ls = _mm256_set1_epi32(iq4_xs_scale(wsl, ib));
            for r in 0..N {
                let ab = a[r].as_ptr().add(i * Q8_K_BYTES + 4 + 32 * ib);
                let p = mac_signed::<M>(_mm256_setzero_si256(), q_abs, q, load256(ab));
                sumi[r] = _mm256_add_epi32(sumi[r], _mm256_mullo_epi32(p, ls));
            }
        }
        for r in 0..N {
            let da = f32_load(a[r].as_ptr().add(i * Q8_K_BYTES));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[r]), _mm256_set1_ps(d * da), acc[r]);
        }
    }
    finish(acc, [0.0; N])
}

// ---------------------------------------------------------------------------------------
// Float rows. Lengths are any number of elements; the tail runs in scalar code.

#[inline(always)]
unsafe fn float_rows<const N: usize, const EB: usize>(
    w: &[u8],
    a: [&[u8]; N],
    load8: impl Fn(*const u8) -> __m256,
    one: impl Fn(*const u8) -> f32,
) -> [f32; N] {
    let n = w.len() / EB;
    let mut acc = [_mm256_setzero_ps(); N];
    let mut i = 0;
    while i + 8 <= n {
        let wv = load8(w.as_ptr().add(i * EB));
        for r in 0..N {
            acc[r] = _mm256_fmadd_ps(wv, load8(a[r].as_ptr().add(i * EB)), acc[r]);
        }
        i += 8;
    }
    let mut tail = [0f32; N];
    while i < n {
        let wv = one(w.as_ptr().add(i * EB));
        for r in 0..N {
            tail[r] += wv * one(a[r].as_ptr().add(i * EB));
        }
        i += 1;
    }
    finish(acc, tail)
}

#[inline(always)]
unsafe fn f32_rows<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    float_rows::<N, 4>(w, a, |p| _mm256_loadu_ps(p as *const f32), |p| f32_load(p))
}

#[inline(always)]
unsafe fn f16_rows<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    float_rows::<N, 2>(
        w,
        a,
        |p| _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)),
        |p| f16_load(p),
    )
}

#[inline(always)]
unsafe fn bf16_rows<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    float_rows::<N, 2>(
        w,
        a,
        |p| {
            let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
            _mm256_castsi256_ps(_mm256_slli_epi32(h, 16))
        },
        |p| f32::from_bits(u32::from(read_unaligned(p as *const u16)) << 16),
    )
}

// ---------------------------------------------------------------------------------------
// The `#[target_feature]` entry points, two per type (AVX2, AVX-512 VNNI), generic over N.

macro_rules! entry {
    ($name:ident, |$w:ident, $a:ident| $avx2_body:expr, $vnni_body:expr) => {
        mod $name {
            use super::*;

            /// # Safety
            /// The CPU has AVX2, FMA and F16C, and the rows meet the module's contract.
            #[target_feature(enable = "avx2,fma,f16c")]
            pub(super) unsafe fn avx2<const N: usize>($w: &[u8], $a: [&[u8]; N]) -> [f32; N] {
                $avx2_body
            }

            /// # Safety
            /// The CPU has AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI, and the rows meet the
            /// module's contract.
            #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
            pub(super) unsafe fn vnni<const N: usize>($w: &[u8], $a: [&[u8]; N]) -> [f32; N] {
                $vnni_body
            }

            /// # Safety
            /// As [`avx2`], for each of the `out.len()` rows of `row_bytes` bytes in `w`.
            #[target_feature(enable = "avx2,fma,f16c")]
            pub(super) unsafe fn avx2_rows(w: &[u8], row_bytes: usize, a: &[u8], out: &mut [f32]) {
                for (o, $w) in out.iter_mut().zip(w.chunks_exact(row_bytes)) {
                    let $a = [a];
                    const N: usize = 1;
                    *o = $avx2_body[0];
                }
            }

            /// # Safety
            /// As [`vnni`], for each of the `out.len()` rows of `row_bytes` bytes in `w`.
            #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
            pub(super) unsafe fn vnni_rows(w: &[u8], row_bytes: usize, a: &[u8], out: &mut [f32]) {
                for (o, $w) in out.iter_mut().zip(w.chunks_exact(row_bytes)) {
                    let $a = [a];
                    const N: usize = 1;
                    *o = $vnni_body[0];
                }
            }
        }
    };
}

entry!(
    q4_0_entry,
    |w, a| q4_0::<Avx2, N>(w, a),
    crate::kernels::zmm::q4_0::<N>(w, a)
);
entry!(
    q4_1_entry,
    |w, a| q4_1::<Avx2, N>(w, a),
    q4_1::<Vnni, N>(w, a)
);
entry!(
    q5_0_entry,
    |w, a| q5_0::<Avx2, N>(w, a),
    q5_0::<Vnni, N>(w, a)
);
entry!(
    q5_1_entry,
    |w, a| q5_1::<Avx2, N>(w, a),
    q5_1::<Vnni, N>(w, a)
);
entry!(
    q8_0_entry,
    |w, a| q8_0::<Avx2, N>(w, a),
    crate::kernels::zmm::q8_0::<N>(w, a)
);
entry!(
    iq4nl_entry,
    |w, a| iq4_nl::<Avx2, N>(w, a),
    iq4_nl::<Vnni, N>(w, a)
);
entry!(
    q2k_entry,
    |w, a| q2_q3_k::<N, false>(w, a),
    q2_q3_k::<N, false>(w, a)
);
entry!(
    q3k_entry,
    |w, a| q2_q3_k::<N, true>(w, a),
    q2_q3_k::<N, true>(w, a)
);
entry!(
    q4k_entry,
    |w, a| q4_k::<N>(w, a),
    crate::kernels::zmm::q4_k::<N>(w, a)
);
entry!(q5k_entry, |w, a| q5_k::<N>(w, a), q5_k::<N>(w, a));
entry!(q6k_entry, |w, a| q6_k::<N>(w, a), q6_k::<N>(w, a));
entry!(
    iq4xs_entry,
    |w, a| iq4_xs::<Avx2, N>(w, a),
    iq4_xs::<Vnni, N>(w, a)
);
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
            Isa::Avx2 => (
                (|w: &[u8], a: &[u8]| unsafe { $m::avx2::<1>(w, [a])[0] }) as DotFn,
                (|w: &[u8], a: [&[u8]; TILE]| unsafe { $m::avx2::<TILE>(w, a) }) as TileFn,
                (|w: &[u8], rb, a: &[u8], o: &mut [f32]| unsafe { $m::avx2_rows(w, rb, a, o) })
                    as RowsFn,
            ),
            _ => (
                (|w: &[u8], a: &[u8]| unsafe { $m::vnni::<1>(w, [a])[0] }) as DotFn,
                (|w: &[u8], a: [&[u8]; TILE]| unsafe { $m::vnni::<TILE>(w, a) }) as TileFn,
                (|w: &[u8], rb, a: &[u8], o: &mut [f32]| unsafe { $m::vnni_rows(w, rb, a, o) })
                    as RowsFn,
            ),
        }
    };
}

/// One planar-activation kernel (`ActType::Q8_0Planar`) at the AVX-512 level: the one-row
/// function and the many-row one, which runs the same body per row inside one
/// `#[target_feature]` function.
macro_rules! planar {
    ($one:ident, $rows:ident, $body:path) => {
        /// # Safety
        /// As the `entry!` functions at the AVX-512 level; `a` is a `Q8_0Planar` row.
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        unsafe fn $one(w: &[u8], a: &[u8]) -> f32 {
            $body(w, a)
        }

        /// # Safety
        /// As `$one`, for each of the `out.len()` rows of `row_bytes` bytes in `w`.
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        unsafe fn $rows(w: &[u8], row_bytes: usize, a: &[u8], out: &mut [f32]) {
            for (o, wr) in out.iter_mut().zip(w.chunks_exact(row_bytes)) {
                *o = $body(wr, a);
            }
        }
    };
}

planar!(q4_0_planar, q4_0_planar_rows, super::zmm::q4_0_planar);
planar!(q8_0_planar, q8_0_planar_rows, super::zmm::q8_0_planar);

/// The one-row and many-row functions of `ty` at `isa` that read `ActType::Q8_0Planar`
/// activations, if there are some (the caller has checked that the CPU supports `isa`).
pub(super) fn one_row(ty: GgmlType, isa: Isa) -> Option<(DotFn, RowsFn)> {
    if isa < Isa::Avx512Vnni {
        return None;
    }
    // SAFETY (all closures): as in `pick!`; `Kernel::dot` and `Kernel::dot_rows` check the
    // row lengths against the planar activation layout before calling.
    match ty {
        GgmlType::Q4_0 => Some((
            |w, a| unsafe { q4_0_planar(w, a) },
            |w, rb, a, o| unsafe { q4_0_planar_rows(w, rb, a, o) },
        )),
        GgmlType::Q8_0 => Some((
            |w, a| unsafe { q8_0_planar(w, a) },
            |w, rb, a, o| unsafe { q8_0_planar_rows(w, rb, a, o) },
        )),
        _ => None,
    }
}

/// The AVX-512 entry points of one packed type ([`crate::repack`]) against grouped
/// activation rows: one or a tile of them, and many weight rows against one.
macro_rules! packed {
    ($m:ident, $body:ident) => {
        mod $m {
            use crate::kernels::zmm;

            /// # Safety
            /// The CPU has AVX-512 F/BW/VL/VNNI and F16C; `w` is a packed row and every
            /// `a` a grouped activation row (`Q8_0Grouped`, `Q8_KGrouped`) of as many groups.
            #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
            pub(super) unsafe fn tile<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
                zmm::$body::<1, N>([w], a)[0]
            }

            /// # Safety
            /// As [`tile`], for each of the `out.len()` rows of `row_bytes` bytes in `w`.
            #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
            pub(super) unsafe fn rows(w: &[u8], row_bytes: usize, a: &[u8], out: &mut [f32]) {
                for (o, wr) in out.iter_mut().zip(w.chunks_exact(row_bytes)) {
                    *o = zmm::$body::<1, 1>([wr], [a])[0][0];
                }
            }

            /// # Safety
            /// As [`tile`], for each of the `out0.len()` rows of `row_bytes` bytes in `w0`
            /// and as many in `w1`.
            #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
            pub(super) unsafe fn pairs(
                w0: &[u8],
                w1: &[u8],
                row_bytes: usize,
                a: &[u8],
                out0: &mut [f32],
                out1: &mut [f32],
            ) {
                let w_pairs = w0.chunks_exact(row_bytes).zip(w1.chunks_exact(row_bytes));
                for ((o0, o1), (r0, r1)) in out0.iter_mut().zip(out1.iter_mut()).zip(w_pairs) {
                    [[*o0], [*o1]] = zmm::$body::<2, 1>([r0, r1], [a]);
                }
            }
        }
    };
}

packed!(q4_0_packed_entry, q4_0_packed);
packed!(q4_1_packed_entry, q4_1_packed);
packed!(q5_0_packed_entry, q5_0_packed);
packed!(q8_0_packed_entry, q8_0_packed);
packed!(q4_k_packed_entry, q4_k_packed);
packed!(q6_k_packed_entry, q6_k_packed);

/// The packed-row functions `(dot, tile, rows)` of `ty` at `isa` against grouped
/// activation rows, where that level reads packed rows (the caller has checked that the
/// CPU supports `isa`).
pub(super) fn packed(ty: GgmlType, isa: Isa) -> Option<(DotFn, TileFn, RowsFn, PairsFn)> {
    if isa < Isa::Avx512Vnni {
        return None;
    }
    macro_rules! fns {
        ($m:ident) => {
            // SAFETY (all closures): as in `pick!`; `Kernel` checks that the weight row is
            // a packed row of as many groups as the activation rows before calling.
            (
                (|w: &[u8], a: &[u8]| unsafe { $m::tile::<1>(w, [a])[0] }) as DotFn,
                (|w: &[u8], a: [&[u8]; TILE]| unsafe { $m::tile::<TILE>(w, a) }) as TileFn,
                (|w: &[u8], rb, a: &[u8], o: &mut [f32]| unsafe { $m::rows(w, rb, a, o) })
                    as RowsFn,
                (|w0: &[u8], w1: &[u8], rb, a: &[u8], o0: &mut [f32], o1: &mut [f32]| unsafe {
                    $m::pairs(w0, w1, rb, a, o0, o1)
                }) as PairsFn,
            )
        };
    }
    match ty {
        GgmlType::Q4_0 => Some(fns!(q4_0_packed_entry)),
        GgmlType::Q4_1 => Some(fns!(q4_1_packed_entry)),
        GgmlType::Q5_0 => Some(fns!(q5_0_packed_entry)),
        GgmlType::Q8_0 => Some(fns!(q8_0_packed_entry)),
        GgmlType::Q4_K => Some(fns!(q4_k_packed_entry)),
        GgmlType::Q6_K => Some(fns!(q6_k_packed_entry)),
        _ => None,
    }
}

/// The single-row, tile and many-row functions of `ty` at `isa` (`Avx2` or `Avx512Vnni`; the caller has
/// checked that the CPU supports it).
pub(super) fn kernel(ty: GgmlType, isa: Isa) -> Option<(DotFn, TileFn, RowsFn)> {
    if isa == Isa::Scalar {
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
