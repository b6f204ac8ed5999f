//! The key/value cache: per layer, the keys and values of every position seen so far, so each
//! new token attends to the past without recomputing it. Stored as f16 by default (half the
//! memory, what llama.cpp does) or f32 on request. Its size is fixed by the context length at
//! creation; a request that would overflow it is an [`Error::ContextFull`], never a silent
//! wrap-around.

use half::f16;
use half::slice::HalfFloatSliceExt;

pub use ferrite_quant::kernels::vec::Elems as KvView;

use crate::error::{Error, Result};

/// Element type of the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvType {
    #[default]
    F16,
    F32,
}

impl std::str::FromStr for KvType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Ok(KvType::F16),
            "f32" => Ok(KvType::F32),
            _ => Err(format!("unknown KV cache type '{s}' (f16 or f32)")),
        }
    }
}

#[derive(Clone, Debug)]
enum Store {
    F16(Vec<f16>),
    F32(Vec<f32>),
}

impl Store {
    fn new(ty: KvType, n: usize) -> Store {
        match ty {
            // From zeroed u16s: `vec![f16::ZERO; n]` writes every element (f16 is not a
            // type the standard library knows to be all-zero bits), touching the whole cache
            // up front; zeroed pages from the allocator cost nothing until used.
            KvType::F16 => Store::F16(half::vec::HalfBitsVecExt::reinterpret_into(vec![0u16; n])),
            KvType::F32 => Store::F32(vec![0.0; n]),
        }
    }

    fn write(&mut self, at: usize, src: &[f32]) {
        match self {
            Store::F16(v) => {
                v[at..at + src.len()].convert_from_f32_slice(src);
            }
            Store::F32(v) => v[at..at + src.len()].copy_from_slice(src),
        }
    }

    /// The first `n` elements in their stored type: attention converts what it reads tile
    /// by tile, instead of the whole context on every layer.
    fn view(&self, n: usize) -> KvView<'_> {
        match self {
            Store::F32(v) => KvView::F32(&v[..n]),
            Store::F16(v) => KvView::F16(&v[..n]),
        }
    }
}

/// Keys and values of every layer for up to `n_ctx` positions.
#[derive(Clone, Debug)]
pub struct KvCache {
    ty: KvType,
    n_ctx: usize,
    dim_k: usize,
    dim_v: usize,
    k: Vec<Store>,
    v: Vec<Store>,
    len: usize,
}

impl KvCache {
    /// A cache for `n_layer` layers of `dim_k`/`dim_v` floats per position (all kv heads).
    pub fn new(ty: KvType, n_layer: usize, n_ctx: usize, dim_k: usize, dim_v: usize) -> Self {
        KvCache {
            ty,
            n_ctx,
            dim_k,
            dim_v,
            k: (0..n_layer)
                .map(|_| Store::new(ty, n_ctx * dim_k))
                .collect(),
            v: (0..n_layer)
                .map(|_| Store::new(ty, n_ctx * dim_v))
                .collect(),
            len: 0,
        }
    }

    pub fn kv_type(&self) -> KvType {
        self.ty
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Capacity in positions.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Bytes allocated.
    pub fn bytes(&self) -> usize {
        let el = match self.ty {
            KvType::F16 => 2,
            KvType::F32 => 4,
        };
        self.k.len() * self.n_ctx * (self.dim_k + self.dim_v) * el
    }

    /// Forgets every position.
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Keeps the first `n` positions (e.g. to rewind to a shared prefix).
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n);
    }

    /// Checks that `n` more positions fit.
    pub fn check_room(&self, n: usize) -> Result<()> {
        if self.len + n > self.n_ctx {
            return Err(Error::ContextFull {
                needed: self.len + n,
                n_ctx: self.n_ctx,
            });
        }
        Ok(())
    }

    /// Stores `[n, dim]` keys and values at positions `pos0..pos0+n` of `layer`.
    pub fn write(&mut self, layer: usize, pos0: usize, k: &[f32], v: &[f32]) {
        self.k[layer].write(pos0 * self.dim_k, k);
        self.v[layer].write(pos0 * self.dim_v, v);
    }

    /// Keys and values of positions `0..n` of `layer` (`[n, dim]` each), as stored.
    pub fn view(&self, layer: usize, n: usize) -> (KvView<'_>, KvView<'_>) {
        (
            self.k[layer].view(n * self.dim_k),
            self.v[layer].view(n * self.dim_v),
        )
    }

    /// Marks `n` more positions as filled (after every layer wrote them).
    pub fn advance(&mut self, n: usize) {
        self.len += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_cache_is_an_error_and_reset_empties() {
        let mut c = KvCache::new(KvType::F16, 1, 4, 2, 2);
        c.check_room(4).unwrap();
        c.advance(3);
        let e = c.check_room(2).unwrap_err();
        assert!(e.to_string().contains("5 tokens needed"), "{e}");
        c.reset();
        assert!(c.is_empty());
    }

    #[test]
    fn f16_round_trips_within_half_precision() {
        for ty in [KvType::F16, KvType::F32] {
            let mut c = KvCache::new(ty, 2, 3, 2, 2);
            c.write(1, 1, &[0.1, 2.0], &[3.0, -4.5]);
            let f32s = |e: KvView<'_>| match e {
                KvView::F32(s) => s.to_vec(),
                KvView::F16(s) => s.iter().map(|x| x.to_f32()).collect::<Vec<_>>(),
            };
            let (k, v) = c.view(1, 2);
            assert!(matches!(k, KvView::F16(_)) == (ty == KvType::F16));
            let (k, v) = (f32s(k), f32s(v));
            assert_eq!((k.len(), v.len()), (4, 4));
            assert!((k[2] - 0.1).abs() < 1e-4 && k[3] == 2.0 && v[2] == 3.0 && v[3] == -4.5);
        }
    }
}
