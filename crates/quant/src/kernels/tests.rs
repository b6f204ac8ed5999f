//! Kernel tests: every SIMD level against the scalar reference on random blocks, and the
//! scalar reference against (dequantized weights) · (dequantized activations), where the
//! weight dequantizers are `crate::formats` (bit-exact with the `gguf` Python package).

use super::*;
use ferrite_gguf::GgmlType;
use half::{bf16, f16};

/// splitmix64: a small seeded generator, enough for test data.
pub(crate) struct Rng(u64);

impl Rng {
    /// Each test has its own fixed seed, so a run is reproducible. `FERRITE_TEST_SEED=N` moves
    /// every seed by N, for sweeping tolerances over more data than one run sees
    /// (`for n in $(seq 100); do FERRITE_TEST_SEED=$n cargo test -p ferrite-quant --lib; done`).
    pub(crate) fn new(seed: u64) -> Self {
        let shift = std::env::var("FERRITE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        Rng(seed.wrapping_add(shift.wrapping_mul(0x1000)))
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub(crate) fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Offsets of the f16 scale fields in one block of `ty` (set to sane values so that random
/// bytes do not produce NaN or infinity).
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::IQ4_NL => &[0],
        GgmlType::IQ4_XS => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q6_K => &[208],
        _ => &[],
    }
}

/// A random row of `k` elements of weight type `ty`.
pub(crate) fn random_weights(rng: &mut Rng, ty: GgmlType, k: usize) -> Vec<u8> {
    match ty {
        GgmlType::F32 => (0..k).flat_map(|_| rng.f32().to_le_bytes()).collect(),
        GgmlType::F16 => (0..k)
            .flat_map(|_| f16::from_f32(rng.f32()).to_le_bytes())
            .collect(),
        GgmlType::BF16 => (0..k)
            .flat_map(|_| bf16::from_f32(rng.f32()).to_le_bytes())
            .collect(),
        _ => {
            let bytes = ty.row_bytes(k as u64).unwrap() as usize;
            let tb = ty.type_size() as usize;
            let mut w: Vec<u8> = (0..bytes).map(|_| rng.next_u64() as u8).collect();
            for b in w.chunks_exact_mut(tb) {
                if ty == GgmlType::Q8_0 {
                    // ggml's Q8_0 quantizer never writes -128 (|q| ≤ 127).
                    for q in &mut b[2..] {
                        if *q == 0x80 {
                            *q = 0x81;
                        }
                    }
                }
                for &at in f16_fields(ty) {
                    let v = f16::from_f32(rng.f32() * 0.05);
                    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
                }
            }
            w
        }
    }
}

/// A random activation row: mostly small values with a few outliers, like real hidden states.
pub(crate) fn random_acts(rng: &mut Rng, k: usize) -> Vec<f32> {
    (0..k)
        .map(|i| {
            let v = rng.f32();
            if i % 37 == 5 {
                v * 8.0
            } else {
                v
            }
        })
        .collect()
}

fn quantized(act: ActType, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; act.row_bytes(x.len()).unwrap()];
    quantize_row(act, x, &mut out);
    out
}

/// Sizes to test: 1, 2, 3 and 5 blocks, plus odd lengths for the float types.
fn sizes(ty: GgmlType) -> Vec<usize> {
    let b = ty.block_size() as usize;
    if b == 1 {
        vec![1, 7, 8, 9, 31, 64, 100, 577]
    } else {
        vec![b, 2 * b, 3 * b, 5 * b]
    }
}

/// The magnitude a summation-order difference scales with: Σ over blocks of |block dot| plus
/// Σ over elements of |w·a| (dequantized). The second term keeps the bound honest when a row's
/// blocks cancel, or when a block's scale and minimum terms do (k-quants, Q4_1): each term is
/// rounded on its own, so its error follows the terms' size, not their small difference.
pub(crate) fn magnitude(k: &Kernel, w: &[u8], a: &[u8]) -> f32 {
    assert!(!k.packed, "magnitude reads ggml-layout rows");
    let wb = k.w_bytes;
    let ab = k.act.row_bytes(k.w_block).unwrap();
    let blockwise: f32 = w
        .chunks_exact(wb)
        .zip(a.chunks_exact(ab))
        .map(|(w, a)| k.dot(w, a).abs())
        .sum();
    let n = w.len() / wb * k.w_block;
    let (mut wf, mut af) = (vec![0f32; n], vec![0f32; n]);
    crate::dequantize(k.ty, w, &mut wf).unwrap();
    act::dequantize_row(k.act, a, &mut af);
    let elementwise: f32 = wf.iter().zip(&af).map(|(x, y)| (x * y).abs()).sum();
    blockwise + elementwise
}

#[test]
fn every_simd_kernel_matches_scalar() {
    let mut rng = Rng::new(1);
    let mut checked = 0;
    for isa in Isa::LEVELS.into_iter().filter(|i| *i != Isa::Scalar) {
        if !isa.supported() {
            eprintln!("{isa:?} not supported on this CPU; not tested here");
            continue;
        }
        for &ty in SUPPORTED {
            let simd = kernel_for(ty, isa).unwrap_or_else(|| panic!("no {isa:?} kernel for {ty}"));
            let sc = kernel_for(ty, Isa::Scalar).unwrap();
            for k in sizes(ty) {
                let w = random_weights(&mut rng, ty, k);
                let acts: Vec<Vec<u8>> = (0..TILE)
                    .map(|_| quantized(sc.act, &random_acts(&mut rng, k)))
                    .collect();
                let tile = simd.dot_tile(&w, [&acts[0], &acts[1], &acts[2], &acts[3]]);
                for (r, a) in acts.iter().enumerate() {
                    let want = sc.dot(&w, a);
                    let tol = 1e-5 * magnitude(&sc, &w, a) + 1e-6;
                    let got = simd.dot(&w, a);
                    assert!(
                        (got - want).abs() <= tol,
                        "{ty} {isa:?} k={k}: {got} vs scalar {want} (tol {tol})"
                    );
                    assert!(
                        (tile[r] - want).abs() <= tol,
                        "{ty} {isa:?} k={k} tile row {r}: {} vs scalar {want}",
                        tile[r]
                    );
                    checked += 1;
                }
            }
        }
    }
    eprintln!("{checked} SIMD dot products checked");
}

#[test]
fn scalar_kernels_match_dequantized_products() {
    let mut rng = Rng::new(2);
    for &ty in SUPPORTED {
        let sc = kernel_for(ty, Isa::Scalar).unwrap();
        for k in sizes(ty) {
            let w = random_weights(&mut rng, ty, k);
            let mut wf = vec![0f32; k];
            crate::dequantize(ty, &w, &mut wf).unwrap();
            let a = quantized(sc.act, &random_acts(&mut rng, k));
            let mut af = vec![0f32; k];
            act::dequantize_row(sc.act, &a, &mut af);
            let want: f64 = wf
                .iter()
                .zip(&af)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            let mag: f64 = wf
                .iter()
                .zip(&af)
                .map(|(x, y)| f64::from((x * y).abs()))
                .sum();
            let got = f64::from(sc.dot(&w, &a));
            // f32 rounding of the scales and per-block sums: a few ulps of the magnitude.
            let mut tol = 2e-6 * mag + 1e-6;
            if sc.act == ActType::Q8_1 {
                // Q8_1 carries `s = d·Σq` rounded to f16, and the kernel uses it for the
                // weights' minimum term, as ggml does. `d` there is the unrounded scale, while
                // the dequantized row uses f16(d): two f16 roundings, 2^-10 of |s| in all.
                let f = |b: &[u8]| f64::from(f16::from_le_bytes([b[2], b[3]]).to_f32().abs());
                let wb = ty.type_size() as usize;
                tol += w
                    .chunks_exact(wb)
                    .zip(a.chunks_exact(36))
                    .map(|(w, a)| f(w) * f(a) / 1024.0)
                    .sum::<f64>();
            }
            assert!(
                (got - want).abs() <= tol,
                "{ty} k={k}: {got} vs {want} (tol {tol})"
            );
        }
    }
}

#[test]
fn mismatched_rows_are_refused() {
    let k = kernel_for(GgmlType::Q4_0, Isa::Scalar).unwrap();
    let w = vec![0u8; 2 * 18];
    let a = vec![0u8; 34];
    let r = std::panic::catch_unwind(|| k.dot(&w, &a));
    assert!(r.is_err());
}

#[test]
fn best_kernel_exists_for_every_supported_type() {
    for &ty in SUPPORTED {
        let k = kernel(ty).unwrap();
        assert_eq!(k.ty, ty);
        // Every level has every type, so nothing falls back to a lower one.
        assert_eq!(k.isa, Isa::best(), "{ty}");
    }
    assert!(kernel(GgmlType::IQ2_XXS).is_none());
}

#[test]
fn one_row_kernels_equal_tile_kernels_bit_for_bit() {
    // A server batching sequences runs the tile kernels for a batch and the one-row kernels
    // for a lone sequence: the two must agree exactly, not just within rounding.
    let mut rng = Rng::new(3);
    let mut own_layout = 0;
    for isa in Isa::LEVELS {
        if !isa.supported() {
            continue;
        }
        for &ty in SUPPORTED {
            let tile = kernel_for(ty, isa).unwrap();
            let one = kernel_one_row_for(ty, isa).unwrap();
            if one.act != tile.act {
                own_layout += 1;
            }
            let b = ty.block_size() as usize;
            let ks: Vec<usize> = if b == 1 {
                sizes(ty)
            } else {
                (1..=9).map(|n| n * b).collect()
            };
            for k in ks {
                let w = random_weights(&mut rng, ty, k);
                let x: Vec<Vec<f32>> = (0..TILE).map(|_| random_acts(&mut rng, k)).collect();
                let acts: Vec<Vec<u8>> = x.iter().map(|x| quantized(tile.act, x)).collect();
                let want = tile.dot_tile(&w, [&acts[0], &acts[1], &acts[2], &acts[3]]);
                for (r, x) in x.iter().enumerate() {
                    let got = one.dot(&w, &quantized(one.act, x));
                    assert_eq!(
                        got.to_bits(),
                        want[r].to_bits(),
                        "{ty} {isa:?} k={k} row {r}: one-row {got} vs tile {}",
                        want[r]
                    );
                }
            }
        }
    }
    if Isa::Avx512Vnni.supported() {
        assert!(own_layout >= 2, "Q4_0 and Q8_0 have planar one-row kernels");
    }
}

#[test]
fn planar_and_grouped_activations_hold_the_q8_0_numbers() {
    let mut rng = Rng::new(4);
    for blocks in [1, 3, 4, 5, 8] {
        let x = random_acts(&mut rng, 32 * blocks);
        let mut a = vec![0f32; x.len()];
        let mut b = vec![0f32; x.len()];
        act::dequantize_row(ActType::Q8_0, &quantized(ActType::Q8_0, &x), &mut a);
        let planar = quantized(ActType::Q8_0Planar, &x);
        assert_eq!(planar.len(), blocks.div_ceil(4) * 4 * 96);
        act::dequantize_row(ActType::Q8_0Planar, &planar, &mut b);
        assert_eq!(a, b, "{blocks} blocks");
        let grouped = quantized(ActType::Q8_0Grouped, &x);
        assert_eq!(grouped.len(), blocks.div_ceil(4) * 256);
        act::dequantize_row(ActType::Q8_0Grouped, &grouped, &mut b);
        assert_eq!(a, b, "{blocks} blocks grouped");
    }
}

#[test]
fn k_grouped_activations_hold_the_q8_k_numbers_and_sums() {
    let mut rng = Rng::new(6);
    for blocks in [1, 2, 3] {
        let x = random_acts(&mut rng, 256 * blocks);
        let (mut a, mut b) = (vec![0f32; x.len()], vec![0f32; x.len()]);
        let q8k = quantized(ActType::Q8_K, &x);
        act::dequantize_row(ActType::Q8_K, &q8k, &mut a);
        let grouped = quantized(ActType::Q8_KGrouped, &x);
        assert_eq!(grouped.len(), blocks.div_ceil(2) * 704);
        act::dequantize_row(ActType::Q8_KGrouped, &grouped, &mut b);
        assert_eq!(a, b, "{blocks} blocks");
        // Each lane's -32 · Σ over a half sub-block is -32 · the Q8_K block sum of those 16.
        for (blk, q) in q8k.chunks_exact(292).enumerate() {
            let g = &grouped[blk / 2 * 704..][..704];
            for j in 0..16 {
                let bsum = i16::from_le_bytes([q[260 + 2 * j], q[261 + 2 * j]]);
                let at = act::k_grouped::sum(blk % 2, j / 2, j % 2);
                let n = i32::from_le_bytes(g[at..at + 4].try_into().unwrap());
                assert_eq!(n, -32 * i32::from(bsum), "block {blk} sums {j}");
            }
        }
    }
}

#[test]
fn packed_kernels_match_the_scalar_reference_and_agree_across_entry_points() {
    // The scalar packed kernel must compute what the ggml-layout scalar kernel computes on
    // the unpacked row (same blocks, same order: bit for bit). The SIMD packed kernels sum
    // in their own order (within the usual tolerance of the scalar one), and their one-row,
    // tile and many-row entry points must agree to the bit: a server batching sequences
    // relies on it.
    let mut rng = Rng::new(5);
    let mut simd = 0;
    for ty in crate::repack::PACKED_TYPES {
        let scalar = packed_kernel_for(ty, Isa::Scalar).unwrap();
        let unpacked = kernel_for(ty, Isa::Scalar).unwrap();
        for nb in 1..=9 {
            let (k, rows) = (ty.block_size() as usize * nb, 3);
            let w: Vec<u8> = (0..rows)
                .flat_map(|_| random_weights(&mut rng, ty, k))
                .collect();
            let prb = crate::repack::packed_row_bytes(ty, k).unwrap();
            let mut pw = vec![0u8; rows * prb];
            crate::repack::pack_rows(ty, k, &w, &mut pw);
            let x: Vec<Vec<f32>> = (0..TILE).map(|_| random_acts(&mut rng, k)).collect();
            let acts: Vec<Vec<u8>> = x.iter().map(|x| quantized(scalar.act, x)).collect();
            let a4 = [&acts[0][..], &acts[1], &acts[2], &acts[3]];
            let rb = w.len() / rows;
            for r in 0..rows {
                let (wr, pr) = (&w[r * rb..(r + 1) * rb], &pw[r * prb..(r + 1) * prb]);
                for (t, x) in x.iter().enumerate() {
                    let want = unpacked.dot(wr, &quantized(unpacked.act, x));
                    let got = scalar.dot(pr, a4[t]);
                    assert_eq!(got.to_bits(), want.to_bits(), "{ty} scalar k={k} row {r}");
                }
            }
            for isa in [Isa::Avx2, Isa::Avx512Vnni] {
                let Some(kern) = packed_kernel_for(ty, isa).filter(|_| isa.supported()) else {
                    continue;
                };
                simd += 1;
                let mut many = vec![0f32; rows];
                kern.dot_rows(&pw, prb, a4[0], &mut many);
                // Rows 0 and 2 in one pass: each as alone.
                let (mut first, mut second) = ([f32::NAN], [f32::NAN]);
                let (run0, run2) = (&pw[..prb], &pw[2 * prb..]);
                kern.dot_row_pairs(run0, run2, prb, a4[0], &mut first, &mut second);
                let what = format!("{ty} {isa:?} k={k} pairs");
                assert_eq!(first[0].to_bits(), many[0].to_bits(), "{what}");
                assert_eq!(second[0].to_bits(), many[2].to_bits(), "{what}");
                for r in 0..rows {
                    let pr = &pw[r * prb..(r + 1) * prb];
                    let what = format!("{ty} {isa:?} k={k} row {r}");
                    let tile = kern.dot_tile(pr, a4);
                    for t in 0..TILE {
                        let want = scalar.dot(pr, a4[t]);
                        let tol =
                            1e-5 * magnitude(
                                &unpacked,
                                &w[r * rb..(r + 1) * rb],
                                &quantized(unpacked.act, &x[t]),
                            ) + 1e-6;
                        assert!(
                            (tile[t] - want).abs() <= tol,
                            "{what} tile {t}: {} vs {want}",
                            tile[t]
                        );
                        assert_eq!(
                            kern.dot(pr, a4[t]).to_bits(),
                            tile[t].to_bits(),
                            "{what} dot {t}"
                        );
                    }
                    assert_eq!(many[r].to_bits(), tile[0].to_bits(), "{what} rows");
                }
            }
        }
    }
    if Isa::Avx512Vnni.supported() {
        assert!(simd >= 36, "the AVX-512 packed kernels ran");
    }
}

#[test]
fn packed_rows_of_the_wrong_length_are_refused() {
    let k = packed_kernel_for(GgmlType::Q4_0, Isa::Scalar).unwrap();
    let a = quantized(k.act, &[0.5; 5 * 32]);
    assert_eq!(a.len(), 2 * 256);
    // Five blocks pack into 90 bytes (a group and a short one of one block). The grouped
    // activation row only tells its number of groups (two: five to eight blocks), so rows
    // of another number of groups, or of a partial block, are refused.
    for w in [&[0u8; 72][..], &[0u8; 162], &[0u8; 89]] {
        assert!(std::panic::catch_unwind(|| k.dot(w, &a)).is_err());
    }
    assert_eq!(k.dot(&[0u8; 90], &a), 0.0);
    // A k-quant row of three blocks is padded to four.
    let k = packed_kernel_for(GgmlType::Q4_K, Isa::Scalar).unwrap();
    let a = quantized(k.act, &[0.5; 3 * 256]);
    assert!(std::panic::catch_unwind(|| k.dot(&[0u8; 3 * 144], &a)).is_err());
    assert_eq!(k.dot(&[0u8; 4 * 144], &a), 0.0);
}
