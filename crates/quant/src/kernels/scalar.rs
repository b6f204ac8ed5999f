//! Scalar reference dot products: one weight row (type T) · one activation row (T's
//! [`ActType`](super::ActType)). Plain integer sums per block, scaled in f32, the way ggml's
//! generic kernels combine them; the SIMD kernels are tested against these.
//!
//! Rows are whole numbers of blocks; the caller ([`super::Kernel`]) checks the lengths.

use ferrite_gguf::GgmlType;
use half::{bf16, f16};

use super::layout::*;

#[inline]
fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

#[inline]
fn f32_at(b: &[u8], at: usize) -> f32 {
    f32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
fn i8s(b: &[u8]) -> impl Iterator<Item = i32> + '_ {
    b.iter().map(|&q| i32::from(q as i8))
}

#[inline]
fn bsum(a: &[u8], j: usize) -> i32 {
    i32::from(i16::from_le_bytes([a[260 + 2 * j], a[261 + 2 * j]]))
}

/// Dot of the 32 signed weight values `wq` with a Q8 block's quants.
#[inline]
fn dot32(wq: &[i32; 32], aq: &[u8]) -> i32 {
    wq.iter().zip(i8s(aq)).map(|(w, a)| w * a).sum()
}

/// The 32 nibbles of a 16-byte Q4/IQ4 quant array, in element order.
#[inline]
fn nibbles(qs: &[u8]) -> [i32; 32] {
    let mut q = [0i32; 32];
    for j in 0..16 {
        q[j] = i32::from(qs[j] & 0x0f);
        q[j + 16] = i32::from(qs[j] >> 4);
    }
    q
}

/// Adds the fifth bits of `qh` to 32 nibbles.
#[inline]
fn fifth_bits(q: &mut [i32; 32], qh: u32) {
    for (j, v) in q.iter_mut().enumerate() {
        *v |= (((qh >> j) & 1) as i32) << 4;
    }
}

pub fn dot_q4_0(w: &[u8], a: &[u8]) -> f32 {
    let mut s = 0f32;
    for (wb, ab) in w.chunks_exact(Q4_0_BYTES).zip(a.chunks_exact(Q8_0_BYTES)) {
        let q = nibbles(&wb[2..18]).map(|v| v - 8);
        s += f16_at(wb, 0) * f16_at(ab, 0) * dot32(&q, &ab[2..]) as f32;
    }
    s
}

/// Packed Q4_0 ([`crate::repack`]) · [`super::ActType::Q8_0Grouped`]: the reference for
/// the packed kernels, block by block in the order [`dot_q4_0`] adds them.
pub fn dot_q4_0_packed(w: &[u8], a: &[u8]) -> f32 {
    dot_packed::<false>(w, a, Q4_0_BYTES, |g, _, b, e| q4_code(g, b, e) - 8)
}

/// Code `e` of block `b` in a packed Q4_0 or Q4_1 group (unsigned, before any offset).
fn q4_code(g: &[u8], b: usize, e: usize) -> i32 {
    let v = g[16 * b + e % 16];
    i32::from(if e < 16 { v & 0x0f } else { v >> 4 })
}

/// Packed Q4_1 · [`super::ActType::Q8_0Grouped`], whose scaled sums are Q8_1's: the same
/// sums as [`dot_q4_1`] (see [`dot_q4_0_packed`]).
pub fn dot_q4_1_packed(w: &[u8], a: &[u8]) -> f32 {
    dot_packed::<true>(w, a, Q4_1_BYTES, |g, _, b, e| q4_code(g, b, e))
}

/// Packed Q5_0 · [`super::ActType::Q8_0Grouped`] (see [`dot_q4_0_packed`]).
pub fn dot_q5_0_packed(w: &[u8], a: &[u8]) -> f32 {
    dot_packed::<false>(w, a, Q5_0_BYTES, |g, n, b, e| {
        let v = g[16 * b + e % 16];
        let nibble = if e < 16 { v & 0x0f } else { v >> 4 };
        // Bit 16b + e % 16 of the mask for this half of the blocks.
        let bit = 16 * b + e % 16;
        let mask = &g[16 * n + 2 * n * (e / 16)..];
        let fifth = (mask[bit / 8] >> (bit % 8)) & 1;
        i32::from(nibble | (fifth << 4)) - 16
    })
}

/// Packed Q8_0 · [`super::ActType::Q8_0Grouped`] (see [`dot_q4_0_packed`]).
pub fn dot_q8_0_packed(w: &[u8], a: &[u8]) -> f32 {
    dot_packed::<false>(w, a, Q8_0_BYTES, |g, n, b, e| {
        i32::from((g[16 * n * (e / 16) + 16 * b + e % 16] ^ 0x80) as i8)
    })
}

/// Packed Q4_K ([`crate::repack`]) · [`super::ActType::Q8_KGrouped`]: [`dot_q4_k`] on the
/// unpacked rows, so the reference is the ggml-layout one to the bit. (It allocates: it is
/// the reference, never the kernel the engine runs.)
pub fn dot_q4_k_packed(w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = unpack_k(GgmlType::Q4_K, w, a);
    dot_q4_k(&w, &a)
}

/// Packed Q6_K · [`super::ActType::Q8_KGrouped`] (see [`dot_q4_k_packed`]).
pub fn dot_q6_k_packed(w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = unpack_k(GgmlType::Q6_K, w, a);
    dot_q6_k(&w, &a)
}

/// A packed k-quant row and a grouped activation row (whole groups, padding included) back
/// in ggml layout: the weight blocks and their Q8_K activation blocks.
fn unpack_k(ty: GgmlType, w: &[u8], a: &[u8]) -> (Vec<u8>, Vec<u8>) {
    use super::act::{k_grouped, K_GROUP, K_GROUPED_BYTES};
    let ng = a.len() / K_GROUPED_BYTES;
    let mut wu = vec![0u8; ng * K_GROUP * ty.type_size() as usize];
    crate::repack::unpack_row(ty, w, &mut wu);
    let mut au = Vec::with_capacity(ng * K_GROUP * Q8_K_BYTES);
    for g in a.chunks_exact(K_GROUPED_BYTES) {
        for b in 0..K_GROUP {
            au.extend_from_slice(&g[k_grouped::scale(b)..][..4]);
            au.extend((0..256).map(|e| g[k_grouped::value(b, e)]));
            for j in 0..16 {
                let at = k_grouped::sum(b, j / 2, j % 2);
                let n = i32::from_le_bytes(g[at..at + 4].try_into().expect("4 bytes"));
                au.extend_from_slice(&((-n / 32) as i16).to_le_bytes());
            }
        }
    }
    (wu, au)
}

/// `Σ d_w · d_a · Σ_e w_e · a_e` over the blocks of a packed row of `block_bytes` per
/// block: groups of four, the last one short (1..4 blocks), each with its `n` scales last,
/// or with `MINS` its `n` scales and then its `n` mins, which add `m_w · s_a` per block (the
/// activations' scaled sums); `value(group, n, block, element)` decodes one weight of a
/// group of `n` blocks.
fn dot_packed<const MINS: bool>(
    w: &[u8],
    a: &[u8],
    block_bytes: usize,
    value: impl Fn(&[u8], usize, usize, usize) -> i32,
) -> f32 {
    use super::act::GROUPED_BYTES;
    let mut s = 0f32;
    let groups = w.chunks(crate::repack::GROUP * block_bytes);
    for (g, ag) in groups.zip(a.chunks_exact(GROUPED_BYTES)) {
        let n = g.len() / block_bytes;
        let scales = g.len() - if MINS { 4 * n } else { 2 * n };
        for b in 0..n {
            let at = |e: usize| {
                if e < 16 {
                    16 * b + e
                } else {
                    64 + 16 * b + e - 16
                }
            };
            let dot: i32 = (0..32)
                .map(|e| value(g, n, b, e) * i32::from(ag[at(e)] as i8))
                .sum();
            let da = f32_at(ag, 192 + 4 * b);
            let term = f16_at(g, scales + 2 * b) * da * dot as f32;
            s += if MINS {
                term + f16_at(g, scales + 2 * n + 2 * b) * f32_at(ag, 208 + 4 * b)
            } else {
                term
            };
        }
    }
    s
}

pub fn dot_q4_1(w: &[u8], a: &[u8]) -> f32 {
    let mut s = 0f32;
    for (wb, ab) in w.chunks_exact(Q4_1_BYTES).zip(a.chunks_exact(Q8_1_BYTES)) {
        let q = nibbles(&wb[4..20]);
        s += f16_at(wb, 0) * f16_at(ab, 0) * dot32(&q, &ab[4..]) as f32
            + f16_at(wb, 2) * f16_at(ab, 2);
    }
    s
}

pub fn dot_q5_0(w: &[u8], a: &[u8]) -> f32 {
    let mut s = 0f32;
    for (wb, ab) in w.chunks_exact(Q5_0_BYTES).zip(a.chunks_exact(Q8_0_BYTES)) {
        let mut q = nibbles(&wb[6..22]);
        fifth_bits(&mut q, u32::from_le_bytes([wb[2], wb[3], wb[4], wb[5]]));
        let q = q.map(|v| v - 16);
        s += f16_at(wb, 0) * f16_at(ab, 0) * dot32(&q, &ab[2..]) as f32;
    }
    s
}

pub fn dot_q5_1(w: &[u8], a: &[u8]) -> f32 {
    let mut s = 0f32;
    for (wb, ab) in w.chunks_exact(Q5_1_BYTES).zip(a.chunks_exact(Q8_1_BYTES)) {
        let mut q = nibbles(&wb[8..24]);
        fifth_bits(&mut q, u32::from_le_bytes([wb[4], wb[5], wb[6], wb[7]]));
        s += f16_at(wb, 0) * f16_at(ab, 0) * dot32(&q, &ab[4..]) as f32
            + f16_at(wb, 2) * f16_at(ab, 2);
    }
    s
}

pub fn dot_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let mut s = 0f32;
    for (wb, ab) in w.chunks_exact(Q8_0_BYTES).zip(a.chunks_exact(Q8_0_BYTES)) {
        let mut q = [0i32; 32];
        for (v, x) in q.iter_mut().zip(i8s(&wb[2..])) {
            *v = x;
        }
        s += f16_at(wb, 0) * f16_at(ab, 0) * dot32(&q, &ab[2..]) as f32;
    }
    s
}

pub fn dot_iq4_nl(w: &[u8], a: &[u8]) -> f32 {
    let mut s = 0f32;
    for (wb, ab) in w.chunks_exact(IQ4_NL_BYTES).zip(a.chunks_exact(Q8_0_BYTES)) {
        let q = nibbles(&wb[2..18]).map(|v| i32::from(KVALUES_IQ4NL[v as usize]));
        s += f16_at(wb, 0) * f16_at(ab, 0) * dot32(&q, &ab[2..]) as f32;
    }
    s
}

/// Element `e` (0..256) of a 2-bit plane laid out as in Q2_K/Q3_K: two halves of 128, each
/// 32 bytes holding four 32-element groups in bit pairs.
#[inline]
fn two_bits(plane: &[u8], e: usize) -> i32 {
    let (half, r) = (e / 128, e % 128);
    i32::from((plane[half * 32 + r % 32] >> (2 * (r / 32))) & 3)
}

pub fn dot_q2_k(w: &[u8], a: &[u8]) -> f32 {
    let mut s = 0f32;
    for (wb, ab) in w.chunks_exact(Q2_K_BYTES).zip(a.chunks_exact(Q8_K_BYTES)) {
        let (d, dmin) = (f16_at(wb, 80), f16_at(wb, 82));
        let da = f32_at(ab, 0);
        let (mut isum, mut msum) = (0i32, 0i32);
        for j in 0..16 {
            let sc = wb[j];
            msum += i32::from(sc >> 4) * bsum(ab, j);
            let p: i32 = (0..16)
                .map(|i| two_bits(&wb[16..80], 16 * j + i) * i32::from(ab[4 + 16 * j + i] as i8))
                .sum();
            isum += i32::from(sc & 0x0f) * p;
        }
        s += da * d * isum as f32 - da * dmin * msum as f32;
    }
    s
}

/// The sixteen 6-bit Q3_K scales, minus 32.
#[inline]
pub(crate) fn q3_k_scales(sc: &[u8]) -> [i32; 16] {
    let mut out = [0i32; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let low = if i < 8 { sc[i] & 0x0f } else { sc[i - 8] >> 4 };
        let high = (sc[8 + i % 4] >> (2 * (i / 4))) & 3;
        *o = i32::from(low | (high << 4)) - 32;
    }
    out
}

pub fn dot_q3_k(w: &[u8], a: &[u8]) -> f32 {
    let mut s = 0f32;
    for (wb, ab) in w.chunks_exact(Q3_K_BYTES).zip(a.chunks_exact(Q8_K_BYTES)) {
        let d = f16_at(wb, 108) * f32_at(ab, 0);
        let scales = q3_k_scales(&wb[96..108]);
        let mut isum = 0i32;
        for (j, sc) in scales.iter().enumerate() {
            let p: i32 = (0..16)
                .map(|i| {
                    let e = 16 * j + i;
                    // A clear bit in hmask means the value is 4 lower.
                    let hi = if (wb[e % 32] >> (e / 32)) & 1 == 0 {
                        4
                    } else {
                        0
                    };
                    (two_bits(&wb[32..96], e) - hi) * i32::from(ab[4 + e] as i8)
                })
                .sum();
            isum += sc * p;
        }
        s += d * isum as f32;
    }
    s
}

/// Scale and minimum of sub-block `j` of Q4_K/Q5_K from the 12 packed scale bytes.
#[inline]
pub(crate) fn k4_scale_min(s: &[u8], j: usize) -> (i32, i32) {
    let (sc, m) = if j < 4 {
        (s[j] & 0x3f, s[j + 4] & 0x3f)
    } else {
        (
            (s[j + 4] & 0x0f) | ((s[j - 4] >> 2) & 0x30),
            (s[j + 4] >> 4) | ((s[j] >> 2) & 0x30),
        )
    };
    (i32::from(sc), i32::from(m))
}

pub fn dot_q4_k(w: &[u8], a: &[u8]) -> f32 {
    let mut s = 0f32;
    for (wb, ab) in w.chunks_exact(Q4_K_BYTES).zip(a.chunks_exact(Q8_K_BYTES)) {
        let da = f32_at(ab, 0);
        let (d, dmin) = (f16_at(wb, 0) * da, f16_at(wb, 2) * da);
        let (mut isum, mut msum) = (0i32, 0i32);
        for j in 0..8 {
            let (sc, m) = k4_scale_min(&wb[4..16], j);
            msum += m * (bsum(ab, 2 * j) + bsum(ab, 2 * j + 1));
            let qs = &wb[16 + (j / 2) * 32..16 + (j / 2) * 32 + 32];
            let p: i32 = qs
                .iter()
                .zip(i8s(&ab[4 + 32 * j..4 + 32 * j + 32]))
                .map(|(&q, x)| i32::from((q >> (4 * (j % 2))) & 0x0f) * x)
                .sum();
            isum += sc * p;
        }
        s += d * isum as f32 - dmin * msum as f32;
    }
    s
}

pub fn dot_q5_k(w: &[u8], a: &[u8]) -> f32 {
    let mut s = 0f32;
    for (wb, ab) in w.chunks_exact(Q5_K_BYTES).zip(a.chunks_exact(Q8_K_BYTES)) {
        let da = f32_at(ab, 0);
        let (d, dmin) = (f16_at(wb, 0) * da, f16_at(wb, 2) * da);
        let qh = &wb[16..48];
        let (mut isum, mut msum) = (0i32, 0i32);
        for j in 0..8 {
            let (sc, m) = k4_scale_min(&wb[4..16], j);
            msum += m * (bsum(ab, 2 * j) + bsum(ab, 2 * j + 1));
            let qs = &wb[48 + (j / 2) * 32..48 + (j / 2) * 32 + 32];
            let p: i32 = (0..32)
                .map(|i| {
                    let q = ((qs[i] >> (4 * (j % 2))) & 0x0f) | (((qh[i] >> j) & 1) << 4);
                    i32::from(q) * i32::from(ab[4 + 32 * j + i] as i8)
                })
                .sum();
            isum += sc * p;
        }
        s += d * isum as f32 - dmin * msum as f32;
    }
    s
}

pub fn dot_q6_k(w: &[u8], a: &[u8]) -> f32 {
    let mut s = 0f32;
    for (wb, ab) in w.chunks_exact(Q6_K_BYTES).zip(a.chunks_exact(Q8_K_BYTES)) {
        let d = f16_at(wb, 208) * f32_at(ab, 0);
        let mut isum = 0i32;
        for j in 0..16 {
            let sc = i32::from(wb[192 + j] as i8);
            let p: i32 = (0..16)
                .map(|i| {
                    let e = 16 * j + i;
                    let (half, r) = (e / 128, e % 128);
                    let low = (wb[half * 64 + r % 64] >> (4 * (r / 64))) & 0x0f;
                    let high = (wb[128 + half * 32 + r % 32] >> (2 * (r / 32))) & 3;
                    (i32::from(low | (high << 4)) - 32) * i32::from(ab[4 + e] as i8)
                })
                .sum();
            isum += sc * p;
        }
        s += d * isum as f32;
    }
    s
}

/// 6-bit scale (minus 32) of sub-block `ib` of an IQ4_XS block.
#[inline]
pub(crate) fn iq4_xs_scale(wb: &[u8], ib: usize) -> i32 {
    let sh = u16::from_le_bytes([wb[2], wb[3]]);
    let lo = (wb[4 + ib / 2] >> (4 * (ib % 2))) & 0x0f;
    let hi = ((sh >> (2 * ib)) & 3) as u8;
    i32::from(lo | (hi << 4)) - 32
}

pub fn dot_iq4_xs(w: &[u8], a: &[u8]) -> f32 {
    let mut s = 0f32;
    for (wb, ab) in w.chunks_exact(IQ4_XS_BYTES).zip(a.chunks_exact(Q8_K_BYTES)) {
        let d = f16_at(wb, 0) * f32_at(ab, 0);
        let mut isum = 0i32;
        for ib in 0..8 {
            let q = nibbles(&wb[8 + 16 * ib..24 + 16 * ib])
                .map(|v| i32::from(KVALUES_IQ4NL[v as usize]));
            isum += iq4_xs_scale(wb, ib) * dot32(&q, &ab[4 + 32 * ib..36 + 32 * ib]);
        }
        s += d * isum as f32;
    }
    s
}

pub fn dot_f16(w: &[u8], a: &[u8]) -> f32 {
    w.chunks_exact(2)
        .zip(a.chunks_exact(2))
        .map(|(x, y)| {
            f16::from_le_bytes([x[0], x[1]]).to_f32() * f16::from_le_bytes([y[0], y[1]]).to_f32()
        })
        .sum()
}

pub fn dot_bf16(w: &[u8], a: &[u8]) -> f32 {
    w.chunks_exact(2)
        .zip(a.chunks_exact(2))
        .map(|(x, y)| {
            bf16::from_le_bytes([x[0], x[1]]).to_f32() * bf16::from_le_bytes([y[0], y[1]]).to_f32()
        })
        .sum()
}

pub fn dot_f32(w: &[u8], a: &[u8]) -> f32 {
    w.chunks_exact(4)
        .zip(a.chunks_exact(4))
        .map(|(x, y)| f32_at(x, 0) * f32_at(y, 0))
        .sum()
}
