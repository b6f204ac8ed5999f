//! Model weights as views into the (memory-mapped) GGUF file.
//!
//! A [`Weight`] holds the file (`Arc`) and a byte range: the stored, possibly quantized bytes are
//! handed straight to the matmul kernels, so a model costs its file size in memory and nothing
//! is ever dequantized wholesale. Only 1-D vectors (norm weights, biases) are converted to f32
//! at load time, because they are tiny and used element-wise.
//!
//! Matrices the forward pass multiplies with are the exception: [`Tensors::matrix`] copies
//! them out of the mapping once at load, into one region per model (`WeightArena`) backed
//! by huge pages where the OS has them, laid out in the order the model loads them (which
//! is the order generation reads them), and drops the mapping's pages of the original
//! ([`GgufFile::release_tensor_pages`]), so memory stays one copy of the model. Generation
//! streams every weight once per token: from the file's 4 KiB pages that is a TLB miss
//! every 4 KiB and a new prefetch stream per matrix. Matrices of the types whose fastest
//! kernels read a packed layout on this CPU ([`ferrite_quant::repack`]: Q4_0, Q4_1, Q5_0,
//! Q8_0, Q4_K and Q6_K with AVX-512 VNNI, whose packed kernels stream 1.6-2.1× more bytes
//! per second) are packed as they are copied, into the same number of bytes; the others keep
//! the file's bytes. Files read into memory (`--no-mmap`) are used in place: there the
//! original could not be dropped. `FERRITE_REPACK=0` copies without packing and
//! `FERRITE_COPY=0` leaves matrices in the mapping, for comparisons.

use std::ops::Range;
use std::sync::Arc;

use ferrite_gguf::{GgmlType, GgufFile, TensorInfo};
use ferrite_quant::kernels;
use ferrite_quant::matmul::{
    matmul, matmul_many, matmul_packed, Product, ThreadPool, MAX_PRODUCTS,
};

use crate::error::{Error, Result};
use crate::ops::act_quant;

/// A 2-D weight matrix of `n_rows` rows of `k` elements (ggml dims `[k, n_rows]`), stored in
/// the file's type.
#[derive(Clone)]
pub struct Weight {
    file: Arc<GgufFile>,
    info: TensorInfo,
    /// The rows in this weight: bytes of the tensor's data, or of `copy` when set.
    range: Range<usize>,
    /// The memory holding this tensor's copy out of the file ([`Tensors::matrix`]), when
    /// it has one; `range` is then the tensor's bytes within it.
    copy: Option<Arc<WeightRegion>>,
    /// Whether the copy is packed for the kernels ([`ferrite_quant::repack`]) rather than
    /// the file's bytes.
    packed: bool,
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

    /// The bytes of this matrix as the kernels read them: the file's (zero-copy), or its
    /// copy (packed rows where [`Weight::is_packed`]).
    pub fn bytes(&self) -> &[u8] {
        match &self.copy {
            Some(p) => p.slice(self.range.clone()),
            None => &self.file.tensor_data(&self.info)[self.range.clone()],
        }
    }

    /// Whether the rows are packed ([`ferrite_quant::repack`]) rather than the file's.
    pub fn is_packed(&self) -> bool {
        self.packed
    }

    fn row_bytes(&self) -> usize {
        // Validated when the weight was made (and packing keeps whole blocks).
        let bytes = if self.packed {
            ferrite_quant::repack::packed_row_bytes(self.ty, self.k)
        } else {
            self.ty.row_bytes(self.k as u64).map(|b| b as usize)
        };
        bytes.unwrap_or(0)
    }

    /// This weight copied out of the file into `arena`, with its rows packed for the
    /// kernels where that pays on this CPU (see the module docs); itself where the file
    /// was read into memory or copying is off. Copies the whole tensor, so call it before
    /// [`Weight::rows`].
    fn copied_into(self, arena: &WeightArena) -> Weight {
        use ferrite_quant::repack;
        let whole = self.range == (0..self.info.n_bytes as usize);
        if self.copy.is_some() || !whole || !self.file.is_mapped() || !copying_on() {
            return self;
        }
        let (ty, k) = (self.ty, self.k);
        let packed_row_bytes =
            repack::packed_row_bytes(ty, k).filter(|_| repack::worth_packing(ty));
        let src = self.bytes();
        let release = |done: Range<usize>| self.file.release_tensor_range(&self.info, done);
        let (region, range) = match packed_row_bytes {
            Some(prb) => arena.copy(&self.file, self.n_rows * prb, |dst| {
                pack_in_parallel(ty, k, src, dst, prb, &release)
            }),
            None => arena.copy(&self.file, src.len(), |dst| {
                for (i, (from, to)) in src
                    .chunks(RELEASE_EVERY)
                    .zip(dst.chunks_mut(RELEASE_EVERY))
                    .enumerate()
                {
                    to.copy_from_slice(from);
                    release(i * RELEASE_EVERY..(i + 1) * RELEASE_EVERY);
                }
            }),
        };
        self.file.release_tensor_pages(&self.info);
        Weight {
            range,
            copy: Some(region),
            packed: packed_row_bytes.is_some(),
            ..self
        }
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
        let product = if self.packed { matmul_packed } else { matmul };
        product(pool, self.ty, self.bytes(), self.n_rows, self.k, x, n_b, y).map_err(|error| {
            Error::Quant {
                name: self.info.name.clone(),
                error,
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
                packed: w.packed,
                w: w.bytes(),
                n_rows: w.n_rows,
                y,
            })
            .collect();
        matmul_many(pool, first.k, x, n_b, &mut products).map_err(|error| Error::Quant {
            name: first.info.name.clone(),
            error,
        })
    }

    /// Dequantizes row `r` into `out` (`k` elements): embedding lookups.
    pub fn row(&self, r: usize, out: &mut [f32]) -> Result<()> {
        let rb = self.row_bytes();
        let mut bytes = &self.bytes()[r * rb..(r + 1) * rb];
        let unpacked: Vec<u8>;
        if self.packed {
            let mut row = vec![0u8; self.ty.row_bytes(self.k as u64).unwrap_or(0) as usize];
            ferrite_quant::repack::unpack_row(self.ty, bytes, &mut row);
            unpacked = row;
            bytes = &unpacked;
        }
        ferrite_quant::dequantize(self.ty, bytes, out).map_err(|error| Error::Quant {
            name: self.info.name.clone(),
            error,
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

/// Memory for copied matrices: an anonymous map whose start is 2 MiB-aligned and advised for
/// transparent huge pages. Generation streams every weight once per token; with 4 KiB pages
/// that is a TLB miss every 4 KiB, and with huge pages one every 2 MiB.
///
/// Tensors are written into it once, each into its own range, before any [`Weight`] reads
/// that range ([`WeightArena::copy`]), so it hands out raw pointers ([`memmap2::MmapRaw`])
/// rather than one slice of the whole map, which later copies would alias.
pub(crate) struct WeightRegion {
    map: memmap2::MmapRaw,
    start: usize,
    len: usize,
}

impl WeightRegion {
    const HUGE_PAGE: usize = 2 << 20;

    fn zeroed(len: usize) -> WeightRegion {
        let huge = len >= Self::HUGE_PAGE;
        let slack = if huge { Self::HUGE_PAGE } else { 0 };
        let Ok(map) = memmap2::MmapMut::map_anon((len + slack).max(1)) else {
            // Out of address space: fail as a Vec would (the allocation error handler).
            std::alloc::handle_alloc_error(std::alloc::Layout::from_size_align(len, 1).unwrap())
        };
        let map = memmap2::MmapRaw::from(map);
        let start = if huge {
            (map.as_ptr() as usize).next_multiple_of(Self::HUGE_PAGE) - map.as_ptr() as usize
        } else {
            0
        };
        #[cfg(target_os = "linux")]
        if huge {
            // Only whole huge pages: a huge page for the tail would be mostly unused memory.
            // Advice only: without THP support the map simply keeps small pages.
            let whole = len / Self::HUGE_PAGE * Self::HUGE_PAGE;
            let _ = map.advise_range(memmap2::Advice::HugePage, start, whole);
        }
        WeightRegion { map, start, len }
    }

    /// The bytes of `range`, which [`WeightArena::copy`] has written and handed out.
    fn slice(&self, range: Range<usize>) -> &[u8] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: the range lies inside the map (checked above; `start + len` is within it
        // by construction), which lives as long as `self`. Only `WeightArena::copy` writes
        // to the map, each range once and before the range is handed out, so nothing
        // writes these bytes while the slice lives.
        unsafe {
            std::slice::from_raw_parts(self.map.as_ptr().add(self.start + range.start), range.len())
        }
    }
}

/// Where one model's matrices are copied to ([`Weight::copied_into`]): carved one after
/// another, in load order, from a single [`WeightRegion`] sized at the first copy for every
/// matrix the file holds. One region instead of one map per matrix gives matrices smaller
/// than a huge page (all of SmolLM2's) huge pages too, and lays each layer's matrices out
/// in the order generation reads them, so the stream from memory runs on across matrices.
/// Measured with `scripts/ab.sh -k 4`, tg64, 1 and 2 threads: packed SmolLM2 Q4_0
/// 1.13× / 1.10× and Q8_0 1.20× / 1.02× against a map per matrix; Q4_1 (unpacked) 1.08× /
/// 1.03× against the file's mapping; the 1.1B models, already on huge pages, unchanged.
/// A matrix that does not fit (none should) gets a region of its own.
pub(crate) struct WeightArena {
    next: std::sync::Mutex<Option<(Arc<WeightRegion>, usize)>>,
}

impl WeightArena {
    /// Each matrix starts on a cache line.
    const ALIGN: usize = 64;

    fn new() -> WeightArena {
        WeightArena {
            next: std::sync::Mutex::new(None),
        }
    }

    /// Bytes for every matrix of `file` that [`Weight::copied_into`] could copy.
    fn capacity(file: &GgufFile) -> usize {
        use ferrite_quant::repack;
        file.tensors()
            .iter()
            .filter(|t| t.dims.len() >= 2)
            .filter_map(|t| {
                let k = usize::try_from(t.dims[0]).ok()?;
                let rows = usize::try_from(t.dims.iter().skip(1).product::<u64>()).ok()?;
                let bytes = match repack::packed_row_bytes(t.ty, k) {
                    Some(prb) if repack::worth_packing(t.ty) => prb.checked_mul(rows)?,
                    _ => usize::try_from(t.n_bytes).ok()?,
                };
                bytes.checked_next_multiple_of(Self::ALIGN)
            })
            .fold(0usize, usize::saturating_add)
    }

    /// `len` bytes of this arena (of `file`'s capacity), filled by `write`: where they are.
    fn copy(
        &self,
        file: &GgufFile,
        len: usize,
        write: impl FnOnce(&mut [u8]),
    ) -> (Arc<WeightRegion>, Range<usize>) {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let (region, at) = next.get_or_insert_with(|| {
            (
                Arc::new(WeightRegion::zeroed(Self::capacity(file).max(len))),
                0,
            )
        });
        let (region, range) = if region.len - *at >= len {
            let range = *at..*at + len;
            *at = (*at + len).next_multiple_of(Self::ALIGN).min(region.len);
            (region.clone(), range)
        } else {
            (Arc::new(WeightRegion::zeroed(len)), 0..len)
        };
        // SAFETY: `range` lies inside the region's map, and no one else writes or reads it:
        // the arena hands each range out once (under the lock, which is held until the
        // range is written), and no `Weight` holds it before this returns.
        let dst = unsafe {
            std::slice::from_raw_parts_mut(
                region.map.as_mut_ptr().add(region.start + range.start),
                len,
            )
        };
        write(dst);
        (region, range)
    }
}

/// Whether [`Tensors::matrix`] copies matrices out of the file (`FERRITE_COPY=0` leaves
/// them in its mapping, unpacked, for comparisons).
fn copying_on() -> bool {
    std::env::var("FERRITE_COPY").as_deref() != Ok("0")
}

/// Bytes of a tensor copied between releases of the file's pages of what was copied
/// ([`GgufFile::release_tensor_range`]): copying Gemma 3's 170 MiB embedding whole and
/// releasing it after held both copies at once: load peaked at 368 MiB for a 241 MiB file
/// (288 MiB since).
const RELEASE_EVERY: usize = 4 << 20;

/// [`ferrite_quant::repack::pack_rows`] on all cores for large tensors: packing reads the
/// whole model at load and first-touches as much new memory (the kernel zeroes each page),
/// which on one core took ~1 s for a 1.2 GB model. Threads are scoped to the call; the
/// forward pass's pool does not exist yet at load. `release(range)` is called with each
/// range of `src` once it is packed (about [`RELEASE_EVERY`] bytes at a time).
fn pack_in_parallel(
    ty: GgmlType,
    k: usize,
    src: &[u8],
    dst: &mut [u8],
    packed_row_bytes: usize,
    release: &(impl Fn(Range<usize>) + Sync),
) {
    const PER_THREAD: usize = 4 << 20;
    let n_rows = dst.len() / packed_row_bytes;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(dst.len() / PER_THREAD)
        .clamp(1, 8);
    let rows_per = n_rows.div_ceil(threads).max(1);
    let row_bytes = src.len() / n_rows.max(1);
    // Each thread packs its rows a piece at a time and releases each piece's source.
    let pack_run = |first_row: usize, from: &[u8], to: &mut [u8]| {
        let piece_rows = (RELEASE_EVERY / row_bytes.max(1)).max(1);
        for (i, (f, t)) in from
            .chunks(piece_rows * row_bytes)
            .zip(to.chunks_mut(piece_rows * packed_row_bytes))
            .enumerate()
        {
            ferrite_quant::repack::pack_rows(ty, k, f, t);
            let at = (first_row + i * piece_rows) * row_bytes;
            release(at..at + f.len());
        }
    };
    if threads == 1 {
        pack_run(0, src, dst);
        return;
    }
    std::thread::scope(|s| {
        for (i, (from, to)) in src
            .chunks(rows_per * row_bytes)
            .zip(dst.chunks_mut(rows_per * packed_row_bytes))
            .enumerate()
        {
            let pack_run = &pack_run;
            s.spawn(move || pack_run(i * rows_per, from, to));
        }
    });
}

/// Looks tensors up by name in one file, checking shapes.
pub struct Tensors {
    pub file: Arc<GgufFile>,
    /// Where [`Tensors::matrix`] packs matrices.
    arena: WeightArena,
}

impl Tensors {
    pub fn new(file: Arc<GgufFile>) -> Tensors {
        Tensors {
            file,
            arena: WeightArena::new(),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.file.tensor(name).is_some()
    }

    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.file
            .tensor(name)
            .ok_or_else(|| Error::MissingTensor(name.to_string()))
    }

    /// A matrix that the forward pass multiplies with: [`Tensors::mapped_matrix`], packed
    /// for the kernels where that pays ([`Tensors::packed`]).
    pub fn matrix(&self, name: &str, k: usize, n_rows: usize) -> Result<Weight> {
        Ok(self.packed(self.mapped_matrix(name, k, n_rows)?))
    }

    /// `w`, a whole matrix of this file, with its rows packed for the kernels where that
    /// pays on this CPU (see the module docs); otherwise `w` itself. Matrices packed through
    /// one `Tensors` share its memory, laid out in the order they were packed.
    pub fn packed(&self, w: Weight) -> Weight {
        w.copied_into(&self.arena)
    }

    /// A matrix with ggml dims `[k, n_rows]` (a 3-D tensor `[k, n_rows, n]` is accepted when
    /// `n_rows` is given as the product), as the file stores it: for row lookups
    /// (embeddings), which touch a few rows and need no packing.
    pub fn mapped_matrix(&self, name: &str, k: usize, n_rows: usize) -> Result<Weight> {
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
            copy: None,
            packed: false,
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
            |error| Error::Quant {
                name: name.to_string(),
                error,
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

#[cfg(test)]
mod tests {
    use super::*;
    use ferrite_gguf::OpenOptions;

    /// A tiny llama from `../shared/reference/tiny` in `ty`, mapped or read into memory.
    fn tiny(ty: &str, mmap: bool) -> Tensors {
        let path = ferrite_testdata::reference_dir().join(format!("tiny/tiny-llama-{ty}.gguf"));
        let file = GgufFile::open_with(&path, OpenOptions { mmap }).unwrap();
        Tensors::new(Arc::new(file))
    }

    /// Layer 0's FFN up matrix: `(k, n, as mapped, as the forward pass loads it)`.
    fn ffn_up(t: &Tensors) -> (usize, usize, Weight, Weight) {
        let name = "blk.0.ffn_up.weight";
        let dims = t.dims(name).unwrap().to_vec();
        let (k, n) = (dims[0] as usize, dims[1] as usize);
        let mapped = t.mapped_matrix(name, k, n).unwrap();
        (k, n, mapped, t.matrix(name, k, n).unwrap())
    }

    #[test]
    fn matrices_of_unpacked_types_are_copied_as_the_file_stores_them() {
        let pool = ThreadPool::new(2);
        for ty in ["Q4_1", "Q5_K_S", "F16", "IQ2_XS"] {
            let t = tiny(ty, true);
            let (k, n, mapped, w) = ffn_up(&t);
            assert!(w.copy.is_some(), "{ty}: copied out of the file");
            if ferrite_quant::repack::worth_packing(w.ty) {
                continue;
            }
            assert!(!w.is_packed(), "{ty}");
            assert_eq!(w.bytes(), mapped.bytes(), "{ty}: the file's bytes");
            let x: Vec<f32> = (0..k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                .collect();
            let (mut want, mut got) = (vec![0f32; n], vec![0f32; n]);
            mapped.matmul(&pool, &x, 1, &mut want).unwrap();
            w.matmul(&pool, &x, 1, &mut got).unwrap();
            assert_eq!(got, want, "{ty}: the same kernel on the same bytes");
        }
    }

    #[test]
    fn one_files_packed_matrices_share_one_region_in_load_order() {
        let pool = ThreadPool::new(2);
        let t = tiny("Q4_0", true);
        if !ferrite_quant::repack::worth_packing(GgmlType::Q4_0) {
            return; // Nothing is packed on this CPU; the other tests cover the file's rows.
        }
        let names = [
            "blk.0.attn_q.weight",
            "blk.0.attn_k.weight",
            "blk.0.ffn_up.weight",
            "blk.1.ffn_down.weight",
        ];
        let x: Vec<f32> = (0..4096)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let mut region: Option<Arc<WeightRegion>> = None;
        let mut end = 0;
        let mut up_packed_result = None;
        for name in names {
            let dims = t.dims(name).unwrap().to_vec();
            let (k, n) = (dims[0] as usize, dims[1] as usize);
            let mapped = t.mapped_matrix(name, k, n).unwrap();
            let w = t.matrix(name, k, n).unwrap();
            assert!(w.is_packed(), "{name}");
            let p = w.copy.clone().expect("copied");
            let first = region.get_or_insert_with(|| p.clone());
            assert!(Arc::ptr_eq(first, &p), "{name}: in the file's one region");
            assert!(
                w.range.start >= end,
                "{name}: after the matrices packed before it"
            );
            assert_eq!(
                w.range.start % WeightArena::ALIGN,
                0,
                "{name}: on a cache line"
            );
            end = w.range.end;
            let (mut want, mut got) = (vec![0f32; n], vec![0f32; n]);
            mapped.matmul(&pool, &x[..k], 1, &mut want).unwrap();
            w.matmul(&pool, &x[..k], 1, &mut got).unwrap();
            for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                assert!((g - e).abs() <= 1e-4 * (1.0 + e.abs()), "{name} y[{i}]");
            }
            if name == names[2] {
                up_packed_result = Some(got);
            }
        }
        // Packing more than the file holds (a matrix twice) still works, in a region of
        // its own once the file's is full.
        let (k, n) = (
            t.dims(names[2]).unwrap()[0] as usize,
            t.dims(names[2]).unwrap()[1] as usize,
        );
        let again: Vec<Weight> = (0..64)
            .map(|_| t.packed(t.mapped_matrix(names[2], k, n).unwrap()))
            .collect();
        assert!(again
            .iter()
            .any(|w| !Arc::ptr_eq(w.copy.as_ref().unwrap(), region.as_ref().unwrap())));
        // The same bits as the first packing of it, above.
        let want = up_packed_result.expect("ffn_up multiplied above");
        for w in &again {
            let mut got = vec![0f32; n];
            w.matmul(&pool, &x[..k], 1, &mut got).unwrap();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn packed_weights_multiply_and_look_up_like_the_files() {
        let pool = ThreadPool::new(2);
        for ty in ["Q4_0", "Q8_0", "Q4_K_S", "Q6_K"] {
            let t = tiny(ty, true);
            let (k, n, mapped, w) = ffn_up(&t);
            assert_eq!(
                w.is_packed(),
                ferrite_quant::repack::worth_packing(w.ty),
                "{ty}: packed where this CPU's kernels read packed rows"
            );
            // Read into memory: never packed (the original could not be dropped).
            let owned = tiny(ty, false);
            assert!(!owned
                .matrix("blk.0.ffn_up.weight", k, n)
                .unwrap()
                .is_packed());

            let (mut a, mut b) = (vec![0f32; k], vec![0f32; k]);
            for r in [0, n / 2, n - 1] {
                mapped.row(r, &mut a).unwrap();
                w.row(r, &mut b).unwrap();
                assert_eq!(a, b, "{ty} row {r}");
            }
            let x: Vec<f32> = (0..3 * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                .collect();
            for n_b in [1, 3] {
                let (mut want, mut got) = (vec![0f32; n_b * n], vec![0f32; n_b * n]);
                mapped.matmul(&pool, &x[..n_b * k], n_b, &mut want).unwrap();
                w.matmul(&pool, &x[..n_b * k], n_b, &mut got).unwrap();
                for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - e).abs() <= 1e-4 * (1.0 + e.abs()),
                        "{ty} n_b={n_b} y[{i}]"
                    );
                }
                // Rows of a packed weight slice the packed rows.
                let part = w.rows(1, 2);
                let mut y = vec![0f32; n_b * 2];
                part.matmul(&pool, &x[..n_b * k], n_b, &mut y).unwrap();
                for b in 0..n_b {
                    assert_eq!(&y[2 * b..2 * b + 2], &got[b * n + 1..b * n + 3]);
                }
            }
        }
    }
}
