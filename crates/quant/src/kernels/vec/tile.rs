//! Small matrix tiles for tiled (flash-style) attention: a strided `C += A·B` whose `B` rows
//! may be f16 (the KV cache's default type, converted in registers), and one online-softmax
//! step over a tile of scores with a vectorised `exp`.
//!
//! Each has a scalar version (the reference) and AVX2+FMA and AVX-512 versions picked at
//! run time from [`Isa::best`]; on aarch64 the product has a NEON version and the softmax
//! step runs the scalar one.

use half::f16;

use crate::kernels::Isa;

/// A read-only operand stored as f32 or f16 (the element types of the KV cache).
#[derive(Clone, Copy, Debug)]
pub enum Elems<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

impl<'a> Elems<'a> {
    pub fn len(&self) -> usize {
        match self {
            Elems::F32(s) => s.len(),
            Elems::F16(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements from `start` on.
    pub fn slice_from(self, start: usize) -> Elems<'a> {
        match self {
            Elems::F32(s) => Elems::F32(&s[start..]),
            Elems::F16(s) => Elems::F16(&s[start..]),
        }
    }
}

/// `C[i][j] ← C[i][j]·cs[i] + Σ_p A[i·a_rs + p·a_cs] · B[p·ldb + j]` for `i < m`, `j < n`,
/// `p < k`, with `C[i][j]` at `c[i·ldc + j]` and `cs = c_scale` (1 when `None`).
///
/// `A` is read one element at a time (broadcast), so any strides work: row-major, or
/// column-major as a tile of scores stored key-major. `B` rows are contiguous.
///
/// # Panics
/// If an operand is too short for the shapes and strides, or `ldc < n`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_acc(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: Elems<'_>,
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    c_scale: Option<&[f32]>,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(ldc >= n, "gemm_acc: ldc {ldc} < n {n}");
    assert!((m - 1) * ldc + n <= c.len(), "gemm_acc: C too short");
    if k > 0 {
        assert!(
            (m - 1) * a_rs + (k - 1) * a_cs < a.len(),
            "gemm_acc: A too short"
        );
        assert!((k - 1) * ldb + n <= b.len(), "gemm_acc: B too short");
    }
    if let Some(s) = c_scale {
        assert!(s.len() >= m, "gemm_acc: c_scale too short");
    }
    gemm_with(Isa::best(), m, n, k, a, a_rs, a_cs, b, ldb, c, ldc, c_scale);
}

/// [`gemm_acc`] on a given instruction set (checked by the caller).
#[allow(clippy::too_many_arguments)]
fn gemm_with(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: Elems<'_>,
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    c_scale: Option<&[f32]>,
) {
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar && isa.supported() {
        let cs = c_scale.map_or(std::ptr::null(), |s| s.as_ptr());
        let (ap, cp) = (a.as_ptr(), c.as_mut_ptr());
        // SAFETY: the features were detected (`supported`), and the caller checked that
        // every index the shapes and strides reach is inside `a`, `b`, `c` and `c_scale`.
        unsafe {
            match (isa, b) {
                (Isa::Avx512Vnni, Elems::F32(b)) => {
                    x86::gemm512(m, n, k, ap, a_rs, a_cs, b.as_ptr(), ldb, cp, ldc, cs)
                }
                (Isa::Avx512Vnni, Elems::F16(b)) => {
                    x86::gemm512(m, n, k, ap, a_rs, a_cs, b.as_ptr(), ldb, cp, ldc, cs)
                }
                (_, Elems::F32(b)) => {
                    x86::gemm256(m, n, k, ap, a_rs, a_cs, b.as_ptr(), ldb, cp, ldc, cs)
                }
                (_, Elems::F16(b)) => {
                    x86::gemm256(m, n, k, ap, a_rs, a_cs, b.as_ptr(), ldb, cp, ldc, cs)
                }
            }
        }
        return;
    }
    #[cfg(target_arch = "aarch64")]
    if isa != Isa::Scalar && isa.supported() {
        let cs = c_scale.map_or(std::ptr::null(), |s| s.as_ptr());
        let (ap, cp) = (a.as_ptr(), c.as_mut_ptr());
        // SAFETY: NEON is part of every aarch64 CPU, and the caller checked that every
        // index the shapes and strides reach is inside `a`, `b`, `c` and `c_scale`.
        unsafe {
            match b {
                Elems::F32(b) => neon::gemm(m, n, k, ap, a_rs, a_cs, b.as_ptr(), ldb, cp, ldc, cs),
                Elems::F16(b) => neon::gemm(m, n, k, ap, a_rs, a_cs, b.as_ptr(), ldb, cp, ldc, cs),
            }
        }
        return;
    }
    let _ = isa;
    gemm_scalar(m, n, k, a, a_rs, a_cs, b, ldb, c, ldc, c_scale)
}

/// Steps of `k` summed into a fresh accumulator before joining the running one: a score is a
/// sum of up to 256 products of sizeable numbers, and one long f32 chain lost ~5x the
/// precision of a split sum (enough to move a gemma logit by 1 nat at a sensitive position).
const KB: usize = 16;

#[allow(clippy::too_many_arguments)]
fn gemm_scalar(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: Elems<'_>,
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    c_scale: Option<&[f32]>,
) {
    let b_at = |i: usize| match b {
        Elems::F32(b) => b[i],
        Elems::F16(b) => b[i].to_f32(),
    };
    // Columns in stack-sized pieces: this is the hot loop where there is no SIMD version.
    const COLS: usize = 64;
    let mut blk = [0f32; COLS];
    for i in 0..m {
        let row = &mut c[i * ldc..i * ldc + n];
        if let Some(s) = c_scale {
            row.iter_mut().for_each(|x| *x *= s[i]);
        }
        for (piece, out) in row.chunks_mut(COLS).enumerate() {
            let j0 = piece * COLS;
            let blk = &mut blk[..out.len()];
            // The SIMD versions' order of operations, so that all agree to the bit.
            for p0 in (0..k).step_by(KB) {
                blk.fill(0.0);
                for p in p0..(p0 + KB).min(k) {
                    let av = a[i * a_rs + p * a_cs];
                    for (j, o) in blk.iter_mut().enumerate() {
                        *o = av.mul_add(b_at(p * ldb + j0 + j), *o);
                    }
                }
                out.iter_mut().zip(&*blk).for_each(|(o, &x)| *o += x);
            }
        }
    }
}

/// One online-softmax step over a tile of scores `s[j·r + c]` (key `j < nk`, query row
/// `c < r`). For each row `c`, with `m' = max(m[c], max_j s[j][c])`:
/// `s[j][c] ← exp(s[j][c] − m')`, `alpha[c] ← exp(m[c] − m')`,
/// `l[c] ← l[c]·alpha[c] + Σ_j s[j][c]`, `m[c] ← m'`.
///
/// Masked scores are `−∞` and become 0. A row whose every score so far is `−∞` keeps
/// `m = −∞`, gets zeros and `alpha = 1`. The SIMD versions use a polynomial `exp` within
/// about 1 ulp of the true value (see the tests); the scalar one uses `f32::exp`.
///
/// # Panics
/// If `s` holds fewer than `nk·r` scores or `m`, `l`, `alpha` fewer than `r`.
pub fn softmax_tile(
    s: &mut [f32],
    nk: usize,
    r: usize,
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
) {
    assert!(s.len() >= nk * r, "softmax_tile: scores too short");
    assert!(m.len() >= r && l.len() >= r && alpha.len() >= r);
    let s = &mut s[..nk * r];
    softmax_with(Isa::best(), s, nk, r, Scores::KeyMajor, m, l, alpha)
}

/// [`softmax_tile`] for scores laid out the other way, one query row after another:
/// `s[c·ld + j]` (row `c < r`, key `j < nk ≤ ld`). Every result is bit-identical to what
/// [`softmax_tile`] gives for the same scores on the same CPU, so a caller may pick either
/// layout per call: this one vectorises along keys, for tiles with few query rows (one
/// generated token), where lanes along rows would sit mostly idle.
///
/// # Panics
/// If `s` holds fewer than `(r − 1)·ld + nk` scores, `ld < nk`, or `m`, `l`, `alpha`
/// fewer than `r`.
pub fn softmax_rows(
    s: &mut [f32],
    nk: usize,
    r: usize,
    ld: usize,
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
) {
    if r == 0 {
        return;
    }
    assert!(
        ld >= nk && s.len() >= (r - 1) * ld + nk,
        "softmax_rows: scores too short"
    );
    assert!(m.len() >= r && l.len() >= r && alpha.len() >= r);
    softmax_with(Isa::best(), s, nk, r, Scores::RowMajor { ld }, m, l, alpha)
}

/// How a tile of scores is laid out: key-major (`s[j·r + c]`, [`softmax_tile`]) or
/// row-major with `ld` scores per row (`s[c·ld + j]`, [`softmax_rows`]).
#[derive(Clone, Copy)]
enum Scores {
    KeyMajor,
    RowMajor { ld: usize },
}

/// Both layouts' online-softmax step on a given instruction set (checked by the caller).
#[allow(clippy::too_many_arguments)]
fn softmax_with(
    isa: Isa,
    s: &mut [f32],
    nk: usize,
    r: usize,
    layout: Scores,
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar && isa.supported() {
        let (sp, mp, lp, ap) = (
            s.as_mut_ptr(),
            m.as_mut_ptr(),
            l.as_mut_ptr(),
            alpha.as_mut_ptr(),
        );
        let wide = isa == Isa::Avx512Vnni;
        // SAFETY: features detected; the public entry points checked that `s` holds every
        // score the layout reaches and `m`, `l`, `alpha` at least `r` values.
        unsafe {
            match (layout, wide) {
                (Scores::KeyMajor, true) => x86::softmax512(sp, nk, r, mp, lp, ap),
                (Scores::KeyMajor, false) => x86::softmax256(sp, nk, r, mp, lp, ap),
                (Scores::RowMajor { ld }, true) => x86::softmax_rows512(sp, nk, r, ld, mp, lp, ap),
                (Scores::RowMajor { ld }, false) => x86::softmax_rows256(sp, nk, r, ld, mp, lp, ap),
            }
        }
        return;
    }
    let _ = isa;
    match layout {
        Scores::KeyMajor => softmax_strided(s, nk, r, r, 1, m, l, alpha),
        Scores::RowMajor { ld } => softmax_strided(s, nk, r, 1, ld, m, l, alpha),
    }
}

/// The online-softmax step with score `(j, c)` at `s[j·js + c·cs]`, in scalar code.
#[allow(clippy::too_many_arguments)]
fn softmax_strided(
    s: &mut [f32],
    nk: usize,
    r: usize,
    js: usize,
    cs: usize,
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
) {
    for c in 0..r {
        let mut mx = m[c];
        for j in 0..nk {
            mx = mx.max(s[j * js + c * cs]);
        }
        if mx == f32::NEG_INFINITY {
            alpha[c] = 1.0;
            for j in 0..nk {
                s[j * js + c * cs] = 0.0;
            }
            continue;
        }
        let a = (m[c] - mx).exp();
        let mut sum = 0.0;
        for j in 0..nk {
            let e = (s[j * js + c * cs] - mx).exp();
            s[j * js + c * cs] = e;
            sum += e;
        }
        alpha[c] = a;
        l[c] = l[c] * a + sum;
        m[c] = mx;
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use std::arch::x86_64::*;

    use half::f16;

    // Cephes' single-precision exp: e^x = 2^n · e^r with n = round(x·log2 e) and
    // |r| ≤ ln2/2, ln 2 split in two so that r is exact, e^r = 1 + r + r²·P(r).
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ];

    use super::KB;

    /// A row of `B`, 16 lanes at a time, as f32.
    pub(super) trait Load512: Copy {
        unsafe fn load(p: *const Self, mask: __mmask16) -> __m512;
    }

    impl Load512 for f32 {
        #[inline(always)]
        unsafe fn load(p: *const f32, mask: __mmask16) -> __m512 {
            _mm512_maskz_loadu_ps(mask, p)
        }
    }

    impl Load512 for f16 {
        #[inline(always)]
        unsafe fn load(p: *const f16, mask: __mmask16) -> __m512 {
            _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p as *const i16))
        }
    }

    /// 8 lanes at a time.
    pub(super) trait Load256: Copy {
        unsafe fn load(p: *const Self) -> __m256;
        /// The first `n < 8` lanes from `p`, the rest 0 (AVX2 has no masked 16-bit load,
        /// so through a copy; only the last column vector of a tile takes this path).
        #[inline(always)]
        unsafe fn load_first(p: *const Self, n: usize) -> __m256 {
            let mut buf = [std::mem::zeroed::<Self>(); 8];
            std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), n);
            Self::load(buf.as_ptr())
        }
    }

    impl Load256 for f32 {
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            _mm256_loadu_ps(p)
        }
    }

    impl Load256 for f16 {
        #[inline(always)]
        unsafe fn load(p: *const f16) -> __m256 {
            _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
        }
    }

    #[inline(always)]
    fn mask16(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as u16
        }
    }

    /// `R` rows × `W` 16-lane column vectors of `C` (masks `mk[w]` for the columns).
    ///
    /// Callers guarantee AVX-512 F/BW/VL, and that rows `0..R` of `A`/`C` and rows `0..k`
    /// of `B` are in bounds for the masked columns.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn micro512<T: Load512, const R: usize, const W: usize>(
        k: usize,
        a: *const f32,
        a_rs: usize,
        a_cs: usize,
        b: *const T,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        cs: *const f32,
        mk: [__mmask16; 2],
    ) {
        let mut acc = [[_mm512_setzero_ps(); W]; R];
        for (r, row) in acc.iter_mut().enumerate() {
            let s = if cs.is_null() {
                None
            } else {
                Some(_mm512_set1_ps(*cs.add(r)))
            };
            for (w, v) in row.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_ps(mk[w], c.add(r * ldc + 16 * w));
                if let Some(s) = s {
                    *v = _mm512_mul_ps(*v, s);
                }
            }
        }
        let mut p0 = 0;
        while p0 < k {
            let mut blk = [[_mm512_setzero_ps(); W]; R];
            for p in p0..(p0 + KB).min(k) {
                let bp = b.add(p * ldb);
                let mut bv = [_mm512_setzero_ps(); W];
                for (w, x) in bv.iter_mut().enumerate() {
                    *x = T::load(bp.add(16 * w), mk[w]);
                }
                let ap = a.add(p * a_cs);
                for (r, row) in blk.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*ap.add(r * a_rs));
                    for (v, x) in row.iter_mut().zip(&bv) {
                        *v = _mm512_fmadd_ps(av, *x, *v);
                    }
                }
            }
            for (row, brow) in acc.iter_mut().zip(&blk) {
                for (v, x) in row.iter_mut().zip(brow) {
                    *v = _mm512_add_ps(*v, *x);
                }
            }
            p0 += KB;
        }
        for (r, row) in acc.iter().enumerate() {
            for (w, v) in row.iter().enumerate() {
                _mm512_mask_storeu_ps(c.add(r * ldc + 16 * w), mk[w], *v);
            }
        }
    }

    /// [`super::gemm_acc`] with AVX-512: column blocks of 32 (4 rows at a time, 8
    /// accumulators) or, for a last block of at most 16 columns, of 16 (8 rows at a time).
    ///
    /// Callers guarantee AVX-512 F/BW/VL and F16C, and the bounds [`super::gemm_acc`] checks.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn gemm512<T: Load512>(
        m: usize,
        n: usize,
        k: usize,
        a: *const f32,
        a_rs: usize,
        a_cs: usize,
        b: *const T,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        cs: *const f32,
    ) {
        let mut j0 = 0;
        while j0 < n {
            let rem = n - j0;
            let mk = [mask16(rem), mask16(rem.saturating_sub(16))];
            let bj = b.add(j0);
            let mut i0 = 0;
            while i0 < m {
                let ai = a.add(i0 * a_rs);
                let ci = c.add(i0 * ldc + j0);
                let csi = if cs.is_null() { cs } else { cs.add(i0) };
                macro_rules! go {
                    ($r:literal, $w:literal) => {
                        micro512::<T, $r, $w>(k, ai, a_rs, a_cs, bj, ldb, ci, ldc, csi, mk)
                    };
                }
                let rows = if rem > 16 {
                    let rows = (m - i0).min(4);
                    match rows {
                        4 => go!(4, 2),
                        3 => go!(3, 2),
                        2 => go!(2, 2),
                        _ => go!(1, 2),
                    }
                    rows
                } else {
                    let rows = (m - i0).min(8);
                    match rows {
                        8 => go!(8, 1),
                        7 => go!(7, 1),
                        6 => go!(6, 1),
                        5 => go!(5, 1),
                        4 => go!(4, 1),
                        3 => go!(3, 1),
                        2 => go!(2, 1),
                        _ => go!(1, 1),
                    }
                    rows
                };
                i0 += rows;
            }
            j0 += 32;
        }
    }

    /// `R` rows × `W` 8-lane column vectors of `C`, of which the last has `nv` (1..=8)
    /// lanes in bounds: a partial vector goes through the same operations as a full one,
    /// so a result does not depend on where its column falls in the tile.
    ///
    /// Callers guarantee AVX2/FMA/F16C and the bounds of those rows and columns.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn micro256<T: Load256, const R: usize, const W: usize>(
        k: usize,
        a: *const f32,
        a_rs: usize,
        a_cs: usize,
        b: *const T,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        cs: *const f32,
        nv: usize,
    ) {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let last = _mm256_cmpgt_epi32(_mm256_set1_epi32(nv as i32), lanes);
        let mask = |w: usize| {
            if w + 1 == W {
                last
            } else {
                _mm256_set1_epi32(-1)
            }
        };
        let mut acc = [[_mm256_setzero_ps(); W]; R];
        for (r, row) in acc.iter_mut().enumerate() {
            for (w, v) in row.iter_mut().enumerate() {
                *v = _mm256_maskload_ps(c.add(r * ldc + 8 * w), mask(w));
                if !cs.is_null() {
                    *v = _mm256_mul_ps(*v, _mm256_set1_ps(*cs.add(r)));
                }
            }
        }
        let mut p0 = 0;
        while p0 < k {
            let mut blk = [[_mm256_setzero_ps(); W]; R];
            for p in p0..(p0 + KB).min(k) {
                let bp = b.add(p * ldb);
                let mut bv = [_mm256_setzero_ps(); W];
                for (w, x) in bv.iter_mut().enumerate() {
                    *x = if w + 1 == W && nv < 8 {
                        T::load_first(bp.add(8 * w), nv)
                    } else {
                        T::load(bp.add(8 * w))
                    };
                }
                let ap = a.add(p * a_cs);
                for (r, row) in blk.iter_mut().enumerate() {
                    let av = _mm256_set1_ps(*ap.add(r * a_rs));
                    for (v, x) in row.iter_mut().zip(&bv) {
                        *v = _mm256_fmadd_ps(av, *x, *v);
                    }
                }
            }
            for (row, brow) in acc.iter_mut().zip(&blk) {
                for (v, x) in row.iter_mut().zip(brow) {
                    *v = _mm256_add_ps(*v, *x);
                }
            }
            p0 += KB;
        }
        for (r, row) in acc.iter().enumerate() {
            for (w, v) in row.iter().enumerate() {
                _mm256_maskstore_ps(c.add(r * ldc + 8 * w), mask(w), *v);
            }
        }
    }

    /// [`super::gemm_acc`] with AVX2: column blocks of 16 (2 rows at a time) or 8 (4 rows
    /// at a time), the last one partial.
    ///
    /// Callers guarantee AVX2, FMA and F16C, and the bounds [`super::gemm_acc`] checks.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn gemm256<T: Load256>(
        m: usize,
        n: usize,
        k: usize,
        a: *const f32,
        a_rs: usize,
        a_cs: usize,
        b: *const T,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        cs: *const f32,
    ) {
        let mut j0 = 0;
        while j0 < n {
            let wide = n - j0 > 8;
            let nv = if wide { n - j0 - 8 } else { n - j0 }.min(8);
            let bj = b.add(j0);
            let mut i0 = 0;
            while i0 < m {
                let ai = a.add(i0 * a_rs);
                let ci = c.add(i0 * ldc + j0);
                let csi = if cs.is_null() { cs } else { cs.add(i0) };
                macro_rules! go {
                    ($r:literal, $w:literal) => {
                        micro256::<T, $r, $w>(k, ai, a_rs, a_cs, bj, ldb, ci, ldc, csi, nv)
                    };
                }
                // Each accumulator has a block partner: 8 of the 16 ymm registers.
                let rows = if wide {
                    let rows = (m - i0).min(2);
                    match rows {
                        2 => go!(2, 2),
                        _ => go!(1, 2),
                    }
                    rows
                } else {
                    let rows = (m - i0).min(4);
                    match rows {
                        4 => go!(4, 1),
                        3 => go!(3, 1),
                        2 => go!(2, 1),
                        _ => go!(1, 1),
                    }
                    rows
                };
                i0 += rows;
            }
            j0 += if wide { 16 } else { 8 };
        }
    }

    /// e^x on 16 lanes; 0 below about −103.9 (and for −∞).
    #[inline(always)]
    pub(in crate::kernels::vec) unsafe fn exp512(x: __m512) -> __m512 {
        let x = _mm512_min_ps(
            _mm512_max_ps(x, _mm512_set1_ps(-104.0)),
            _mm512_set1_ps(88.7),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(P[0]);
        for &c in &P[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let y = _mm512_fmadd_ps(
            _mm512_mul_ps(p, r),
            r,
            _mm512_add_ps(r, _mm512_set1_ps(1.0)),
        );
        // scalef scales by 2^n with correct underflow to denormals and zero.
        _mm512_scalef_ps(y, n)
    }

    /// e^x on 8 lanes; 0 below about −87.3 (and for −∞).
    #[inline(always)]
    pub(in crate::kernels::vec) unsafe fn exp256(x: __m256) -> __m256 {
        let lo = _mm256_set1_ps(-87.3);
        let zero = _mm256_cmp_ps::<_CMP_LT_OQ>(x, lo);
        let x = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.3));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(P[0]);
        for &c in &P[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let y = _mm256_fmadd_ps(
            _mm256_mul_ps(p, r),
            r,
            _mm256_add_ps(r, _mm256_set1_ps(1.0)),
        );
        // n ∈ [−126, 127] after the clamp: 2^n is a normal float built from its exponent.
        let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_andnot_ps(zero, _mm256_mul_ps(y, _mm256_castsi256_ps(e)))
    }

    /// [`super::softmax_tile`] with AVX-512, 16 query rows per vector.
    ///
    /// Callers guarantee AVX-512 F/BW/VL, `s` holds `nk·r` floats and `m`, `l`, `alpha` `r`.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn softmax512(
        s: *mut f32,
        nk: usize,
        r: usize,
        m: *mut f32,
        l: *mut f32,
        alpha: *mut f32,
    ) {
        let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut c0 = 0;
        while c0 < r {
            let mk = mask16(r - c0);
            let m_old = _mm512_mask_loadu_ps(ninf, mk, m.add(c0));
            let mut mx = m_old;
            for j in 0..nk {
                mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(ninf, mk, s.add(j * r + c0)));
            }
            // Rows with nothing visible yet subtract 0 instead of −∞ (no NaN): their
            // scores are −∞ and give 0, and alpha = exp(−∞ − 0) would be 0, so set it to 1.
            let dead = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(mx, ninf);
            let sub = _mm512_mask_mov_ps(mx, dead, _mm512_setzero_ps());
            let a =
                _mm512_mask_mov_ps(exp512(_mm512_sub_ps(m_old, sub)), dead, _mm512_set1_ps(1.0));
            let mut sum = _mm512_setzero_ps();
            for j in 0..nk {
                let p = s.add(j * r + c0);
                let e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, p), sub));
                sum = _mm512_add_ps(sum, e);
                _mm512_mask_storeu_ps(p, mk, e);
            }
            let lv = _mm512_maskz_loadu_ps(mk, l.add(c0));
            _mm512_mask_storeu_ps(l.add(c0), mk, _mm512_fmadd_ps(lv, a, sum));
            _mm512_mask_storeu_ps(alpha.add(c0), mk, a);
            _mm512_mask_storeu_ps(m.add(c0), mk, mx);
            c0 += 16;
        }
    }

    /// [`super::softmax_rows`] with AVX-512: 16 keys per vector. Each row's operations are
    /// those [`softmax512`] applies to its lane, in the same order (the running sum is
    /// added key by key), so the results are bit-identical to it.
    ///
    /// Callers guarantee AVX-512 F/BW/VL, `s` holds `(r − 1)·ld + nk` floats and `m`, `l`,
    /// `alpha` `r`.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn softmax_rows512(
        s: *mut f32,
        nk: usize,
        r: usize,
        ld: usize,
        m: *mut f32,
        l: *mut f32,
        alpha: *mut f32,
    ) {
        let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
        for c in 0..r {
            let row = s.add(c * ld);
            let m_old = *m.add(c);
            let mut mxv = _mm512_set1_ps(m_old);
            let mut j = 0;
            while j < nk {
                mxv = _mm512_max_ps(mxv, _mm512_mask_loadu_ps(ninf, mask16(nk - j), row.add(j)));
                j += 16;
            }
            // Max is exact whatever the order (a ±0 difference cancels in the subtraction).
            let mx = _mm512_reduce_max_ps(mxv);
            let dead = mx == f32::NEG_INFINITY;
            let sub = if dead { 0.0 } else { mx };
            let a = if dead {
                1.0
            } else {
                _mm512_cvtss_f32(exp512(_mm512_set1_ps(m_old - sub)))
            };
            let mut j = 0;
            while j < nk {
                let mk = mask16(nk - j);
                let e = exp512(_mm512_sub_ps(
                    _mm512_maskz_loadu_ps(mk, row.add(j)),
                    _mm512_set1_ps(sub),
                ));
                _mm512_mask_storeu_ps(row.add(j), mk, e);
                j += 16;
            }
            *alpha.add(c) = a;
            *m.add(c) = mx;
        }
        add_rows_in_order(s, nk, r, ld, l, alpha);
    }

    /// `l[c] ← l[c]·alpha[c] + Σ_j s[c·ld + j]` with the sum taken key by key from 0, the
    /// order the rows-as-lanes softmax adds in; eight rows at a time, so that their
    /// dependency chains overlap.
    ///
    /// Callers guarantee FMA (this inlines into their feature set) and the bounds.
    #[inline(always)]
    unsafe fn add_rows_in_order(
        s: *const f32,
        nk: usize,
        r: usize,
        ld: usize,
        l: *mut f32,
        alpha: *const f32,
    ) {
        let mut c0 = 0;
        while c0 < r {
            let rows = (r - c0).min(8);
            let mut sum = [0f32; 8];
            for j in 0..nk {
                for (i, x) in sum.iter_mut().enumerate().take(rows) {
                    *x += *s.add((c0 + i) * ld + j);
                }
            }
            for (i, &x) in sum.iter().enumerate().take(rows) {
                let c = c0 + i;
                *l.add(c) = (*l.add(c)).mul_add(*alpha.add(c), x);
            }
            c0 += 8;
        }
    }

    /// [`super::softmax_rows`] with AVX2: 8 keys per vector, bit-identical to
    /// [`softmax256`] as [`softmax_rows512`] is to [`softmax512`].
    ///
    /// Callers guarantee AVX2/FMA, `s` holds `(r − 1)·ld + nk` floats and `m`, `l`, `alpha`
    /// `r`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn softmax_rows256(
        s: *mut f32,
        nk: usize,
        r: usize,
        ld: usize,
        m: *mut f32,
        l: *mut f32,
        alpha: *mut f32,
    ) {
        let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mask = |n: usize| _mm256_cmpgt_epi32(_mm256_set1_epi32(n.min(8) as i32), lanes);
        for c in 0..r {
            let row = s.add(c * ld);
            let m_old = *m.add(c);
            let mut mxv = _mm256_set1_ps(m_old);
            let mut j = 0;
            while j < nk {
                let mk = mask(nk - j);
                let x = _mm256_blendv_ps(
                    ninf,
                    _mm256_maskload_ps(row.add(j), mk),
                    _mm256_castsi256_ps(mk),
                );
                mxv = _mm256_max_ps(mxv, x);
                j += 8;
            }
            let mut lanes_mx = [0f32; 8];
            _mm256_storeu_ps(lanes_mx.as_mut_ptr(), mxv);
            let mx = lanes_mx.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let dead = mx == f32::NEG_INFINITY;
            let sub = if dead { 0.0 } else { mx };
            let a = if dead {
                1.0
            } else {
                _mm256_cvtss_f32(exp256(_mm256_set1_ps(m_old - sub)))
            };
            let mut j = 0;
            while j < nk {
                let mk = mask(nk - j);
                let e = exp256(_mm256_sub_ps(
                    _mm256_maskload_ps(row.add(j), mk),
                    _mm256_set1_ps(sub),
                ));
                _mm256_maskstore_ps(row.add(j), mk, e);
                j += 8;
            }
            *alpha.add(c) = a;
            *m.add(c) = mx;
        }
        add_rows_in_order(s, nk, r, ld, l, alpha);
    }

    /// [`super::softmax_tile`] with AVX2, 8 query rows per vector (masked loads and stores
    /// for the last `r % 8`, so every row goes through the same operations).
    ///
    /// Callers guarantee AVX2/FMA, `s` holds `nk·r` floats and `m`, `l`, `alpha` `r`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn softmax256(
        s: *mut f32,
        nk: usize,
        r: usize,
        m: *mut f32,
        l: *mut f32,
        alpha: *mut f32,
    ) {
        let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mut c0 = 0;
        while c0 < r {
            let mk = _mm256_cmpgt_epi32(_mm256_set1_epi32((r - c0).min(8) as i32), lanes);
            // Lanes past `r` read 0 and are never stored.
            let m_old = _mm256_maskload_ps(m.add(c0), mk);
            let mut mx = m_old;
            for j in 0..nk {
                mx = _mm256_max_ps(mx, _mm256_maskload_ps(s.add(j * r + c0), mk));
            }
            let dead = _mm256_cmp_ps::<_CMP_EQ_OQ>(mx, ninf);
            let sub = _mm256_andnot_ps(dead, mx);
            let a = _mm256_blendv_ps(exp256(_mm256_sub_ps(m_old, sub)), _mm256_set1_ps(1.0), dead);
            let mut sum = _mm256_setzero_ps();
            for j in 0..nk {
                let p = s.add(j * r + c0);
                let e = exp256(_mm256_sub_ps(_mm256_maskload_ps(p, mk), sub));
                sum = _mm256_add_ps(sum, e);
                _mm256_maskstore_ps(p, mk, e);
            }
            let lv = _mm256_maskload_ps(l.add(c0), mk);
            _mm256_maskstore_ps(l.add(c0), mk, _mm256_fmadd_ps(lv, a, sum));
            _mm256_maskstore_ps(alpha.add(c0), mk, a);
            _mm256_maskstore_ps(m.add(c0), mk, mx);
            c0 += 8;
        }
    }
}

/// The tile product on aarch64 NEON: the scalar version's operations on four columns at a
/// time (one fused multiply-add per element per step, blocks of [`KB`] steps summed into
/// `C`), so every result equals the scalar one to the bit. f16 `B` rows are converted with
/// `fcvtl` (exact; [`crate::kernels::arm`]).
#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;

    use half::f16;

    use super::KB;

    pub(super) trait Load4: Copy {
        unsafe fn load(p: *const Self) -> float32x4_t;
        /// The first `n < 4` lanes from `p`, the rest 0 (through a copy: only the last
        /// column vector of a tile takes this path).
        #[inline(always)]
        unsafe fn load_first(p: *const Self, n: usize) -> float32x4_t {
            let mut buf = [std::mem::zeroed::<Self>(); 4];
            std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), n);
            Self::load(buf.as_ptr())
        }
    }

    impl Load4 for f32 {
        #[inline(always)]
        unsafe fn load(p: *const f32) -> float32x4_t {
            vld1q_f32(p)
        }
    }

    impl Load4 for f16 {
        #[inline(always)]
        unsafe fn load(p: *const f16) -> float32x4_t {
            crate::kernels::arm::f16x4(vld1_u16(p as *const u16))
        }
    }

    /// `R` rows × `W` 4-lane column vectors of `C`, of which the last has `nv` (1..=4)
    /// lanes in bounds (loaded and stored through a copy, computed like a full one).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn micro<T: Load4, const R: usize, const W: usize>(
        k: usize,
        a: *const f32,
        a_rs: usize,
        a_cs: usize,
        b: *const T,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        cs: *const f32,
        nv: usize,
    ) {
        let partial = |w: usize| w + 1 == W && nv < 4;
        let mut acc = [[vdupq_n_f32(0.0); W]; R];
        for (r, row) in acc.iter_mut().enumerate() {
            for (w, v) in row.iter_mut().enumerate() {
                let cp = c.add(r * ldc + 4 * w);
                *v = if partial(w) {
                    f32::load_first(cp, nv)
                } else {
                    vld1q_f32(cp)
                };
                if !cs.is_null() {
                    *v = vmulq_n_f32(*v, *cs.add(r));
                }
            }
        }
        let mut p0 = 0;
        while p0 < k {
            let mut blk = [[vdupq_n_f32(0.0); W]; R];
            for p in p0..(p0 + KB).min(k) {
                let bp = b.add(p * ldb);
                let mut bv = [vdupq_n_f32(0.0); W];
                for (w, x) in bv.iter_mut().enumerate() {
                    *x = if partial(w) {
                        T::load_first(bp.add(4 * w), nv)
                    } else {
                        T::load(bp.add(4 * w))
                    };
                }
                let ap = a.add(p * a_cs);
                for (r, row) in blk.iter_mut().enumerate() {
                    let av = vdupq_n_f32(*ap.add(r * a_rs));
                    for (v, x) in row.iter_mut().zip(&bv) {
                        *v = vfmaq_f32(*v, av, *x);
                    }
                }
            }
            for (row, brow) in acc.iter_mut().zip(&blk) {
                for (v, x) in row.iter_mut().zip(brow) {
                    *v = vaddq_f32(*v, *x);
                }
            }
            p0 += KB;
        }
        for (r, row) in acc.iter().enumerate() {
            for (w, v) in row.iter().enumerate() {
                let cp = c.add(r * ldc + 4 * w);
                if partial(w) {
                    let mut buf = [0f32; 4];
                    vst1q_f32(buf.as_mut_ptr(), *v);
                    std::ptr::copy_nonoverlapping(buf.as_ptr(), cp, nv);
                } else {
                    vst1q_f32(cp, *v);
                }
            }
        }
    }

    /// [`super::gemm_acc`] on NEON: column blocks of up to 16, two rows at a time (8
    /// accumulators and 8 block sums of the 32 vector registers).
    ///
    /// Callers guarantee the bounds [`super::gemm_acc`] checks.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn gemm<T: Load4>(
        m: usize,
        n: usize,
        k: usize,
        a: *const f32,
        a_rs: usize,
        a_cs: usize,
        b: *const T,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        cs: *const f32,
    ) {
        let mut j0 = 0;
        while j0 < n {
            let cols = (n - j0).min(16);
            let vectors = cols.div_ceil(4);
            let nv = cols - 4 * (vectors - 1);
            let bj = b.add(j0);
            let mut i0 = 0;
            while i0 < m {
                let ai = a.add(i0 * a_rs);
                let ci = c.add(i0 * ldc + j0);
                let csi = if cs.is_null() { cs } else { cs.add(i0) };
                let rows = (m - i0).min(2);
                macro_rules! go {
                    ($r:literal, $w:literal) => {
                        micro::<T, $r, $w>(k, ai, a_rs, a_cs, bj, ldb, ci, ldc, csi, nv)
                    };
                }
                match (rows, vectors) {
                    (2, 4) => go!(2, 4),
                    (2, 3) => go!(2, 3),
                    (2, 2) => go!(2, 2),
                    (2, _) => go!(2, 1),
                    (_, 4) => go!(1, 4),
                    (_, 3) => go!(1, 3),
                    (_, 2) => go!(1, 2),
                    _ => go!(1, 1),
                }
                i0 += rows;
            }
            j0 += cols;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand_vec(seed: &mut u64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Two key-major tiles of `nk × r` scores (±8): row 0 sees nothing in the first tile,
    /// and some other scores are masked (−∞).
    fn score_tiles(seed: &mut u64, nk: usize, r: usize) -> Vec<Vec<f32>> {
        (0..2)
            .map(|t| {
                let mut s = rand_vec(seed, nk * r);
                for (i, x) in s.iter_mut().enumerate() {
                    *x *= 8.0;
                    if (i % r == 0 && t == 0) || i % 7 == 3 {
                        *x = f32::NEG_INFINITY;
                    }
                }
                s
            })
            .collect()
    }

    /// Every level this CPU has, the scalar reference first.
    fn isas() -> Vec<Isa> {
        Isa::LEVELS
            .into_iter()
            .rev()
            .filter(|i| i.supported())
            .collect()
    }

    /// Every instruction set against an f64 reference, over odd shapes (every column tail,
    /// one to nine rows), row- and column-major `A`, f32 and f16 `B`, with and without a
    /// row scale of `C`. Tolerance: 1e-5 of the sum of |terms| (f32 rounding is ~1e-7).
    /// The SIMD versions must also equal the scalar one to the bit.
    #[test]
    fn gemm_acc_matches_f64_reference_on_every_isa() {
        let mut seed = 7;
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 5, 7),
            (4, 16, 64),
            (9, 33, 17),
            (7, 48, 64),
            (5, 80, 3),
            (8, 17, 0),
            (2, 64, 256),
            (6, 71, 13),
        ] {
            for col_major in [false, true] {
                for f16b in [false, true] {
                    for scaled in [false, true] {
                        let ldb = n + 3;
                        let ldc = n + 1;
                        let a = rand_vec(&mut seed, m * k + 1);
                        let (a_rs, a_cs) = if col_major { (1, m) } else { (k, 1) };
                        let b32 = rand_vec(&mut seed, k * ldb + 1);
                        let b16: Vec<f16> = b32.iter().map(|&x| f16::from_f32(x)).collect();
                        let bv: Vec<f32> = if f16b {
                            b16.iter().map(|x| x.to_f32()).collect()
                        } else {
                            b32.clone()
                        };
                        let c0 = rand_vec(&mut seed, m * ldc);
                        let cs = rand_vec(&mut seed, m);
                        let mut scalar = Vec::new();
                        for isa in isas() {
                            let mut c = c0.clone();
                            let b = if f16b {
                                Elems::F16(&b16)
                            } else {
                                Elems::F32(&b32)
                            };
                            let sc = scaled.then_some(&cs[..]);
                            gemm_with(isa, m, n, k, &a, a_rs, a_cs, b, ldb, &mut c, ldc, sc);
                            // Same operations in the same order: the same bits.
                            if isa == Isa::Scalar {
                                scalar = c.iter().map(|x| x.to_bits()).collect();
                            } else {
                                let bits: Vec<u32> = c.iter().map(|x| x.to_bits()).collect();
                                assert!(
                                    bits == scalar,
                                    "{isa:?} m{m} n{n} k{k} differs from scalar"
                                );
                            }
                            for i in 0..m {
                                for j in 0..ldc {
                                    let got = c[i * ldc + j];
                                    if j >= n {
                                        assert_eq!(got, c0[i * ldc + j], "{isa:?} wrote past n");
                                        continue;
                                    }
                                    let s = if scaled { cs[i] as f64 } else { 1.0 };
                                    let mut want = c0[i * ldc + j] as f64 * s;
                                    let mut mag = want.abs();
                                    for p in 0..k {
                                        let t =
                                            a[i * a_rs + p * a_cs] as f64 * bv[p * ldb + j] as f64;
                                        want += t;
                                        mag += t.abs();
                                    }
                                    assert!(
                                        (got as f64 - want).abs() <= 1e-5 * mag + 1e-7,
                                        "{isa:?} m{m} n{n} k{k} cm{col_major} f16{f16b} \
                                         sc{scaled} ({i},{j}): {got} vs {want}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Attention computes the same scores with queries as lanes (prompts) or keys as lanes
    /// (generation) and relies on the two agreeing to the bit: on every instruction set,
    /// `C = A·B` must equal `(Bᵀ·Aᵀ)ᵀ` element for element, whatever the shapes, so also
    /// for a column in a partial last vector. Values are f16-exact so that `B` may be f16.
    #[test]
    fn gemm_acc_is_bit_identical_in_either_orientation_on_every_isa() {
        let mut seed = 5;
        for &(m, n, k) in &[
            (1, 64, 64),
            (3, 37, 64),
            (1, 9, 80),
            (2, 15, 17),
            (64, 3, 64),
            (9, 1, 256),
            (5, 33, 40),
        ] {
            let f16s = |seed: &mut u64, len: usize| -> Vec<f16> {
                rand_vec(seed, len)
                    .iter()
                    .map(|&x| f16::from_f32(4.0 * x))
                    .collect()
            };
            // A: m × k and B: k × n, row-major. Bᵀ is B read as `A` with strides (1, n);
            // Aᵀ must be contiguous to serve as `B`, so it is built.
            let a16 = f16s(&mut seed, m * k);
            let b16 = f16s(&mut seed, k * n);
            let a: Vec<f32> = a16.iter().map(|x| x.to_f32()).collect();
            let b: Vec<f32> = b16.iter().map(|x| x.to_f32()).collect();
            let at16: Vec<f16> = (0..k * m).map(|i| a16[(i % m) * k + i / m]).collect();
            for isa in isas() {
                for f16b in [false, true] {
                    let mut c = vec![0f32; m * n];
                    let bb = if f16b {
                        Elems::F16(&b16)
                    } else {
                        Elems::F32(&b)
                    };
                    gemm_with(isa, m, n, k, &a, k, 1, bb, n, &mut c, n, None);
                    let at32: Vec<f32> = at16.iter().map(|x| x.to_f32()).collect();
                    let aa = if f16b {
                        Elems::F16(&at16)
                    } else {
                        Elems::F32(&at32)
                    };
                    let mut ct = vec![0f32; n * m];
                    // Cᵀ[j][i] = Σ_p Bᵀ[j][p]·Aᵀ[p][i], Bᵀ read from B with strides (1, n).
                    gemm_with(isa, n, m, k, &b, 1, n, aa, m, &mut ct, m, None);
                    for i in 0..m {
                        for j in 0..n {
                            assert_eq!(
                                c[i * n + j].to_bits(),
                                ct[j * m + i].to_bits(),
                                "{isa:?} m{m} n{n} k{k} f16{f16b} ({i},{j})"
                            );
                        }
                    }
                }
            }
        }
    }

    /// [`softmax_rows`] and [`softmax_tile`] give the same bits for the same scores on
    /// every instruction set, over two tiles (so alpha rescales), odd sizes, masked scores
    /// and a row with nothing visible in its first tile.
    #[test]
    fn softmax_rows_is_bit_identical_to_softmax_tile_on_every_isa() {
        let mut seed = 13;
        for &(nk, r) in &[(1, 1), (64, 1), (64, 3), (17, 2), (33, 5), (7, 4)] {
            let ld = nk + 3;
            let tiles = score_tiles(&mut seed, nk, r);
            for isa in isas() {
                let (mut m1, mut l1, mut a1) =
                    (vec![f32::NEG_INFINITY; r], vec![0.0; r], vec![0.0; r]);
                let (mut m2, mut l2, mut a2) = (m1.clone(), l1.clone(), a1.clone());
                for t in &tiles {
                    // `t` is key-major (`t[j·r + c]`); its transpose is row-major.
                    let mut s1 = t.clone();
                    let mut s2 = vec![f32::NAN; r * ld];
                    for j in 0..nk {
                        for c in 0..r {
                            s2[c * ld + j] = t[j * r + c];
                        }
                    }
                    let (key_major, row_major) = (Scores::KeyMajor, Scores::RowMajor { ld });
                    softmax_with(isa, &mut s1, nk, r, key_major, &mut m1, &mut l1, &mut a1);
                    softmax_with(isa, &mut s2, nk, r, row_major, &mut m2, &mut l2, &mut a2);
                    for j in 0..nk {
                        for c in 0..r {
                            assert_eq!(
                                s1[j * r + c].to_bits(),
                                s2[c * ld + j].to_bits(),
                                "{isa:?} nk{nk} r{r} p[{j}][{c}]"
                            );
                        }
                    }
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&a1), bits(&a2), "{isa:?} nk{nk} r{r} alpha");
                    assert_eq!(bits(&l1), bits(&l2), "{isa:?} nk{nk} r{r} l");
                    assert_eq!(bits(&m1), bits(&m2), "{isa:?} nk{nk} r{r} m");
                    assert!(
                        s2.iter().skip(nk).step_by(ld).all(|x| x.is_nan()),
                        "wrote past nk"
                    );
                }
            }
        }
    }

    /// The polynomial exp against f64 `exp` on a dense grid where the result is a normal
    /// float: within about 1 ulp (relative 1.5e-7; 2^-23 is 1.19e-7), and exactly 0 for −∞.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_exp_is_within_one_ulp() {
        use std::arch::x86_64::*;
        let xs: Vec<f32> = (0..=200_000)
            .map(|i| -87.0 + 175.0 * i as f32 / 200_000.0)
            .chain([0.0, -0.0, 1e-8, -1e-8, 88.0, -87.3])
            .collect();
        let check = |name: &str, got: f32, x: f32| {
            let want = (x as f64).exp();
            let rel = ((got as f64 - want) / want).abs();
            assert!(
                rel <= 1.5e-7,
                "{name} exp({x}) = {got}, want {want} (rel {rel:e})"
            );
        };
        for isa in isas() {
            for &x in &xs {
                let got = match isa {
                    // SAFETY: the features were detected.
                    Isa::Avx512Vnni => unsafe {
                        let mut o = [0f32; 16];
                        _mm512_storeu_ps(o.as_mut_ptr(), x86::exp512(_mm512_set1_ps(x)));
                        o[3]
                    },
                    // SAFETY: as above.
                    Isa::Avx2 => unsafe { exp256_one(x) },
                    _ => continue,
                };
                check(&format!("{isa:?}"), got, x);
            }
            let ninf = match isa {
                // SAFETY: the features were detected.
                Isa::Avx512Vnni => unsafe {
                    let mut o = [1f32; 16];
                    let v = x86::exp512(_mm512_set1_ps(f32::NEG_INFINITY));
                    _mm512_storeu_ps(o.as_mut_ptr(), v);
                    o[0]
                },
                // SAFETY: as above.
                Isa::Avx2 => unsafe { exp256_one(f32::NEG_INFINITY) },
                _ => 0.0,
            };
            assert_eq!(ninf, 0.0, "{isa:?} exp(-inf)");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp256_one(x: f32) -> f32 {
        use std::arch::x86_64::*;
        let mut o = [0f32; 8];
        _mm256_storeu_ps(o.as_mut_ptr(), x86::exp256(_mm256_set1_ps(x)));
        o[5]
    }

    /// Two tiles in a row (so alpha rescales a running state), odd row counts, masked
    /// (−∞) scores and rows with nothing visible in the first tile: every instruction set
    /// against the scalar version (which uses `f32::exp`) within 1e-6 relative.
    #[test]
    fn softmax_tile_matches_scalar_on_every_isa() {
        let mut seed = 11;
        for &(nk, r) in &[(1, 1), (5, 3), (64, 48), (17, 9), (64, 64), (3, 23)] {
            let tiles = score_tiles(&mut seed, nk, r);
            let run = |isa: Isa| {
                let (mut m, mut l, mut a) =
                    (vec![f32::NEG_INFINITY; r], vec![0.0; r], vec![0.0; r]);
                let mut out = Vec::new();
                for t in &tiles {
                    let mut s = t.clone();
                    softmax_with(isa, &mut s, nk, r, Scores::KeyMajor, &mut m, &mut l, &mut a);
                    out.push((s, a.clone()));
                }
                (out, m, l)
            };
            let want = run(Isa::Scalar);
            for isa in isas() {
                let got = run(isa);
                let close = |x: &[f32], y: &[f32], what: &str| {
                    for (i, (p, q)) in x.iter().zip(y).enumerate() {
                        assert!(
                            (p - q).abs() <= 1e-6 * q.abs().max(1e-30) || p == q,
                            "{isa:?} nk{nk} r{r} {what}[{i}]: {p} vs {q}"
                        );
                    }
                };
                for ((gs, ga), (ws, wa)) in got.0.iter().zip(&want.0) {
                    close(gs, ws, "p");
                    close(ga, wa, "alpha");
                }
                close(&got.1, &want.1, "m");
                close(&got.2, &want.2, "l");
            }
        }
    }
}
