//! Model weights as views into the (memory-mapped) GGUF file.
//!
//! A [`Weight`] holds the file (`Arc`) and a byte range: the stored, possibly quantized bytes are
//! handed straight to the matmul kernels, so a model costs its file size in memory and nothing
//! is ever dequantized wholesale. Only 1-D vectors (norm weights, biases) are converted to f32
//! at load time, because they are tiny and used element-wise.

use std::ops::Range;
use std::sync::Arc;

use ferrite_gguf::{GgmlType, GgufFile, TensorInfo};
use ferrite_quant::kernels;
use ferrite_quant::matmul::{matmul, matmul_many, Product, ThreadPool, MAX_PRODUCTS};

use crate::error::{Error, Result};
use crate::ops::act_quant;

/// A 2-D weight matrix of `n_rows` rows of `k` elements (ggml dims `[k, n_rows]`), stored in
/// the file's type.
#[derive(Clone)]
pub struct Weight {
    file: Arc<GgufFile>,
    info: TensorInfo,
    range: Range<usize>,
    pub ty: GgmlType,
    pub k: usize,
    pub n_rows: usize,
}

impl std::fmt::Debug for Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Weight({} {} [{}, {}])",
            self.info.name, self.ty, self.k, self.n_rows
        )
    }
}

impl Weight {
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// The stored bytes of this matrix (zero-copy).
    pub fn bytes(&self) -> &[u8] {
        &self.file.tensor_data(&self.info)[self.range.clone()]
    }

    fn row_bytes(&self) -> usize {
        // Validated when the weight was made.
        self.ty.row_bytes(self.k as u64).unwrap_or(0) as usize
    }

    /// `y[n_b × n_rows] = x[n_b × k] · Wᵀ`.
    ///
    /// Types with a dot-product kernel quantize the activations to the grid llama.cpp's CPU
    /// backend multiplies them with inside [`matmul`]. Types without one fall back to an f32
    /// product, so their activations are first rounded to that grid here
    /// ([`crate::ops::act_quant`]) and quantized logits still follow llama.cpp's closely.
    pub fn matmul(&self, pool: &ThreadPool, x: &[f32], n_b: usize, y: &mut [f32]) -> Result<()> {
        let grid = act_quant::grid_for(self.ty);
        let rounded: Vec<f32>;
        let x = if grid == act_quant::ActGrid::F32 || kernels::kernel(self.ty).is_some() {
            x
        } else {
            let mut r = x.to_vec();
            act_quant::round_to_grid(grid, &mut r, self.k);
            rounded = r;
            &rounded
        };
        matmul(pool, self.ty, self.bytes(), self.n_rows, self.k, x, n_b, y).map_err(|source| {
            Error::Quant {
                name: self.info.name.clone(),
                source,
            }
        })
    }

    /// Several matrices with the same input: `outs[i] = x · W_iᵀ`, run as one pool job where
    /// the quant layer can fuse them (see [`matmul_many`]); otherwise one [`Weight::matmul`]
    /// each. Each `outs[i]` must hold `n_b × n_rows` of its weight.
    pub fn matmul_many(
        pool: &ThreadPool,
        x: &[f32],
        n_b: usize,
        outs: &mut [(&Weight, &mut [f32])],
    ) -> Result<()> {
        let fusable = outs.len() <= MAX_PRODUCTS
            && outs
                .iter()
                .all(|(w, _)| w.k == outs[0].0.k && kernels::kernel(w.ty).is_some());
        if !fusable {
            for (w, y) in outs.iter_mut() {
                w.matmul(pool, x, n_b, y)?;
            }
            return Ok(());
        }
        let Some(first) = outs.first().map(|(w, _)| *w) else {
            return Ok(());
        };
        let mut products: Vec<Product<'_>> = outs
            .iter_mut()
            .map(|(w, y)| Product {
                ty: w.ty,
                w: w.bytes(),
                n_rows: w.n_rows,
                y,
            })
            .collect();
        matmul_many(pool, first.k, x, n_b, &mut products).map_err(|source| Error::Quant {
            name: first.info.name.clone(),
            source,
        })
    }

    /// Dequantizes row `r` into `out` (`k` elements): embedding lookups.
    pub fn row(&self, r: usize, out: &mut [f32]) -> Result<()> {
        let rb = self.row_bytes();
        let bytes = &self.bytes()[r * rb..(r + 1) * rb];
        ferrite_quant::dequantize(self.ty, bytes, out).map_err(|source| Error::Quant {
            name: self.info.name.clone(),
            source,
        })
    }

    /// Rows `[start, start + n)` as a weight of their own (a slice of a fused matrix or one
    /// expert of a 3-D expert tensor).
    pub fn rows(&self, start: usize, n: usize) -> Weight {
        let rb = self.row_bytes();
        let base = self.range.start;
        Weight {
            range: base + start * rb..base + (start + n) * rb,
            n_rows: n,
            ..self.clone()
        }
    }
}

/// Looks tensors up by name in one file, checking shapes.
pub struct Tensors {
    pub file: Arc<GgufFile>,
}

impl Tensors {
    pub fn has(&self, name: &str) -> bool {
        self.file.tensor(name).is_some()
    }

    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.file
            .tensor(name)
            .ok_or_else(|| Error::MissingTensor(name.to_string()))
    }

    /// A matrix with ggml dims `[k, n_rows]` (a 3-D tensor `[k, n_rows, n]` is accepted when
    /// `n_rows` is given as the product).
    pub fn matrix(&self, name: &str, k: usize, n_rows: usize) -> Result<Weight> {
        let info = self.info(name)?;
        let rows: u64 = info.dims.iter().skip(1).product();
        if info.dims.first().copied() != Some(k as u64) || rows != n_rows as u64 {
            return Err(Error::TensorShape {
                name: name.to_string(),
                expected: vec![k as u64, n_rows as u64],
                found: info.dims.clone(),
            });
        }
        if info.ty.row_bytes(k as u64).is_none() {
            return Err(Error::Invalid(format!(
                "tensor '{name}': row length {k} is not a multiple of {}'s block size",
                info.ty
            )));
        }
        Ok(Weight {
            file: self.file.clone(),
            range: 0..info.n_bytes as usize,
            ty: info.ty,
            k,
            n_rows,
            info: info.clone(),
        })
    }

    pub fn opt_matrix(&self, name: &str, k: usize, n_rows: usize) -> Result<Option<Weight>> {
        if self.has(name) {
            self.matrix(name, k, n_rows).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A 1-D vector of `n` elements, converted to f32.
    pub fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        let info = self.info(name)?;
        if info.n_elements != n as u64 {
            return Err(Error::TensorShape {
                name: name.to_string(),
                expected: vec![n as u64],
                found: info.dims.clone(),
            });
        }
        let mut out = vec![0f32; n];
        ferrite_quant::dequantize(info.ty, self.file.tensor_data(info), &mut out).map_err(
            |source| Error::Quant {
                name: name.to_string(),
                source,
            },
        )?;
        Ok(out)
    }

    pub fn opt_vector(&self, name: &str, n: usize) -> Result<Option<Vec<f32>>> {
        if self.has(name) {
            self.vector(name, n).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The dims of a tensor, if present.
    pub fn dims(&self, name: &str) -> Option<&[u64]> {
        self.file.tensor(name).map(|t| t.dims.as_slice())
    }
}
