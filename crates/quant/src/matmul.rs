//! Matrix products of stored (possibly quantized) weights with f32 activations: the one entry
//! point the forward pass uses for every weight matrix, so faster kernels and threading can be
//! swapped in underneath without touching the models.
//!
//! A call quantizes the activations once (in parallel for batches) into a reused per-thread
//! buffer, then deals out chunks of weight rows to the pool's threads through an atomic
//! counter (threads that finish early take more, which matters on a shared machine). Within a
//! chunk, small batches go [`TILE`] activation rows at a time, so each weight block is
//! decoded once per tile while the chunk's rows stay in L1. Larger batches (prompts) go
//! through the panel GEMM of [`crate::gemm`] where the CPU has VNNI. A single activation row
//! (generation) against a large packed matrix pairs each row of the matrix's first half with
//! the same row of its second half, so that the kernel loads each activation once for two
//! rows while every stream stays sequential (see `RowJob::half`).

use std::cell::{Cell, RefCell};

use ferrite_gguf::GgmlType;

use crate::kernels::{self, Kernel, TILE};
use crate::pool::SharedMut;
use crate::{dequantize, QuantError};

pub use crate::pool::ThreadPool;

/// Weight rows per work item: small enough to balance two threads on a 576-row matrix,
/// large enough that the atomic counter is noise.
const CHUNK_ROWS: usize = 16;

/// Two weight rows read in one pass must lie at least this far apart ([`RowJob::half`]).
const PAIR_MIN_DISTANCE: usize = 1 << 20;

/// Batches of at least this many rows go through the panel GEMM ([`crate::gemm`]): decoding
/// a panel costs about as much as multiplying it with a handful of rows, so below this the
/// row-at-a-time tile kernels are as fast.
const GEMM_MIN_BATCH: usize = 8;

/// How [`matmul`] chooses between the panel GEMM and the row kernels on this thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// By batch size: batches of [`GEMM_MIN_BATCH`] rows or more through the GEMM.
    BySize,
    /// The first `gemm_rows` rows of every batch through the GEMM, however few, the rest
    /// through the row kernels ([`BatchInvariant`]).
    Invariant { gemm_rows: usize },
}

thread_local! {
    static ROUTE: Cell<Route> = const { Cell::new(Route::BySize) };
}

/// While alive, every [`matmul`] called from this thread computes each activation row the
/// same way whatever else is in its batch and however the batch was cut.
///
/// By default a row's arithmetic depends on its batch: batches of `GEMM_MIN_BATCH` rows
/// or more go through the panel GEMM, smaller ones through the row kernels, and the two
/// add the same integer products in a different float order, so a row's result differs
/// in its last bits between them. Within each of the two, a row's result depends on that
/// row alone: the row kernels take rows one (or a tile) at a time with the same sums, and
/// the GEMM quantizes each activation row by itself and runs every row of a tile through
/// the same chain of groups. So the guard fixes which rows take which path: the first
/// `gemm_rows` rows of every batch the GEMM, whatever their number, the rest the row
/// kernels.
///
/// A server that batches many sequences (and cuts prompts into chunks depending on load)
/// puts its prompt tokens first and names them GEMM rows, and sends decoded tokens through
/// the row kernels: prompts run at the GEMM's speed, decoding at the row kernels', and a
/// sequence gets the same bits alone or batched, given which of its tokens were prompt.
/// Where the CPU has no GEMM (it needs VNNI) or a type has no panel form, every row takes
/// the row kernels.
#[must_use = "the route holds only while the guard lives"]
pub struct BatchInvariant {
    prev: Route,
}

impl BatchInvariant {
    /// Every row through the row kernels.
    pub fn enter() -> Self {
        Self::with_gemm_rows(0)
    }

    /// The first `gemm_rows` rows of every batch through the panel GEMM, the rest through
    /// the row kernels.
    pub fn with_gemm_rows(gemm_rows: usize) -> Self {
        BatchInvariant {
            prev: ROUTE.with(|c| c.replace(Route::Invariant { gemm_rows })),
        }
    }
}

impl Drop for BatchInvariant {
    fn drop(&mut self) {
        ROUTE.with(|c| c.set(self.prev));
    }
}

/// How many leading rows of an `n_b`-row batch of weights `ty` go through the panel GEMM.
fn gemm_rows(ty: GgmlType, n_b: usize) -> usize {
    if !(crate::gemm::available() && crate::gemm::group_size(ty).is_some()) {
        return 0;
    }
    match ROUTE.with(Cell::get) {
        Route::BySize if n_b >= GEMM_MIN_BATCH => n_b,
        Route::BySize => 0,
        Route::Invariant { gemm_rows } => gemm_rows.min(n_b),
    }
}

thread_local! {
    /// Quantized activations of the current call, reused across calls on this thread.
    static ACT_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// `y[b * n_rows + r] = Σ_i W[r][i] · x[b * k + i]` for `b < n_b`, `r < n_rows`.
///
/// `w` holds `n_rows` rows of `k` elements of type `ty`, contiguous (a GGUF 2-D tensor with
/// `dims = [k, n_rows]`). `x` is `n_b × k` row-major, `y` is `n_b × n_rows` row-major.
/// The activations are quantized to the type's partner format first (as llama.cpp does), so
/// results match llama.cpp's rather than an f32 product.
///
/// # Panics
/// If `w`, `x` or `y` does not have the size the shapes imply.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    pool: &ThreadPool,
    ty: GgmlType,
    w: &[u8],
    n_rows: usize,
    k: usize,
    x: &[f32],
    n_b: usize,
    y: &mut [f32],
) -> Result<(), QuantError> {
    matmul_in(pool, ty, false, w, n_rows, k, x, n_b, y)
}

/// [`matmul`] for weights packed by [`crate::repack::pack_rows`]. The packed kernels add the
/// same integer products in their own float order, so results agree with [`matmul`]'s to
/// rounding (batches of 8 rows or more, which the panel GEMM unpacks, to
/// the bit); one row and a batch under [`BatchInvariant`] agree with each other to the bit.
///
/// # Panics
/// As [`matmul`], with `w` holding `n_rows` packed rows.
#[allow(clippy::too_many_arguments)]
pub fn matmul_packed(
    pool: &ThreadPool,
    ty: GgmlType,
    w: &[u8],
    n_rows: usize,
    k: usize,
    x: &[f32],
    n_b: usize,
    y: &mut [f32],
) -> Result<(), QuantError> {
    matmul_in(pool, ty, true, w, n_rows, k, x, n_b, y)
}

#[allow(clippy::too_many_arguments)]
fn matmul_in(
    pool: &ThreadPool,
    ty: GgmlType,
    packed: bool,
    w: &[u8],
    n_rows: usize,
    k: usize,
    x: &[f32],
    n_b: usize,
    y: &mut [f32],
) -> Result<(), QuantError> {
    let row_bytes = weight_row_bytes(ty, packed, k)?;
    assert_eq!(w.len(), row_bytes * n_rows, "weight size");
    assert_eq!(x.len(), n_b * k, "activation size");
    assert_eq!(y.len(), n_b * n_rows, "output size");
    if n_rows == 0 || n_b == 0 {
        return Ok(());
    }
    let Some(kern) = row_kernel(ty, packed, n_b) else {
        if packed {
            return Err(QuantError::Unsupported(ty));
        }
        return matmul_dequant(ty, w, n_rows, k, x, n_b, y, row_bytes);
    };
    let n_gemm = gemm_rows(ty, n_b);
    if n_gemm > 0 {
        // The GEMM takes the ggml-layout kernel's activations; it unpacks packed rows.
        let gemm_kern = kernels::kernel(ty).ok_or(QuantError::Unsupported(ty))?;
        let layout = crate::gemm::Layout { packed };
        let (xg, yg) = (&x[..n_gemm * k], &mut y[..n_gemm * n_rows]);
        crate::gemm::matmul(
            pool, gemm_kern, layout, w, row_bytes, n_rows, k, xg, n_gemm, yg, true,
        );
        if n_gemm == n_b {
            return Ok(());
        }
    }
    // Rows past the GEMM's, with the kernel for their count.
    let (x, y, n_b) = (&x[n_gemm * k..], &mut y[n_gemm * n_rows..], n_b - n_gemm);
    let kern = if n_gemm > 0 {
        row_kernel(ty, packed, n_b).ok_or(QuantError::Unsupported(ty))?
    } else {
        kern
    };
    let act_bytes = act_row_bytes(ty, kern, k)?;
    ACT_BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.resize(n_b * act_bytes, 0);
        quantize_acts(pool, kern, x, k, n_b, act_bytes, &mut buf);
        run_rows(pool, kern, w, row_bytes, n_rows, &buf, act_bytes, n_b, y);
    });
    Ok(())
}

/// The kernel for `n_b` activation rows of weights `ty`: packed weights have theirs; for
/// ggml-layout weights, generation (one row) has its own where the CPU level offers one,
/// with identical results ([`kernels::kernel_one_row`]).
fn row_kernel(ty: GgmlType, packed: bool, n_b: usize) -> Option<&'static Kernel> {
    match (packed, n_b == 1) {
        (true, _) => kernels::packed_kernel(ty),
        (false, true) => kernels::kernel_one_row(ty),
        (false, false) => kernels::kernel(ty),
    }
}

/// Bytes of one `k`-element row of weight type `ty`, packed or not.
fn weight_row_bytes(ty: GgmlType, packed: bool, k: usize) -> Result<usize, QuantError> {
    let bytes = if packed {
        crate::repack::packed_row_bytes(ty, k)
    } else {
        ty.row_bytes(k as u64).map(|b| b as usize)
    };
    bytes.ok_or(QuantError::NotBlockMultiple {
        ty,
        n: k,
        block: ty.block_size(),
    })
}

/// Bytes of one `k`-element activation row in the format `kern` (for weights `ty`) takes.
fn act_row_bytes(ty: GgmlType, kern: &Kernel, k: usize) -> Result<usize, QuantError> {
    kern.act.row_bytes(k).ok_or(QuantError::NotBlockMultiple {
        ty,
        n: k,
        block: kern.act.block_size() as u64,
    })
}

/// Quantizes the `n_b` rows of `x` into `buf`, splitting rows across threads for batches.
fn quantize_acts(
    pool: &ThreadPool,
    kern: &Kernel,
    x: &[f32],
    k: usize,
    n_b: usize,
    act_bytes: usize,
    buf: &mut [u8],
) {
    if n_b < 4 {
        for (xr, ar) in x.chunks_exact(k).zip(buf.chunks_exact_mut(act_bytes)) {
            kernels::quantize_row(kern.act, xr, ar);
        }
        return;
    }
    let out = SharedMut(buf.as_mut_ptr());
    pool.run_chunks(n_b, |b| {
        // SAFETY: each row index b is handed out once, so no other thread touches this row,
        // and `buf` (n_b rows of `act_bytes`) outlives the call.
        let row =
            unsafe { std::slice::from_raw_parts_mut(out.get().add(b * act_bytes), act_bytes) };
        kernels::quantize_row(kern.act, &x[b * k..(b + 1) * k], row);
    });
}

#[allow(clippy::too_many_arguments)]
fn run_rows(
    pool: &ThreadPool,
    kern: &Kernel,
    w: &[u8],
    row_bytes: usize,
    n_rows: usize,
    acts: &[u8],
    act_bytes: usize,
    n_b: usize,
    y: &mut [f32],
) {
    let job = RowJob {
        kern,
        w,
        row_bytes,
        n_rows,
        acts,
        act_bytes,
        n_b,
        out: SharedMut(y.as_mut_ptr()),
    };
    pool.run_chunks(job.n_chunks(), |c| job.run_chunk(c));
}

/// One weight matrix times quantized activations, cut into chunks of [`CHUNK_ROWS`] rows
/// that threads run independently.
struct RowJob<'a> {
    kern: &'a Kernel,
    w: &'a [u8],
    row_bytes: usize,
    n_rows: usize,
    acts: &'a [u8],
    act_bytes: usize,
    n_b: usize,
    /// `n_b × n_rows` outputs; chunk `c` writes only its own rows' columns.
    out: SharedMut<f32>,
}

impl RowJob<'_> {
    /// With one activation row and a kernel that reads two weight rows per pass, chunk `c`
    /// is rows `c·S..c·S + S` of the matrix's first half paired with the same rows of its
    /// second half (`S = CHUNK_ROWS / 2`): each activation load then serves two rows, and
    /// each thread streams two sequential runs that lie half a matrix apart. Neighbouring
    /// rows are never paired: on this Zen 4, two streams closer than ~1 MiB read in step
    /// halve the memory bandwidth the hardware prefetchers sustain (`PAIR_MIN_DISTANCE`).
    fn half(&self) -> Option<usize> {
        let half = self.n_rows / 2;
        (self.n_b == 1 && self.kern.pairs_rows() && half * self.row_bytes >= PAIR_MIN_DISTANCE)
            .then_some(half)
    }

    fn n_chunks(&self) -> usize {
        match self.half() {
            Some(half) => half.div_ceil(CHUNK_ROWS / 2),
            None => self.n_rows.div_ceil(CHUNK_ROWS),
        }
    }

    fn run_chunk(&self, c: usize) {
        let (n_rows, n_b, row_bytes) = (self.n_rows, self.n_b, self.row_bytes);
        if let Some(half) = self.half() {
            let slab = CHUNK_ROWS / 2;
            let (r0, r1) = (c * slab, ((c + 1) * slab).min(half));
            let rows = |r0: usize, r1: usize| {
                // SAFETY: rows r0..r1 and half+r0..half+r1 belong to this chunk alone (the
                // pool hands each chunk out once, and the chunks' slabs do not overlap), and
                // with one activation row they are y[r0..r1], in bounds (r1 ≤ n_rows) and
                // outliving the call.
                let out =
                    unsafe { std::slice::from_raw_parts_mut(self.out.get().add(r0), r1 - r0) };
                (&self.w[r0 * row_bytes..r1 * row_bytes], out)
            };
            let (w0, out0) = rows(r0, r1);
            let (w1, out1) = rows(half + r0, half + r1);
            self.kern
                .dot_row_pairs(w0, w1, row_bytes, &self.acts[..self.act_bytes], out0, out1);
            // An odd matrix's last row goes with the last chunk.
            if r1 == half && n_rows % 2 == 1 {
                let (w, out) = rows(n_rows - 1, n_rows);
                self.kern
                    .dot_rows(w, row_bytes, &self.acts[..self.act_bytes], out);
            }
            return;
        }
        let (r0, r1) = (c * CHUNK_ROWS, ((c + 1) * CHUNK_ROWS).min(n_rows));
        let act = |b: usize| &self.acts[b * self.act_bytes..(b + 1) * self.act_bytes];
        let w = |r: usize| &self.w[r * row_bytes..(r + 1) * row_bytes];
        let put = |b: usize, r: usize, v: f32| {
            // SAFETY: rows r0..r1 belong to this chunk alone (the pool hands each chunk
            // out once), so no other thread writes y[b * n_rows + r]; the index is in
            // bounds as b < n_b and r < n_rows, and the output outlives the call.
            unsafe { *self.out.get().add(b * n_rows + r) = v };
        };
        if n_b == 1 {
            // SAFETY: rows r0..r1 belong to this chunk alone (the pool hands each chunk out
            // once), and with one activation row they are y[r0..r1], in bounds and outliving
            // the call.
            let out = unsafe { std::slice::from_raw_parts_mut(self.out.get().add(r0), r1 - r0) };
            let w = &self.w[r0 * row_bytes..r1 * row_bytes];
            self.kern.dot_rows(w, row_bytes, act(0), out);
            return;
        }
        let mut b = 0;
        while b + TILE <= n_b {
            let a = [act(b), act(b + 1), act(b + 2), act(b + 3)];
            for r in r0..r1 {
                let v = self.kern.dot_tile(w(r), a);
                for (i, v) in v.into_iter().enumerate() {
                    put(b + i, r, v);
                }
            }
            b += TILE;
        }
        for b in b..n_b {
            for r in r0..r1 {
                put(b, r, self.kern.dot(w(r), act(b)));
            }
        }
    }
}

/// One product of a [`matmul_many`] call: `y = x · Wᵀ` for the `n_rows × k` matrix `w` of
/// type `ty`.
pub struct Product<'a> {
    pub ty: GgmlType,
    /// Whether `w` holds packed rows ([`matmul_packed`]).
    pub packed: bool,
    pub w: &'a [u8],
    pub n_rows: usize,
    pub y: &'a mut [f32],
}

/// Most products one [`matmul_many`] call runs as one job.
pub const MAX_PRODUCTS: usize = 4;

thread_local! {
    /// One quantized-activation buffer per product of a fused call.
    static FUSED_ACTS: RefCell<[Vec<u8>; MAX_PRODUCTS]> = RefCell::new(Default::default());
}

/// Several matrices applied to the same activations, as one job for the pool: the
/// projections of one input (attention's Q, K and V; an FFN's gate and up). At generation
/// time each product is a fraction of a millisecond, so waking and joining the pool once
/// instead of per matrix, and quantizing the activations once per activation format, is a
/// measurable share of a token. Batches and types without a kernel run the products one by
/// one through [`matmul`], with identical results.
///
/// # Panics
/// As [`matmul`], for any product whose sizes do not match.
pub fn matmul_many(
    pool: &ThreadPool,
    k: usize,
    x: &[f32],
    n_b: usize,
    products: &mut [Product<'_>],
) -> Result<(), QuantError> {
    let n_p = products.len();
    let kerns: [Option<&'static Kernel>; MAX_PRODUCTS] = std::array::from_fn(|i| {
        products
            .get(i)
            .and_then(|p| row_kernel(p.ty, p.packed, n_b))
    });
    let fuse = (2..=MAX_PRODUCTS).contains(&n_p)
        && n_b > 0
        && kerns[..n_p].iter().all(|k| k.is_some())
        && products.iter().all(|p| gemm_rows(p.ty, n_b) == 0);
    if !fuse {
        for p in products.iter_mut() {
            matmul_in(pool, p.ty, p.packed, p.w, p.n_rows, k, x, n_b, p.y)?;
        }
        return Ok(());
    }
    assert_eq!(x.len(), n_b * k, "activation size");
    let mut row_bytes = [0usize; MAX_PRODUCTS];
    let mut act_bytes = [0usize; MAX_PRODUCTS];
    for (i, (p, kern)) in products.iter().zip(&kerns).enumerate() {
        let kern = kern.expect("checked above");
        row_bytes[i] = weight_row_bytes(p.ty, p.packed, k)?;
        act_bytes[i] = act_row_bytes(p.ty, kern, k)?;
        assert_eq!(p.w.len(), row_bytes[i] * p.n_rows, "weight size");
        assert_eq!(p.y.len(), n_b * p.n_rows, "output size");
    }
    FUSED_ACTS.with(|bufs| {
        let mut bufs = bufs.borrow_mut();
        // Products sharing an activation format share its quantized rows.
        let mut source = [0usize; MAX_PRODUCTS];
        for i in 0..n_p {
            let kern = kerns[i].expect("checked above");
            match (0..i).find(|&j| kerns[j].expect("checked above").act == kern.act) {
                Some(j) => source[i] = source[j],
                None => {
                    source[i] = i;
                    let buf = &mut bufs[i];
                    buf.resize(n_b * act_bytes[i], 0);
                    quantize_acts(pool, kern, x, k, n_b, act_bytes[i], buf);
                }
            }
        }
        let bufs = &*bufs;
        let mut jobs: [Option<RowJob<'_>>; MAX_PRODUCTS] = Default::default();
        let mut starts = [0usize; MAX_PRODUCTS + 1];
        for (i, p) in products.iter_mut().enumerate() {
            let job = RowJob {
                kern: kerns[i].expect("checked above"),
                w: p.w,
                row_bytes: row_bytes[i],
                n_rows: p.n_rows,
                acts: &bufs[source[i]],
                act_bytes: act_bytes[i],
                n_b,
                out: SharedMut(p.y.as_mut_ptr()),
            };
            starts[i + 1] = starts[i] + job.n_chunks();
            jobs[i] = Some(job);
        }
        pool.run_chunks(starts[n_p], |c| {
            let i = (0..n_p).rfind(|&i| starts[i] <= c).unwrap_or(0);
            if let Some(job) = &jobs[i] {
                job.run_chunk(c - starts[i]);
            }
        });
    });
    Ok(())
}

/// Types without a dot-product kernel: dequantize each row to f32 and multiply in f32.
#[allow(clippy::too_many_arguments)]
fn matmul_dequant(
    ty: GgmlType,
    w: &[u8],
    n_rows: usize,
    k: usize,
    x: &[f32],
    n_b: usize,
    y: &mut [f32],
    row_bytes: usize,
) -> Result<(), QuantError> {
    let mut row = vec![0f32; k];
    for r in 0..n_rows {
        dequantize(ty, &w[r * row_bytes..(r + 1) * row_bytes], &mut row)?;
        for b in 0..n_b {
            let xb = &x[b * k..(b + 1) * k];
            y[b * n_rows + r] = row.iter().zip(xb).map(|(a, b)| a * b).sum();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::{magnitude, random_acts, random_weights, Rng};
    use crate::kernels::{kernel_for, Isa, SUPPORTED};

    #[test]
    fn matmul_matches_row_by_row_scalar_dots() {
        let mut rng = Rng::new(7);
        let pools: Vec<ThreadPool> = (1..=3).map(ThreadPool::new).collect();
        for &ty in SUPPORTED {
            let k = 2 * ty.block_size() as usize + if ty.block_size() == 1 { 3 } else { 0 };
            let sc = kernel_for(ty, Isa::Scalar).unwrap();
            for (n_rows, n_b) in [(1, 1), (7, 1), (33, 5), (17, 9), (40, 4)] {
                let w: Vec<u8> = (0..n_rows)
                    .flat_map(|_| random_weights(&mut rng, ty, k))
                    .collect();
                let x: Vec<f32> = (0..n_b).flat_map(|_| random_acts(&mut rng, k)).collect();
                let rb = w.len() / n_rows;
                let mut want = vec![0f32; n_rows * n_b];
                let mut tol = vec![0f32; n_rows * n_b];
                for b in 0..n_b {
                    let mut a = vec![0u8; sc.act.row_bytes(k).unwrap()];
                    kernels::quantize_row(sc.act, &x[b * k..(b + 1) * k], &mut a);
                    for r in 0..n_rows {
                        let wr = &w[r * rb..(r + 1) * rb];
                        want[b * n_rows + r] = sc.dot(wr, &a);
                        tol[b * n_rows + r] = 1e-5 * magnitude(&sc, wr, &a) + 1e-6;
                    }
                }
                for pool in &pools {
                    let mut y = vec![f32::NAN; n_rows * n_b];
                    matmul(pool, ty, &w, n_rows, k, &x, n_b, &mut y).unwrap();
                    for (i, (g, e)) in y.iter().zip(&want).enumerate() {
                        assert!(
                            (g - e).abs() <= tol[i],
                            "{ty} {n_rows}x{k} n_b={n_b} t={}: y[{i}] = {g}, want {e}",
                            pool.n_threads()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn matmul_many_equals_separate_matmuls_bit_for_bit() {
        let mut rng = Rng::new(9);
        let k = 512;
        // Mixed activation formats (Q8_0, Q8_1, Q8_K) and one shared (Q4_0 and Q8_0).
        let types = [
            GgmlType::Q4_0,
            GgmlType::Q8_0,
            GgmlType::Q4_1,
            GgmlType::Q4_K,
        ];
        let rows = [19, 33, 8, 40];
        let ws: Vec<Vec<u8>> = types
            .iter()
            .zip(rows)
            .map(|(&ty, n)| {
                (0..n)
                    .flat_map(|_| random_weights(&mut rng, ty, k))
                    .collect()
            })
            .collect();
        for threads in 1..=3 {
            let pool = ThreadPool::new(threads);
            for n_b in [1, 2, 5] {
                for n_p in 1..=4 {
                    let x: Vec<f32> = (0..n_b).flat_map(|_| random_acts(&mut rng, k)).collect();
                    let mut want: Vec<Vec<f32>> = Vec::new();
                    for i in 0..n_p {
                        let mut y = vec![0f32; n_b * rows[i]];
                        matmul(&pool, types[i], &ws[i], rows[i], k, &x, n_b, &mut y).unwrap();
                        want.push(y);
                    }
                    let mut got: Vec<Vec<f32>> =
                        (0..n_p).map(|i| vec![f32::NAN; n_b * rows[i]]).collect();
                    let mut products: Vec<Product<'_>> = got
                        .iter_mut()
                        .enumerate()
                        .map(|(i, y)| Product {
                            ty: types[i],
                            packed: false,
                            w: &ws[i],
                            n_rows: rows[i],
                            y,
                        })
                        .collect();
                    matmul_many(&pool, k, &x, n_b, &mut products).unwrap();
                    assert_eq!(got, want, "threads={threads} n_b={n_b} products={n_p}");
                }
            }
        }
    }

    #[test]
    fn packed_weights_give_the_unpacked_results() {
        // Every path: one row, tiles, leftovers, the GEMM (n_b >= 8) and the batch-invariant
        // row kernels; rows of 18 blocks end in a short group, rows of 3 k-quant blocks are
        // padded to 4. The packed kernels
        // sum in their own order (within rounding of the ggml-layout ones), the GEMM unpacks
        // (bit for bit), and under `BatchInvariant` each row of a batch equals that row run
        // alone, to the bit.
        let mut rng = Rng::new(10);
        let pool = ThreadPool::new(2);
        for ty in crate::repack::PACKED_TYPES {
            let sc = kernel_for(ty, Isa::Scalar).unwrap();
            let shapes: &[(usize, usize)] = if ty.block_size() == 256 {
                &[(768, 37), (512, 16)]
            } else {
                &[(576, 37), (256, 16)]
            };
            for &(k, n_rows) in shapes {
                let w: Vec<u8> = (0..n_rows)
                    .flat_map(|_| random_weights(&mut rng, ty, k))
                    .collect();
                let rb = w.len() / n_rows;
                let mut pw = vec![0u8; n_rows * crate::repack::packed_row_bytes(ty, k).unwrap()];
                crate::repack::pack_rows(ty, k, &w, &mut pw);
                for n_b in [1, 2, 5, 9, 16] {
                    let x: Vec<f32> = (0..n_b).flat_map(|_| random_acts(&mut rng, k)).collect();
                    let mut alone = vec![0f32; n_b * n_rows];
                    for b in 0..n_b {
                        let y = &mut alone[b * n_rows..(b + 1) * n_rows];
                        let x = &x[b * k..(b + 1) * k];
                        matmul_packed(&pool, ty, &pw, n_rows, k, x, 1, y).unwrap();
                    }
                    for invariant in [false, true] {
                        let _guard = invariant.then(BatchInvariant::enter);
                        let what = format!("{ty} k={k} n_b={n_b} invariant={invariant}");
                        let mut want = vec![0f32; n_b * n_rows];
                        let mut got = vec![f32::NAN; n_b * n_rows];
                        matmul(&pool, ty, &w, n_rows, k, &x, n_b, &mut want).unwrap();
                        matmul_packed(&pool, ty, &pw, n_rows, k, &x, n_b, &mut got).unwrap();
                        if n_b >= GEMM_MIN_BATCH && !invariant && crate::gemm::available() {
                            assert_eq!(got, want, "{what}");
                            continue;
                        }
                        if invariant {
                            assert_eq!(got, alone, "{what}: batched vs alone");
                        }
                        for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                            let (b, r) = (i / n_rows, i % n_rows);
                            let mut a = vec![0u8; sc.act.row_bytes(k).unwrap()];
                            kernels::quantize_row(sc.act, &x[b * k..(b + 1) * k], &mut a);
                            let tol = 1e-5 * magnitude(&sc, &w[r * rb..(r + 1) * rb], &a) + 1e-6;
                            assert!((g - e).abs() <= tol, "{what}: y[{i}] = {g}, want {e}");
                        }
                    }
                    // Fused with an unpacked product of another type: as run alone.
                    let w2: Vec<u8> = (0..8)
                        .flat_map(|_| random_weights(&mut rng, GgmlType::Q4_1, k))
                        .collect();
                    let (mut y1, mut y2) = (vec![0f32; n_b * n_rows], vec![0f32; n_b * 8]);
                    let mut products = [
                        Product {
                            ty,
                            packed: true,
                            w: &pw,
                            n_rows,
                            y: &mut y1,
                        },
                        Product {
                            ty: GgmlType::Q4_1,
                            packed: false,
                            w: &w2,
                            n_rows: 8,
                            y: &mut y2,
                        },
                    ];
                    matmul_many(&pool, k, &x, n_b, &mut products).unwrap();
                    let mut want = vec![0f32; n_b * n_rows];
                    matmul_packed(&pool, ty, &pw, n_rows, k, &x, n_b, &mut want).unwrap();
                    assert_eq!(y1, want, "{ty} k={k} n_b={n_b} fused");
                }
            }
        }
    }

    #[test]
    fn invariant_routes_give_each_row_its_result_alone() {
        // Under `with_gemm_rows(p)` the first p rows of a batch must get the GEMM's bits for
        // that row alone, the others the row kernels' bits for that row alone, whatever the
        // batch size, the split and the thread count. Where the CPU has the GEMM, the two
        // routes must really differ (else this test could not see a row take the wrong one).
        let mut rng = Rng::new(12);
        let n_rows = 37;
        let pools: Vec<ThreadPool> = [1, 2].into_iter().map(ThreadPool::new).collect();
        let mut cases: Vec<(GgmlType, bool)> = [GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4_K]
            .into_iter()
            .map(|ty| (ty, false))
            .collect();
        cases.extend(crate::repack::PACKED_TYPES.into_iter().map(|ty| (ty, true)));
        // Row lengths: whole packed groups, and (576: 18 blocks; 768: 3 k-blocks) a short or
        // padded last group with a group count that is not a multiple of 16.
        let cases = cases.into_iter().flat_map(|(ty, packed)| {
            let odd = if ty.block_size() == 256 { 768 } else { 576 };
            [(ty, packed, 512), (ty, packed, odd)]
        });
        for (ty, packed, k) in cases {
            let w: Vec<u8> = (0..n_rows)
                .flat_map(|_| random_weights(&mut rng, ty, k))
                .collect();
            let w = if packed {
                let mut pw = vec![0u8; n_rows * crate::repack::packed_row_bytes(ty, k).unwrap()];
                crate::repack::pack_rows(ty, k, &w, &mut pw);
                pw
            } else {
                w
            };
            let product = if packed { matmul_packed } else { matmul };
            // More rows than `gemm::FEW_BELOW`, so that the by-size product below runs the
            // panels themselves and the few-row paths are checked against them.
            let n_max = 20;
            let x: Vec<f32> = (0..n_max).flat_map(|_| random_acts(&mut rng, k)).collect();
            let alone = |gemm: bool| -> Vec<f32> {
                let _route = BatchInvariant::with_gemm_rows(usize::from(gemm));
                let mut y = vec![f32::NAN; n_max * n_rows];
                for (xb, yb) in x.chunks_exact(k).zip(y.chunks_exact_mut(n_rows)) {
                    product(&pools[0], ty, &w, n_rows, k, xb, 1, yb).unwrap();
                }
                y
            };
            let (by_gemm, by_rows) = (alone(true), alone(false));
            let what = format!("{ty} packed={packed} k={k}");
            assert!(n_max >= crate::gemm::FEW_BELOW);
            if crate::gemm::available() && crate::gemm::group_size(ty).is_some() {
                assert_ne!(
                    by_gemm, by_rows,
                    "{what}: the routes should round differently"
                );
                // The invariant GEMM route is the GEMM `ferrite run` uses for prompts.
                let mut y = vec![f32::NAN; n_max * n_rows];
                product(&pools[1], ty, &w, n_rows, k, &x, n_max, &mut y).unwrap();
                assert_eq!(y, by_gemm, "{what}: by size");
            }
            for pool in &pools {
                for (n_b, p) in [(1, 0), (1, 1), (3, 1), (3, 3), (9, 0), (12, 5), (12, 12)] {
                    let _route = BatchInvariant::with_gemm_rows(p);
                    let mut y = vec![f32::NAN; n_b * n_rows];
                    product(pool, ty, &w, n_rows, k, &x[..n_b * k], n_b, &mut y).unwrap();
                    for (b, got) in y.chunks_exact(n_rows).enumerate() {
                        let want = if b < p { &by_gemm } else { &by_rows };
                        assert_eq!(
                            got,
                            &want[b * n_rows..(b + 1) * n_rows],
                            "{what} n_b={n_b} gemm_rows={p} threads={} row {b}",
                            pool.n_threads()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn paired_rows_give_each_row_its_one_row_result() {
        // Matrices large enough that generation reads two rows half a matrix apart per pass
        // (`RowJob::half`), with an odd row count and a last slab shorter than the others:
        // every output must be the packed kernel's one-row dot product, to the bit, on one
        // thread and two, alone and fused.
        let mut rng = Rng::new(11);
        for ty in crate::repack::PACKED_TYPES {
            let Some(kern) = crate::kernels::packed_kernel(ty).filter(|k| k.pairs_rows()) else {
                continue;
            };
            let k = 512;
            let rb = crate::repack::packed_row_bytes(ty, k).unwrap();
            let n_rows = 2 * PAIR_MIN_DISTANCE.div_ceil(rb) + 2 * (CHUNK_ROWS / 2) + 5;
            let w: Vec<u8> = (0..n_rows)
                .flat_map(|_| random_weights(&mut rng, ty, k))
                .collect();
            let mut pw = vec![0u8; n_rows * rb];
            crate::repack::pack_rows(ty, k, &w, &mut pw);
            let x = random_acts(&mut rng, k);
            let mut a = vec![0u8; kern.act.row_bytes(k).unwrap()];
            kernels::quantize_row(kern.act, &x, &mut a);
            let want: Vec<f32> = pw.chunks_exact(rb).map(|r| kern.dot(r, &a)).collect();
            let job = RowJob {
                kern,
                w: &pw,
                row_bytes: rb,
                n_rows,
                acts: &a,
                act_bytes: a.len(),
                n_b: 1,
                out: SharedMut(std::ptr::null_mut()),
            };
            assert_eq!(job.half(), Some(n_rows / 2), "{ty}: rows are paired");
            for threads in [1, 2] {
                let pool = ThreadPool::new(threads);
                let mut got = vec![f32::NAN; n_rows];
                matmul_packed(&pool, ty, &pw, n_rows, k, &x, 1, &mut got).unwrap();
                for (r, (g, e)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(g.to_bits(), e.to_bits(), "{ty} {threads} threads row {r}");
                }
                let mut fused = vec![f32::NAN; n_rows];
                let mut products = [Product {
                    ty,
                    packed: true,
                    w: &pw,
                    n_rows,
                    y: &mut fused,
                }];
                matmul_many(&pool, k, &x, 1, &mut products).unwrap();
                assert_eq!(fused, got, "{ty} {threads} threads fused");
            }
        }
    }

    #[test]
    fn types_without_kernel_fall_back_to_dequantization() {
        // IQ4_NL has a kernel; Q8_1 weights do not (a format only used for activations).
        let pool = ThreadPool::new(2);
        let k = 32;
        let mut w = vec![0u8; 36];
        w[..2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        for (i, q) in w[4..].iter_mut().enumerate() {
            *q = i as u8;
        }
        let x = vec![1.0f32; k];
        let mut y = [0f32];
        matmul(&pool, GgmlType::Q8_1, &w, 1, k, &x, 1, &mut y).unwrap();
        assert_eq!(y[0], 0.5 * (0..32).sum::<i32>() as f32);
    }

    #[test]
    fn wrong_k_is_an_error() {
        let pool = ThreadPool::new(1);
        let r = matmul(&pool, GgmlType::Q4_0, &[], 0, 33, &[], 0, &mut []);
        assert!(matches!(r, Err(QuantError::NotBlockMultiple { .. })));
    }
}
