//! Weight rows re-laid out at load time ("packed") so the generation kernels read them with
//! plain loads.
//!
//! Why: generating a token streams every weight once, and on the machine this was written on
//! the 512-bit Q4_0 kernel over ggml's 18-byte blocks spent half its vector instructions
//! re-arranging blocks (two word permutes and two variable shifts per four blocks, plus a
//! permute for the scales) rather than multiplying. That made it instruction-bound below the
//! memory bandwidth. Packing does that re-arrangement once, at load.
//!
//! The packed row keeps every byte of information and the same size per block. Blocks go in
//! groups. A group of [`GROUP`] 32-element blocks `b0..b3` is:
//! - Q4_0 (72 bytes): the four blocks' 16 code bytes one after the other (byte `16b + j`
//!   holds element `j` of block `b` in its low nibble and element `16 + j` in its high one,
//!   as in ggml), then the four f16 scales. One AND gives every block's first half, one
//!   shift-and-AND every block's second half.
//! - Q4_1 (80 bytes): the code bytes as Q4_0's (unsigned codes, no offset), then the four
//!   f16 scales, then the four f16 mins.
//! - Q5_0 (88 bytes): the four blocks' code bytes as Q4_0's, then the fifth bits as two
//!   64-bit masks (bit `16b + j` of the first is element `j` of block `b`'s, of the second
//!   element `16 + j`'s: one masked byte add each puts them into the nibbles), then the four
//!   f16 scales.
//! - Q8_0 (136 bytes): the first halves (elements 0..16) of the four blocks, then their
//!   second halves, each value stored as `q ^ 0x80` (the unsigned form `vpdpbusd` takes),
//!   then the four f16 scales.
//!
//! So a 512-bit register holds the same half of four blocks, and two `vpdpbusd` leave each
//! block's integer sum spread over four 32-bit lanes: one conversion, one scale and one FMA
//! per four blocks, half the float work of the ggml-layout kernels. The activations come in
//! the matching layout ([`crate::kernels::ActType::Q8_0Grouped`]), the same numbers as Q8_0.
//! A row of these types that is not a whole number of groups ends in a short group of its
//! last `n` (1..4) blocks, laid out as above with `n` in place of four (the kernels read it
//! with masked loads), so a packed row is exactly as long as the ggml one: padding it to a
//! whole group would cost SmolLM2's 576-wide rows 11% more bytes streamed per token.
//!
//! The k-quants Q4_K and Q6_K go in groups of [`K_GROUP`] 256-element blocks, whose 16
//! sub-blocks of 32 elements map to the 16 32-bit lanes of a register: lane `8b + s` is
//! sub-block `s` of block `b`, and code register `t` (0..8) holds that sub-block's elements
//! `4t..4t + 4` in the lane. Eight `vpdpbusd` then leave every sub-block's sum in its own
//! lane, ready for one integer multiply by its scale.
//! - Q4_K (288 bytes): four 64-byte chunks of codes (chunk `c` holds register `c` in its low
//!   nibbles and register `c + 4` in its high ones), then a 32-byte header with the two
//!   blocks' d and dmin and their 6-bit scales and mins re-laid out for vector decoding
//!   (`Q4KHeader`).
//! - Q6_K (420 bytes): the low four bits of the codes as Q4_K's, then two 64-byte chunks of
//!   high bits (chunk `h` holds register `4h + u`'s two bits at bits `2u..2u + 2`), the
//!   sub-blocks' scales as 16 bytes for elements 0..16 and 16 for 16..32 (lane order), then
//!   the two f16 scales.
//!
//! Their activations are [`crate::kernels::ActType::Q8_KGrouped`], the same numbers as Q8_K.
//! A k-quant row of an odd number of blocks is padded with a zero block (scale 0); no model
//! at hand has one.
//! For every type one row and tiles use the same layout and arithmetic, so a lone sequence
//! and a batched one agree to the bit; against the ggml-layout kernels only the float
//! summation order differs. The panel GEMM reads packed rows by unpacking them
//! ([`unpack_row`]) into its per-thread buffer.

use ferrite_gguf::GgmlType;

use crate::kernels::layout::{
    Q4_0_BYTES, Q4_1_BYTES, Q4_K_BYTES, Q5_0_BYTES, Q6_K_BYTES, Q8_0_BYTES,
};
use crate::kernels::scalar::k4_scale_min;
use crate::kernels::{self, Isa};
use crate::quantize::pack_scales_6bit;

/// Blocks per packed group of the 32-element types (Q4_0, Q4_1, Q5_0, Q8_0).
pub const GROUP: usize = 4;

/// Blocks per packed group of the 256-element k-quants (Q4_K, Q6_K): as many as one group
/// of their activations ([`crate::kernels::ActType::Q8_KGrouped`]).
pub const K_GROUP: usize = crate::kernels::act::K_GROUP;

/// Every type with a packed layout ([`has_layout`]), in the order they got one (tests
/// draw random data for them in this order: a new type goes last, so that the others keep
/// their data).
pub const PACKED_TYPES: [GgmlType; 6] = [
    GgmlType::Q4_0,
    GgmlType::Q5_0,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
    GgmlType::Q4_1,
];

/// Whether ferrite has a packed layout for `ty` (whatever the CPU).
pub fn has_layout(ty: GgmlType) -> bool {
    shape(ty).is_some()
}

/// Whether weights of `ty` should be packed at load on this CPU: the best kernel level reads
/// the packed layout. `FERRITE_REPACK=0` turns packing off, for comparisons.
pub fn worth_packing(ty: GgmlType) -> bool {
    has_layout(ty)
        && std::env::var("FERRITE_REPACK").as_deref() != Ok("0")
        && kernels::packed_kernel(ty).is_some_and(|k| k.isa > Isa::Scalar)
}

/// Whether a row of `ty` that is not a whole number of groups ends in a short group (rather
/// than one padded with zero blocks).
fn short_tail(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q8_0
    )
}

/// `(elements per block, bytes per block, blocks per group)` of `ty`'s packed layout.
fn shape(ty: GgmlType) -> Option<(usize, usize, usize)> {
    match ty {
        GgmlType::Q4_0 => Some((32, Q4_0_BYTES, GROUP)),
        GgmlType::Q4_1 => Some((32, Q4_1_BYTES, GROUP)),
        GgmlType::Q5_0 => Some((32, Q5_0_BYTES, GROUP)),
        GgmlType::Q8_0 => Some((32, Q8_0_BYTES, GROUP)),
        GgmlType::Q4_K => Some((256, Q4_K_BYTES, K_GROUP)),
        GgmlType::Q6_K => Some((256, Q6_K_BYTES, K_GROUP)),
        _ => None,
    }
}

/// Blocks per packed group of `ty`, if it has a layout.
pub fn group_blocks(ty: GgmlType) -> Option<usize> {
    shape(ty).map(|(_, _, g)| g)
}

/// Bytes of one packed row of `k` elements of `ty`, or `None` if `ty` has no packed layout
/// or `k` is not a whole number of blocks.
pub fn packed_row_bytes(ty: GgmlType, k: usize) -> Option<usize> {
    let (block, bytes, group) = shape(ty)?;
    if !k.is_multiple_of(block) {
        return None;
    }
    let blocks = k / block;
    let stored = if short_tail(ty) {
        blocks
    } else {
        blocks.div_ceil(group) * group
    };
    Some(stored * bytes)
}

/// Packs one row in ggml layout (`src`, whole blocks of `ty`) into `dst`
/// ([`packed_row_bytes`] long).
///
/// # Panics
/// If `ty` has no packed layout or the lengths do not match.
pub fn pack_row(ty: GgmlType, src: &[u8], dst: &mut [u8]) {
    let (block, bytes, group) = shape(ty).expect("a type with a packed layout");
    assert!(src.len().is_multiple_of(bytes), "{ty}: whole blocks");
    let nb = src.len() / bytes;
    assert_eq!(
        Some(dst.len()),
        packed_row_bytes(ty, nb * block),
        "{ty}: packed row size"
    );
    // Whole groups straight from the source (fixed-size copies the compiler vectorizes:
    // packing runs over every weight at load); a last group short, or padded with zero
    // blocks.
    let whole = nb / group;
    let (src_whole, src_tail) = src.split_at(whole * group * bytes);
    let (dst_whole, dst_tail) = dst.split_at_mut(whole * group * bytes);
    for (from, to) in src_whole
        .chunks_exact(group * bytes)
        .zip(dst_whole.chunks_exact_mut(group * bytes))
    {
        pack_group(ty, from, to);
    }
    if short_tail(ty) {
        if !src_tail.is_empty() {
            pack_group(ty, src_tail, dst_tail);
        }
    } else if !dst_tail.is_empty() {
        let mut padded = [0u8; MAX_GROUP_BYTES];
        padded[..src_tail.len()].copy_from_slice(src_tail);
        pack_group(ty, &padded[..group * bytes], dst_tail);
    }
}

/// The largest packed group (two Q6_K blocks).
const MAX_GROUP_BYTES: usize = K_GROUP * Q6_K_BYTES;

/// Where f16 header field `f` (0: the scale, 1: Q4_1's min) of block `b` lies in a packed
/// Q4_0/Q4_1 group of `n` blocks: after the blocks' 16 code bytes each, one run of `n` per
/// field.
fn q4_field_at(n: usize, f: usize, b: usize) -> usize {
    16 * n + 2 * n * f + 2 * b
}

/// One packed group from its ggml blocks (`from`: a whole group, padding blocks zeroed
/// with scale 0, or for the types with a short tail the row's last 1..[`GROUP`] blocks).
fn pack_group(ty: GgmlType, from: &[u8], out: &mut [u8]) {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let bytes = ty.type_size() as usize;
            let n = from.len() / bytes;
            for (b, blk) in from.chunks_exact(bytes).enumerate() {
                let (head, codes) = blk.split_at(bytes - 16);
                out[16 * b..16 * b + 16].copy_from_slice(codes);
                for (f, field) in head.chunks_exact(2).enumerate() {
                    let at = q4_field_at(n, f, b);
                    out[at..at + 2].copy_from_slice(field);
                }
            }
        }
        GgmlType::Q5_0 => {
            let n = from.len() / Q5_0_BYTES;
            let (values, rest) = out.split_at_mut(n * 16);
            let (fifth, scales) = rest.split_at_mut(n * 4);
            for (b, blk) in from.chunks_exact(Q5_0_BYTES).enumerate() {
                scales[2 * b..2 * b + 2].copy_from_slice(&blk[..2]);
                // qh's low half: elements 0..16 of the block; its high half: 16..32.
                fifth[2 * b..2 * b + 2].copy_from_slice(&blk[2..4]);
                fifth[2 * n + 2 * b..2 * n + 2 * b + 2].copy_from_slice(&blk[4..6]);
                values[16 * b..16 * b + 16].copy_from_slice(&blk[6..]);
            }
        }
        GgmlType::Q8_0 => {
            let n = from.len() / Q8_0_BYTES;
            let (values, scales) = out.split_at_mut(n * 32);
            for (b, blk) in from.chunks_exact(Q8_0_BYTES).enumerate() {
                scales[2 * b..2 * b + 2].copy_from_slice(&blk[..2]);
                for half in 0..2 {
                    let run: &mut [u8; 16] = (&mut values[16 * n * half + 16 * b..][..16])
                        .try_into()
                        .expect("16 bytes");
                    let src: &[u8; 16] = blk[2 + 16 * half..][..16].try_into().expect("16 bytes");
                    for (v, &q) in run.iter_mut().zip(src) {
                        *v = q ^ 0x80;
                    }
                }
            }
        }
        GgmlType::Q4_K => {
            // Codes (4 × 64 bytes), then the group header ([`Q4KHeader`]).
            let (codes, header) = out.split_at_mut(256);
            header.fill(0);
            for (b, blk) in from.chunks_exact(Q4_K_BYTES).enumerate() {
                header[4 * b..4 * b + 4].copy_from_slice(&blk[..4]);
                for s in 0..8 {
                    let (sc, mn) = k4_scale_min(&blk[4..16], s);
                    Q4KHeader::put(header, 8 * b + s, sc as u8, mn as u8);
                }
                let q = |e: usize| (blk[16 + 32 * (e / 64) + e % 32] >> (4 * (e / 32 % 2))) & 0x0f;
                for_each_k_lane_byte(b, |c, at, e| codes[64 * c + at] = q(e) | (q(e + 16) << 4));
            }
        }
        GgmlType::Q6_K => {
            // Low code bits (4 × 64 bytes), high bits (2 × 64), scales (16 per register half),
            // then the two f16 scales.
            let (low, rest) = out.split_at_mut(256);
            let (high, rest) = rest.split_at_mut(128);
            let (scales, d) = rest.split_at_mut(32);
            high.fill(0);
            for (b, blk) in from.chunks_exact(Q6_K_BYTES).enumerate() {
                d[2 * b..2 * b + 2].copy_from_slice(&blk[208..210]);
                let q = |e: usize| q6_k_code(blk, e);
                for_each_k_lane_byte(b, |c, at, e| {
                    low[64 * c + at] = (q(e) & 0x0f) | ((q(e + 16) & 0x0f) << 4);
                    high[at] |= (q(e) >> 4) << (2 * c);
                    high[64 + at] |= (q(e + 16) >> 4) << (2 * c);
                });
                for s in 0..8 {
                    scales[8 * b + s] = blk[192 + 2 * s];
                    scales[16 + 8 * b + s] = blk[192 + 2 * s + 1];
                }
            }
        }
        _ => unreachable!("{ty} has no packed layout"),
    }
}

/// Calls `f(c, at, e)` for the bytes of block `b` (0 or 1) in a k-quant group's four
/// 64-byte chunks of codes: byte `at` of chunk `c` holds element `e` (its low nibble,
/// register `c` of [`crate::kernels::ActType::Q8_KGrouped`]) and element `e + 16` (its high
/// nibble, register `c + 4`) of the block, in the lane of `e`'s 32-element sub-block.
fn for_each_k_lane_byte(b: usize, mut f: impl FnMut(usize, usize, usize)) {
    for s in 0..8 {
        let lane = 8 * b + s;
        for c in 0..4 {
            for i in 0..4 {
                f(c, 4 * lane + i, 32 * s + 4 * c + i);
            }
        }
    }
}

/// The 32-byte header of a packed Q4_K group, laid out so the kernel decodes the 16
/// sub-blocks' 6-bit scales and mins with a handful of 128-bit operations (ggml's
/// 12-byte packing needs ~25 scalar ones per block, measured 15-20% of the kernel):
/// - bytes 0..8: `d₀, dmin₀, d₁, dmin₁` (f16), one load for one conversion;
/// - bytes 8..24: lane `i` (sub-block `i % 8` of block `i / 8`)'s scale in the low nibble
///   of byte `8 + i`, its min in the high one (their low four bits);
/// - bytes 24..28 and 28..32: the scales' and the mins' top two bits, lane `i`'s in byte
///   `i % 4` at bits `2(i / 4)..2(i / 4) + 2`, so that broadcasting the four bytes to
///   every 32-bit lane and rotating lane `k` left by `4 - 2k` brings each byte's own
///   two bits to bits 4..6.
struct Q4KHeader;

impl Q4KHeader {
    fn put(h: &mut [u8], lane: usize, sc: u8, mn: u8) {
        h[8 + lane] = (sc & 0x0f) | (mn & 0x0f) << 4;
        h[24 + lane % 4] |= (sc >> 4) << (2 * (lane / 4));
        h[28 + lane % 4] |= (mn >> 4) << (2 * (lane / 4));
    }

    fn get(h: &[u8], lane: usize) -> (u8, u8) {
        let top = |at: usize| (h[at + lane % 4] >> (2 * (lane / 4))) & 3;
        (
            (h[8 + lane] & 0x0f) | top(24) << 4,
            (h[8 + lane] >> 4) | top(28) << 4,
        )
    }
}

/// The 6-bit code (0..64) of element `e` of a ggml Q6_K block.
fn q6_k_code(blk: &[u8], e: usize) -> u8 {
    let (half, r) = (e / 128, e % 128);
    let low = (blk[64 * half + r % 64] >> (4 * (r / 64))) & 0x0f;
    let high = (blk[128 + 32 * half + r % 32] >> (2 * (r / 32))) & 3;
    low | (high << 4)
}

/// Undoes [`pack_row`]: the row's first `dst.len() / block bytes` blocks, in ggml layout.
///
/// # Panics
/// If `ty` has no packed layout or `src` is too short for `dst`.
pub fn unpack_row(ty: GgmlType, src: &[u8], dst: &mut [u8]) {
    let (block, bytes, group) = shape(ty).expect("a type with a packed layout");
    assert!(dst.len().is_multiple_of(bytes), "{ty}: whole blocks");
    let nb = dst.len() / bytes;
    assert!(
        src.len() >= packed_row_bytes(ty, nb * block).expect("whole blocks"),
        "{ty}: packed row too short"
    );
    let mut blocks = [0u8; MAX_GROUP_BYTES];
    let (mut at, mut b) = (0, 0);
    while b < nb {
        let n = group.min(nb - b);
        let stored = if short_tail(ty) { n } else { group } * bytes;
        let blocks = &mut blocks[..stored];
        unpack_group(ty, &src[at..at + stored], blocks);
        dst[b * bytes..(b + n) * bytes].copy_from_slice(&blocks[..n * bytes]);
        (at, b) = (at + stored, b + n);
    }
}

/// The ggml blocks of one packed group (whole, or a short last one: `from` and `blocks`
/// hold as many blocks).
fn unpack_group(ty: GgmlType, from: &[u8], blocks: &mut [u8]) {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let bytes = ty.type_size() as usize;
            let n = blocks.len() / bytes;
            for (b, blk) in blocks.chunks_exact_mut(bytes).enumerate() {
                let (head, codes) = blk.split_at_mut(bytes - 16);
                codes.copy_from_slice(&from[16 * b..16 * b + 16]);
                for (f, field) in head.chunks_exact_mut(2).enumerate() {
                    let at = q4_field_at(n, f, b);
                    field.copy_from_slice(&from[at..at + 2]);
                }
            }
        }
        GgmlType::Q5_0 => {
            let n = blocks.len() / Q5_0_BYTES;
            let (values, rest) = from.split_at(n * 16);
            let (fifth, scales) = rest.split_at(n * 4);
            for (b, blk) in blocks.chunks_exact_mut(Q5_0_BYTES).enumerate() {
                blk[..2].copy_from_slice(&scales[2 * b..2 * b + 2]);
                blk[2..4].copy_from_slice(&fifth[2 * b..2 * b + 2]);
                blk[4..6].copy_from_slice(&fifth[2 * n + 2 * b..2 * n + 2 * b + 2]);
                blk[6..].copy_from_slice(&values[16 * b..16 * b + 16]);
            }
        }
        GgmlType::Q8_0 => {
            let n = blocks.len() / Q8_0_BYTES;
            let (values, scales) = from.split_at(n * 32);
            for (b, blk) in blocks.chunks_exact_mut(Q8_0_BYTES).enumerate() {
                blk[..2].copy_from_slice(&scales[2 * b..2 * b + 2]);
                for half in 0..2 {
                    let run = &values[16 * n * half + 16 * b..][..16];
                    for (q, &v) in blk[2 + 16 * half..][..16].iter_mut().zip(run) {
                        *q = v ^ 0x80;
                    }
                }
            }
        }
        GgmlType::Q4_K => {
            let (codes, header) = from.split_at(256);
            for (b, blk) in blocks.chunks_exact_mut(Q4_K_BYTES).enumerate() {
                blk[..4].copy_from_slice(&header[4 * b..4 * b + 4]);
                let lanes = std::array::from_fn(|s| Q4KHeader::get(header, 8 * b + s));
                let (sc, mn) = (lanes.map(|(sc, _)| sc), lanes.map(|(_, mn)| mn));
                pack_scales_6bit(&sc, &mn, &mut blk[4..16]);
                blk[16..].fill(0);
                for_each_k_lane_byte(b, |c, at, e| {
                    let v = codes[64 * c + at];
                    for (e, q) in [(e, v & 0x0f), (e + 16, v >> 4)] {
                        blk[16 + 32 * (e / 64) + e % 32] |= q << (4 * (e / 32 % 2));
                    }
                });
            }
        }
        GgmlType::Q6_K => {
            let (low, rest) = from.split_at(256);
            let (high, rest) = rest.split_at(128);
            let (scales, d) = rest.split_at(32);
            for (b, blk) in blocks.chunks_exact_mut(Q6_K_BYTES).enumerate() {
                blk[..192].fill(0);
                for_each_k_lane_byte(b, |c, at, e| {
                    let v = low[64 * c + at];
                    let h = |half: usize| (high[64 * half + at] >> (2 * c)) & 3;
                    for (e, q) in [
                        (e, (v & 0x0f) | (h(0) << 4)),
                        (e + 16, (v >> 4) | (h(1) << 4)),
                    ] {
                        let (half, r) = (e / 128, e % 128);
                        blk[64 * half + r % 64] |= (q & 0x0f) << (4 * (r / 64));
                        blk[128 + 32 * half + r % 32] |= (q >> 4) << (2 * (r / 32));
                    }
                });
                for s in 0..8 {
                    blk[192 + 2 * s] = scales[8 * b + s];
                    blk[192 + 2 * s + 1] = scales[16 + 8 * b + s];
                }
                blk[208..210].copy_from_slice(&d[2 * b..2 * b + 2]);
            }
        }
        _ => unreachable!("{ty} has no packed layout"),
    }
}

/// Decodes the first `nb` blocks of a packed Q4_K or Q6_K row straight into the panel
/// GEMM's form: one code per element in `q` and per group `d` and `m`, exactly what
/// `gemm::decode::decode_row` gives for the ggml row, without rebuilding the ggml blocks
/// (that detour cost the GEMM's short batches most of their time). `false`, and nothing
/// written, for other types.
pub(crate) fn decode_k_row(
    ty: GgmlType,
    src: &[u8],
    nb: usize,
    q: &mut [u8],
    d: &mut [f32],
    m: &mut [f32],
) -> bool {
    let f16_at = |b: &[u8], at: usize| half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32();
    let group_bytes = match ty {
        GgmlType::Q4_K => K_GROUP * Q4_K_BYTES,
        GgmlType::Q6_K => K_GROUP * Q6_K_BYTES,
        _ => return false,
    };
    for b in 0..nb {
        let (group, half) = (
            &src[b / K_GROUP * group_bytes..][..group_bytes],
            b % K_GROUP,
        );
        // Sub-block `s` of block `b` is lane `8·half + s`: its elements 4c..4c+4 and
        // 16+4c..16+4c+4 are the low and high halves of bytes 4·lane.. of chunk c.
        let lanes = (0..8).map(|s| (s, 8 * half + s));
        if ty == GgmlType::Q4_K {
            let (codes, header) = group.split_at(256);
            let (dd, dmin) = (f16_at(header, 4 * half), f16_at(header, 4 * half + 2));
            for (s, lane) in lanes {
                let g = 8 * b + s;
                let (sc, mn) = Q4KHeader::get(header, lane);
                (d[g], m[g]) = (dd * sc as f32, -(dmin * mn as f32));
                let out = &mut q[32 * g..32 * g + 32];
                for c in 0..4 {
                    for i in 0..4 {
                        let v = codes[64 * c + 4 * lane + i];
                        (out[4 * c + i], out[16 + 4 * c + i]) = (v & 0x0f, v >> 4);
                    }
                }
            }
        } else {
            let (low, rest) = group.split_at(256);
            let (high, rest) = rest.split_at(128);
            let (scales, dd) = (&rest[..32], f16_at(&rest[32..], 2 * half));
            for (s, lane) in lanes {
                for (j, sc) in [(2 * s, scales[lane]), (2 * s + 1, scales[16 + lane])] {
                    let g = 16 * b + j;
                    let v = dd * f32::from(sc as i8);
                    (d[g], m[g]) = (v, -32.0 * v);
                }
                let out = &mut q[256 * b + 32 * s..][..32];
                for c in 0..4 {
                    for i in 0..4 {
                        let at = 4 * lane + i;
                        let (v, h0, h1) = (low[64 * c + at], high[at], high[64 + at]);
                        out[4 * c + i] = (v & 0x0f) | ((h0 >> (2 * c)) & 3) << 4;
                        out[16 + 4 * c + i] = (v >> 4) | ((h1 >> (2 * c)) & 3) << 4;
                    }
                }
            }
        }
    }
    true
}

/// Packs `n_rows` consecutive ggml rows of `k` elements (`src`) into `dst`, row by row.
///
/// # Panics
/// As [`pack_row`], and if `src` or `dst` does not hold `n_rows` rows.
pub fn pack_rows(ty: GgmlType, k: usize, src: &[u8], dst: &mut [u8]) {
    let (block, bytes, _) = shape(ty).expect("a type with a packed layout");
    let (from, to) = (
        k / block * bytes,
        packed_row_bytes(ty, k).expect("whole blocks"),
    );
    assert_eq!(src.len() / from, dst.len() / to, "{ty}: row counts");
    for (s, d) in src.chunks_exact(from).zip(dst.chunks_exact_mut(to)) {
        pack_row(ty, s, d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::{random_weights, Rng};

    #[test]
    fn packed_types_lists_every_type_with_a_layout() {
        let mut with_layout: Vec<GgmlType> = ferrite_gguf::types::TYPES
            .iter()
            .map(|info| info.ty)
            .filter(|&t| has_layout(t))
            .collect();
        let mut listed = PACKED_TYPES.to_vec();
        with_layout.sort_by_key(|t| *t as u32);
        listed.sort_by_key(|t| *t as u32);
        assert_eq!(with_layout, listed);
    }

    #[test]
    fn unpack_inverts_pack_for_every_row_length() {
        let mut rng = Rng::new(11);
        for ty in PACKED_TYPES {
            let block = ty.block_size() as usize;
            for nb in 1..=9 {
                let w = random_weights(&mut rng, ty, block * nb);
                let mut packed = vec![0xaa; packed_row_bytes(ty, block * nb).unwrap()];
                pack_row(ty, &w, &mut packed);
                let mut back = vec![0u8; w.len()];
                unpack_row(ty, &packed, &mut back);
                assert_eq!(back, w, "{ty} with {nb} blocks");
            }
        }
    }

    #[test]
    fn a_short_last_group_is_laid_out_as_a_group_of_fewer_blocks() {
        let mut rng = Rng::new(12);
        // Six Q4_0 blocks: a group of four, then blocks 4 and 5 as codes, codes, scales.
        let w = random_weights(&mut rng, GgmlType::Q4_0, 6 * 32);
        let mut packed = vec![0xaa; 6 * 18];
        pack_row(GgmlType::Q4_0, &w, &mut packed);
        let tail = &packed[72..];
        assert_eq!(&tail[..16], &w[4 * 18 + 2..5 * 18]);
        assert_eq!(&tail[16..32], &w[5 * 18 + 2..6 * 18]);
        assert_eq!(&tail[32..34], &w[4 * 18..4 * 18 + 2]);
        assert_eq!(&tail[34..36], &w[5 * 18..5 * 18 + 2]);
        // Five Q8_0 blocks: the fifth alone, its halves then its scale.
        let w = random_weights(&mut rng, GgmlType::Q8_0, 5 * 32);
        let mut packed = vec![0xaa; 5 * 34];
        pack_row(GgmlType::Q8_0, &w, &mut packed);
        let (tail, blk) = (&packed[136..], &w[4 * 34..]);
        assert!((0..32).all(|e| tail[e] == blk[2 + e] ^ 0x80));
        assert_eq!(&tail[32..], &blk[..2]);
    }

    #[test]
    fn a_k_quant_row_of_an_odd_block_count_is_padded_with_a_zero_block() {
        let mut rng = Rng::new(13);
        let w = random_weights(&mut rng, GgmlType::Q4_K, 256);
        let mut packed = vec![0xaa; 2 * 144];
        pack_row(GgmlType::Q4_K, &w, &mut packed);
        // The second block's d and dmin, its scales and mins (lanes 8..16) and its codes
        // (bytes 32..64 of each chunk) are zero; the first block's are not all zero.
        let header = &packed[256..];
        assert_eq!(header[4..8], [0; 4]);
        assert!((8..16).all(|lane| Q4KHeader::get(header, lane) == (0, 0)));
        assert!((0..8).any(|lane| Q4KHeader::get(header, lane) != (0, 0)));
        assert!((0..4).all(|c| packed[64 * c + 32..64 * c + 64].iter().all(|&v| v == 0)));
    }

    #[test]
    fn k_rows_decode_from_the_packed_layout_as_from_ggml_blocks() {
        let mut rng = Rng::new(14);
        for ty in [GgmlType::Q4_K, GgmlType::Q6_K] {
            let g = crate::gemm::group_size(ty).unwrap();
            for nb in 1..=5 {
                let k = 256 * nb;
                let w = random_weights(&mut rng, ty, k);
                let mut packed = vec![0xaa; packed_row_bytes(ty, k).unwrap()];
                pack_row(ty, &w, &mut packed);
                let mut want = (vec![0u8; k], vec![0f32; k / g], vec![0f32; k / g]);
                crate::gemm::decode::decode_row(ty, &w, &mut want.0, &mut want.1, &mut want.2);
                let mut got = (
                    vec![0xaau8; k],
                    vec![f32::NAN; k / g],
                    vec![f32::NAN; k / g],
                );
                assert!(decode_k_row(
                    ty, &packed, nb, &mut got.0, &mut got.1, &mut got.2
                ));
                assert_eq!(got, want, "{ty} with {nb} blocks");
            }
        }
        assert!(!decode_k_row(
            GgmlType::Q4_0,
            &[],
            0,
            &mut [],
            &mut [],
            &mut []
        ));
    }

    #[test]
    fn packed_sizes() {
        assert_eq!(packed_row_bytes(GgmlType::Q4_0, 576), Some(18 * 18));
        assert_eq!(packed_row_bytes(GgmlType::Q8_0, 5 * 32), Some(5 * 34));
        assert_eq!(packed_row_bytes(GgmlType::Q4_K, 3 * 256), Some(4 * 144));
        assert_eq!(packed_row_bytes(GgmlType::Q4_0, 2048), Some(64 * 18));
        assert_eq!(packed_row_bytes(GgmlType::Q8_0, 5632), Some(176 * 34));
        assert_eq!(packed_row_bytes(GgmlType::Q4_K, 2048), Some(8 * 144));
        assert_eq!(packed_row_bytes(GgmlType::Q6_K, 5632), Some(22 * 210));
        assert_eq!(packed_row_bytes(GgmlType::Q4_K, 576), None);
        assert_eq!(packed_row_bytes(GgmlType::Q4_0, 33), None);
        assert_eq!(packed_row_bytes(GgmlType::Q4_1, 576), Some(18 * 20));
        assert_eq!(packed_row_bytes(GgmlType::Q5_1, 64), None);
    }
}
