//! Matrix products of stored (possibly quantized) weights with f32 activations: the one entry
//! point the forward pass uses for every weight matrix, so faster kernels and threading can be
//! swapped in underneath without touching the models.
//!
//! A call quantizes the activations once (in parallel for batches) into a reused per-thread
//! buffer, then deals out chunks of weight rows to the pool's threads through an atomic
//! counter (threads that finish early take more, which matters on a shared machine). Within a
//! chunk, prompt batches go [`TILE`] activation rows at a time, so each weight block is
//! decoded once per tile while the chunk's rows stay in L1.

use std::cell::RefCell;

use ferrite_gguf::GgmlType;

use crate::kernels::{self, Kernel, TILE};
use crate::pool::SharedMut;
use crate::{dequantize, QuantError};

pub use crate::pool::ThreadPool;

/// Weight rows per work item: small enough to balance two threads on a 576-row matrix,
/// large enough that the atomic counter is noise.
const CHUNK_ROWS: usize = 16;

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
    let row_bytes = ty.row_bytes(k as u64).ok_or(QuantError::NotBlockMultiple {
        ty,
        n: k,
        block: ty.block_size(),
    })? as usize;
    assert_eq!(w.len(), row_bytes * n_rows, "weight size");
    assert_eq!(x.len(), n_b * k, "activation size");
    assert_eq!(y.len(), n_b * n_rows, "output size");
    if n_rows == 0 || n_b == 0 {
        return Ok(());
    }
    let Some(kern) = kernels::kernel(ty) else {
        return matmul_dequant(ty, w, n_rows, k, x, n_b, y, row_bytes);
    };
    let act_bytes = kern.act.row_bytes(k).ok_or(QuantError::NotBlockMultiple {
        ty,
        n: k,
        block: kern.act.block_size() as u64,
    })?;
    ACT_BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.resize(n_b * act_bytes, 0);
        quantize_acts(pool, kern, x, k, n_b, act_bytes, &mut buf);
        run_rows(pool, kern, w, row_bytes, n_rows, &buf, act_bytes, n_b, y);
    });
    Ok(())
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
    let n_chunks = n_rows.div_ceil(CHUNK_ROWS);
    let out = SharedMut(y.as_mut_ptr());
    let act = |b: usize| &acts[b * act_bytes..(b + 1) * act_bytes];
    pool.run_chunks(n_chunks, |c| {
        let (r0, r1) = (c * CHUNK_ROWS, ((c + 1) * CHUNK_ROWS).min(n_rows));
        let put = |b: usize, r: usize, v: f32| {
            // SAFETY: rows r0..r1 belong to this chunk alone (the counter hands each
            // chunk out once), so no other thread writes y[b * n_rows + r]; the index is
            // in bounds as b < n_b and r < n_rows, and `y` outlives the call.
            unsafe { *out.get().add(b * n_rows + r) = v };
        };
        let mut b = 0;
        while b + TILE <= n_b {
            let a = [act(b), act(b + 1), act(b + 2), act(b + 3)];
            for r in r0..r1 {
                let v = kern.dot_tile(&w[r * row_bytes..(r + 1) * row_bytes], a);
                for (i, v) in v.into_iter().enumerate() {
                    put(b + i, r, v);
                }
            }
            b += TILE;
        }
        for b in b..n_b {
            for r in r0..r1 {
                put(
                    b,
                    r,
                    kern.dot(&w[r * row_bytes..(r + 1) * row_bytes], act(b)),
                );
            }
        }
    });
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
