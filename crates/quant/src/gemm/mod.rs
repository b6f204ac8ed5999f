//! Matrix-matrix products for prompt batches: quantized weights × 8-bit activations,
//! [`PANEL_ROWS`] weight rows at a time.
//!
//! The row-at-a-time kernels ([`crate::kernels`]) spend most of their instructions turning
//! each block's integer sum into a float and scaling it, once per (weight row, activation row,
//! block). Here a chunk of sixteen weight rows is first decoded into a *panel*: unsigned 8-bit
//! codes interleaved so that one 512-bit vector holds four consecutive codes of each of the
//! sixteen rows, plus per-group scales `D` and offsets `M` with `w = D·q + M` (see
//! `decode`). One `vpdpbusd` of that vector with four broadcast activation bytes then
//! advances sixteen dot products at once, and the float work (convert, scale, offset) happens
//! once per group for all sixteen rows together. The panel is decoded on the fly into a
//! per-thread buffer and reused for every activation row of the batch, so the weights keep
//! their stored format in memory (no repacked copy, no extra resident memory).
//!
//! Measured on the 2-core AVX-512 EPYC this was written on: the inner loop runs at about one
//! 512-bit `vpdpbusd` per cycle (the unit's limit there); 512-bit panels were ~10% faster than
//! 256-bit ones of eight rows on the 1B model's prompts.
//!
//! A few activation rows (a short prompt piece under [`crate::matmul::BatchInvariant`])
//! skip the panels, which would decode every weight for them: packed weights are read in
//! place by `few`, others decoded one row at a time (`rowwise`, one activation row
//! only). Both run the microkernel's arithmetic, bit for bit.
//!
//! Activations are quantized exactly as the row kernels quantize them (the weight type's
//! partner format: Q8_0, Q8_1 or Q8_K), then spread into codes plus per-group `da` (the
//! block scale) and `sa = da·Σa` (Q8_1's stored sum, Q8_K's block sums), so the result is
//! the same sum of the same integers; only the float summation order differs.

pub(crate) mod decode;
#[cfg(target_arch = "x86_64")]
mod few;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::cell::RefCell;

use ferrite_gguf::GgmlType;
use half::f16;

use crate::kernels::{self, ActType, Isa, Kernel};
use crate::pool::{SharedMut, ThreadPool};

pub(crate) use decode::group_size;

/// Weight rows per panel: one 32-bit lane each of a 512-bit vector.
pub const PANEL_ROWS: usize = 16;

/// Activation rows the microkernel carries at once (eight accumulators of eight rows).
const ACT_TILE: usize = 8;

/// One decoded panel: codes in `[group][quad][row]` order, four codes of one row per `u32`
/// (little-endian, element order), then per group [`PANEL_ROWS`] `d` and `m` (rows past the
/// matrix's end are zero and produce zeros).
#[derive(Default)]
pub(crate) struct Panel {
    codes: Vec<u32>,
    d: Vec<f32>,
    m: Vec<f32>,
    /// Scratch: the panel's rows decoded row-major, and one row's scales.
    rows_q: Vec<u8>,
    row_d: Vec<f32>,
    row_m: Vec<f32>,
    /// A packed row in ggml layout, for the decoder.
    unpacked: Vec<u8>,
}

impl Panel {
    /// Decodes rows `r0..r0 + nr` (`nr ≤` [`PANEL_ROWS`]) of the matrix `w` (rows of
    /// `row_bytes` bytes, `k` elements of `ty`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fill(
        &mut self,
        ty: GgmlType,
        packed: bool,
        w: &[u8],
        row_bytes: usize,
        r0: usize,
        nr: usize,
        k: usize,
        g: usize,
    ) {
        let ng = k / g;
        self.codes.resize(k / 4 * PANEL_ROWS, 0);
        self.d.resize(ng * PANEL_ROWS, 0.0);
        self.m.resize(ng * PANEL_ROWS, 0.0);
        self.row_d.resize(ng, 0.0);
        self.row_m.resize(ng, 0.0);
        // Decode row by row, then interleave with sequential writes: scattering each row's
        // quads straight into the panel made one store per cache line and cost as much as
        // the products themselves at 64-token batches.
        self.rows_q.resize(PANEL_ROWS * k, 0);
        for r in 0..PANEL_ROWS {
            let (q, at) = (&mut self.rows_q[r * k..(r + 1) * k], r);
            if r >= nr {
                q.fill(0);
                for grp in 0..ng {
                    self.d[grp * PANEL_ROWS + at] = 0.0;
                    self.m[grp * PANEL_ROWS + at] = 0.0;
                }
                continue;
            }
            let row = &w[(r0 + r) * row_bytes..(r0 + r + 1) * row_bytes];
            let (d, m) = (&mut self.row_d, &mut self.row_m);
            decode_weight_row(ty, packed, row, k, &mut self.unpacked, q, d, m);
            for grp in 0..ng {
                self.d[grp * PANEL_ROWS + r] = self.row_d[grp];
                self.m[grp * PANEL_ROWS + r] = self.row_m[grp];
            }
        }
        let rows: [&[u8]; PANEL_ROWS] = std::array::from_fn(|r| &self.rows_q[r * k..(r + 1) * k]);
        for (quad, out) in self.codes.chunks_exact_mut(PANEL_ROWS).enumerate() {
            for (c, row) in out.iter_mut().zip(&rows) {
                let q = &row[4 * quad..4 * quad + 4];
                *c = u32::from_le_bytes([q[0], q[1], q[2], q[3]]);
            }
        }
    }
}

/// Decodes one weight row of `k` elements, packed or in ggml layout, into panel form:
/// codes `q` and per group `d` and `m`. Packed rows of types without a direct decoder are
/// first rebuilt as ggml blocks in `unpacked`.
#[allow(clippy::too_many_arguments)]
fn decode_weight_row(
    ty: GgmlType,
    packed: bool,
    row: &[u8],
    k: usize,
    unpacked: &mut Vec<u8>,
    q: &mut [u8],
    d: &mut [f32],
    m: &mut [f32],
) {
    if !packed {
        return decode::decode_row(ty, row, q, d, m);
    }
    let nb = k / ty.block_size() as usize;
    if crate::repack::decode_k_row(ty, row, nb, q, d, m)
        || decode::decode_packed_q4_row(ty, row, nb, q, d, m)
    {
        return;
    }
    unpacked.resize(
        ty.row_bytes(k as u64).expect("checked by the caller") as usize,
        0,
    );
    crate::repack::unpack_row(ty, row, unpacked);
    decode::decode_row(ty, unpacked, q, d, m);
}

/// Activation rows in GEMM form: `codes` (`n_b × k` signed bytes), and per row and group the
/// block scale `da` and `sa = da·Σa`.
#[derive(Default)]
pub(crate) struct Acts {
    codes: Vec<i8>,
    da: Vec<f32>,
    sa: Vec<f32>,
}

#[inline]
fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Spreads one quantized activation row (format `act`) into GEMM form with groups of `g`.
fn spread_row(act: ActType, g: usize, q: &[u8], codes: &mut [i8], da: &mut [f32], sa: &mut [f32]) {
    let sum = |c: &[i8]| c.iter().map(|&v| i32::from(v)).sum::<i32>();
    match act {
        ActType::Q8_0 | ActType::Q8_1 => {
            let (bytes, at) = if act == ActType::Q8_0 {
                (34, 2)
            } else {
                (36, 4)
            };
            for (i, b) in q.chunks_exact(bytes).enumerate() {
                let c = &mut codes[32 * i..32 * i + 32];
                for (o, &x) in c.iter_mut().zip(&b[at..at + 32]) {
                    *o = x as i8;
                }
                let d = f16_at(b, 0);
                da[i] = d;
                sa[i] = if act == ActType::Q8_1 {
                    f16_at(b, 2)
                } else {
                    d * sum(c) as f32
                };
            }
        }
        ActType::Q8_K => {
            let per_block = 256 / g;
            for (i, b) in q.chunks_exact(292).enumerate() {
                let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                for (o, &x) in codes[256 * i..256 * i + 256].iter_mut().zip(&b[4..260]) {
                    *o = x as i8;
                }
                for j in 0..per_block {
                    // Block sums cover 16 elements each.
                    let s: i32 = (0..g / 16)
                        .map(|h| {
                            let at = 260 + 2 * (j * g / 16 + h);
                            i32::from(i16::from_le_bytes([b[at], b[at + 1]]))
                        })
                        .sum();
                    da[i * per_block + j] = d;
                    sa[i * per_block + j] = d * s as f32;
                }
            }
        }
        ActType::F16
        | ActType::BF16
        | ActType::F32
        | ActType::Q8_0Planar
        | ActType::Q8_0Grouped
        | ActType::Q8_KGrouped => {
            unreachable!("{act:?} activations have no GEMM form")
        }
    }
}

/// How the weight rows handed to [`matmul`] are laid out.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    /// Packed by [`crate::repack`] (unpacked per panel) rather than ggml blocks.
    pub packed: bool,
}

/// Whether the panel GEMM runs on this CPU (it needs `vpdpbusd`).
pub fn available() -> bool {
    cfg!(target_arch = "x86_64") && Isa::best() >= Isa::Avx512Vnni
}

thread_local! {
    static ACTS: RefCell<Acts> = RefCell::new(Acts::default());
    static ACT_Q: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static PANEL: RefCell<Panel> = RefCell::new(Panel::default());
    #[cfg(target_arch = "x86_64")]
    static REGROUPED: RefCell<Vec<i8>> = const { RefCell::new(Vec::new()) };
    #[cfg(target_arch = "x86_64")]
    static FEW: RefCell<few::Scratch> = RefCell::new(few::Scratch::default());
}

/// Below this many activation rows, packed weights skip the panels and are read in place
/// ([`few`]). Measured behind the server on the 1.1B Q4_0 model (2 threads, a prompt
/// piece after a cached prompt): 8 tokens 113 ms this way against 152 ms through panels,
/// 12 tokens 136 against 172, 16 tokens 178 against 195; Q4_K_M 12 tokens 165 ms.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const FEW_BELOW: usize = 16;

/// Below this many activation rows, weights [`few`] does not read (ggml layout) skip the
/// panels and run their arithmetic weight row by weight row ([`rowwise`]). Measured on the
/// 1.1B Q4_0 model behind the server (unpacked, 2 threads, one step's matmuls): one row
/// 114 ms this way against ~180 ms through panels; from two rows the panels' shared
/// decoding wins (three rows 200 ms this way, ~160 ms through panels), as decoding every
/// weight dominates both.
#[cfg(target_arch = "x86_64")]
const ROWWISE_BELOW: usize = 2;

/// `y[b * n_rows + r] = Σ_i W[r][i] · x[b * k + i]`, as [`crate::matmul::matmul`], through
/// panels. The caller checked the sizes and that `ty` has a [`group_size`] dividing `k`.
///
/// With `simd`, a row's result depends on that activation row alone, to the bit, whatever
/// the batch size (see [`crate::matmul::BatchInvariant`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    pool: &ThreadPool,
    kern: &Kernel,
    layout: Layout,
    w: &[u8],
    row_bytes: usize,
    n_rows: usize,
    k: usize,
    x: &[f32],
    n_b: usize,
    y: &mut [f32],
    simd: bool,
) {
    let g = group_size(kern.ty).expect("type with a panel form");
    ACTS.with(|acts| {
        let mut acts = acts.borrow_mut();
        acts.fill(pool, kern.act, x, k, n_b, g);
        let acts = &*acts;
        let out = SharedMut(y.as_mut_ptr());
        #[cfg(target_arch = "x86_64")]
        if simd && layout.packed && few::supported(kern.ty) && n_b < FEW_BELOW {
            few_rows(pool, kern.ty, w, row_bytes, n_rows, k, g, acts, n_b, out);
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if simd && n_b < ROWWISE_BELOW {
            let n_chunks = n_rows.div_ceil(PANEL_ROWS);
            pool.run_chunks(n_chunks, |c| {
                let rows = c * PANEL_ROWS..((c + 1) * PANEL_ROWS).min(n_rows);
                rowwise(kern.ty, layout, w, row_bytes, rows, k, g, acts, n_b, out);
            });
            return;
        }
        let n_panels = n_rows.div_ceil(PANEL_ROWS);
        pool.run_chunks(n_panels, |p| {
            PANEL.with(|panel| {
                let mut panel = panel.borrow_mut();
                let r0 = p * PANEL_ROWS;
                let nr = PANEL_ROWS.min(n_rows - r0);
                panel.fill(kern.ty, layout.packed, w, row_bytes, r0, nr, k, g);
                let mut b = 0;
                while b < n_b {
                    let nt = ACT_TILE.min(n_b - b);
                    let mut tile = [[0f32; PANEL_ROWS]; ACT_TILE];
                    panel_tile(&panel, acts, k, g, b, nt, &mut tile, simd);
                    for (t, row) in tile.iter().enumerate().take(nt) {
                        for (r, &v) in row.iter().enumerate().take(nr) {
                            // SAFETY: columns r0..r0+nr belong to this panel alone (each
                            // panel index is handed out once); b + t < n_b and r0 + r <
                            // n_rows keep the index inside `y`, which outlives the call.
                            unsafe { *out.get().add((b + t) * n_rows + r0 + r) = v };
                        }
                    }
                    b += nt;
                }
            })
        });
    });
}

impl Acts {
    /// Quantizes the `n_b` rows of `x` (`k` elements each) to `act` and spreads them into
    /// GEMM form with groups of `g`, rows split across the pool.
    fn fill(&mut self, pool: &ThreadPool, act: ActType, x: &[f32], k: usize, n_b: usize, g: usize) {
        let ng = k / g;
        let act_bytes = act.row_bytes(k).expect("k is whole activation blocks");
        self.codes.resize(n_b * k, 0);
        self.da.resize(n_b * ng, 0.0);
        self.sa.resize(n_b * ng, 0.0);
        let (codes, da, sa) = (
            SharedMut(self.codes.as_mut_ptr()),
            SharedMut(self.da.as_mut_ptr()),
            SharedMut(self.sa.as_mut_ptr()),
        );
        pool.run_chunks(n_b, |b| {
            ACT_Q.with(|buf| {
                let mut buf = buf.borrow_mut();
                buf.resize(act_bytes, 0);
                kernels::quantize_row(act, &x[b * k..(b + 1) * k], &mut buf);
                // SAFETY: row b of each buffer is handed to this call alone (run_chunks
                // gives out each index once) and the buffers, sized for n_b rows above,
                // outlive the call.
                let (c, d, s) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(codes.get().add(b * k), k),
                        std::slice::from_raw_parts_mut(da.get().add(b * ng), ng),
                        std::slice::from_raw_parts_mut(sa.get().add(b * ng), ng),
                    )
                };
                spread_row(act, g, &buf, c, d, s);
            })
        });
    }
}

/// All of `y` through [`few::matmul_rows`]: [`few::ROWS`] weight rows per chunk of work, at most
/// [`few::MAX_ROWS`] activation rows per pass.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn few_rows(
    pool: &ThreadPool,
    ty: GgmlType,
    w: &[u8],
    row_bytes: usize,
    n_rows: usize,
    k: usize,
    g: usize,
    acts: &Acts,
    n_b: usize,
    out: SharedMut<f32>,
) {
    REGROUPED.with(|regrouped| {
        let mut regrouped = regrouped.borrow_mut();
        let stride = few::regrouped_len(ty, k);
        regrouped.resize(n_b * stride, 0);
        for (b, dst) in regrouped.chunks_exact_mut(stride).enumerate() {
            few::regroup(ty, &acts.codes[b * k..(b + 1) * k], dst);
        }
        let regrouped = &*regrouped;
        pool.run_chunks(n_rows.div_ceil(few::ROWS), |c| {
            let rows = c * few::ROWS..((c + 1) * few::ROWS).min(n_rows);
            FEW.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                for b0 in (0..n_b).step_by(few::MAX_ROWS) {
                    let nb = few::MAX_ROWS.min(n_b - b0);
                    // SAFETY: the caller runs this only where `available()` confirmed
                    // AVX-512 VNNI (F16C comes with it); `w` holds packed rows of `ty`
                    // (the caller's layout), `acts` and `regrouped` all `n_b` rows.
                    let y = unsafe {
                        few::matmul_rows(
                            ty,
                            w,
                            row_bytes,
                            rows.clone(),
                            k,
                            g,
                            acts,
                            regrouped,
                            stride,
                            b0,
                            nb,
                            &mut scratch,
                        )
                    };
                    for (b, yb) in y.iter().enumerate().take(nb) {
                        for (r, &v) in rows.clone().zip(yb) {
                            // SAFETY: weight rows `rows` belong to this chunk alone (each
                            // chunk index is handed out once); b0 + b < n_b and r < n_rows
                            // keep the index inside `y`, which outlives the call.
                            unsafe { *out.get().add((b0 + b) * n_rows + r) = v };
                        }
                    }
                }
            })
        });
    });
}

/// Weight rows `rows` times every activation row, with the SIMD microkernel's arithmetic
/// (integer sums per group, then per group one multiply and two fused multiply-adds in the
/// same order) but no panel: each weight row is decoded once and used at once.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn rowwise(
    ty: GgmlType,
    layout: Layout,
    w: &[u8],
    row_bytes: usize,
    rows: std::ops::Range<usize>,
    k: usize,
    g: usize,
    acts: &Acts,
    n_b: usize,
    out: SharedMut<f32>,
) {
    let n_rows = w.len() / row_bytes;
    let ng = k / g;
    PANEL.with(|panel| {
        let mut panel = panel.borrow_mut();
        let Panel {
            rows_q,
            row_d,
            row_m,
            unpacked,
            ..
        } = &mut *panel;
        rows_q.resize(k, 0);
        row_d.resize(ng, 0.0);
        row_m.resize(ng, 0.0);
        for r in rows {
            let row = &w[r * row_bytes..(r + 1) * row_bytes];
            decode_weight_row(ty, layout.packed, row, k, unpacked, rows_q, row_d, row_m);
            for b in 0..n_b {
                let (a, da, sa) = (
                    &acts.codes[b * k..(b + 1) * k],
                    &acts.da[b * ng..(b + 1) * ng],
                    &acts.sa[b * ng..(b + 1) * ng],
                );
                // SAFETY: the caller runs this only where `available()` confirmed AVX-512
                // VNNI; every slice holds `k` codes or `k / g` groups, as sized above.
                let v = unsafe { x86::group_sums(rows_q, row_d, row_m, a, da, sa, g) };
                // SAFETY: weight row r belongs to this call alone (the caller hands each
                // range of rows out once); b < n_b and r < n_rows keep the index inside `y`,
                // which outlives the call.
                unsafe { *out.get().add(b * n_rows + r) = v };
            }
        }
    });
}

/// `tile[t][r]` = row `r` of the panel · activation row `b0 + t`, for `t < nt`.
#[allow(clippy::too_many_arguments)]
fn panel_tile(
    panel: &Panel,
    acts: &Acts,
    k: usize,
    g: usize,
    b0: usize,
    nt: usize,
    tile: &mut [[f32; PANEL_ROWS]; ACT_TILE],
    simd: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is only set when `available()` confirmed AVX-512 VNNI; the panel
        // and activation buffers hold `k` codes and `k / g` groups per row, as filled above.
        unsafe { x86::panel_tile(panel, acts, k, g, b0, nt, tile) };
        return;
    }
    let _ = simd;
    panel_tile_scalar(panel, acts, k, g, b0, nt, tile);
}

/// The reference microkernel: the same sums in plain Rust.
fn panel_tile_scalar(
    panel: &Panel,
    acts: &Acts,
    k: usize,
    g: usize,
    b0: usize,
    nt: usize,
    tile: &mut [[f32; PANEL_ROWS]; ACT_TILE],
) {
    let ng = k / g;
    for (t, out) in tile.iter_mut().enumerate().take(nt) {
        let b = b0 + t;
        let a = &acts.codes[b * k..(b + 1) * k];
        for (r, o) in out.iter_mut().enumerate() {
            let mut acc = 0f32;
            for grp in 0..ng {
                let mut isum = 0i32;
                for e in 0..g {
                    let i = grp * g + e;
                    let q = (panel.codes[(i / 4) * PANEL_ROWS + r] >> (8 * (i % 4))) & 0xff;
                    isum += q as i32 * i32::from(a[i]);
                }
                let (d, m) = (panel.d[grp * PANEL_ROWS + r], panel.m[grp * PANEL_ROWS + r]);
                acc += isum as f32 * (d * acts.da[b * ng + grp]) + m * acts.sa[b * ng + grp];
            }
            *o = acc;
        }
    }
}

#[cfg(test)]
mod tests;
