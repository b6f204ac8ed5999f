//! Activation quantizers: one f32 row to the 8-bit (or 16-bit) format the weight type's dot
//! product consumes, in ggml's C block layouts.
//!
//! Q8_0 (34 B: f16 `d`, 32 × i8) and Q8_1 (36 B: f16 `d`, f16 `s = d·Σq`, 32 × i8) follow the
//! arithmetic llama.cpp runs on x86 for activations (`127/amax` as the inverse scale, round
//! half to even), which differs from its `_ref` quantizer only on exact ties; Q8_K (292 B: f32
//! `d`, 256 × i8, 16 × i16 block sums) follows `quantize_row_q8_K_ref`, which is also what
//! llama.cpp runs on x86: the scale comes from the signed value of largest magnitude,
//! `iscale = -127/max`, so `d` may be negative.

use half::{bf16, f16};

/// Encoding of a quantized activation row. Each weight type pairs with one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum ActType {
    Q8_0,
    Q8_1,
    Q8_K,
    /// Q8_0's values and scales, split for one-row 512-bit kernels: all 32-byte value runs
    /// first, then each block's f16 scale as f32, eight copies, then `-8 ·` the sum of each
    /// run of four values as i32 (what Q4_0's offset of 8 costs the dot product); each part
    /// zero-padded to a multiple of four blocks. The same numbers as Q8_0, so kernels
    /// reading either layout can do the same arithmetic and give identical results (see
    /// [`super::kernel_one_row`]).
    Q8_0Planar,
    /// Q8_0's numbers for packed weights ([`crate::repack`]), in groups of four blocks of
    /// 256 bytes: the blocks' first halves (elements 0..16, 16 bytes per block), their
    /// second halves, `-8 ·` the sum of each 32-bit lane's eight values (four from each
    /// half) as 16 i32, the four f16-exact scales as f32, the four blocks' scaled sums as
    /// Q8_1 carries them (`d · Σq` through f16, for Q4_1's mins) as f32, and 32 bytes of
    /// padding (so each part of a group stays 64-byte aligned relative to the row). A row
    /// is zero-padded to whole groups.
    Q8_0Grouped,
    /// Q8_K's numbers for packed k-quant weights ([`crate::repack`]), in groups of two
    /// blocks of [`K_GROUPED_BYTES`]. Lane `l = 8b + s` of a 512-bit register stands for
    /// the 32-element sub-block `s` of block `b`, and register `t` (0..8) holds that
    /// sub-block's elements `4t..4t + 4` in the lane: eight 64-byte registers of values,
    /// then per lane `-32 ·` the sum of the sub-block's first 16 values and of its last 16
    /// (16 i32 each: Q6_K's offset of 32, and Q4_K's block sums for its mins), then
    /// `[d₀, d₀/32, d₁, d₁/32]` as f32 and 48 bytes of padding. A row is zero-padded to
    /// whole groups.
    Q8_KGrouped,
    F16,
    BF16,
    F32,
}

/// Blocks a [`ActType::Q8_0Planar`] or [`ActType::Q8_0Grouped`] row is padded to a
/// multiple of.
pub const PLANAR_STEP: usize = 4;

/// Bytes of one [`ActType::Q8_0Grouped`] group of [`PLANAR_STEP`] blocks.
pub const GROUPED_BYTES: usize = 256;

/// Blocks in one [`ActType::Q8_KGrouped`] group.
pub const K_GROUP: usize = 2;

/// Bytes of one [`ActType::Q8_KGrouped`] group of [`K_GROUP`] blocks.
pub const K_GROUPED_BYTES: usize = 704;

/// Byte offsets inside one [`ActType::Q8_KGrouped`] group (the one place that layout is
/// spelled out; the 512-bit kernels read the same offsets as whole registers).
pub(crate) mod k_grouped {
    /// Value `e` (0..256) of block `b`: lane `8b + e / 32` of register `e % 32 / 4`.
    pub const fn value(b: usize, e: usize) -> usize {
        64 * (e % 32 / 4) + 4 * (8 * b + e / 32) + e % 4
    }
    /// `-32 ·` the sum of half `half` (values 0..16 or 16..32) of sub-block `s` of block
    /// `b`, as i32.
    pub const fn sum(b: usize, s: usize, half: usize) -> usize {
        512 + 64 * half + 4 * (8 * b + s)
    }
    /// Block `b`'s `[d, d / 32]`, as f32.
    pub const fn scale(b: usize) -> usize {
        640 + 8 * b
    }
}

impl ActType {
    /// Elements per block.
    pub const fn block_size(self) -> usize {
        match self {
            ActType::Q8_0 | ActType::Q8_1 | ActType::Q8_0Planar | ActType::Q8_0Grouped => 32,
            ActType::Q8_K | ActType::Q8_KGrouped => 256,
            ActType::F16 | ActType::BF16 | ActType::F32 => 1,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            ActType::Q8_0 => 34,
            ActType::Q8_1 => 36,
            ActType::Q8_K => 292,
            ActType::Q8_0Planar => 96,
            ActType::Q8_0Grouped => GROUPED_BYTES / PLANAR_STEP,
            ActType::Q8_KGrouped => K_GROUPED_BYTES / K_GROUP,
            ActType::F16 | ActType::BF16 => 2,
            ActType::F32 => 4,
        }
    }

    /// Bytes of a row of `k` elements, or `None` if `k` is not a whole number of blocks.
    pub const fn row_bytes(self, k: usize) -> Option<usize> {
        if !k.is_multiple_of(self.block_size()) {
            return None;
        }
        let blocks = k / self.block_size();
        let blocks = match self {
            ActType::Q8_0Planar | ActType::Q8_0Grouped => {
                blocks.div_ceil(PLANAR_STEP) * PLANAR_STEP
            }
            ActType::Q8_KGrouped => blocks.div_ceil(K_GROUP) * K_GROUP,
            _ => blocks,
        };
        Some(blocks * self.block_bytes())
    }
}

/// Quantizes `x` (a whole number of blocks) into `out` (exactly `row_bytes(x.len())` bytes).
///
/// # Panics
/// If the lengths do not match; callers size the buffers with [`ActType::row_bytes`].
pub fn quantize_row(act: ActType, x: &[f32], out: &mut [u8]) {
    let need = act.row_bytes(x.len());
    assert_eq!(
        need,
        Some(out.len()),
        "{act:?} activation row of {} elements",
        x.len()
    );
    match act {
        ActType::Q8_0 => {
            for (xb, ob) in x.chunks_exact(32).zip(out.chunks_exact_mut(34)) {
                let (d, _) = q8_block(xb, &mut ob[2..]);
                ob[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
            }
        }
        ActType::Q8_1 => {
            for (xb, ob) in x.chunks_exact(32).zip(out.chunks_exact_mut(36)) {
                let (d, sum) = q8_block(xb, &mut ob[4..]);
                ob[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
                ob[2..4].copy_from_slice(&f16::from_f32(d * sum as f32).to_le_bytes());
            }
        }
        ActType::Q8_K => {
            for (xb, ob) in x.chunks_exact(256).zip(out.chunks_exact_mut(292)) {
                q8_k_block(xb, ob);
            }
        }
        ActType::Q8_0Planar => {
            out.fill(0);
            let third = out.len() / 3;
            let (qs, rest) = out.split_at_mut(third);
            let (scales, sums) = rest.split_at_mut(third);
            for (((xb, qb), sb), nb) in x
                .chunks_exact(32)
                .zip(qs.chunks_exact_mut(32))
                .zip(scales.chunks_exact_mut(32))
                .zip(sums.chunks_exact_mut(32))
            {
                let (d, _) = q8_block(xb, qb);
                // Through f16 and back, exactly the scale a Q8_0 block would carry.
                let d = f16::from_f32(d).to_f32().to_le_bytes();
                for c in sb.chunks_exact_mut(4) {
                    c.copy_from_slice(&d);
                }
                for (n, q) in nb.chunks_exact_mut(4).zip(qb.chunks_exact(4)) {
                    let sum: i32 = q.iter().map(|&v| i32::from(v as i8)).sum();
                    n.copy_from_slice(&(-8 * sum).to_le_bytes());
                }
            }
        }
        ActType::Q8_0Grouped => {
            out.fill(0);
            let mut q = [0u8; 32];
            for (b, xb) in x.chunks_exact(32).enumerate() {
                let (d, sum) = q8_block(xb, &mut q);
                let (g, i) = (b / PLANAR_STEP, b % PLANAR_STEP);
                let group = &mut out[g * GROUPED_BYTES..(g + 1) * GROUPED_BYTES];
                group[16 * i..16 * i + 16].copy_from_slice(&q[..16]);
                group[64 + 16 * i..64 + 16 * i + 16].copy_from_slice(&q[16..]);
                for t in 0..4 {
                    let lane = |h: usize| q[h + 4 * t..h + 4 * t + 4].iter();
                    let sum: i32 = lane(0).chain(lane(16)).map(|&v| i32::from(v as i8)).sum();
                    let at = 128 + 4 * (4 * i + t);
                    group[at..at + 4].copy_from_slice(&(-8 * sum).to_le_bytes());
                }
                // Through f16 and back: exactly the scale a Q8_0 block would carry, and the
                // sum a Q8_1 block would.
                let s = f16::from_f32(d * sum as f32).to_f32();
                let d = f16::from_f32(d).to_f32();
                group[192 + 4 * i..196 + 4 * i].copy_from_slice(&d.to_le_bytes());
                group[208 + 4 * i..212 + 4 * i].copy_from_slice(&s.to_le_bytes());
            }
        }
        ActType::Q8_KGrouped => {
            out.fill(0);
            let mut blk = [0u8; 292];
            for (b, xb) in x.chunks_exact(256).enumerate() {
                q8_k_block(xb, &mut blk);
                let d = f32::from_le_bytes(blk[..4].try_into().expect("4 bytes"));
                let qs = &blk[4..260];
                let (g, b) = (b / K_GROUP, b % K_GROUP);
                let group = &mut out[g * K_GROUPED_BYTES..(g + 1) * K_GROUPED_BYTES];
                for (e, &q) in qs.iter().enumerate() {
                    group[k_grouped::value(b, e)] = q;
                }
                for (j, half) in qs.chunks_exact(16).enumerate() {
                    let sum: i32 = half.iter().map(|&q| i32::from(q as i8)).sum();
                    let at = k_grouped::sum(b, j / 2, j % 2);
                    group[at..at + 4].copy_from_slice(&(-32 * sum).to_le_bytes());
                }
                for (i, v) in [d, d / 32.0].into_iter().enumerate() {
                    let at = k_grouped::scale(b) + 4 * i;
                    group[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
        ActType::F16 => {
            for (v, o) in x.iter().zip(out.chunks_exact_mut(2)) {
                o.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
            }
        }
        ActType::BF16 => {
            for (v, o) in x.iter().zip(out.chunks_exact_mut(2)) {
                o.copy_from_slice(&bf16::from_f32(*v).to_le_bytes());
            }
        }
        ActType::F32 => {
            for (v, o) in x.iter().zip(out.chunks_exact_mut(4)) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn use_avx2() -> bool {
    super::Isa::best() >= super::Isa::Avx2
}

/// One 32-element Q8_0/Q8_1 block: writes the 32 quants, returns `(d, Σq)`.
fn q8_block(x: &[f32], qs: &mut [u8]) -> (f32, i32) {
    #[cfg(target_arch = "x86_64")]
    if use_avx2() && x.len() == 32 && qs.len() == 32 {
        // SAFETY: AVX2 was detected; both slices hold 32 elements.
        return unsafe { simd::q8_block(x, qs) };
    }
    #[cfg(target_arch = "aarch64")]
    if x.len() == 32 && qs.len() == 32 {
        // SAFETY: NEON is part of every aarch64 CPU; both slices hold 32 elements.
        return unsafe { neon::q8_block(x, qs) };
    }
    q8_block_scalar(x, qs)
}

fn q8_block_scalar(x: &[f32], qs: &mut [u8]) -> (f32, i32) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (q, v) in qs.iter_mut().zip(x) {
        // `as i32` saturates, like the packing instructions llama.cpp uses.
        let r = ((v * id).round_ties_even() as i32).clamp(-128, 127);
        sum += r;
        *q = r as i8 as u8;
    }
    (d, sum)
}

fn q8_k_block(x: &[f32], out: &mut [u8]) {
    let mut max = 0f32;
    let mut amax = 0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        out.fill(0);
        return;
    }
    let iscale = -127.0 / max;
    let (head, rest) = out.split_at_mut(4);
    let (qs, bsums) = rest.split_at_mut(256);
    #[cfg(target_arch = "x86_64")]
    let done = if use_avx2() && x.len() == 256 {
        // SAFETY: AVX2 was detected; `x` and `qs` hold 256 elements.
        unsafe { simd::scale_round(x, iscale, qs) };
        true
    } else {
        false
    };
    #[cfg(target_arch = "aarch64")]
    let done = if x.len() == 256 {
        // SAFETY: NEON is part of every aarch64 CPU; `x` and `qs` hold 256 elements.
        unsafe { neon::scale_round(x, iscale, qs) };
        true
    } else {
        false
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let done = false;
    if !done {
        for (q, v) in qs.iter_mut().zip(x) {
            let r = ((iscale * v).round_ties_even() as i32).min(127);
            *q = r as i8 as u8;
        }
    }
    for (j, b) in bsums.chunks_exact_mut(2).enumerate() {
        let s: i32 = qs[16 * j..16 * j + 16]
            .iter()
            .map(|&q| i32::from(q as i8))
            .sum();
        b.copy_from_slice(&(s as i16).to_le_bytes());
    }
    head.copy_from_slice(&(1.0 / iscale).to_le_bytes());
}

/// AVX2 versions of the block loops, identical in result to the scalar ones: the same f32
/// products, and `vcvtps2dq` rounds half to even under the default MXCSR, like
/// `round_ties_even`.
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// Rounds `x[i] * s` to i32 and packs with saturation to i8 (32 values).
    #[inline(always)]
    unsafe fn round_pack(x: *const f32, s: __m256) -> __m256i {
        let q = |o: usize| _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x.add(o)), s));
        let (a, b, c, d) = (q(0), q(8), q(16), q(24));
        let ab = _mm256_packs_epi32(a, b);
        let cd = _mm256_packs_epi32(c, d);
        let v = _mm256_packs_epi16(ab, cd);
        // The packs interleave 128-bit lanes: restore element order.
        _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
    }

    /// # Safety
    /// AVX2 is available; `x` and `qs` hold 32 elements.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn q8_block(x: &[f32], qs: &mut [u8]) -> (f32, i32) {
        let p = x.as_ptr();
        let sign = _mm256_set1_ps(-0.0);
        let mut m = _mm256_andnot_ps(sign, _mm256_loadu_ps(p));
        for o in [8, 16, 24] {
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(p.add(o))));
        }
        let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let v = round_pack(p, _mm256_set1_ps(id));
        _mm256_storeu_si256(qs.as_mut_ptr() as *mut __m256i, v);
        // Σq: sign-extend to i16 and add pairs.
        let lo = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(v));
        let hi = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(v, 1));
        let s = _mm256_madd_epi16(_mm256_add_epi16(lo, hi), _mm256_set1_epi16(1));
        let s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        let s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0b01_00_11_10));
        let s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0b10_11_00_01));
        (d, _mm_cvtsi128_si32(s4))
    }

    /// `qs[i] = min(127, round(iscale * x[i]))` for 256 elements.
    ///
    /// # Safety
    /// AVX2 is available; `x` and `qs` hold 256 elements.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn scale_round(x: &[f32], iscale: f32, qs: &mut [u8]) {
        let s = _mm256_set1_ps(iscale);
        for c in 0..8 {
            let v = round_pack(x.as_ptr().add(32 * c), s);
            let v = _mm256_min_epi8(v, _mm256_set1_epi8(127));
            _mm256_storeu_si256(qs.as_mut_ptr().add(32 * c) as *mut __m256i, v);
        }
    }
}

/// NEON versions of the block loops, identical in result to the scalar ones: the same f32
/// products, `fcvtns` rounds half to even like `round_ties_even` (and saturates like `as
/// i32`), and the saturating narrows clamp like the scalar `clamp`/`min`.
#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;

    /// Rounds `x[i] * s` to i32 for 16 values and narrows them with saturation to i8.
    #[inline(always)]
    unsafe fn round_narrow(x: *const f32, s: f32) -> int8x16_t {
        let q = |o: usize| vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x.add(o)), s));
        let lo = vcombine_s16(vqmovn_s32(q(0)), vqmovn_s32(q(4)));
        let hi = vcombine_s16(vqmovn_s32(q(8)), vqmovn_s32(q(12)));
        vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi))
    }

    /// # Safety
    /// `x` and `qs` hold 32 elements.
    pub(super) unsafe fn q8_block(x: &[f32], qs: &mut [u8]) -> (f32, i32) {
        let p = x.as_ptr();
        let mut m = vabsq_f32(vld1q_f32(p));
        for o in (4..32).step_by(4) {
            m = vmaxq_f32(m, vabsq_f32(vld1q_f32(p.add(o))));
        }
        let amax = vmaxvq_f32(m);
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let (a, b) = (round_narrow(p, id), round_narrow(p.add(16), id));
        vst1q_s8(qs.as_mut_ptr() as *mut i8, a);
        vst1q_s8(qs.as_mut_ptr().add(16) as *mut i8, b);
        let sum = i32::from(vaddlvq_s8(a)) + i32::from(vaddlvq_s8(b));
        (d, sum)
    }

    /// `qs[i] = min(127, round(iscale * x[i]))` for 256 elements.
    ///
    /// # Safety
    /// `x` and `qs` hold 256 elements.
    pub(super) unsafe fn scale_round(x: &[f32], iscale: f32, qs: &mut [u8]) {
        for c in 0..16 {
            let v = vminq_s8(
                round_narrow(x.as_ptr().add(16 * c), iscale),
                vdupq_n_s8(127),
            );
            vst1q_s8(qs.as_mut_ptr().add(16 * c) as *mut i8, v);
        }
    }
}

/// Dequantizes an activation row (tests and diagnostics).
pub fn dequantize_row(act: ActType, src: &[u8], out: &mut [f32]) {
    assert_eq!(act.row_bytes(out.len()), Some(src.len()));
    let f16_at = |b: &[u8], at: usize| f16::from_le_bytes([b[at], b[at + 1]]).to_f32();
    match act {
        ActType::Q8_0 | ActType::Q8_1 => {
            let (bb, off) = if act == ActType::Q8_0 {
                (34, 2)
            } else {
                (36, 4)
            };
            for (b, o) in src.chunks_exact(bb).zip(out.chunks_exact_mut(32)) {
                let d = f16_at(b, 0);
                for (v, &q) in o.iter_mut().zip(&b[off..]) {
                    *v = d * f32::from(q as i8);
                }
            }
        }
        ActType::Q8_K => {
            for (b, o) in src.chunks_exact(292).zip(out.chunks_exact_mut(256)) {
                let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                for (v, &q) in o.iter_mut().zip(&b[4..260]) {
                    *v = d * f32::from(q as i8);
                }
            }
        }
        ActType::Q8_0Planar => {
            let (qs, rest) = src.split_at(src.len() / 3);
            let scales = &rest[..qs.len()];
            for ((o, q), s) in out
                .chunks_exact_mut(32)
                .zip(qs.chunks_exact(32))
                .zip(scales.chunks_exact(32))
            {
                let d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                for (v, &q) in o.iter_mut().zip(q) {
                    *v = d * f32::from(q as i8);
                }
            }
        }
        ActType::Q8_0Grouped => {
            for (b, o) in out.chunks_exact_mut(32).enumerate() {
                let (g, i) = (b / PLANAR_STEP, b % PLANAR_STEP);
                let group = &src[g * GROUPED_BYTES..(g + 1) * GROUPED_BYTES];
                let d = f32::from_le_bytes(group[192 + 4 * i..196 + 4 * i].try_into().unwrap());
                for (e, v) in o.iter_mut().enumerate() {
                    let at = if e < 16 {
                        16 * i + e
                    } else {
                        64 + 16 * i + e - 16
                    };
                    *v = d * f32::from(group[at] as i8);
                }
            }
        }
        ActType::Q8_KGrouped => {
            for (b, o) in out.chunks_exact_mut(256).enumerate() {
                let (g, b) = (b / K_GROUP, b % K_GROUP);
                let group = &src[g * K_GROUPED_BYTES..(g + 1) * K_GROUPED_BYTES];
                let at = k_grouped::scale(b);
                let d = f32::from_le_bytes(group[at..at + 4].try_into().unwrap());
                for (e, v) in o.iter_mut().enumerate() {
                    *v = d * f32::from(group[k_grouped::value(b, e)] as i8);
                }
            }
        }
        ActType::F16 => {
            for (v, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *v = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        ActType::BF16 => {
            for (v, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *v = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        ActType::F32 => {
            for (v, c) in out.iter_mut().zip(src.chunks_exact(4)) {
                *v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_block_by_hand() {
        // amax 2.54 → d = 0.02, id = 50: 1.0 → 50, -2.54 → -127, ties round to even.
        let mut x = [0f32; 32];
        x[0] = 1.0;
        x[1] = -2.54;
        x[2] = 0.01; // 0.5 → 0 (even)
        x[3] = 0.03; // 1.5 → 2 (even)
        let mut out = [0u8; 34];
        quantize_row(ActType::Q8_0, &x, &mut out);
        let d = f16::from_le_bytes([out[0], out[1]]).to_f32();
        assert_eq!(d, f16::from_f32(2.54 / 127.0).to_f32());
        assert_eq!(out[2] as i8, 50);
        assert_eq!(out[3] as i8, -127);
        assert_eq!(out[4] as i8, 0);
        assert_eq!(out[5] as i8, 2);
    }

    #[test]
    fn q8_1_sum_matches_quants() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut out = vec![0u8; 72];
        quantize_row(ActType::Q8_1, &x, &mut out);
        for b in out.chunks_exact(36) {
            let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
            let s = f16::from_le_bytes([b[2], b[3]]).to_f32();
            let sum: i32 = b[4..].iter().map(|&q| i32::from(q as i8)).sum();
            // `s` was computed from the f32 scale before its rounding to f16.
            let want = d * sum as f32;
            assert!(
                (s - want).abs() <= want.abs() * 2e-3 + 1e-6,
                "{s} vs {want}"
            );
        }
    }

    #[test]
    fn q8_k_uses_signed_max_and_bsums() {
        let mut x: Vec<f32> = (0..256)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1)
            .collect();
        // The value of largest magnitude always maps to -127: here it is negative, so d > 0;
        // a positive one would give d < 0.
        x[5] = -3.0;
        let mut out = vec![0u8; 292];
        quantize_row(ActType::Q8_K, &x, &mut out);
        let d = f32::from_le_bytes(out[..4].try_into().unwrap());
        assert_eq!(d, 1.0 / (-127.0f32 / -3.0));
        assert_eq!(out[4 + 5] as i8, -127);
        for j in 0..16 {
            let s: i32 = out[4 + 16 * j..4 + 16 * j + 16]
                .iter()
                .map(|&q| i32::from(q as i8))
                .sum();
            let b = i16::from_le_bytes([out[260 + 2 * j], out[261 + 2 * j]]);
            assert_eq!(i32::from(b), s);
        }
        let mut back = vec![0f32; 256];
        dequantize_row(ActType::Q8_K, &out, &mut back);
        for (a, b) in x.iter().zip(&back) {
            assert!((a - b).abs() <= 3.0 / 127.0 * 0.5 + 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn simd_quantizers_match_scalar_bit_for_bit() {
        // Ties (x·id exactly k + 0.5) included: multiples of amax/254.
        let mut x: Vec<f32> = (0..1024)
            .map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 97.0)
            .collect();
        for (i, v) in x.iter_mut().enumerate().step_by(5) {
            *v = (i % 255) as f32 - 127.0 + 0.5;
        }
        for chunk in x.chunks_exact(32) {
            let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
            let r1 = q8_block(chunk, &mut a);
            let r2 = q8_block_scalar(chunk, &mut b);
            assert_eq!((a, r1), (b, r2));
        }
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        for chunk in x.chunks_exact(256) {
            let iscale = -127.0
                / chunk
                    .iter()
                    .fold(0f32, |m, v| if v.abs() > m.abs() { *v } else { m });
            let mut a = [0u8; 256];
            let mut b = [0u8; 256];
            #[cfg(target_arch = "x86_64")]
            {
                if !use_avx2() {
                    continue;
                }
                // SAFETY: AVX2 detected; 256 elements each.
                unsafe { simd::scale_round(chunk, iscale, &mut a) };
            }
            // SAFETY: NEON is part of every aarch64 CPU; 256 elements each.
            #[cfg(target_arch = "aarch64")]
            unsafe {
                neon::scale_round(chunk, iscale, &mut a)
            };
            for (q, v) in b.iter_mut().zip(chunk) {
                *q = (((iscale * v).round_ties_even() as i32).min(127)) as i8 as u8;
            }
            assert_eq!(a, b);
        }
    }

    #[test]
    fn zero_block_gives_zero_scale() {
        let x = [0f32; 256];
        for act in [ActType::Q8_0, ActType::Q8_1, ActType::Q8_K] {
            let mut out = vec![0xffu8; act.row_bytes(256).unwrap()];
            quantize_row(act, &x, &mut out);
            assert!(out.iter().all(|&b| b == 0), "{act:?}");
        }
    }
}
