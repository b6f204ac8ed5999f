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
//! groups of [`GROUP`]; a row's last group is padded with zero blocks (scale 0), so every
//! load is whole. A group of four 32-element blocks `b0..b3` is:
//! - Q4_0 (72 bytes): the four blocks' 16 code bytes one after the other (byte `16b + j`
//!   holds element `j` of block `b` in its low nibble and element `16 + j` in its high one,
//!   as in ggml), then the four f16 scales. One AND gives every block's first half, one
//!   shift-and-AND every block's second half.
//! - Q8_0 (136 bytes): the first halves (elements 0..16) of the four blocks, then their
//!   second halves, each value stored as `q ^ 0x80` (the unsigned form `vpdpbusd` takes),
//!   then the four f16 scales.
//!
//! So a 512-bit register holds the same half of four blocks, and two `vpdpbusd` leave each
//! block's integer sum spread over four 32-bit lanes: one conversion, one scale and one FMA
//! per four blocks, half the float work of the ggml-layout kernels. The activations come in
//! the matching layout ([`crate::kernels::ActType::Q8_0Grouped`]), the same numbers as Q8_0,
//! for one row and for tiles alike, so a lone sequence and a batched one agree to the bit;
//! against the ggml-layout kernels only the float summation order differs. The panel GEMM reads packed rows by unpacking them ([`unpack_row`]) into its per-thread
//! buffer.

use ferrite_gguf::GgmlType;

use crate::kernels::layout::{Q4_0_BYTES, Q8_0_BYTES};
use crate::kernels::{self, Isa};

/// Blocks per packed group.
pub const GROUP: usize = 4;

/// Whether ferrite has a packed layout for `ty` (whatever the CPU).
pub fn has_layout(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_0 | GgmlType::Q8_0)
}

/// Whether weights of `ty` should be packed at load on this CPU: the best kernel level reads
/// the packed layout. `FERRITE_REPACK=0` turns packing off, for comparisons.
pub fn worth_packing(ty: GgmlType) -> bool {
    has_layout(ty)
        && std::env::var("FERRITE_REPACK").as_deref() != Ok("0")
        && kernels::packed_kernel(ty).is_some_and(|k| k.isa > Isa::Scalar)
}

/// Bytes of one packed row of `k` elements of `ty`, or `None` if `ty` has no packed layout
/// or `k` is not a whole number of blocks.
pub fn packed_row_bytes(ty: GgmlType, k: usize) -> Option<usize> {
    let bytes = block_bytes(ty)?;
    if !k.is_multiple_of(32) {
        return None;
    }
    Some((k / 32).div_ceil(GROUP) * GROUP * bytes)
}

fn block_bytes(ty: GgmlType) -> Option<usize> {
    match ty {
        GgmlType::Q4_0 => Some(Q4_0_BYTES),
        GgmlType::Q8_0 => Some(Q8_0_BYTES),
        _ => None,
    }
}

/// Packs one row in ggml layout (`src`, whole blocks of `ty`) into `dst`
/// ([`packed_row_bytes`] long).
///
/// # Panics
/// If `ty` has no packed layout or the lengths do not match.
pub fn pack_row(ty: GgmlType, src: &[u8], dst: &mut [u8]) {
    let bytes = block_bytes(ty).expect("a type with a packed layout");
    assert!(src.len().is_multiple_of(bytes), "{ty}: whole blocks");
    let nb = src.len() / bytes;
    assert_eq!(
        Some(dst.len()),
        packed_row_bytes(ty, nb * 32),
        "{ty}: packed row size"
    );
    // Whole groups through fixed-size copies (the compiler vectorizes them: packing runs
    // over every weight at load); the padded last group, if any, block by block.
    let whole = nb / GROUP;
    let (src_whole, src_tail) = src.split_at(whole * GROUP * bytes);
    let (dst_whole, dst_tail) = dst.split_at_mut(whole * GROUP * bytes);
    for (from, to) in src_whole
        .chunks_exact(GROUP * bytes)
        .zip(dst_whole.chunks_exact_mut(GROUP * bytes))
    {
        pack_group(ty, bytes, |b| Some(&from[b * bytes..(b + 1) * bytes]), to);
    }
    if !dst_tail.is_empty() {
        pack_group(
            ty,
            bytes,
            |b| src_tail.get(b * bytes..(b + 1) * bytes),
            dst_tail,
        );
    }
}

/// One packed group from its (up to four; absent ones are padding) ggml blocks.
fn pack_group<'a>(
    ty: GgmlType,
    bytes: usize,
    block: impl Fn(usize) -> Option<&'a [u8]>,
    out: &mut [u8],
) {
    let (values, scales) = out.split_at_mut(GROUP * (bytes - 2));
    for b in 0..GROUP {
        let blk = block(b);
        scales[2 * b..2 * b + 2].copy_from_slice(blk.map_or(&[0, 0], |blk| &blk[..2]));
        match (ty, blk) {
            (GgmlType::Q4_0, Some(blk)) => values[16 * b..16 * b + 16].copy_from_slice(&blk[2..]),
            (GgmlType::Q4_0, None) => values[16 * b..16 * b + 16].fill(0),
            (_, Some(blk)) => {
                for half in 0..2 {
                    let run: &mut [u8; 16] = (&mut values[64 * half + 16 * b..][..16])
                        .try_into()
                        .expect("16 bytes");
                    let from: &[u8; 16] = blk[2 + 16 * half..][..16].try_into().expect("16 bytes");
                    for (v, &q) in run.iter_mut().zip(from) {
                        *v = q ^ 0x80;
                    }
                }
            }
            (_, None) => {
                for half in 0..2 {
                    values[64 * half + 16 * b..][..16].fill(0x80);
                }
            }
        }
    }
}

/// Undoes [`pack_row`]: the row's first `dst.len() / block bytes` blocks, in ggml layout.
///
/// # Panics
/// If `ty` has no packed layout or `src` is too short for `dst`.
pub fn unpack_row(ty: GgmlType, src: &[u8], dst: &mut [u8]) {
    let bytes = block_bytes(ty).expect("a type with a packed layout");
    assert!(dst.len().is_multiple_of(bytes), "{ty}: whole blocks");
    let nb = dst.len() / bytes;
    assert!(
        src.len() >= nb.div_ceil(GROUP) * GROUP * bytes,
        "{ty}: packed row too short"
    );
    for (b, out) in dst.chunks_exact_mut(bytes).enumerate() {
        let group = &src[b / GROUP * GROUP * bytes..][..GROUP * bytes];
        let (values, scales) = group.split_at(GROUP * (bytes - 2));
        let i = b % GROUP;
        out[..2].copy_from_slice(&scales[2 * i..2 * i + 2]);
        match ty {
            GgmlType::Q4_0 => out[2..].copy_from_slice(&values[16 * i..16 * i + 16]),
            _ => {
                for (e, half) in [0, 16].into_iter().enumerate() {
                    let run = &values[64 * e + 16 * i..64 * e + 16 * i + 16];
                    for (q, &v) in out[2 + half..2 + half + 16].iter_mut().zip(run) {
                        *q = v ^ 0x80;
                    }
                }
            }
        }
    }
}

/// Packs `n_rows` consecutive ggml rows of `k` elements (`src`) into `dst`, row by row.
///
/// # Panics
/// As [`pack_row`], and if `src` or `dst` does not hold `n_rows` rows.
pub fn pack_rows(ty: GgmlType, k: usize, src: &[u8], dst: &mut [u8]) {
    let bytes = block_bytes(ty).expect("a type with a packed layout");
    let (from, to) = (
        k / 32 * bytes,
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
    fn unpack_inverts_pack_for_every_row_length() {
        let mut rng = Rng::new(11);
        for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
            for nb in 1..=9 {
                let w = random_weights(&mut rng, ty, 32 * nb);
                let mut packed = vec![0xaa; packed_row_bytes(ty, 32 * nb).unwrap()];
                pack_row(ty, &w, &mut packed);
                let mut back = vec![0u8; w.len()];
                unpack_row(ty, &packed, &mut back);
                assert_eq!(back, w, "{ty} with {nb} blocks");
            }
        }
    }

    #[test]
    fn padding_blocks_are_zero_with_zero_scale() {
        let mut rng = Rng::new(12);
        let w = random_weights(&mut rng, GgmlType::Q4_0, 32);
        let mut packed = vec![0xaa; 72];
        pack_row(GgmlType::Q4_0, &w, &mut packed);
        // Blocks 1..4 absent: their scales are 0 and their codes 0 (block 0 keeps its own).
        assert_eq!(&packed[66..72], &[0; 6]);
        assert!(packed[16..64].iter().all(|&v| v == 0));
        assert_eq!(&packed[..16], &w[2..]);
        let w = random_weights(&mut rng, GgmlType::Q8_0, 32);
        let mut packed = vec![0xaa; 136];
        pack_row(GgmlType::Q8_0, &w, &mut packed);
        assert!(packed[16..64].iter().all(|&v| v == 0x80));
        assert!(packed[80..128].iter().all(|&v| v == 0x80));
        assert_eq!(&packed[130..136], &[0; 6]);
    }

    #[test]
    fn packed_sizes() {
        assert_eq!(packed_row_bytes(GgmlType::Q4_0, 576), Some(20 * 18));
        assert_eq!(packed_row_bytes(GgmlType::Q4_0, 2048), Some(64 * 18));
        assert_eq!(packed_row_bytes(GgmlType::Q8_0, 5632), Some(176 * 34));
        assert_eq!(packed_row_bytes(GgmlType::Q4_0, 33), None);
        assert_eq!(packed_row_bytes(GgmlType::Q4_1, 64), None);
    }
}
