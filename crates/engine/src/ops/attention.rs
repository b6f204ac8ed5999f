//! Scaled dot-product attention over the KV cache: grouped-query heads, causal mask, optional
//! sliding window and score soft-capping.
//!
//! Tiled with an online softmax (flash-attention style), so the score matrix is never
//! materialised: a unit of work is a block of query tokens × the query heads that share one KV
//! head. It walks the visible keys in tiles of [`BK`]; each K tile is multiplied against all
//! the unit's queries at once, the scores are folded into running row maxima and sums, and
//! `O = O·α + P·V` reads V in its stored type. Units are split across the pool's threads.
//!
//! The scores of a tile are computed one of two ways, with bit-identical results (the tile
//! kernels guarantee it, see `gemm_acc` and `softmax_rows`): with many query rows (prompts),
//! rows are the vector lanes (`S = K·Qᵀ`, the K tile converted from f16 once); with few
//! (a generated token), keys are the lanes (`Sᵀ = Q·Kᵀ`), reading the dim-major key cache
//! ([`KeysView`]) directly. A query's output thus does not depend on how its batch was cut.
//!
//! Keys are also cut at every multiple of [`SPAN`] positions: each span runs its own online
//! softmax, and the spans' `(max, sum, output)` are folded in position order by one function
//! ([`Span::fold`]). A prompt's unit folds its spans itself; a generated token deep in a
//! context gives each span to a unit of its own and folds them after the pool job (split-K,
//! as flash-decoding does), so a few KV heads (SmolLM2's 3, Gemma 3's 1) still occupy every
//! thread. Both do the same operations on the same values, so the bits do not depend on it.

use std::cell::RefCell;

use half::slice::HalfFloatSliceExt;

use ferrite_quant::kernels::vec::{gemm_acc, softmax_rows, softmax_tile, Elems};
use ferrite_quant::matmul::ThreadPool;

use crate::kv_cache::{KeysView, KvView, KEY_BLOCK};

/// Shapes and options of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnParams {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim_k: usize,
    pub head_dim_v: usize,
    /// Multiplies `q·k`.
    pub scale: f32,
    /// `cap · tanh(s / cap)` on the scaled scores (gemma2).
    pub softcap: Option<f32>,
    /// A key at `p0` is hidden from a query at `p1` when `p1 - p0 >= window`.
    pub window: Option<usize>,
}

/// Below this many multiply-adds a call runs on the calling thread: waking the pool costs
/// more than the work (a single generated token at short context).
const SERIAL_WORK: usize = 1 << 16;

/// Keys per tile: a block of the key cache ([`KEY_BLOCK`]); a converted f16 K tile
/// (64 × head_dim f32) stays in L1/L2.
const BK: usize = KEY_BLOCK;

/// Most query rows (tokens × heads of a group) in one unit: enough to amortise each K tile's
/// conversion, few enough that the unit's Qᵀ, scores and output stay in L2.
const MAX_ROWS: usize = 64;

/// Keys per span: a multiple of [`BK`], fixed (not derived from the thread count or the
/// batch) so that every query's spans, and so its bits, are the same however it is run.
const SPAN: usize = 8 * BK;

/// Units with fewer query rows than this put keys, not rows, in the vector lanes.
const ROWS_AS_LANES: usize = 16;

/// What reading and converting a unit's K and V tiles costs, in units of one query row's
/// multiply-adds over them. Measured with the attention bench (one token over 4096
/// positions, SmolLM2's 3 heads per KV head): a unit of three heads took 1.4× one of a
/// single head, so the fixed part is about four rows' worth.
const KV_TILE_COST: usize = 4;

/// What a unit costs beyond its keys (setting up its queries and state, folding), in keys:
/// a tile's worth. It keeps a span of a few keys from becoming a unit of its own.
const UNIT_KEYS: usize = BK;

/// Per-thread tiles, reused across calls.
#[derive(Default)]
struct Tiles {
    /// The unit's queries, scaled: `[hd_k, rows]` (rows as lanes) or `[rows, hd_k]`.
    qt: Vec<f32>,
    /// Scores, then probabilities, of one key tile: `[BK, rows]` or `[rows, nk]`.
    st: Vec<f32>,
    /// `[hd_k, BK]`: one K tile converted to f32 (f16 caches, rows as lanes only).
    kt: Vec<f32>,
    /// `[rows, hd_v]`: the running output.
    o: Vec<f32>,
    m: Vec<f32>,
    l: Vec<f32>,
    alpha: Vec<f32>,
    /// The spans folded so far: `[rows, hd_v]` output, maxima and sums ([`Span::fold`]).
    acc_o: Vec<f32>,
    acc_m: Vec<f32>,
    acc_l: Vec<f32>,
}

/// One query row's online-softmax state over some keys: running maximum `m`, sum of
/// `exp(s - m)` `l`, and the output `o` weighted by those (not yet divided by `l`).
struct Span<'a> {
    m: &'a mut f32,
    l: &'a mut f32,
    o: &'a mut [f32],
}

impl Span<'_> {
    /// Folds the state of the next span of keys `(m, l, o)` into this one, which holds the
    /// spans before it (or none: `m = -inf`). The one definition both the units that walk
    /// several spans and the fold after split-K units use, so they agree to the bit.
    fn fold(&mut self, m: f32, l: f32, o: &[f32]) {
        if m == f32::NEG_INFINITY {
            // No key of the span was visible.
            return;
        }
        if *self.m == f32::NEG_INFINITY {
            (*self.m, *self.l) = (m, l);
            self.o.copy_from_slice(o);
            return;
        }
        let mx = self.m.max(m);
        let (a, b) = ((*self.m - mx).exp(), (m - mx).exp());
        *self.m = mx;
        *self.l = *self.l * a + l * b;
        self.o
            .iter_mut()
            .zip(o)
            .for_each(|(x, &y)| *x = *x * a + y * b);
    }

    /// The attention output: `o / l`, or 0 where no key was visible (a window of 0).
    fn finish(&self, out: &mut [f32]) {
        let inv = if *self.l > 0.0 { 1.0 / *self.l } else { 0.0 };
        out.iter_mut()
            .zip(self.o.iter())
            .for_each(|(d, &s)| *d = s * inv);
    }
}

/// Online-softmax state of `rows` rows before any key: outputs 0, maxima -inf, sums 0.
fn no_keys_yet(o: &mut Vec<f32>, m: &mut Vec<f32>, l: &mut Vec<f32>, rows: usize, hd_v: usize) {
    o.clear();
    o.resize(rows * hd_v, 0.0);
    m.clear();
    m.resize(rows, f32::NEG_INFINITY);
    l.clear();
    l.resize(rows, 0.0);
}

thread_local! {
    static TILES: RefCell<Tiles> = RefCell::new(Tiles::default());
    /// The calling thread's staging output for units of several tokens.
    static STAGE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// How the work is cut into units.
struct Plan<'a> {
    q: &'a [f32],
    k: KeysView<'a>,
    v: KvView<'a>,
    pos0: usize,
    n_tok: usize,
    p: &'a AttnParams,
    /// Query heads per KV head.
    group: usize,
    /// Query tokens per unit.
    bq: usize,
    /// Query heads per unit (a divisor of `group`; below it only when `bq == 1`).
    hs: usize,
}

impl Plan<'_> {
    /// Unit `(b, g, hsub)`: tokens `b·bq..`, heads `g·group + hsub·hs ..+hs`. Writes
    /// `out[tl][h][hd_v]` for its `nt` tokens and `hs` heads. With `span`, only the keys of
    /// that span, and `out` gets their state instead: `[rows][hd_v]` outputs (not divided
    /// by the sums), then `rows` maxima and `rows` sums, to be folded in span order.
    fn unit(&self, b: usize, g: usize, hsub: usize, span: Option<usize>, out: &mut [f32]) {
        let p = self.p;
        let (hd_k, hd_v) = (p.head_dim_k, p.head_dim_v);
        let t0 = b * self.bq;
        let nt = self.bq.min(self.n_tok - t0);
        let hs = self.hs;
        let h0 = g * self.group + hsub * hs;
        let rows = nt * hs;
        let qp_min = self.pos0 + t0;
        let qp_max = qp_min + nt - 1;
        // Tiles start at multiples of BK whatever the unit, and every key a row does not see
        // is masked to an exact 0: a query's result is then bit-identical however the batch
        // was cut (a whole prompt, or a cached prefix plus its last token), which greedy
        // serving relies on (a re-sent prompt must give the same reply).
        let kstart = p.window.map_or(0, |w| (qp_min + 1).saturating_sub(w)) / BK * BK;
        let kend = qp_max + 1;
        let keys_as_lanes = rows < ROWS_AS_LANES;
        // Element d of the key at position k0 + j (j < BK) of this group:
        // kbase(k0) + d·BK + j, a tile being one block of the cache.
        let kstride = BK;
        let kbase = |k0: usize| self.k.index(k0, g * hd_k);
        let vstride = p.n_head_kv * hd_v;
        TILES.with(|cell| {
            let mut guard = cell.borrow_mut();
            let t = &mut *guard;
            t.qt.resize(hd_k * rows, 0.0);
            for tl in 0..nt {
                for hh in 0..hs {
                    let r = tl * hs + hh;
                    let qrow = &self.q[((t0 + tl) * p.n_head + h0 + hh) * hd_k..][..hd_k];
                    for (d, &x) in qrow.iter().enumerate() {
                        let at = if keys_as_lanes {
                            r * hd_k + d
                        } else {
                            d * rows + r
                        };
                        t.qt[at] = x * p.scale;
                    }
                }
            }
            t.st.resize(BK * rows, 0.0);
            t.alpha.resize(rows, 0.0);
            no_keys_yet(&mut t.acc_o, &mut t.acc_m, &mut t.acc_l, rows, hd_v);
            let spans = match span {
                Some(s) => s..s + 1,
                None => kstart / SPAN..(kend - 1) / SPAN + 1,
            };
            for s in spans {
                let (k_lo, k_hi) = (kstart.max(s * SPAN), kend.min((s + 1) * SPAN));
                no_keys_yet(&mut t.o, &mut t.m, &mut t.l, rows, hd_v);
                let mut k0 = k_lo;
                while k0 < k_hi {
                    let nk = BK.min(k_hi - k0);
                    let st = &mut t.st[..nk * rows];
                    st.fill(0.0);
                    // The score of key j for row r is st[j·js + r·rs].
                    let (js, rs) = if keys_as_lanes { (1, nk) } else { (rows, 1) };
                    if keys_as_lanes {
                        // Sᵀ = Q·Kᵀ: a B row is one element of nk consecutive keys.
                        let kt = self.k.elems.slice_from(kbase(k0));
                        gemm_acc(rows, nk, hd_k, &t.qt, hd_k, 1, kt, kstride, st, nk, None);
                    } else {
                        // S = K·Qᵀ: all the unit's queries per K element loaded.
                        let (ka, ka_cs) = match self.k.elems {
                            KvView::F32(kc) => (&kc[kbase(k0)..], kstride),
                            KvView::F16(kc) => {
                                t.kt.resize(hd_k * BK, 0.0);
                                for (d, row) in t.kt.chunks_exact_mut(BK).enumerate() {
                                    // Uses F16C when the CPU has it.
                                    kc[kbase(k0) + d * kstride..][..nk]
                                        .convert_to_f32_slice(&mut row[..nk]);
                                }
                                (&t.kt[..], BK)
                            }
                        };
                        let q = Elems::F32(&t.qt);
                        gemm_acc(nk, rows, hd_k, ka, 1, ka_cs, q, rows, st, rows, None);
                    }
                    if let Some(cap) = p.softcap {
                        st.iter_mut().for_each(|x| *x = cap * (*x / cap).tanh());
                    }
                    // Only tiles crossing the diagonal or the window's edge need a mask.
                    let k_last = k0 + nk - 1;
                    if k_last > qp_min || p.window.is_some_and(|w| qp_max - k0 >= w) {
                        for j in 0..nk {
                            let kp = k0 + j;
                            for tl in 0..nt {
                                let qp = qp_min + tl;
                                if kp > qp || p.window.is_some_and(|w| qp - kp >= w) {
                                    for hh in 0..hs {
                                        st[j * js + (tl * hs + hh) * rs] = f32::NEG_INFINITY;
                                    }
                                }
                            }
                        }
                    }
                    if keys_as_lanes {
                        softmax_rows(st, nk, rows, nk, &mut t.m, &mut t.l, &mut t.alpha);
                    } else {
                        softmax_tile(st, nk, rows, &mut t.m, &mut t.l, &mut t.alpha);
                    }
                    // O[r] = O[r]·α[r] + Σ_j P[r][j]·v_j, V read in its stored type.
                    gemm_acc(
                        rows,
                        hd_v,
                        nk,
                        st,
                        rs,
                        js,
                        self.v.slice_from(k0 * vstride + g * hd_v),
                        vstride,
                        &mut t.o,
                        hd_v,
                        Some(&t.alpha),
                    );
                    k0 += nk;
                }
                if span.is_some() {
                    // A split-K unit: the span's state, folded by the caller.
                    let (o, ml) = out.split_at_mut(rows * hd_v);
                    o.copy_from_slice(&t.o);
                    ml[..rows].copy_from_slice(&t.m);
                    ml[rows..2 * rows].copy_from_slice(&t.l);
                    return;
                }
                let acc = t
                    .acc_o
                    .chunks_exact_mut(hd_v)
                    .zip(&mut t.acc_m)
                    .zip(&mut t.acc_l);
                for (r, ((o, m), l)) in acc.enumerate() {
                    Span { m, l, o }.fold(t.m[r], t.l[r], &t.o[r * hd_v..][..hd_v]);
                }
            }
            let acc = t
                .acc_o
                .chunks_exact_mut(hd_v)
                .zip(&mut t.acc_m)
                .zip(&mut t.acc_l);
            for (dst, ((o, m), l)) in out.chunks_exact_mut(hd_v).zip(acc) {
                Span { m, l, o }.finish(dst);
            }
        });
    }
}

/// The time `threads` threads take for units of `costs`, each unit going, in order, to the
/// thread that is free first (an estimate: beyond 64 threads, as if there were 64).
fn makespan(costs: impl Iterator<Item = usize>, threads: usize) -> usize {
    let mut free_at = [0usize; 64];
    let free_at = &mut free_at[..threads.clamp(1, 64)];
    for c in costs {
        if let Some(first) = free_at.iter_mut().min() {
            *first += c;
        }
    }
    free_at.iter().copied().max().unwrap_or(0)
}

/// `q`: `[n_tok, n_head·hd_k]` for positions `pos0..pos0+n_tok`; `k`: blocks of
/// `n_head_kv·hd_k`-element keys ([`KeysView`]) and `v`: `[n_kv, n_head_kv·hd_v]`, holding
/// positions `0..n_kv` (`n_kv = pos0 + n_tok`), f16 or f32; `out`: `[n_tok, n_head·hd_v]`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    pool: &ThreadPool,
    q: &[f32],
    k: KeysView<'_>,
    v: KvView<'_>,
    pos0: usize,
    n_tok: usize,
    p: &AttnParams,
    out: &mut [f32],
) {
    if n_tok == 0 {
        return;
    }
    let hd_v = p.head_dim_v;
    let n_kv = pos0 + n_tok;
    assert!(p.n_head_kv > 0 && p.n_head.is_multiple_of(p.n_head_kv));
    assert!(q.len() >= n_tok * p.n_head * p.head_dim_k && out.len() >= n_tok * p.n_head * hd_v);
    let dim_k = p.n_head_kv * p.head_dim_k;
    assert!(k.dim == dim_k && k.elems.len() >= KeysView::len_for(dim_k, n_kv));
    assert!(v.len() >= n_kv * p.n_head_kv * hd_v);
    let out = &mut out[..n_tok * p.n_head * hd_v];
    let group = p.n_head / p.n_head_kv;
    let visible = p.window.map_or(n_kv, |w| w.min(n_kv));
    let work = n_tok * p.n_head * visible * (p.head_dim_k + hd_v);
    let threads = if work < SERIAL_WORK {
        1
    } else {
        pool.n_threads()
    };
    // A few units per thread, so one descheduled thread does not hold up the rest (causal
    // rows also differ in length); as many tokens per unit as that allows, up to MAX_ROWS.
    let want = if threads == 1 { 1 } else { 4 * threads };
    let bq = (n_tok * p.n_head_kv)
        .div_ceil(want)
        .clamp(1, (MAX_ROWS / group).max(1))
        .min(n_tok);
    // With one token per unit (generation), a group's heads may be split over several
    // units, and on several threads its keys too (split-K, one unit per span), to occupy
    // the threads. But each unit pays for reading and converting its K and V tiles, the
    // bulk of its time, while each further head adds only its multiply-adds: pick the cut
    // with the least estimated time, each unit costing its keys × (that fixed cost + its
    // heads), dealt to whichever thread is free first as the pool does.
    let (hs, spans) = if bq == 1 {
        let kstart = p.window.map_or(0, |w| n_kv.saturating_sub(w)) / BK * BK;
        let all = kstart / SPAN..(n_kv - 1) / SPAN + 1;
        let span_keys = |s: usize| n_kv.min((s + 1) * SPAN) - kstart.max(s * SPAN);
        let time = |d: usize, split: bool| {
            let head_units = n_tok * p.n_head_kv * (group / d);
            let per_unit = if split { all.len() } else { 1 };
            let keys = |i: usize| match split {
                true => span_keys(all.start + i % per_unit),
                false => n_kv - kstart,
            };
            let costs =
                (0..head_units * per_unit).map(|i| (keys(i) + UNIT_KEYS) * (KV_TILE_COST + d));
            makespan(costs, threads)
        };
        let splits: &[bool] = if n_tok == 1 && threads > 1 && all.len() > 1 {
            &[false, true]
        } else {
            &[false]
        };
        // Ties go to fewer units: whole groups, then no split.
        let (d, split) = (1..=group)
            .rev()
            .filter(|&d| group.is_multiple_of(d))
            .flat_map(|d| splits.iter().map(move |&split| (d, split)))
            .min_by_key(|&(d, split)| time(d, split))
            .unwrap_or((1, false));
        (d, if split { all } else { 0..1 })
    } else {
        (group, 0..1)
    };
    let n_spans = spans.len();
    let plan = Plan {
        q,
        k,
        v,
        pos0,
        n_tok,
        p,
        group,
        bq,
        hs,
    };
    let n_hsub = group / hs;
    let per_tok = p.n_head_kv * n_hsub;
    let run = |ci: usize, chunk: &mut [f32]| {
        let (b, r) = (ci / per_tok, ci % per_tok);
        plan.unit(b, r / n_hsub, r % n_hsub, None, chunk);
    };
    let unit_len = bq * hs * hd_v;
    if n_spans > 1 {
        // Split-K: unit (g, hsub, span) leaves its span's state in `stage`; each head then
        // folds its spans in order.
        let state_len = hs * (hd_v + 2);
        STAGE.with(|st| {
            let mut stage = st.borrow_mut();
            stage.resize(per_tok * n_spans * state_len, 0.0);
            pool.run_chunks_mut(&mut stage, state_len, |ci, chunk| {
                let (r, s) = (ci / n_spans, ci % n_spans);
                plan.unit(0, r / n_hsub, r % n_hsub, Some(spans.start + s), chunk);
            });
            let mut o = vec![0.0; hd_v];
            for (r, states) in stage.chunks_exact(n_spans * state_len).enumerate() {
                let heads = &mut out[r * unit_len..][..unit_len];
                for (hh, dst) in heads.chunks_exact_mut(hd_v).enumerate() {
                    let (mut m, mut l) = (f32::NEG_INFINITY, 0.0);
                    let mut acc = Span {
                        m: &mut m,
                        l: &mut l,
                        o: &mut o,
                    };
                    for state in states.chunks_exact(state_len) {
                        let (so, ml) = state.split_at(hs * hd_v);
                        acc.fold(ml[hh], ml[hs + hh], &so[hh * hd_v..][..hd_v]);
                    }
                    acc.finish(dst);
                }
            }
        });
        return;
    }
    if bq == 1 {
        // A unit's output (one token, consecutive heads) is a contiguous piece of `out`.
        if threads == 1 {
            for (ci, chunk) in out.chunks_exact_mut(unit_len).enumerate() {
                run(ci, chunk);
            }
        } else {
            pool.run_chunks_mut(out, unit_len, run);
        }
        return;
    }
    // Units of several tokens write `[token][head]` pieces that interleave with the other KV
    // heads' in `out`: stage them unit after unit, then scatter.
    STAGE.with(|s| {
        let mut stage = s.borrow_mut();
        let n_blocks = n_tok.div_ceil(bq);
        stage.resize(n_blocks * per_tok * unit_len, 0.0);
        if threads == 1 {
            for (ci, chunk) in stage.chunks_exact_mut(unit_len).enumerate() {
                run(ci, chunk);
            }
        } else {
            pool.run_chunks_mut(&mut stage, unit_len, run);
        }
        let head_len = group * hd_v;
        for (ci, chunk) in stage.chunks_exact(unit_len).enumerate() {
            let (b, g) = (ci / p.n_head_kv, ci % p.n_head_kv);
            let t0 = b * bq;
            for (tl, src) in chunk.chunks_exact(head_len).take(n_tok - t0).enumerate() {
                let at = ((t0 + tl) * p.n_head + g * group) * hd_v;
                out[at..at + head_len].copy_from_slice(src);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use half::f16;

    use super::*;

    /// Keys given as `[n_kv][dim]` rows, laid out as the cache stores them ([`KeysView`]).
    fn blocked<T: Copy + Default>(rows: &[T], dim: usize) -> (Vec<T>, usize) {
        let n_kv = rows.len() / dim;
        let mut t = vec![T::default(); KeysView::len_for(dim, n_kv)];
        let view = KeysView {
            elems: KvView::F32(&[]),
            dim,
        };
        for (j, row) in rows.chunks_exact(dim).enumerate() {
            for (d, &x) in row.iter().enumerate() {
                t[view.index(j, d)] = x;
            }
        }
        (t, dim)
    }

    fn keys(elems: KvView<'_>, dim: usize) -> KeysView<'_> {
        KeysView { elems, dim }
    }

    struct Rng(u64);

    impl Rng {
        /// Uniform in [-1, 1).
        fn next(&mut self) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
        fn vec(&mut self, n: usize, amp: f32) -> Vec<f32> {
            (0..n).map(|_| self.next() * amp).collect()
        }
    }

    /// The textbook definition in f64: every score, max-subtracted softmax, weighted sum.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        pos0: usize,
        n_tok: usize,
        p: &AttnParams,
    ) -> Vec<f64> {
        let (hd_k, hd_v) = (p.head_dim_k, p.head_dim_v);
        let group = p.n_head / p.n_head_kv;
        let mut out = vec![0f64; n_tok * p.n_head * hd_v];
        for t in 0..n_tok {
            let qp = pos0 + t;
            for h in 0..p.n_head {
                let g = h / group;
                let qv = &q[(t * p.n_head + h) * hd_k..][..hd_k];
                let keys: Vec<usize> = (0..=qp)
                    .filter(|&kp| p.window.is_none_or(|w| qp - kp < w))
                    .collect();
                let scores: Vec<f64> = keys
                    .iter()
                    .map(|&kp| {
                        let kv = &k[(kp * p.n_head_kv + g) * hd_k..][..hd_k];
                        let d: f64 = qv.iter().zip(kv).map(|(&a, &b)| a as f64 * b as f64).sum();
                        let s = d * p.scale as f64;
                        match p.softcap {
                            Some(c) => c as f64 * (s / c as f64).tanh(),
                            None => s,
                        }
                    })
                    .collect();
                let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = scores.iter().map(|s| (s - mx).exp()).collect();
                let sum: f64 = w.iter().sum();
                let o = &mut out[(t * p.n_head + h) * hd_v..][..hd_v];
                for (&kp, &wj) in keys.iter().zip(&w) {
                    let vv = &v[(kp * p.n_head_kv + g) * hd_v..][..hd_v];
                    for (od, &x) in o.iter_mut().zip(vv) {
                        *od += wj / sum * x as f64;
                    }
                }
            }
        }
        out
    }

    /// Large scores (|s| up to ~60, as gemma's 256-wide heads produce) must not lose
    /// precision in long f32 chains: worst error against f64 within 5e-6 (outputs are
    /// averages of values in [-1, 1]). One 256-step chain per score gave 9.4e-6; summing
    /// each 16 steps apart gives 2.3e-6.
    #[test]
    fn large_scores_keep_f32_precision() {
        let mut rng = Rng(21);
        let p = AttnParams {
            n_head: 4,
            n_head_kv: 1,
            head_dim_k: 256,
            head_dim_v: 256,
            scale: 0.0625,
            softcap: None,
            window: None,
        };
        let (n_tok, pos0) = (70, 30);
        let n_kv = pos0 + n_tok;
        let q = rng.vec(n_tok * 4 * 256, 6.0);
        let k16: Vec<f16> = rng
            .vec(n_kv * 256, 6.0)
            .iter()
            .map(|&x| f16::from_f32(x))
            .collect();
        let v16: Vec<f16> = rng
            .vec(n_kv * 256, 1.0)
            .iter()
            .map(|&x| f16::from_f32(x))
            .collect();
        let k: Vec<f32> = k16.iter().map(|x| x.to_f32()).collect();
        let v: Vec<f32> = v16.iter().map(|x| x.to_f32()).collect();
        let want = naive(&q, &k, &v, pos0, n_tok, &p);
        let mut out = vec![0.0; want.len()];
        let (kt, kdim) = blocked(&k16, 256);
        let (kv, vv) = (keys(KvView::F16(&kt), kdim), KvView::F16(&v16));
        attention(&ThreadPool::new(2), &q, kv, vv, pos0, n_tok, &p, &mut out);
        let worst = out
            .iter()
            .zip(&want)
            .map(|(&g, &w)| (g as f64 - w).abs())
            .fold(0.0, f64::max);
        assert!(worst <= 5e-6, "worst {worst:e}");
    }

    /// A query's output is bit-identical however the batch was cut: the whole sequence at
    /// once versus a cached prefix followed by the rest in pieces (down to single tokens),
    /// with and without a window, on 1 and 2 threads, in one span of keys and across
    /// several (single tokens on 2 threads then fold split-K units). Greedy serving relies
    /// on it (a re-sent prompt reuses its cached prefix and must give the same reply).
    #[test]
    fn output_does_not_depend_on_how_the_batch_is_cut() {
        let mut rng = Rng(33);
        let short: &[&[usize]] = &[&[37, 149, 150], &[1, 2, 70, 71, 150], &[64, 129, 150]];
        let long: &[&[usize]] = &[&[600, 1098, 1099, 1100], &[511, 512, 513, 1024, 1025, 1100]];
        for (n, all_cuts, window) in [
            (150, short, None),
            (150, short, Some(50)),
            (1100, long, None),
            (1100, long, Some(700)),
        ] {
            let p = AttnParams {
                n_head: 9,
                n_head_kv: 3,
                head_dim_k: 64,
                head_dim_v: 64,
                scale: 0.125,
                softcap: None,
                window,
            };
            let q = rng.vec(n * 9 * 64, 3.0);
            let k: Vec<f16> = rng
                .vec(n * 3 * 64, 2.0)
                .iter()
                .map(|&x| f16::from_f32(x))
                .collect();
            let v: Vec<f16> = rng
                .vec(n * 3 * 64, 1.0)
                .iter()
                .map(|&x| f16::from_f32(x))
                .collect();
            let (kt, kdim) = blocked(&k, 3 * 64);
            let (kv, vv) = (keys(KvView::F16(&kt), kdim), KvView::F16(&v));
            let row = 9 * 64;
            for pool in [ThreadPool::new(1), ThreadPool::new(2)] {
                let mut whole = vec![0.0; n * row];
                attention(&pool, &q, kv, vv, 0, n, &p, &mut whole);
                for &cuts in all_cuts {
                    let mut pos0 = 0;
                    for &end in cuts {
                        let m = end - pos0;
                        let mut out = vec![0.0; m * row];
                        let qs = &q[pos0 * row..end * row];
                        attention(&pool, qs, kv, vv, pos0, m, &p, &mut out);
                        assert!(
                            out == whole[pos0 * row..end * row],
                            "window {window:?} cuts {cuts:?} at {pos0}..{end}"
                        );
                        pos0 = end;
                    }
                }
            }
        }
    }

    /// Tiled attention against [`naive`] on random data over odd shapes: 1, 3, 17 and 70
    /// query tokens, at position 0 and after 45 cached ones (so tiles of 64 keys are partly
    /// masked, several per row, and the window cuts through them), GQA ratios 1, 3 and 4
    /// with one or two KV heads, head dims 64, 80, 256 and 96/64 (K ≠ V), softcap and
    /// window on and off, f16 and f32 KV, on 1 and 2 threads. The reference reads the same
    /// (f16-rounded) K/V. Tolerance: 2e-5·(1 + |want|) (f32 accumulation; outputs are
    /// averages of values in [-1, 1]).
    #[test]
    fn tiled_matches_naive_reference_on_odd_shapes() {
        let pools = [ThreadPool::new(1), ThreadPool::new(2)];
        let dims = [(64, 64), (80, 80), (256, 256), (96, 64)];
        let mut rng = Rng(3);
        let mut case = 0;
        for n_tok in [1, 3, 17, 70] {
            for pos0 in [0, 45, 1100] {
                for group in [1, 3, 4] {
                    for f16kv in [false, true] {
                        case += 1;
                        let (hd_k, hd_v) = dims[case % 4];
                        let softcap = (case / 4 % 2 == 1).then_some(2.5);
                        let window = match case / 8 % 3 {
                            0 => None,
                            1 => Some(7),
                            _ => Some(50),
                        };
                        let n_head_kv = 1 + case / 3 % 2;
                        let p = AttnParams {
                            n_head: n_head_kv * group,
                            n_head_kv,
                            head_dim_k: hd_k,
                            head_dim_v: hd_v,
                            scale: 1.0 / (hd_k as f32).sqrt(),
                            softcap,
                            window,
                        };
                        let n_kv = pos0 + n_tok;
                        // q large enough for peaked softmax rows (scores of ±10).
                        let q = rng.vec(n_tok * p.n_head * hd_k, 3.0);
                        let mut k = rng.vec(n_kv * n_head_kv * hd_k, 1.0);
                        let mut v = rng.vec(n_kv * n_head_kv * hd_v, 1.0);
                        let (k16, v16): (Vec<f16>, Vec<f16>) = (
                            k.iter().map(|&x| f16::from_f32(x)).collect(),
                            v.iter().map(|&x| f16::from_f32(x)).collect(),
                        );
                        if f16kv {
                            k = k16.iter().map(|x| x.to_f32()).collect();
                            v = v16.iter().map(|x| x.to_f32()).collect();
                        }
                        let want = naive(&q, &k, &v, pos0, n_tok, &p);
                        let (kt16, kdim) = blocked(&k16, n_head_kv * hd_k);
                        let (kt32, _) = blocked(&k, n_head_kv * hd_k);
                        for pool in &pools {
                            let (kv, vv) = if f16kv {
                                (keys(KvView::F16(&kt16), kdim), KvView::F16(&v16))
                            } else {
                                (keys(KvView::F32(&kt32), kdim), KvView::F32(&v))
                            };
                            let mut out = vec![f32::NAN; want.len()];
                            attention(pool, &q, kv, vv, pos0, n_tok, &p, &mut out);
                            for (i, (&g, &w)) in out.iter().zip(&want).enumerate() {
                                assert!(
                                    (g as f64 - w).abs() <= 2e-5 * (1.0 + w.abs()),
                                    "n_tok {n_tok} pos0 {pos0} group {group} f16 {f16kv} \
                                     dims {hd_k}/{hd_v} softcap {softcap:?} window \
                                     {window:?} kv heads {n_head_kv} threads {} [{i}]: \
                                     {g} vs {w}",
                                    pool.n_threads()
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn single_key_returns_its_value_and_window_hides_old_keys() {
        let p = AttnParams {
            n_head: 2,
            n_head_kv: 1,
            head_dim_k: 2,
            head_dim_v: 2,
            scale: 1.0,
            softcap: None,
            window: Some(1),
        };
        // three positions; with window 1 every query sees only itself.
        let k = vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let v = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let q = vec![0.5; 3 * 2 * 2];
        let mut out = vec![0.0; 3 * 2 * 2];
        let (kt, kdim) = blocked(&k, 2);
        attention(
            &ThreadPool::new(1),
            &q,
            keys(KvView::F32(&kt), kdim),
            KvView::F32(&v),
            0,
            3,
            &p,
            &mut out,
        );
        assert_eq!(
            out,
            vec![1.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 4.0, 5.0, 6.0, 5.0, 6.0]
        );
    }

    #[test]
    fn causal_mean_of_values_with_zero_scores() {
        let p = AttnParams {
            n_head: 1,
            n_head_kv: 1,
            head_dim_k: 1,
            head_dim_v: 1,
            scale: 1.0,
            softcap: None,
            window: None,
        };
        let k = vec![0.0; 3];
        let v = vec![3.0, 6.0, 9.0];
        let q = vec![1.0; 3];
        let mut out = vec![0.0; 3];
        let (kt, kdim) = blocked(&k, 1);
        attention(
            &ThreadPool::new(2),
            &q,
            keys(KvView::F32(&kt), kdim),
            KvView::F32(&v),
            0,
            3,
            &p,
            &mut out,
        );
        assert_eq!(out, vec![3.0, 4.5, 6.0]);
    }
}
