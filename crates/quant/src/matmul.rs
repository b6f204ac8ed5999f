//! Matrix products of stored (possibly quantized) weights with f32 activations: the one entry
//! point the forward pass uses for every weight matrix, so faster kernels and threading can be
//! swapped in underneath without touching the models.

use ferrite_gguf::GgmlType;

use crate::{dequantize, QuantError};

/// Worker threads for the forward pass. Currently a thread count; the persistent pool lands
/// with the SIMD kernels.
#[derive(Debug, Clone)]
pub struct ThreadPool {
    n_threads: usize,
}

impl ThreadPool {
    pub fn new(n_threads: usize) -> Self {
        ThreadPool {
            n_threads: n_threads.max(1),
        }
    }

    pub fn n_threads(&self) -> usize {
        self.n_threads
    }
}

/// `y[b * n_rows + r] = Σ_i W[r][i] · x[b * k + i]` for `b < n_b`, `r < n_rows`.
///
/// `w` holds `n_rows` rows of `k` elements of type `ty`, contiguous (a GGUF 2-D tensor with
/// `dims = [k, n_rows]`). `x` is `n_b × k` row-major, `y` is `n_b × n_rows` row-major.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    _pool: &ThreadPool,
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
