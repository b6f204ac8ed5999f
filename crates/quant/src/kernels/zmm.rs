//! 512-bit dot products for the weight types that dominate generation time: Q4_0, Q8_0,
//! Q4_K and Q6_K (and, packed only, Q4_1, SmolLM2's type, and Q5_0: the fallback of Q4_K_M
//! mixtures for rows that are not a multiple of 256, most of SmolLM2's matrices), at the
//! AVX-512 level (F/BW/VNNI; no VBMI, so Cascade Lake runs them too).
//!
//! Why not the 256-bit bodies of [`super::x86`] with wider registers: at generation time a
//! matrix-vector product streams every weight once, and the 256-bit kernels spend ~19
//! instructions per 32-element Q4_0 block (a scale conversion, a permute and a sign fix-up per
//! block), which on a two-core machine caps them below the memory bandwidth. Here four
//! blocks are gathered into two registers with one word permute each (every block of these
//! types starts at an even offset, so `vpermt2w` suffices), their scales are converted four
//! at a time, and the stored offset (8 for Q4_0, 128 for Q8_0 read as unsigned) is taken out
//! by starting `vpdpbusd` from `-offset ·` the activations' sums, not by a per-block sign
//! trick. Q4_K decodes a 64-element run per register and applies its eight 6-bit scales with
//! one word permute per run.
//!
//! Activations come in ggml's block layouts (Q8_0, Q8_K), for one row or a tile of them, or,
//! for a single Q8_0 row, pre-gathered once per product ([`super::ActType::Q8_0Planar`]) so
//! that no weight row pays for gathering them. Both Q8_0 layouts feed the same registers into
//! the same arithmetic, so the result does not depend on the layout: generation, small
//! batches and the server's batch-invariant path agree to the bit. Measured with
//! `cargo bench -p ferrite-quant --bench kernels -- tg/1b` (one thread, 1B FFN shape): Q4_0
//! 10.5 → 15.8 GiB/s, Q8_0 24 → 27, Q4_K 14 → 18 against the 256-bit kernels.
//!
//! Weights packed at load ([`crate::repack`]) have their own loop ([`packed`]): a group of
//! four blocks holds the same half of each block per register, so the float work is one
//! register per four blocks and there is nothing to permute. Measured the same way: Q4_0
//! 16.6 → 28.9 GiB/s, Q8_0 24.9 → 45 against the ggml-layout loop above. (On this Zen 4,
//! `vcvtph2ps` and `vpermps` on 512 bits cost 2-3.5× a `vpdpbusd`, which is why the loop
//! converts four scales in 128 bits and spreads their products with one permute.) Packed
//! Q4_K and Q6_K ([`q4_k_packed`], [`q6_k_packed`]) keep one 32-element sub-block per lane,
//! so their 6- and 8-bit scales apply as one `vpmulld` per 512 weights: Q4_K 19.8 → 31.5
//! GiB/s, Q6_K 14.5 → 31.2 against the ggml-layout loops. Packed Q4_1 reads Q4_0's codes
//! unsigned and adds its mins times the activations' Q8_1 sums, four blocks per 128-bit
//! FMA: 23.6 → 47.2 GiB/s against the 256-bit ggml-layout loop (`tg/smollm2/Q4_1`; a
//! 512-bit loop over ggml's blocks that gathered Q8_1 activations with word permutes was
//! 17% slower than that 256-bit loop, and was dropped). Packed Q4_K then got a header
//! its 6-bit scales decode from in seven 128-bit operations (ggml's packing took ~25 scalar
//! ones per block) and multiplies its high nibbles in place (`hi` sums 16× the products,
//! divided once per group, instead of a shift per register): 27-31 → 37-38.5 GiB/s at one
//! thread (`tg/1b/Q4_K-packed`, interleaved runs). Both loops later lost a third of that to
//! out-of-line closures (see [`row_ptrs`]); without them: Q4_K 36-40, Q6_K 46-47 GiB/s.
//!
//! The packed loops take `M` weight rows as well as `N` activation rows. At generation
//! (`M = 2`, `N = 1`) each activation register is loaded once for two weight rows, which
//! at one thread, where these loops rather than memory set the pace, gave the 1.1B model
//! +7-15% (Q4_0) and +20% (Q4_K_M) tokens/s (`scripts/ab.sh`, interleaved). The two rows
//! must lie far apart ([`crate::matmul`] pairs the halves of a matrix): read in step, two
//! neighbouring rows stream from memory at a third of the speed of one on this CPU.
//!
//! Safety contract as in [`super::x86`]: `w` holds whole weight blocks and every activation
//! row the matching number of activation blocks.

use std::arch::x86_64::*;
use std::ptr::read_unaligned;

use super::layout::*;

/// Word-index tables for `vpermt2w`/`vpermw` (index bit 5 picks the second source).
#[repr(align(64))]
struct Words([u16; 32]);

const fn table(f: [[u16; 2]; 4], scale: bool) -> Words {
    // Not a closure: const fns cannot call one. `f[b] = [first word, source bit]` of block b
    // of a pair-of-pairs layout; `scale` replicates that single word 8 times per block.
    let mut t = [0u16; 32];
    let mut i = 0;
    while i < 32 {
        t[i] = if scale {
            f[i / 8][0] | f[i / 8][1]
        } else {
            let b = i / 16;
            (f[b][0] + (i % 16) as u16) | f[b][1]
        };
        i += 1;
    }
    Words(t)
}

/// Q8_0 blocks (34 bytes = 17 words: f16 scale, 16 words of i8) four at a time, read as
/// `r0 = bytes 0..64`, `r1 = 64..128`, `r2 = 72..136`. Block b's values are words
/// `17b + 1 .. 17b + 17`; blocks 0 and 1 come from (r0, r1), blocks 2 and 3 from (r1, r2).
static Q8_LO: Words = table([[1, 0], [18, 0], [0, 0], [0, 0]], false);
// Block 2 (words 35..51) lies in r1 from its word 3; block 3 (words 52..68) runs past r1,
// so it is read from r2, which starts at word 36: from r2's word 16.
static Q8_HI: Words = table([[3, 0], [16, 32], [0, 0], [0, 0]], false);
/// The four scales (words 0, 17, 34, 51 of r0 ‖ r1), eight copies each.
static Q8_SCALE: Words = table([[0, 0], [17, 0], [2, 32], [19, 32]], true);

/// Q4_0 blocks (18 bytes = 9 words: f16 scale, 8 words of nibbles) four at a time, read as
/// `r0 = bytes 0..64` and `r1 = bytes 8..72`. Each block's nibbles appear twice (low
/// nibbles are elements 0..16, high nibbles 16..32), so one shift-and-mask yields the 32
/// elements in order.
static Q4_LO: Words = dup_nibbles([[1, 0], [10, 0]]);
// Block 2: words 19..27 of r0; block 3: words 28..36 = r1 (from word 4) words 24..32.
static Q4_HI: Words = dup_nibbles([[19, 0], [24, 32]]);
static Q4_SCALE: Words = table([[0, 0], [9, 0], [18, 0], [27, 0]], true);

const fn dup_nibbles(f: [[u16; 2]; 2]) -> Words {
    let mut t = [0u16; 32];
    let mut i = 0;
    while i < 32 {
        let b = i / 16;
        t[i] = (f[b][0] + (i % 8) as u16) | f[b][1];
        i += 1;
    }
    Words(t)
}

#[inline(always)]
unsafe fn words(t: &Words) -> __m512i {
    _mm512_load_si512(t.0.as_ptr() as *const __m512i)
}

/// Bytes `0..n` of `p` (at most 64), zeros after: the tail of a row, without reading past it.
#[inline(always)]
unsafe fn load_upto(p: *const u8, n: usize) -> __m512i {
    match n {
        0 => _mm512_setzero_si512(),
        64.. => _mm512_loadu_si512(p as *const __m512i),
        _ => _mm512_maskz_loadu_epi8((1u64 << n) - 1, p as *const i8),
    }
}

/// Four (or, at a row's end, fewer) Q8_0-layout blocks starting at `p`: their values as two
/// registers of two blocks each, and their f16 scales converted, eight lanes per block.
#[inline(always)]
unsafe fn q8_blocks(p: *const u8, blocks: usize) -> Blocks {
    let n = blocks * Q8_0_BYTES;
    let (r0, r1, r2) = if blocks == 4 {
        (
            _mm512_loadu_si512(p as *const __m512i),
            _mm512_loadu_si512(p.add(64) as *const __m512i),
            _mm512_loadu_si512(p.add(72) as *const __m512i),
        )
    } else {
        // Fewer than four blocks: block 3 (the only reader of r2) is absent.
        (
            load_upto(p, n.min(64)),
            load_upto(p.add(64), n.saturating_sub(64)),
            _mm512_setzero_si512(),
        )
    };
    let lo = _mm512_permutex2var_epi16(r0, words(&Q8_LO), r1);
    let hi = _mm512_permutex2var_epi16(r1, words(&Q8_HI), r2);
    let sc = _mm512_permutex2var_epi16(r0, words(&Q8_SCALE), r1);
    ([lo, hi], f16x32_to_f32(sc))
}

#[inline(always)]
unsafe fn f16x32_to_f32(h: __m512i) -> [__m512; 2] {
    [
        _mm512_cvtph_ps(_mm512_castsi512_si256(h)),
        _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(h)),
    ]
}

/// Four (or fewer) Q4_0 blocks at `p`: elements as unsigned 0..16 bytes in block order, and
/// scales, as [`q8_blocks`].
#[inline(always)]
unsafe fn q4_0_blocks(p: *const u8, blocks: usize) -> Blocks {
    let (r0, r1) = if blocks == 4 {
        (
            _mm512_loadu_si512(p as *const __m512i),
            _mm512_loadu_si512(p.add(8) as *const __m512i),
        )
    } else {
        (load_upto(p, blocks * Q4_0_BYTES), _mm512_setzero_si512())
    };
    // Within each 16-word half: words 0..8 keep the low nibbles, words 8..16 the high ones.
    let shift = _mm512_set_epi64(
        0x0004_0004_0004_0004,
        0x0004_0004_0004_0004,
        0,
        0,
        0x0004_0004_0004_0004,
        0x0004_0004_0004_0004,
        0,
        0,
    );
    let m4 = _mm512_set1_epi8(0x0f);
    let nib = |v: __m512i| _mm512_and_si512(_mm512_srlv_epi16(v, shift), m4);
    let lo = nib(_mm512_permutex2var_epi16(r0, words(&Q4_LO), r1));
    let hi = nib(_mm512_permutex2var_epi16(r0, words(&Q4_HI), r1));
    let sc = _mm512_permutexvar_epi16(words(&Q4_SCALE), r0);
    ([lo, hi], f16x32_to_f32(sc))
}

/// Four (or, at a row's end, fewer) 32-element blocks as two registers of two blocks each,
/// and their scales, eight f32 copies per block.
type Blocks = ([__m512i; 2], [__m512; 2]);

/// A weight type of the shared loop: its blocks as unsigned bytes equal to the stored value
/// plus an offset, and that offset times the activations' sums ([`Acts::blocks`] gives
/// `-8 · Σ` of each lane's four values) as the starting point of `vpdpbusd`, which then
/// leaves the exact dot product in every lane.
///
/// Traits rather than closures: a closure that LLVM declines to inline is compiled without
/// the caller's target features, and its intrinsics become calls (a 20× slowdown).
trait Weights {
    const BYTES: usize;
    unsafe fn decode(p: *const u8, blocks: usize) -> Blocks;
    /// `-offset · Σ` per lane from `-8 · Σ`.
    unsafe fn offset_term(neg8: __m512i) -> __m512i;
}

/// Activation rows in one layout: row `r`'s blocks `i..i + blocks`, as [`Weights`] gives,
/// and `-8 ·` the sum of each lane's four values.
trait Acts {
    unsafe fn blocks(&self, r: usize, i: usize, blocks: usize) -> (Blocks, [__m512i; 2]);
}

struct Q4_0W;
struct Q8_0W;

impl Weights for Q4_0W {
    const BYTES: usize = Q4_0_BYTES;
    #[inline(always)]
    unsafe fn decode(p: *const u8, blocks: usize) -> Blocks {
        q4_0_blocks(p, blocks)
    }
    #[inline(always)]
    unsafe fn offset_term(neg8: __m512i) -> __m512i {
        neg8
    }
}

impl Weights for Q8_0W {
    const BYTES: usize = Q8_0_BYTES;
    #[inline(always)]
    unsafe fn decode(p: *const u8, blocks: usize) -> Blocks {
        let (q, s) = q8_blocks(p, blocks);
        let flip = _mm512_set1_epi8(-128);
        (
            [_mm512_xor_si512(q[0], flip), _mm512_xor_si512(q[1], flip)],
            s,
        )
    }
    #[inline(always)]
    unsafe fn offset_term(neg8: __m512i) -> __m512i {
        _mm512_slli_epi32::<4>(neg8)
    }
}

/// Q8_0 activation rows, gathered like Q8_0 weights.
struct Q8Rows<'a, const N: usize>([&'a [u8]; N]);

impl<const N: usize> Acts for Q8Rows<'_, N> {
    #[inline(always)]
    unsafe fn blocks(&self, r: usize, i: usize, blocks: usize) -> (Blocks, [__m512i; 2]) {
        let (x, s) = q8_blocks(self.0[r].as_ptr().add(i * Q8_0_BYTES), blocks);
        let zero = _mm512_setzero_si512();
        let eight = _mm512_set1_epi8(8);
        let neg8 = x.map(|x| _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, eight, x)));
        ((x, s), neg8)
    }
}

/// One [`super::ActType::Q8_0Planar`] row: everything is a plain load (the padding to four
/// blocks makes every load whole).
struct Planar<'a>(&'a [u8]);

impl Acts for Planar<'_> {
    #[inline(always)]
    unsafe fn blocks(&self, _: usize, i: usize, _: usize) -> (Blocks, [__m512i; 2]) {
        let third = self.0.len() / 3;
        let q = self.0.as_ptr().add(32 * i);
        let s = q.add(third) as *const f32;
        let n = q.add(2 * third) as *const __m512i;
        (
            (
                [
                    _mm512_loadu_si512(q as *const __m512i),
                    _mm512_loadu_si512(q.add(64) as *const __m512i),
                ],
                [_mm512_loadu_ps(s), _mm512_loadu_ps(s.add(16))],
            ),
            [_mm512_loadu_si512(n), _mm512_loadu_si512(n.add(1))],
        )
    }
}

/// The loop shared by Q4_0 and Q8_0, for either activation layout: both layouts yield the
/// same registers, so the arithmetic (and the result, to the bit) is the same.
#[inline(always)]
unsafe fn blocks32<W: Weights, const N: usize>(w: &[u8], act: impl Acts) -> [f32; N] {
    let nb = w.len() / W::BYTES;
    // One accumulator per register half: two independent FMA chains per row.
    let mut acc = [[_mm512_setzero_ps(); 2]; N];
    // A macro, not a closure, for the reason given at [`Weights`].
    macro_rules! step {
        ($i:expr, $blocks:expr) => {{
            let (i, blocks) = ($i, $blocks);
            let (q, ws) = W::decode(w.as_ptr().add(i * W::BYTES), blocks);
            for (r, acc) in acc.iter_mut().enumerate() {
                let ((x, xs), neg8) = act.blocks(r, i, blocks);
                for h in 0..2 {
                    let p = _mm512_dpbusd_epi32(W::offset_term(neg8[h]), q[h], x[h]);
                    let s = _mm512_mul_ps(ws[h], xs[h]);
                    acc[h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), s, acc[h]);
                }
            }
        }};
    }
    // Whole steps in a loop of their own, so that the gathers' tail handling folds away.
    let whole = nb / 4 * 4;
    let mut i = 0;
    while i < whole {
        step!(i, 4);
        i += 4;
    }
    if i < nb {
        step!(i, nb - i);
    }
    acc.map(|[a, b]| _mm512_reduce_add_ps(_mm512_add_ps(a, b)))
}

#[inline(always)]
pub(super) unsafe fn q4_0<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    blocks32::<Q4_0W, N>(w, Q8Rows(a))
}

#[inline(always)]
pub(super) unsafe fn q8_0<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    blocks32::<Q8_0W, N>(w, Q8Rows(a))
}

/// Q4_0 against one planar activation row; the same result as [`q4_0`] against that row in
/// Q8_0 form, to the bit.
#[inline(always)]
pub(super) unsafe fn q4_0_planar(w: &[u8], a: &[u8]) -> f32 {
    blocks32::<Q4_0W, 1>(w, Planar(a))[0]
}

/// Q8_0 against one planar activation row (see [`q4_0_planar`]).
#[inline(always)]
pub(super) unsafe fn q8_0_planar(w: &[u8], a: &[u8]) -> f32 {
    blocks32::<Q8_0W, 1>(w, Planar(a))[0]
}

/// Packed weights ([`crate::repack`]) against [`super::ActType::Q8_0Grouped`] rows: a
/// group of four blocks decodes to two registers holding the same half of each block, so
/// two `vpdpbusd` leave each block's integer sum in four lanes and the float work (convert,
/// scale, FMA) is one register per four blocks, half what [`blocks32`] spends. A row's
/// short last group is read with masked loads: its absent blocks decode as zero codes with
/// scale 0 against the activations' zero padding, so they add exactly nothing.
pub(crate) trait Packed {
    /// Bytes per block.
    const BLOCK_BYTES: usize;
    /// Bytes of a packed group of four blocks.
    const GROUP_BYTES: usize = 4 * Self::BLOCK_BYTES;
    /// The group at `p`: its two halves as unsigned bytes (value plus offset), and its four
    /// scales.
    unsafe fn decode(p: *const u8) -> ([__m512i; 2], __m128);
    /// A short group of `n` (1..4) blocks at `p`, as [`Self::decode`] with zeros in the
    /// lanes of the absent blocks.
    unsafe fn decode_short(p: *const u8, n: usize) -> ([__m512i; 2], __m128);
    /// `-offset · Σ` per lane from `-8 · Σ`.
    unsafe fn offset_term(neg8: __m512i) -> __m512i;
    /// Whether the type stores a min per block (`w = d·q + m`), which meets the
    /// activations' scaled sums.
    const MINS: bool = false;
    /// The four mins of the group at `p` (with [`Self::MINS`]).
    unsafe fn mins(_p: *const u8) -> __m128 {
        _mm_setzero_ps()
    }
    /// The `n` mins of a short group at `p`, zeros after (with [`Self::MINS`]).
    unsafe fn mins_short(_p: *const u8, _n: usize) -> __m128 {
        _mm_setzero_ps()
    }
}

pub(crate) struct Q4_0Packed;
pub(crate) struct Q4_1Packed;
pub(crate) struct Q5_0Packed;
pub(crate) struct Q8_0Packed;

#[inline(always)]
unsafe fn f16x4(p: *const u8) -> __m128 {
    _mm_cvtph_ps(_mm_loadl_epi64(p as *const __m128i))
}

/// The first `n` (< 4) of four f16 at `p`, zeros after.
#[inline(always)]
unsafe fn f16x4_upto(p: *const u8, n: usize) -> __m128 {
    _mm_cvtph_ps(_mm_maskz_loadu_epi16((1u8 << n) - 1, p as *const i16))
}

impl Q4_0Packed {
    #[inline(always)]
    unsafe fn nibbles(v: __m512i) -> [__m512i; 2] {
        let m4 = _mm512_set1_epi8(0x0f);
        [
            _mm512_and_si512(v, m4),
            _mm512_and_si512(_mm512_srli_epi16::<4>(v), m4),
        ]
    }
}

impl Packed for Q4_0Packed {
    const BLOCK_BYTES: usize = Q4_0_BYTES;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> ([__m512i; 2], __m128) {
        let v = _mm512_loadu_si512(p as *const __m512i);
        (Self::nibbles(v), f16x4(p.add(64)))
    }
    #[inline(always)]
    unsafe fn decode_short(p: *const u8, n: usize) -> ([__m512i; 2], __m128) {
        let v = load_upto(p, 16 * n);
        (Self::nibbles(v), f16x4_upto(p.add(16 * n), n))
    }
    #[inline(always)]
    unsafe fn offset_term(neg8: __m512i) -> __m512i {
        neg8
    }
}

/// Q4_0's codes and scales, at the same places; the mins follow the scales.
impl Packed for Q4_1Packed {
    const BLOCK_BYTES: usize = Q4_1_BYTES;
    const MINS: bool = true;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> ([__m512i; 2], __m128) {
        Q4_0Packed::decode(p)
    }
    #[inline(always)]
    unsafe fn decode_short(p: *const u8, n: usize) -> ([__m512i; 2], __m128) {
        Q4_0Packed::decode_short(p, n)
    }
    #[inline(always)]
    unsafe fn offset_term(_: __m512i) -> __m512i {
        // Unsigned codes: nothing to take out.
        _mm512_setzero_si512()
    }
    #[inline(always)]
    unsafe fn mins(p: *const u8) -> __m128 {
        f16x4(p.add(72))
    }
    #[inline(always)]
    unsafe fn mins_short(p: *const u8, n: usize) -> __m128 {
        f16x4_upto(p.add(18 * n), n)
    }
}

impl Q5_0Packed {
    /// The codes 0..32: each half's nibbles plus 16 where its fifth-bit mask is set.
    #[inline(always)]
    unsafe fn codes(v: __m512i, fifth: [u64; 2]) -> [__m512i; 2] {
        let [lo, hi] = Q4_0Packed::nibbles(v);
        let sixteen = _mm512_set1_epi8(16);
        [
            _mm512_mask_add_epi8(lo, fifth[0], lo, sixteen),
            _mm512_mask_add_epi8(hi, fifth[1], hi, sixteen),
        ]
    }
}

/// The `n` (≤ 4) 16-bit fifth-bit masks at `p` as one 64-bit mask, zeros after.
#[inline(always)]
unsafe fn mask_upto(p: *const u8, n: usize) -> u64 {
    _mm_cvtsi128_si64(_mm_maskz_loadu_epi16((1u8 << n) - 1, p as *const i16)) as u64
}

impl Packed for Q5_0Packed {
    const BLOCK_BYTES: usize = Q5_0_BYTES;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> ([__m512i; 2], __m128) {
        let v = _mm512_loadu_si512(p as *const __m512i);
        let fifth = [
            read_unaligned(p.add(64) as *const u64),
            read_unaligned(p.add(72) as *const u64),
        ];
        (Self::codes(v, fifth), f16x4(p.add(80)))
    }
    #[inline(always)]
    unsafe fn decode_short(p: *const u8, n: usize) -> ([__m512i; 2], __m128) {
        let v = load_upto(p, 16 * n);
        let fifth = [mask_upto(p.add(16 * n), n), mask_upto(p.add(18 * n), n)];
        (Self::codes(v, fifth), f16x4_upto(p.add(20 * n), n))
    }
    #[inline(always)]
    unsafe fn offset_term(neg8: __m512i) -> __m512i {
        // The stored offset is 16: -16 · Σ.
        _mm512_add_epi32(neg8, neg8)
    }
}

impl Packed for Q8_0Packed {
    const BLOCK_BYTES: usize = Q8_0_BYTES;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> ([__m512i; 2], __m128) {
        let lo = _mm512_loadu_si512(p as *const __m512i);
        let hi = _mm512_loadu_si512(p.add(64) as *const __m512i);
        ([lo, hi], f16x4(p.add(128)))
    }
    #[inline(always)]
    unsafe fn decode_short(p: *const u8, n: usize) -> ([__m512i; 2], __m128) {
        // Absent blocks read as 0, not as the stored 0x80 of a zero code: they still add
        // nothing, their activations being zero.
        let lo = load_upto(p, 16 * n);
        let hi = load_upto(p.add(16 * n), 16 * n);
        ([lo, hi], f16x4_upto(p.add(32 * n), n))
    }
    #[inline(always)]
    unsafe fn offset_term(neg8: __m512i) -> __m512i {
        Q8_0W::offset_term(neg8)
    }
}

/// Lane `l` takes scale `l / 4`.
static SPREAD4: Lanes = Lanes([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]);

#[repr(align(64))]
pub(crate) struct Lanes(pub(crate) [u32; 16]);

/// `M` packed rows `w` (of one matrix: the same length) against `N` grouped activation
/// rows (as many blocks, padded to whole groups). Each (weight row, activation row) pair
/// has its own accumulators and the same sequence of operations whatever `M` and `N` are,
/// so one-row, many-row and tile results agree to the bit. `M > 1` is for generation (one
/// activation row): each activation register is loaded once for `M` weight rows, a quarter
/// of the loop's instructions.
#[inline(always)]
unsafe fn packed<W: Packed, const M: usize, const N: usize>(
    w: [&[u8]; M],
    a: [&[u8]; N],
) -> [[f32; N]; M] {
    use super::act::GROUPED_BYTES;
    let len = w[0].len();
    let ng = len / W::GROUP_BYTES;
    let short = len % W::GROUP_BYTES / W::BLOCK_BYTES;
    let spread = _mm512_load_si512(SPREAD4.0.as_ptr() as *const __m512i);
    // Two accumulators per row pair, for alternate groups: one FMA chain would wait on its
    // own latency.
    let mut acc = [[[_mm512_setzero_ps(); 2]; N]; M];
    // Mins times the activations' scaled sums, four blocks per FMA (types with mins).
    let mut min_acc = [[_mm_setzero_ps(); N]; M];
    // A macro, not a closure, for the reason given at [`Weights`].
    macro_rules! group {
        ($g:expr, $slot:expr) => {
            group!($g, $slot, |p: *const u8| (W::decode(p), W::mins(p)))
        };
        ($g:expr, $slot:expr, |$p:ident: *const u8| $decode:expr) => {{
            let g = $g;
            let mut codes = [[_mm512_setzero_si512(); 2]; M];
            let mut scales = [_mm_setzero_ps(); M];
            let mut mins = [_mm_setzero_ps(); M];
            for m in 0..M {
                let $p = w[m].as_ptr().add(g * W::GROUP_BYTES);
                ((codes[m], scales[m]), mins[m]) = $decode;
            }
            for r in 0..N {
                let ap = a[r].as_ptr().add(g * GROUPED_BYTES);
                let xl = _mm512_loadu_si512(ap as *const __m512i);
                let xh = _mm512_loadu_si512(ap.add(64) as *const __m512i);
                let offset = W::offset_term(_mm512_loadu_si512(ap.add(128) as *const __m512i));
                let xs = _mm_loadu_ps(ap.add(192) as *const f32);
                if W::MINS {
                    let sums = _mm_loadu_ps(ap.add(208) as *const f32);
                    for m in 0..M {
                        min_acc[m][r] = _mm_fmadd_ps(mins[m], sums, min_acc[m][r]);
                    }
                }
                for m in 0..M {
                    let [lo, hi] = codes[m];
                    let p = _mm512_dpbusd_epi32(offset, lo, xl);
                    let p = _mm512_dpbusd_epi32(p, hi, xh);
                    let s = _mm512_permutexvar_ps(
                        spread,
                        _mm512_castps128_ps512(_mm_mul_ps(scales[m], xs)),
                    );
                    acc[m][r][$slot] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), s, acc[m][r][$slot]);
                }
            }
        }};
    }
    let mut g = 0;
    while g + 2 <= ng {
        group!(g, 0);
        group!(g + 1, 1);
        g += 2;
    }
    if g < ng {
        group!(g, 0);
        g += 1;
    }
    if short > 0 {
        // In the slot a padded group would have taken, so that the sum is the same.
        if g % 2 == 0 {
            group!(g, 0, |p: *const u8| (
                W::decode_short(p, short),
                W::mins_short(p, short)
            ));
        } else {
            group!(g, 1, |p: *const u8| (
                W::decode_short(p, short),
                W::mins_short(p, short)
            ));
        }
    }
    let mut out = [[0f32; N]; M];
    for m in 0..M {
        for r in 0..N {
            let sum = _mm512_reduce_add_ps(_mm512_add_ps(acc[m][r][0], acc[m][r][1]));
            out[m][r] = if W::MINS {
                let v = min_acc[m][r];
                let v = _mm_add_ps(v, _mm_movehl_ps(v, v));
                sum + _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v)))
            } else {
                sum
            };
        }
    }
    out
}

/// The entry point of one 32-element packed type: `M` packed rows against `N` grouped
/// activation rows, through [`packed`].
macro_rules! packed_entry {
    ($name:ident, $ty:ty) => {
        #[inline(always)]
        pub(super) unsafe fn $name<const M: usize, const N: usize>(
            w: [&[u8]; M],
            a: [&[u8]; N],
        ) -> [[f32; N]; M] {
            packed::<$ty, M, N>(w, a)
        }
    };
}
packed_entry!(q4_0_packed, Q4_0Packed);
packed_entry!(q4_1_packed, Q4_1Packed);
packed_entry!(q5_0_packed, Q5_0Packed);
packed_entry!(q8_0_packed, Q8_0Packed);

/// Lanes 0..8 take element 0 of a four-float vector, lanes 8..16 element 2: in a k-quant
/// group, block 0's and block 1's `d · d_a`.
pub(crate) static K_SCALE: Lanes = Lanes([0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2]);
/// Elements 1 and 3 likewise: Q4_K's `dmin · d_a / 32`.
pub(crate) static K_MIN: Lanes = Lanes([1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3]);

/// `M` packed Q4_K rows ([`crate::repack`]) against `N` [`super::ActType::Q8_KGrouped`]
/// rows (`M` and the bitwise agreement as in [`packed`]). A group is two blocks whose 16
/// sub-blocks of 32 map to the 16 lanes, so eight `vpdpbusd` leave every sub-block's integer
/// sum in its own lane, one `vpmulld` applies the 6-bit scales (and one more the mins to the
/// activations' block sums), and the float work is two conversions and two FMAs per 512
/// weights: against the ggml-layout loop ([`q4_k`]), no shifts by lane, no permutes of
/// scales, and no 16-bit products. Codes need one AND each: the high nibbles are multiplied
/// where they stand, and their chain divided by 16 once per group.
#[inline(always)]
pub(super) unsafe fn q4_k_packed<const M: usize, const N: usize>(
    w: [&[u8]; M],
    a: [&[u8]; N],
) -> [[f32; N]; M] {
    use super::act::K_GROUPED_BYTES;
    const GROUP_BYTES: usize = 2 * Q4_K_BYTES;
    let ng = w[0].len() / GROUP_BYTES;
    let m4 = _mm512_set1_epi8(0x0f);
    let k_scale = _mm512_load_si512(K_SCALE.0.as_ptr() as *const __m512i);
    let k_min = _mm512_load_si512(K_MIN.0.as_ptr() as *const __m512i);
    // One accumulator for the scaled sums, one for the mins: two FMA chains.
    let mut acc = [[[_mm512_setzero_ps(); 2]; N]; M];
    for g in 0..ng {
        let wp = row_ptrs(w, g * GROUP_BYTES);
        let ap = row_ptrs(a, g * K_GROUPED_BYTES);
        // Two chains of four `vpdpbusd` per pair (first and second halves of the
        // sub-blocks), each 64-byte run of codes decoded once for all activation rows and
        // each activation register loaded once for all weight rows.
        let mut lo = [[_mm512_setzero_si512(); N]; M];
        let mut hi = [[_mm512_setzero_si512(); N]; M];
        for c in 0..4 {
            let mut codes = [[_mm512_setzero_si512(); 2]; M];
            for m in 0..M {
                let v = _mm512_loadu_si512(wp[m].add(64 * c) as *const __m512i);
                // The high nibbles stay in place: `hi` sums 16 · code · x, divided once per
                // group below rather than shifting every register here.
                codes[m] = [_mm512_and_si512(v, m4), _mm512_andnot_si512(m4, v)];
            }
            for r in 0..N {
                let xl = _mm512_loadu_si512(ap[r].add(64 * c) as *const __m512i);
                let xh = _mm512_loadu_si512(ap[r].add(64 * (c + 4)) as *const __m512i);
                for m in 0..M {
                    lo[m][r] = _mm512_dpbusd_epi32(lo[m][r], codes[m][0], xl);
                    hi[m][r] = _mm512_dpbusd_epi32(hi[m][r], codes[m][1], xh);
                }
            }
        }
        for m in 0..M {
            let (sc, mn, dd) = q4_k_group_header(wp[m].add(256));
            for r in 0..N {
                // Exact: `hi` is a multiple of 16.
                let codes_x = _mm512_add_epi32(lo[m][r], _mm512_srai_epi32::<4>(hi[m][r]));
                let sums = _mm512_mullo_epi32(codes_x, sc);
                // -32 · each sub-block's activation sum, times its min.
                let neg32 = _mm512_add_epi32(
                    _mm512_loadu_si512(ap[r].add(64 * 8) as *const __m512i),
                    _mm512_loadu_si512(ap[r].add(64 * 9) as *const __m512i),
                );
                let mins = _mm512_mullo_epi32(neg32, mn);
                let da = _mm_loadu_ps(ap[r].add(640) as *const f32);
                let f = _mm512_castps128_ps512(_mm_mul_ps(dd, da));
                let d = _mm512_permutexvar_ps(k_scale, f);
                let dmin = _mm512_permutexvar_ps(k_min, f);
                let acc = &mut acc[m][r];
                acc[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), d, acc[0]);
                acc[1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(mins), dmin, acc[1]);
            }
        }
    }
    reduce_pairs(acc)
}

/// Each pair of accumulators summed to one float (loops, for the reason at [`row_ptrs`]).
#[inline(always)]
unsafe fn reduce_pairs<const M: usize, const N: usize>(
    acc: [[[__m512; 2]; N]; M],
) -> [[f32; N]; M] {
    let mut out = [[0f32; N]; M];
    for (out, acc) in out.iter_mut().zip(&acc) {
        for (o, [a, b]) in out.iter_mut().zip(acc) {
            *o = _mm512_reduce_add_ps(_mm512_add_ps(*a, *b));
        }
    }
    out
}

/// Each row's address `at` bytes in. (A loop, not `array::from_fn`: that closure does not
/// inherit the caller's target features and may stay out of line; when it did, after an
/// unrelated change grew the crate, packed Q4_K fell from 35 to 24 GiB/s on two calls per
/// group.)
#[inline(always)]
pub(super) unsafe fn row_ptrs<const N: usize>(rows: [&[u8]; N], at: usize) -> [*const u8; N] {
    let mut p = [std::ptr::null(); N];
    for (p, row) in p.iter_mut().zip(rows) {
        *p = row.as_ptr().add(at);
    }
    p
}

/// A packed Q4_K group's header ([`crate::repack`]): its 16 sub-blocks' 6-bit scales and
/// mins, one per 32-bit lane, and `[d₀, dmin₀, d₁, dmin₁]`.
#[inline(always)]
pub(crate) unsafe fn q4_k_group_header(h: *const u8) -> (__m512i, __m512i, __m128) {
    let dd = _mm_cvtph_ps(_mm_loadl_epi64(h as *const __m128i));
    let low = _mm_loadu_si128(h.add(8) as *const __m128i);
    // Each byte's own two top bits to bits 4..6: 32-bit lane k rotated left by 4 - 2k.
    let rotate = _mm_set_epi32(30, 0, 2, 4);
    let top = |at: usize| {
        _mm_rolv_epi32(
            _mm_set1_epi32(read_unaligned(h.add(at) as *const i32)),
            rotate,
        )
    };
    let (m0f, m3f) = (_mm_set1_epi8(0x0f), _mm_set1_epi8(0x3f));
    // `(a & 0x0f) | (b & !0x0f)`, bitwise; `& 0x3f` then drops the other bits of `b`.
    const LOW_A_HIGH_B: i32 = 0xe4;
    let sc = _mm_ternarylogic_epi32::<LOW_A_HIGH_B>(low, top(24), m0f);
    let mn = _mm_ternarylogic_epi32::<LOW_A_HIGH_B>(_mm_srli_epi16::<4>(low), top(28), m0f);
    (
        _mm512_cvtepu8_epi32(_mm_and_si128(sc, m3f)),
        _mm512_cvtepu8_epi32(_mm_and_si128(mn, m3f)),
        dd,
    )
}

/// `M` packed Q6_K rows against `N` [`super::ActType::Q8_KGrouped`] rows: as
/// [`q4_k_packed`], with each code's two high bits merged in by one shift and one
/// `vpternlogd` per register, the offset of 32 taken out by starting each `vpdpbusd` chain
/// from the activations' `-32 · Σ`, and one signed 8-bit scale per 16 weights (one `vpmulld`
/// per half sub-block).
#[inline(always)]
pub(super) unsafe fn q6_k_packed<const M: usize, const N: usize>(
    w: [&[u8]; M],
    a: [&[u8]; N],
) -> [[f32; N]; M] {
    use super::act::K_GROUPED_BYTES;
    const GROUP_BYTES: usize = 2 * Q6_K_BYTES;
    let ng = w[0].len() / GROUP_BYTES;
    let m4 = _mm512_set1_epi8(0x0f);
    let m30 = _mm512_set1_epi8(0x30);
    let k_scale = _mm512_load_si512(K_SCALE.0.as_ptr() as *const __m512i);
    let mut acc = [[[_mm512_setzero_ps(); 2]; N]; M];
    // `low | (high & 0x30)`, bitwise.
    const LOW_OR_HIGH_BITS: i32 = 0xf8;
    for g in 0..ng {
        let wp = row_ptrs(w, g * GROUP_BYTES);
        let ap = row_ptrs(a, g * K_GROUPED_BYTES);
        let mut high = [[_mm512_setzero_si512(); 2]; M];
        for m in 0..M {
            high[m] = [
                _mm512_loadu_si512(wp[m].add(256) as *const __m512i),
                _mm512_loadu_si512(wp[m].add(320) as *const __m512i),
            ];
        }
        // As in [`q4_k_packed`]; the chains start from the activations' `-32 · Σ`.
        let mut lo = [[_mm512_setzero_si512(); N]; M];
        let mut hi = [[_mm512_setzero_si512(); N]; M];
        for r in 0..N {
            let neg32 = [
                _mm512_loadu_si512(ap[r].add(64 * 8) as *const __m512i),
                _mm512_loadu_si512(ap[r].add(64 * 9) as *const __m512i),
            ];
            for m in 0..M {
                [lo[m][r], hi[m][r]] = neg32;
            }
        }
        for c in 0..4 {
            let mut codes = [[_mm512_setzero_si512(); 2]; M];
            for m in 0..M {
                let v = _mm512_loadu_si512(wp[m].add(64 * c) as *const __m512i);
                let low = [
                    _mm512_and_si512(v, m4),
                    _mm512_and_si512(_mm512_srli_epi16::<4>(v), m4),
                ];
                for half in 0..2 {
                    // Bits 2c..2c+2 of each byte to bits 4..6 (what spills across bytes is
                    // masked).
                    let h = match c {
                        0 => _mm512_slli_epi16::<4>(high[m][half]),
                        1 => _mm512_slli_epi16::<2>(high[m][half]),
                        2 => high[m][half],
                        _ => _mm512_srli_epi16::<2>(high[m][half]),
                    };
                    codes[m][half] =
                        _mm512_ternarylogic_epi32::<LOW_OR_HIGH_BITS>(low[half], h, m30);
                }
            }
            for r in 0..N {
                let xl = _mm512_loadu_si512(ap[r].add(64 * c) as *const __m512i);
                let xh = _mm512_loadu_si512(ap[r].add(64 * (c + 4)) as *const __m512i);
                for m in 0..M {
                    lo[m][r] = _mm512_dpbusd_epi32(lo[m][r], codes[m][0], xl);
                    hi[m][r] = _mm512_dpbusd_epi32(hi[m][r], codes[m][1], xh);
                }
            }
        }
        for m in 0..M {
            let p = wp[m];
            let sc = [
                _mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(384) as *const __m128i)),
                _mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(400) as *const __m128i)),
            ];
            // [d₀, 0, d₁, 0]: each f16 zero-extended to 32 bits reads as (d, 0).
            let dd = _mm_cvtph_ps(_mm_cvtepu16_epi32(_mm_cvtsi32_si128(read_unaligned(
                p.add(416) as *const i32,
            ))));
            for r in 0..N {
                let sums = _mm512_add_epi32(
                    _mm512_mullo_epi32(lo[m][r], sc[0]),
                    _mm512_mullo_epi32(hi[m][r], sc[1]),
                );
                let da = _mm_loadu_ps(ap[r].add(640) as *const f32);
                let f = _mm512_castps128_ps512(_mm_mul_ps(dd, da));
                let d = _mm512_permutexvar_ps(k_scale, f);
                acc[m][r][g % 2] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), d, acc[m][r][g % 2]);
            }
        }
    }
    reduce_pairs(acc)
}

/// Q4_K's eight 6-bit scales and mins (12 bytes at `s`) as bytes `[sc0..8, m0..8]`.
#[inline(always)]
unsafe fn k4_scales(s: *const u8) -> __m128i {
    let u0 = read_unaligned(s as *const u32);
    let u1 = read_unaligned(s.add(4) as *const u32);
    let u2 = read_unaligned(s.add(8) as *const u32);
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const TOP2: u32 = 0x0303_0303;
    let sc = u64::from(u0 & LOW6) | u64::from((u2 & LOW4) | ((u0 >> 6) & TOP2) << 4) << 32;
    let m = u64::from(u1 & LOW6) | u64::from(((u2 >> 4) & LOW4) | ((u1 >> 6) & TOP2) << 4) << 32;
    _mm_set_epi64x(m as i64, sc as i64)
}

/// Word indices into `[sc0..8, m0..8]`: run `j`'s two scales, 16 copies each.
static K4_RUN: [Words; 4] = [run_scales(0), run_scales(1), run_scales(2), run_scales(3)];
/// Each min twice (`m0 m0 m1 m1 ...`), to pair with Q8_K's sums of 16.
static K4_MINS: Words = {
    let mut t = [0u16; 32];
    let mut i = 0;
    while i < 16 {
        t[i] = 8 + (i / 2) as u16;
        i += 1;
    }
    Words(t)
};

const fn run_scales(j: usize) -> Words {
    let mut t = [0u16; 32];
    let mut i = 0;
    while i < 32 {
        t[i] = (2 * j + i / 16) as u16;
        i += 1;
    }
    Words(t)
}

#[inline(always)]
pub(super) unsafe fn q4_k<const N: usize>(w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let nb = w.len() / Q4_K_BYTES;
    let mut acc = [_mm512_setzero_ps(); N];
    let mut mins = [_mm256_setzero_ps(); N];
    let m4 = _mm512_set1_epi8(0x0f);
    // The low 16 words of a run keep the low nibbles (its first 32 elements).
    let shift = _mm512_set_epi64(
        0x0004_0004_0004_0004,
        0x0004_0004_0004_0004,
        0x0004_0004_0004_0004,
        0x0004_0004_0004_0004,
        0,
        0,
        0,
        0,
    );
    for i in 0..nb {
        let wb = w.as_ptr().add(i * Q4_K_BYTES);
        let scm = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(k4_scales(wb.add(4))));
        let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(read_unaligned(wb as *const i32)));
        let mut sumi = [_mm512_setzero_si512(); N];
        for (j, run) in K4_RUN.iter().enumerate() {
            let raw =
                _mm512_broadcast_i64x4(_mm256_loadu_si256(wb.add(16 + 32 * j) as *const __m256i));
            let q = _mm512_and_si512(_mm512_srlv_epi16(raw, shift), m4);
            let sc = _mm512_permutexvar_epi16(words(run), scm);
            for r in 0..N {
                let ab = a[r].as_ptr().add(i * Q8_K_BYTES + 4 + 64 * j);
                let x = _mm512_loadu_si512(ab as *const __m512i);
                let p = _mm512_madd_epi16(_mm512_maddubs_epi16(q, x), sc);
                sumi[r] = _mm512_add_epi32(sumi[r], p);
            }
        }
        let mdup = _mm512_castsi512_si256(_mm512_permutexvar_epi16(words(&K4_MINS), scm));
        for r in 0..N {
            let ab = a[r].as_ptr().add(i * Q8_K_BYTES);
            let da = _mm_set1_ps(read_unaligned(ab as *const f32));
            let dm = _mm_mul_ps(dm, da);
            let d = _mm512_broadcastss_ps(dm);
            let dmin = _mm256_broadcastss_ps(_mm_movehdup_ps(dm));
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi[r]), d, acc[r]);
            let bs = _mm256_loadu_si256(ab.add(260) as *const __m256i);
            let m = _mm256_cvtepi32_ps(_mm256_madd_epi16(bs, mdup));
            mins[r] = _mm256_fmadd_ps(m, dmin, mins[r]);
        }
    }
    let mut out = [0f32; N];
    for r in 0..N {
        out[r] =
            _mm512_reduce_add_ps(acc[r]) - _mm512_reduce_add_ps(_mm512_zextps256_ps512(mins[r]));
    }
    out
}
