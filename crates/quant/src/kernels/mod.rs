//! Dot-product kernels: one weight row of a stored type · one activation row quantized to the
//! type's partner format ([`ActType`]), as llama.cpp pairs them (Q4_0/Q5_0/Q8_0/IQ4_NL with
//! Q8_0, Q4_1/Q5_1 with Q8_1, k-quants and IQ4_XS with Q8_K, F16/BF16/F32 with themselves).
//!
//! Each type has a scalar reference ([`scalar`]) and SIMD versions: on x86-64 AVX2+FMA and
//! AVX-512 VNNI (`x86`), on aarch64 NEON and NEON with the dot-product extension (`arm`).
//! The best one the CPU supports is picked once, at first use ([`kernel`]); [`kernel_for`]
//! gives a specific instruction set, for tests and benchmarks.

pub mod act;
#[cfg(target_arch = "aarch64")]
pub(crate) mod arm;
pub mod scalar;
pub mod vec;
#[cfg(target_arch = "x86_64")]
pub mod x86;
#[cfg(target_arch = "x86_64")]
pub(crate) mod zmm;

use std::sync::OnceLock;

use ferrite_gguf::GgmlType;

pub use act::{quantize_row, ActType};

/// Block byte sizes and the IQ4 codebook: the facts every kernel relies on, in one place.
pub mod layout {
    pub const Q4_0_BYTES: usize = 18;
    pub const Q4_1_BYTES: usize = 20;
    pub const Q5_0_BYTES: usize = 22;
    pub const Q5_1_BYTES: usize = 24;
    pub const Q8_0_BYTES: usize = 34;
    pub const Q8_1_BYTES: usize = 36;
    pub const IQ4_NL_BYTES: usize = 18;
    pub const Q2_K_BYTES: usize = 84;
    pub const Q3_K_BYTES: usize = 110;
    pub const Q4_K_BYTES: usize = 144;
    pub const Q5_K_BYTES: usize = 176;
    pub const Q6_K_BYTES: usize = 210;
    pub const IQ4_XS_BYTES: usize = 136;
    pub const Q8_K_BYTES: usize = 292;

    pub use crate::formats::iquants::KVALUES_IQ4NL;
}

/// An instruction-set level a kernel is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    Scalar,
    /// aarch64 NEON (every aarch64 CPU): widening 8-bit multiplies.
    Neon,
    /// aarch64 NEON with the Armv8.2 dot-product extension (`sdot`).
    NeonDot,
    /// AVX2 + FMA + F16C (256-bit; `vpmaddubsw` for 8-bit products).
    Avx2,
    /// The AVX2 kernels with AVX-512 VNNI (`vpdpbusd` on 256-bit vectors) and 512-bit float
    /// kernels; needs AVX-512 F/BW/VL/VNNI.
    Avx512Vnni,
}

impl Isa {
    /// Every level, best first (each CPU supports those of its own architecture).
    pub const LEVELS: [Isa; 5] = [
        Isa::Avx512Vnni,
        Isa::Avx2,
        Isa::NeonDot,
        Isa::Neon,
        Isa::Scalar,
    ];

    /// Whether this CPU can run kernels of this level.
    pub fn supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => {
                Isa::Avx2.supported()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => true,
            #[cfg(target_arch = "aarch64")]
            Isa::NeonDot => std::arch::is_aarch64_feature_detected!("dotprod"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The best level this CPU supports (detected once).
    /// `FERRITE_ISA=scalar|neon|neondot|avx2|avx512vnni` lowers it, for comparisons; a level
    /// the CPU lacks is ignored.
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            let cap = match std::env::var("FERRITE_ISA").as_deref() {
                Ok("scalar") => Isa::Scalar,
                Ok("neon") => Isa::Neon,
                Ok("neondot") => Isa::NeonDot,
                Ok("avx2") => Isa::Avx2,
                _ => Isa::Avx512Vnni,
            };
            Isa::LEVELS
                .into_iter()
                .find(|i| *i <= cap && i.supported())
                .unwrap_or(Isa::Scalar)
        })
    }
}

/// How many activation rows [`Kernel::dot_tile`] handles per weight-row pass.
pub const TILE: usize = 4;

type DotFn = fn(&[u8], &[u8]) -> f32;
type TileFn = fn(&[u8], [&[u8]; TILE]) -> [f32; TILE];
/// `(weight rows, bytes per row, activation row, one output per weight row)`.
type RowsFn = fn(&[u8], usize, &[u8], &mut [f32]);
/// `(first rows, second rows, bytes per row, activation row, first outputs, second
/// outputs)`: row `i` of each run in one pass.
type PairsFn = fn(&[u8], &[u8], usize, &[u8], &mut [f32], &mut [f32]);

/// The dot product of one weight type, for one instruction set.
#[derive(Clone, Copy)]
pub struct Kernel {
    pub ty: GgmlType,
    pub act: ActType,
    pub isa: Isa,
    /// Whether the weight rows are packed ([`crate::repack`]) rather than in ggml layout.
    pub packed: bool,
    w_block: usize,
    w_bytes: usize,
    dot: DotFn,
    tile: Option<TileFn>,
    rows: Option<RowsFn>,
    pairs: Option<PairsFn>,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let packed = if self.packed { " packed" } else { "" };
        write!(
            f,
            "Kernel({}{packed}, {:?}, {:?})",
            self.ty, self.act, self.isa
        )
    }
}

impl Kernel {
    /// Blocks in a weight row, after checking that `w` and `a` are rows of the same length.
    #[inline]
    fn check(&self, w: &[u8], a: &[u8]) {
        let nb = w.len() / self.w_bytes;
        // A packed k-quant row is padded to whole groups (activation rows always are).
        let whole = !self.packed
            || crate::repack::packed_row_bytes(self.ty, nb * self.w_block) == Some(w.len());
        assert!(
            w.len().is_multiple_of(self.w_bytes)
                && whole
                && Some(a.len()) == self.act.row_bytes(nb * self.w_block),
            "{}: weight row of {} bytes and {:?} row of {} bytes do not match",
            self.ty,
            w.len(),
            self.act,
            a.len()
        );
    }

    /// `Σ w[i]·a[i]` over one row.
    ///
    /// # Panics
    /// If the two rows do not hold the same number of elements.
    #[inline]
    pub fn dot(&self, w: &[u8], a: &[u8]) -> f32 {
        self.check(w, a);
        (self.dot)(w, a)
    }

    /// Consecutive weight rows (`row_bytes` each, one per element of `out`) against one
    /// activation row: `out[r] = dot(row r, a)`, with the same result per row as [`Self::dot`].
    /// Where the kernel has a many-row entry point, the call and the checks happen once per
    /// call instead of once per row (rows of a few hundred elements take ~100 cycles, so
    /// that overhead showed).
    ///
    /// # Panics
    /// If `w` does not hold `out.len()` rows or a row does not match `a`.
    #[inline]
    pub fn dot_rows(&self, w: &[u8], row_bytes: usize, a: &[u8], out: &mut [f32]) {
        assert_eq!(w.len(), row_bytes * out.len(), "{}: weight rows", self.ty);
        if out.is_empty() {
            return;
        }
        self.check(&w[..row_bytes], a);
        match self.rows {
            Some(f) => f(w, row_bytes, a, out),
            None => {
                for (o, wr) in out.iter_mut().zip(w.chunks_exact(row_bytes)) {
                    *o = (self.dot)(wr, a);
                }
            }
        }
    }

    /// Whether [`Self::dot_row_pairs`] has a kernel of its own (it shares each activation
    /// load between two weight rows) rather than running [`Self::dot_rows`] twice.
    pub fn pairs_rows(&self) -> bool {
        self.pairs.is_some()
    }

    /// Two runs of as many weight rows (`row_bytes` each) against one activation row:
    /// `out0[i] = dot(w0's row i, a)` and `out1[i] = dot(w1's row i, a)`, each the same to
    /// the bit as [`Self::dot`]. The two runs should lie far apart in memory (different
    /// halves of a matrix): on the AMD Zen 4 this was tuned on, two neighbouring rows read
    /// in step stream from memory at a third of the speed of one.
    ///
    /// # Panics
    /// If the runs do not hold `out0.len() == out1.len()` rows or a row does not match `a`.
    #[inline]
    pub fn dot_row_pairs(
        &self,
        w0: &[u8],
        w1: &[u8],
        row_bytes: usize,
        a: &[u8],
        out0: &mut [f32],
        out1: &mut [f32],
    ) {
        assert_eq!(out0.len(), out1.len(), "{}: row pairs", self.ty);
        assert_eq!(w0.len(), row_bytes * out0.len(), "{}: weight rows", self.ty);
        assert_eq!(w1.len(), row_bytes * out1.len(), "{}: weight rows", self.ty);
        match self.pairs {
            Some(f) if !out0.is_empty() => {
                self.check(&w0[..row_bytes], a);
                f(w0, w1, row_bytes, a, out0, out1)
            }
            _ => {
                self.dot_rows(w0, row_bytes, a, out0);
                self.dot_rows(w1, row_bytes, a, out1);
            }
        }
    }

    /// One weight row against [`TILE`] activation rows, decoding the weights once.
    #[inline]
    pub fn dot_tile(&self, w: &[u8], a: [&[u8]; TILE]) -> [f32; TILE] {
        for r in a {
            self.check(w, r);
        }
        match self.tile {
            Some(f) => f(w, a),
            None => a.map(|r| (self.dot)(w, r)),
        }
    }
}

fn scalar_kernel(ty: GgmlType) -> Option<Kernel> {
    use layout::*;
    let (act, w_block, w_bytes, dot): (ActType, usize, usize, DotFn) = match ty {
        GgmlType::Q4_0 => (ActType::Q8_0, 32, Q4_0_BYTES, scalar::dot_q4_0),
        GgmlType::Q4_1 => (ActType::Q8_1, 32, Q4_1_BYTES, scalar::dot_q4_1),
        GgmlType::Q5_0 => (ActType::Q8_0, 32, Q5_0_BYTES, scalar::dot_q5_0),
        GgmlType::Q5_1 => (ActType::Q8_1, 32, Q5_1_BYTES, scalar::dot_q5_1),
        GgmlType::Q8_0 => (ActType::Q8_0, 32, Q8_0_BYTES, scalar::dot_q8_0),
        GgmlType::IQ4_NL => (ActType::Q8_0, 32, IQ4_NL_BYTES, scalar::dot_iq4_nl),
        GgmlType::Q2_K => (ActType::Q8_K, 256, Q2_K_BYTES, scalar::dot_q2_k),
        GgmlType::Q3_K => (ActType::Q8_K, 256, Q3_K_BYTES, scalar::dot_q3_k),
        GgmlType::Q4_K => (ActType::Q8_K, 256, Q4_K_BYTES, scalar::dot_q4_k),
        GgmlType::Q5_K => (ActType::Q8_K, 256, Q5_K_BYTES, scalar::dot_q5_k),
        GgmlType::Q6_K => (ActType::Q8_K, 256, Q6_K_BYTES, scalar::dot_q6_k),
        GgmlType::IQ4_XS => (ActType::Q8_K, 256, IQ4_XS_BYTES, scalar::dot_iq4_xs),
        GgmlType::F16 => (ActType::F16, 1, 2, scalar::dot_f16),
        GgmlType::BF16 => (ActType::BF16, 1, 2, scalar::dot_bf16),
        GgmlType::F32 => (ActType::F32, 1, 4, scalar::dot_f32),
        _ => return None,
    };
    Some(Kernel {
        ty,
        act,
        isa: Isa::Scalar,
        packed: false,
        w_block,
        w_bytes,
        dot,
        tile: None,
        rows: None,
        pairs: None,
    })
}

/// The kernel for `ty` at instruction-set level `isa`, if that level has one for this type and
/// this CPU supports it. Types without a SIMD version at that level get `None`.
pub fn kernel_for(ty: GgmlType, isa: Isa) -> Option<Kernel> {
    if !isa.supported() {
        return None;
    }
    let base = scalar_kernel(ty)?;
    match isa {
        Isa::Scalar => Some(base),
        #[cfg(target_arch = "x86_64")]
        _ => x86::kernel(ty, isa).map(|(dot, tile, rows)| Kernel {
            isa,
            dot,
            tile: Some(tile),
            rows: Some(rows),
            ..base
        }),
        #[cfg(target_arch = "aarch64")]
        _ => arm::kernel(ty, isa).map(|(dot, tile, rows)| Kernel {
            isa,
            dot,
            tile: Some(tile),
            rows: Some(rows),
            ..base
        }),
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        _ => None,
    }
}

/// The fastest kernel for `ty` on this CPU (chosen once per type), or `None` for types that
/// have no dot product (the IQ1/IQ2/IQ3 families, ternary and FP4 types for now).
pub fn kernel(ty: GgmlType) -> Option<&'static Kernel> {
    static TABLE: OnceLock<Vec<Kernel>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        SUPPORTED
            .iter()
            .filter_map(|&t| best_up_to(Isa::best(), |i| kernel_for(t, i)))
            .collect()
    });
    table.iter().find(|k| k.ty == ty)
}

/// `variant` at the highest level no higher than `level` where it gives a kernel.
fn best_up_to(level: Isa, variant: impl Fn(Isa) -> Option<Kernel>) -> Option<Kernel> {
    Isa::LEVELS
        .into_iter()
        .filter(|i| *i <= level)
        .find_map(variant)
}

/// The kernel for `ty` at `isa` to use when there is a single activation row (generation).
///
/// Where the level has a one-row kernel with its own activation layout
/// ([`ActType::Q8_0Planar`]: Q4_0 and Q8_0 at the AVX-512 level), this is that kernel: the
/// layout costs one extra pass over a row of a few thousand activations and saves every
/// weight row the gathering of its activations. It computes exactly what the tile kernel of
/// [`kernel_for`] computes for that row, so results do not depend on which one ran (a server
/// batching sequences relies on this). Other types get [`kernel_for`]'s kernel.
pub fn kernel_one_row_for(ty: GgmlType, isa: Isa) -> Option<Kernel> {
    let base = kernel_for(ty, isa)?;
    #[cfg(target_arch = "x86_64")]
    if let Some((dot, rows)) = x86::one_row(ty, isa) {
        return Some(Kernel {
            act: ActType::Q8_0Planar,
            dot,
            tile: None,
            rows: Some(rows),
            ..base
        });
    }
    Some(base)
}

/// [`kernel_one_row_for`] at the level [`kernel`] picked for `ty`.
pub fn kernel_one_row(ty: GgmlType) -> Option<&'static Kernel> {
    static TABLE: OnceLock<Vec<Kernel>> = OnceLock::new();
    at_best_level(&TABLE, kernel_one_row_for, ty)
}

/// `variant(ty, level)` at the level [`kernel`] picked for `ty`, built once for every type
/// into `table`.
fn at_best_level(
    table: &'static OnceLock<Vec<Kernel>>,
    variant: fn(GgmlType, Isa) -> Option<Kernel>,
    ty: GgmlType,
) -> Option<&'static Kernel> {
    let table = table.get_or_init(|| {
        SUPPORTED
            .iter()
            .filter_map(|&t| kernel(t).and_then(|k| variant(t, k.isa)))
            .collect()
    });
    table.iter().find(|k| k.ty == ty)
}

/// The kernel for packed rows of `ty` ([`crate::repack`]) at `isa`, if that level reads
/// packed rows (the scalar level does, as the reference). Its activations are
/// [`ActType::Q8_0Grouped`] (32-element types) or [`ActType::Q8_KGrouped`] (k-quants) for
/// one row and for tiles alike, so the two agree to the bit.
pub fn packed_kernel_for(ty: GgmlType, isa: Isa) -> Option<Kernel> {
    if !crate::repack::has_layout(ty) {
        return None;
    }
    let base = kernel_for(ty, isa)?;
    let base = Kernel {
        packed: true,
        act: if base.w_block == 256 {
            ActType::Q8_KGrouped
        } else {
            ActType::Q8_0Grouped
        },
        ..base
    };
    match isa {
        Isa::Scalar => Some(Kernel {
            dot: match ty {
                GgmlType::Q4_0 => scalar::dot_q4_0_packed,
                GgmlType::Q4_1 => scalar::dot_q4_1_packed,
                GgmlType::Q5_0 => scalar::dot_q5_0_packed,
                GgmlType::Q8_0 => scalar::dot_q8_0_packed,
                GgmlType::Q4_K => scalar::dot_q4_k_packed,
                GgmlType::Q6_K => scalar::dot_q6_k_packed,
                _ => unreachable!("{ty} has a packed layout but no reference kernel"),
            },
            ..base
        }),
        #[cfg(target_arch = "x86_64")]
        _ => x86::packed(ty, isa).map(|(dot, tile, rows, pairs)| Kernel {
            dot,
            tile: Some(tile),
            rows: Some(rows),
            pairs: Some(pairs),
            ..base
        }),
        #[cfg(not(target_arch = "x86_64"))]
        _ => None,
    }
}

/// The best [`packed_kernel_for`] on this CPU: at the level [`kernel`] picked for `ty`, or
/// the scalar reference where that level reads no packed rows (NEON). Weights are only
/// packed at load where this is a SIMD kernel ([`crate::repack::worth_packing`]); the
/// reference keeps packed rows readable everywhere.
pub fn packed_kernel(ty: GgmlType) -> Option<&'static Kernel> {
    static TABLE: OnceLock<Vec<Kernel>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        SUPPORTED
            .iter()
            .filter_map(|&t| best_up_to(kernel(t)?.isa, |i| packed_kernel_for(t, i)))
            .collect()
    });
    table.iter().find(|k| k.ty == ty)
}

/// Every weight type that has a dot-product kernel.
pub const SUPPORTED: &[GgmlType] = &[
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::IQ4_NL,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_XS,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::F32,
];

#[cfg(test)]
pub(crate) mod tests;
