//! Weight decoding into the panel form: every supported block format rewritten as unsigned
//! 8-bit codes `q` with one `(D, M)` pair per group of `G` elements, `w = D·q + M`.
//!
//! The rewrite is exact: `D` and `M` are the products of the block's f16 scales with its
//! integer sub-scales (rounded once to f32, as the dot kernels round them), and `q` is the
//! stored integer shifted to be non-negative (`q - 8` of Q4_0 becomes `q` with `M = -8·d`).
//! Unsigned codes are what `vpdpbusd` multiplies with signed activations.

use ferrite_gguf::GgmlType;
use half::f16;

use crate::kernels::layout::*;
use crate::kernels::scalar::{iq4_xs_scale, k4_scale_min, q3_k_scales};

/// Elements per `(D, M)` group of `ty` in panel form, for the types the panel GEMM handles.
pub(crate) fn group_size(ty: GgmlType) -> Option<usize> {
    match ty {
        GgmlType::Q4_0
        | GgmlType::Q4_1
        | GgmlType::Q5_0
        | GgmlType::Q5_1
        | GgmlType::Q8_0
        | GgmlType::IQ4_NL
        | GgmlType::Q4_K
        | GgmlType::Q5_K
        | GgmlType::IQ4_XS => Some(32),
        GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q6_K => Some(16),
        _ => None,
    }
}

#[inline]
fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Low nibbles of 16 bytes then their high nibbles: the 32 elements of a Q4/IQ4 quant array.
#[inline]
fn nibbles_into(qs: &[u8], q: &mut [u8]) {
    for j in 0..16 {
        q[j] = qs[j] & 0x0f;
        q[j + 16] = qs[j] >> 4;
    }
}

/// Element `e` (0..256) of a Q2_K/Q3_K 2-bit plane.
#[inline]
fn two_bits(plane: &[u8], e: usize) -> u8 {
    let (half, r) = (e / 128, e % 128);
    (plane[half * 32 + r % 32] >> (2 * (r / 32))) & 3
}

/// Decodes one row of `ty` (whole blocks) into codes `q` (one per element) and the per-group
/// `d`/`m` (one per [`group_size`] elements).
pub(crate) fn decode_row(ty: GgmlType, row: &[u8], q: &mut [u8], d: &mut [f32], m: &mut [f32]) {
    decode(ty, false, row, q, d, m);
}

/// Decodes the first `nb` blocks of a packed Q4_0 or Q4_1 row ([`crate::repack`]) straight
/// into panel form, exactly as [`decode_row`] decodes the ggml row: the codes are stored as
/// ggml stores them, only the scales (and mins) moved to the end of each group. Rebuilding
/// the ggml blocks first cost SmolLM2 Q4_1's prompts ~6%. `false`, and nothing written,
/// for other types.
pub(crate) fn decode_packed_q4_row(
    ty: GgmlType,
    row: &[u8],
    nb: usize,
    q: &mut [u8],
    d: &mut [f32],
    m: &mut [f32],
) -> bool {
    if !matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1) {
        return false;
    }
    decode(ty, true, row, &mut q[..32 * nb], &mut d[..nb], &mut m[..nb]);
    true
}

/// [`decode_row`] (ggml rows) or [`decode_packed_q4_row`] (`packed`), compiled for AVX2
/// where the CPU has it.
fn decode(ty: GgmlType, packed: bool, row: &[u8], q: &mut [u8], d: &mut [f32], m: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::Isa::best() >= crate::kernels::Isa::Avx2 {
        // SAFETY: AVX2 and F16C were detected (Isa::Avx2 requires both).
        unsafe { decode_avx2(ty, packed, row, q, d, m) };
        return;
    }
    decode_any(ty, packed, row, q, d, m);
}

/// The same code compiled for AVX2: the per-element loops vectorise (a third of panel
/// decoding time at 64-token batches went to the baseline build's scalar loops).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn decode_avx2(
    ty: GgmlType,
    packed: bool,
    row: &[u8],
    q: &mut [u8],
    d: &mut [f32],
    m: &mut [f32],
) {
    decode_any(ty, packed, row, q, d, m);
}

#[inline(always)]
fn decode_any(ty: GgmlType, packed: bool, row: &[u8], q: &mut [u8], d: &mut [f32], m: &mut [f32]) {
    if packed {
        packed_q4(ty, row, q, d, m);
    } else {
        decode_row_any(ty, row, q, d, m);
    }
}

/// A packed Q4_0/Q4_1 row's first `d.len()` blocks.
#[inline(always)]
fn packed_q4(ty: GgmlType, row: &[u8], q: &mut [u8], d: &mut [f32], m: &mut [f32]) {
    let nb = d.len();
    let (bytes, mins) = match ty {
        GgmlType::Q4_0 => (Q4_0_BYTES, false),
        _ => (Q4_1_BYTES, true),
    };
    let group = crate::repack::GROUP;
    // Groups of four blocks, the row's last one short: codes, then scales, then mins.
    for (g, blocks) in row.chunks(group * bytes).enumerate() {
        let n = blocks.len() / bytes;
        let (codes, tail) = blocks.split_at(16 * n);
        for b in 0..n.min(nb.saturating_sub(g * group)) {
            let i = g * group + b;
            nibbles_into(&codes[16 * b..16 * b + 16], &mut q[32 * i..32 * i + 32]);
            let dd = f16_at(tail, 2 * b);
            (d[i], m[i]) = if mins {
                (dd, f16_at(tail, 2 * n + 2 * b))
            } else {
                (dd, -8.0 * dd)
            };
        }
    }
}

#[inline(always)]
fn decode_row_any(ty: GgmlType, row: &[u8], q: &mut [u8], d: &mut [f32], m: &mut [f32]) {
    match ty {
        GgmlType::Q4_0 | GgmlType::IQ4_NL => {
            for (i, b) in row.chunks_exact(Q4_0_BYTES).enumerate() {
                let dd = f16_at(b, 0);
                let qq = &mut q[32 * i..32 * i + 32];
                nibbles_into(&b[2..18], qq);
                if ty == GgmlType::IQ4_NL {
                    for v in qq.iter_mut() {
                        *v = (i32::from(KVALUES_IQ4NL[*v as usize]) + 128) as u8;
                    }
                    (d[i], m[i]) = (dd, -128.0 * dd);
                } else {
                    (d[i], m[i]) = (dd, -8.0 * dd);
                }
            }
        }
        GgmlType::Q4_1 => {
            for (i, b) in row.chunks_exact(Q4_1_BYTES).enumerate() {
                nibbles_into(&b[4..20], &mut q[32 * i..32 * i + 32]);
                (d[i], m[i]) = (f16_at(b, 0), f16_at(b, 2));
            }
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let (bytes, qh_at) = if ty == GgmlType::Q5_0 {
                (Q5_0_BYTES, 2)
            } else {
                (Q5_1_BYTES, 4)
            };
            for (i, b) in row.chunks_exact(bytes).enumerate() {
                let qq = &mut q[32 * i..32 * i + 32];
                nibbles_into(&b[qh_at + 4..qh_at + 20], qq);
                let qh = u32::from_le_bytes([b[qh_at], b[qh_at + 1], b[qh_at + 2], b[qh_at + 3]]);
                for (j, v) in qq.iter_mut().enumerate() {
                    *v |= (((qh >> j) & 1) as u8) << 4;
                }
                let dd = f16_at(b, 0);
                (d[i], m[i]) = if ty == GgmlType::Q5_0 {
                    (dd, -16.0 * dd)
                } else {
                    (dd, f16_at(b, 2))
                };
            }
        }
        GgmlType::Q8_0 => {
            for (i, b) in row.chunks_exact(Q8_0_BYTES).enumerate() {
                for (v, &x) in q[32 * i..32 * i + 32].iter_mut().zip(&b[2..34]) {
                    *v = x ^ 0x80; // (x as i8) + 128
                }
                let dd = f16_at(b, 0);
                (d[i], m[i]) = (dd, -128.0 * dd);
            }
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            let (bytes, qs_at) = if ty == GgmlType::Q4_K {
                (Q4_K_BYTES, 16)
            } else {
                (Q5_K_BYTES, 48)
            };
            for (i, b) in row.chunks_exact(bytes).enumerate() {
                let (dd, dmin) = (f16_at(b, 0), f16_at(b, 2));
                for j in 0..8 {
                    let (sc, mn) = k4_scale_min(&b[4..16], j);
                    let g = 8 * i + j;
                    (d[g], m[g]) = (dd * sc as f32, -(dmin * mn as f32));
                    let qs = &b[qs_at + (j / 2) * 32..qs_at + (j / 2) * 32 + 32];
                    for (e, v) in q[32 * g..32 * g + 32].iter_mut().enumerate() {
                        *v = (qs[e] >> (4 * (j % 2))) & 0x0f;
                        if ty == GgmlType::Q5_K {
                            *v |= ((b[16 + e] >> j) & 1) << 4;
                        }
                    }
                }
            }
        }
        GgmlType::IQ4_XS => {
            for (i, b) in row.chunks_exact(IQ4_XS_BYTES).enumerate() {
                let dd = f16_at(b, 0);
                for ib in 0..8 {
                    let g = 8 * i + ib;
                    let qq = &mut q[32 * g..32 * g + 32];
                    nibbles_into(&b[8 + 16 * ib..24 + 16 * ib], qq);
                    for v in qq.iter_mut() {
                        *v = (i32::from(KVALUES_IQ4NL[*v as usize]) + 128) as u8;
                    }
                    let s = dd * iq4_xs_scale(b, ib) as f32;
                    (d[g], m[g]) = (s, -128.0 * s);
                }
            }
        }
        GgmlType::Q6_K => {
            for (i, b) in row.chunks_exact(Q6_K_BYTES).enumerate() {
                let dd = f16_at(b, 208);
                for j in 0..16 {
                    let g = 16 * i + j;
                    let s = dd * f32::from(b[192 + j] as i8);
                    (d[g], m[g]) = (s, -32.0 * s);
                    for (t, v) in q[16 * g..16 * g + 16].iter_mut().enumerate() {
                        let e = 16 * j + t;
                        let (half, r) = (e / 128, e % 128);
                        let low = (b[half * 64 + r % 64] >> (4 * (r / 64))) & 0x0f;
                        let high = (b[128 + half * 32 + r % 32] >> (2 * (r / 32))) & 3;
                        *v = low | (high << 4);
                    }
                }
            }
        }
        GgmlType::Q3_K => {
            for (i, b) in row.chunks_exact(Q3_K_BYTES).enumerate() {
                let dd = f16_at(b, 108);
                let scales = q3_k_scales(&b[96..108]);
                for (j, &sc) in scales.iter().enumerate() {
                    let g = 16 * i + j;
                    let s = dd * sc as f32;
                    (d[g], m[g]) = (s, -4.0 * s);
                    for (t, v) in q[16 * g..16 * g + 16].iter_mut().enumerate() {
                        let e = 16 * j + t;
                        // A set hmask bit means the stored value is not lowered by 4.
                        let hi = ((b[e % 32] >> (e / 32)) & 1) << 2;
                        *v = two_bits(&b[32..96], e) | hi;
                    }
                }
            }
        }
        GgmlType::Q2_K => {
            for (i, b) in row.chunks_exact(Q2_K_BYTES).enumerate() {
                let (dd, dmin) = (f16_at(b, 80), f16_at(b, 82));
                for j in 0..16 {
                    let g = 16 * i + j;
                    let sc = b[j];
                    (d[g], m[g]) = (dd * f32::from(sc & 0x0f), -(dmin * f32::from(sc >> 4)));
                    for (t, v) in q[16 * g..16 * g + 16].iter_mut().enumerate() {
                        *v = two_bits(&b[16..80], 16 * j + t);
                    }
                }
            }
        }
        _ => unreachable!("{ty} has no panel form (group_size is None)"),
    }
}
