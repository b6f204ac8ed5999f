//! The key/value cache: per layer, the keys and values of every position seen so far, so each
//! new token attends to the past without recomputing it. Stored as f16 by default (half the
//! memory, what llama.cpp does) or f32 on request. Its size is fixed by the context length at
//! creation; a request that would overflow it is an [`Error::ContextFull`], never a silent
//! wrap-around.
//!
//! Values are stored position after position (`[pos][dim]`), keys the other way round within
//! blocks of [`KEY_BLOCK`] positions (`[block][dim][64]`, see [`KeysView`]): attention for a
//! generated token then reads a run of consecutive keys per element as one vector, scoring
//! 16 keys per instruction, instead of leaving all but one lane of each vector idle. Blocks
//! keep the memory a context touches proportional to its length (a whole `[dim][n_ctx]`
//! plane would touch a page per element row from the first token on).

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

impl KvType {
    /// Bytes of one cached element.
    pub fn elem_bytes(self) -> usize {
        match self {
            KvType::F16 => 2,
            KvType::F32 => 4,
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

    /// Writes the `[n, dim]` rows of `src` as the keys of positions `pos0..pos0 + n` in the
    /// blocked layout of [`KeysView`]. f16 goes through `tmp` (converted as a whole first,
    /// which is vectorised, then scattered).
    fn write_keys(&mut self, pos0: usize, dim: usize, src: &[f32], tmp: &mut Vec<f16>) {
        fn scatter<T: Copy>(dst: &mut [T], src: &[T], pos0: usize, dim: usize) {
            for (t, row) in src.chunks_exact(dim).enumerate() {
                let pos = pos0 + t;
                let base = pos / KEY_BLOCK * dim * KEY_BLOCK + pos % KEY_BLOCK;
                for (d, &x) in row.iter().enumerate() {
                    dst[base + d * KEY_BLOCK] = x;
                }
            }
        }
        match self {
            Store::F16(v) => {
                tmp.resize(src.len(), f16::ZERO);
                tmp.convert_from_f32_slice(src);
                scatter(v, tmp, pos0, dim);
            }
            Store::F32(v) => scatter(v, src, pos0, dim),
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

/// Positions per block of the key layout ([`KeysView`]); attention's key tiles are blocks.
pub const KEY_BLOCK: usize = 64;

/// The keys of one layer as stored, in blocks of [`KEY_BLOCK`] positions, each dim-major:
/// element `d` (of all KV heads' `dim`) of the key at position `j` is
/// `elems[(j / KEY_BLOCK)·dim·KEY_BLOCK + d·KEY_BLOCK + j % KEY_BLOCK]` ([`Self::index`]).
#[derive(Clone, Copy, Debug)]
pub struct KeysView<'a> {
    pub elems: KvView<'a>,
    pub dim: usize,
}

impl KeysView<'_> {
    /// Where element `d` of the key at position `j` is.
    pub fn index(&self, j: usize, d: usize) -> usize {
        j / KEY_BLOCK * self.dim * KEY_BLOCK + d * KEY_BLOCK + j % KEY_BLOCK
    }

    /// Elements the blocks holding positions `0..n` take.
    pub fn len_for(dim: usize, n: usize) -> usize {
        n.div_ceil(KEY_BLOCK) * dim * KEY_BLOCK
    }
}

/// Keys and values of every layer for up to `n_ctx` positions.
#[derive(Clone, Debug)]
pub struct KvCache {
    ty: KvType,
    n_ctx: usize,
    dim_k: usize,
    dim_v: usize,
    /// Per layer `[n_ctx / KEY_BLOCK][dim_k][KEY_BLOCK]` ([`KeysView`]).
    k: Vec<Store>,
    /// Per layer `[n_ctx][dim_v]`.
    v: Vec<Store>,
    len: usize,
    /// Keys converted to f16 before they are scattered into columns.
    tmp: Vec<f16>,
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
                .map(|_| Store::new(ty, KeysView::len_for(dim_k, n_ctx)))
                .collect(),
            v: (0..n_layer)
                .map(|_| Store::new(ty, n_ctx * dim_v))
                .collect(),
            len: 0,
            tmp: Vec::new(),
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
        let el = self.ty.elem_bytes();
        self.k.len() * (KeysView::len_for(self.dim_k, self.n_ctx) + self.n_ctx * self.dim_v) * el
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
    ///
    /// # Panics
    /// If the rows do not fit (`pos0 + n > n_ctx`) or their lengths are not multiples of
    /// the dimensions.
    pub fn write(&mut self, layer: usize, pos0: usize, k: &[f32], v: &[f32]) {
        assert!(k.len().is_multiple_of(self.dim_k) && pos0 + k.len() / self.dim_k <= self.n_ctx);
        self.k[layer].write_keys(pos0, self.dim_k, k, &mut self.tmp);
        self.v[layer].write(pos0 * self.dim_v, v);
    }

    /// Keys and values of positions `0..n` of `layer`, as stored: keys in blocks (see
    /// [`KeysView`]; the last block may hold positions past `n`), values `[n, dim_v]`.
    pub fn view(&self, layer: usize, n: usize) -> (KeysView<'_>, KvView<'_>) {
        let keys = KeysView {
            elems: self.k[layer].view(KeysView::len_for(self.dim_k, n)),
            dim: self.dim_k,
        };
        (keys, self.v[layer].view(n * self.dim_v))
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

    /// Keys land in their blocks at their positions whatever the batch (one write of 70
    /// rows across a block boundary, or one write per row), values row-major; both types.
    #[test]
    fn writes_in_any_batch_land_in_the_stored_layout() {
        for ty in [KvType::F16, KvType::F32] {
            let (dim_k, dim_v, n_ctx, n) = (3, 2, 130, 70);
            let k: Vec<f32> = (0..n * dim_k).map(|i| i as f32).collect();
            let v: Vec<f32> = (0..n * dim_v).map(|i| 1000.0 + i as f32).collect();
            let mut whole = KvCache::new(ty, 1, n_ctx, dim_k, dim_v);
            whole.write(0, 1, &k, &v);
            let mut pieces = KvCache::new(ty, 1, n_ctx, dim_k, dim_v);
            for t in 0..n {
                pieces.write(0, 1 + t, &k[t * dim_k..][..dim_k], &v[t * dim_v..][..dim_v]);
            }
            for c in [&whole, &pieces] {
                let (keys, vals) = c.view(0, 1 + n);
                let f32s = |e: KvView<'_>| match e {
                    KvView::F32(s) => s.to_vec(),
                    KvView::F16(s) => s.iter().map(|x| x.to_f32()).collect::<Vec<_>>(),
                };
                let (kt, vs) = (f32s(keys.elems), f32s(vals));
                assert_eq!(keys.dim, dim_k);
                assert_eq!(kt.len(), 2 * dim_k * KEY_BLOCK);
                // Key at position 1 + t, element d, was k[t·dim_k + d].
                for t in 0..n {
                    for d in 0..dim_k {
                        let at = (1 + t) / 64 * dim_k * 64 + d * 64 + (1 + t) % 64;
                        assert_eq!(keys.index(1 + t, d), at);
                        assert_eq!(kt[at], k[t * dim_k + d], "{ty:?} t{t} d{d}");
                    }
                }
                assert_eq!(&vs[dim_v..], &v[..], "{ty:?}");
            }
        }
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
            assert!(matches!(k.elems, KvView::F16(_)) == (ty == KvType::F16));
            let (i0, i1) = (k.index(1, 0), k.index(1, 1));
            let (k, v) = (f32s(k.elems), f32s(v));
            assert_eq!((k.len(), v.len()), (2 * KEY_BLOCK, 4));
            assert!((k[i0] - 0.1).abs() < 1e-4 && k[i1] == 2.0 && v[2] == 3.0 && v[3] == -4.5);
        }
    }
}
