//! Properties of every quantizer, checked through the crate's own dequantizers (which are
//! tested bit-exact against the `gguf` Python package elsewhere).
//!
//! Error bounds are stated per block, relative to the block's largest magnitude `amax`
//! (the super-block's for 256-element types), from the bits per weight: a uniform `b`-bit code
//! over `[-amax, amax]` has a step of `2·amax/(2^b − 1)`, so no element needs to be off by more
//! than half of it, `amax/(2^b − 1)`. The bounds below are on the block RMSE, which must stay
//! under that figure times a small slack for scale rounding (f16 / 6-bit sub-block scales) and
//! for the searches that deliberately clip an outlier to lower the error of the rest.

use proptest::prelude::*;

use super::*;
use crate::dequantize;

/// (type, bound on block RMSE / block amax, largest integer factor applied to the f16 scale).
///
/// The last column sets an absolute floor: a block so small that its f16 scale is subnormal
/// (below 6.1e-5) gets that scale rounded to a multiple of 2^-24, and the error is multiplied
/// by the largest code × sub-block scale. That is the format's limit, not the quantizer's.
const BOUNDS: &[(GgmlType, f32, f32)] = &[
    (GgmlType::F32, 0.0, 0.0),
    (GgmlType::F16, 1.0 / 2048.0, 1.0),
    (GgmlType::BF16, 1.0 / 256.0, 0.0),
    (GgmlType::Q8_0, 1.25 / 127.0, 127.0),
    (GgmlType::Q8_1, 1.25 / 127.0, 127.0),
    (GgmlType::Q8_K, 1.25 / 127.0, 0.0),
    (GgmlType::Q6_K, 1.5 / 63.0, 128.0 * 32.0),
    (GgmlType::Q5_0, 1.25 / 31.0, 16.0),
    (GgmlType::Q5_1, 1.25 / 31.0, 32.0),
    (GgmlType::Q5_K, 1.5 / 31.0, 64.0 * 32.0),
    (GgmlType::Q4_0, 1.25 / 15.0, 8.0),
    (GgmlType::Q4_1, 1.25 / 15.0, 16.0),
    (GgmlType::Q4_K, 1.5 / 15.0, 64.0 * 16.0),
    // The 16 non-uniform levels have gaps up to 23/240 of the range.
    (GgmlType::IQ4_NL, 1.5 / 15.0, 127.0),
    (GgmlType::IQ4_XS, 1.5 / 15.0, 32.0 * 127.0),
    // E2M1 has relative steps up to 1/3 (4 → 6) on top of a power-of-two scale.
    (GgmlType::MXFP4, 0.25, 0.0),
    (GgmlType::Q3_K, 1.5 / 7.0, 32.0 * 4.0),
    (GgmlType::Q2_K, 1.5 / 3.0, 16.0 * 4.0),
    // Three levels: anything between 0 and amax is at most amax/2 from one.
    (GgmlType::TQ1_0, 0.5, 1.0),
    (GgmlType::TQ2_0, 0.5, 1.0),
];

/// The error floor of subnormal f16 scales (see [`BOUNDS`]).
fn floor(dmul: f32) -> f64 {
    f64::from(dmul) * 2f64.powi(-24) + 1e-12
}

fn round_trip(ty: GgmlType, x: &[f32], qw: Option<&[f32]>) -> Vec<f32> {
    let mut q = vec![0u8; ty.row_bytes(x.len() as u64).unwrap() as usize];
    quantize(ty, x, qw, &mut q).unwrap();
    let mut y = vec![0f32; x.len()];
    dequantize(ty, &q, &mut y).unwrap();
    y
}

fn check_bounds(ty: GgmlType, bound: f32, dmul: f32, x: &[f32]) -> Result<(), TestCaseError> {
    let y = round_trip(ty, x, None);
    let bs = ty.block_size().max(32) as usize;
    for (b, (xb, yb)) in x.chunks(bs).zip(y.chunks(bs)).enumerate() {
        let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
        prop_assert!(yb.iter().all(|v| v.is_finite()), "{ty}: non-finite output");
        let se: f64 = xb
            .iter()
            .zip(yb)
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
            .sum();
        let rmse = (se / xb.len() as f64).sqrt();
        let allowed = f64::from(bound) * f64::from(amax) + floor(dmul);
        prop_assert!(
            rmse <= allowed,
            "{ty} block {b}: rmse {rmse:e} > {allowed:e} (amax {amax:e})"
        );
    }
    Ok(())
}

/// Rows of 512 values: a magnitude between 1e-6 and 1e3 (outliers ×50 stay within f16 range), a
/// distribution shape, and optional constant / zero runs.
fn row() -> impl Strategy<Value = Vec<f32>> {
    (
        -6i32..=3,
        0u8..5,
        prop::collection::vec(-1.0f32..1.0, 512),
        any::<u64>(),
    )
        .prop_map(|(exp, shape, u, seed)| {
            let s = 10f32.powi(exp);
            u.iter()
                .enumerate()
                .map(|(i, &v)| match shape {
                    0 => v * s,
                    1 => v * v * v * s, // peaked near zero, like weights
                    2 => s * 0.5,       // constant
                    3 => {
                        if (i as u64 ^ seed).is_multiple_of(37) {
                            v * s * 50.0 // outliers
                        } else {
                            v * s
                        }
                    }
                    _ => {
                        if (i / 32) % 2 == 0 {
                            0.0
                        } else {
                            v.abs() * s // zero blocks next to positive ones
                        }
                    }
                })
                .collect()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn round_trip_error_within_bits_per_weight(x in row()) {
        for &(ty, bound, dmul) in BOUNDS {
            check_bounds(ty, bound, dmul, &x)?;
        }
    }

    #[test]
    fn importance_vector_keeps_bounds(x in row(), w in prop::collection::vec(0.0f32..10.0, 256)) {
        for &(ty, bound, dmul) in BOUNDS.iter().filter(|(t, _, _)| uses_imatrix(*t)) {
            let y = round_trip(ty, &x, Some(&w));
            let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
            let se: f64 = x.iter().zip(&y).map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2)).sum();
            let rmse = (se / x.len() as f64).sqrt();
            // Zero-importance columns may be given up entirely: bound loosely, but finitely.
            prop_assert!(rmse <= f64::from(4.0 * bound * amax) + floor(dmul), "{ty}: {rmse:e} amax {amax:e}");
        }
    }
}

#[test]
fn every_table_type_has_a_bound() {
    for (ty, _) in QUANTIZERS {
        assert!(BOUNDS.iter().any(|(t, _, _)| t == ty), "{ty} lacks a bound");
    }
}

#[test]
fn zeros_round_trip_to_zeros() {
    for &(ty, _, _) in BOUNDS {
        let zeros = vec![0f32; 256];
        assert!(
            round_trip(ty, &zeros, None).iter().all(|&v| v == 0.0),
            "{ty}"
        );
    }
}

/// A deterministic normal sample (xorshift + Box-Muller): no RNG crate needed.
fn normals(n: usize, mut seed: u64) -> Vec<f32> {
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (next().max(1e-12), next());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

/// With an importance vector that singles out some columns, the importance-weighted error
/// must drop compared with quantizing without it (that is the point of an imatrix).
#[test]
fn importance_vector_lowers_weighted_error() {
    let row_len = 512;
    let x = normals(row_len * 64, 7);
    let imp: Vec<f32> = (0..row_len)
        .map(|c| if c % 5 == 0 { 20.0 } else { 0.5 })
        .collect();
    let werr = |y: &[f32]| -> f64 {
        x.iter()
            .zip(y)
            .enumerate()
            .map(|(i, (a, b))| f64::from(imp[i % row_len]) * f64::from(a - b).powi(2))
            .sum()
    };
    for (ty, _) in QUANTIZERS.iter().filter(|(t, _)| uses_imatrix(*t)) {
        let plain = werr(&round_trip(*ty, &x, None));
        let weighted = werr(&round_trip(*ty, &x, Some(&imp)));
        assert!(
            weighted < 0.97 * plain,
            "{ty}: weighted error with imatrix {weighted:.4} vs without {plain:.4}"
        );
        eprintln!("{ty}: imatrix weighted error ratio {:.3}", weighted / plain);
    }
}

#[test]
fn bad_sizes_are_errors() {
    let x = vec![1f32; 64];
    let mut out = vec![0u8; 36];
    assert_eq!(quantize(GgmlType::Q4_0, &x, None, &mut out), Ok(()));
    assert!(matches!(
        quantize(GgmlType::Q4_0, &x[..63], None, &mut out),
        Err(QuantizeError::NotBlockMultiple { .. })
    ));
    assert!(matches!(
        quantize(GgmlType::Q4_0, &x, None, &mut out[..35]),
        Err(QuantizeError::WrongByteCount { .. })
    ));
    assert!(matches!(
        quantize(GgmlType::Q4_0, &x, Some(&[1.0; 48]), &mut out),
        Err(QuantizeError::RowMismatch { .. })
    ));
    assert!(matches!(
        quantize(GgmlType::Q4_0, &x, Some(&[f32::NAN; 32]), &mut out),
        Err(QuantizeError::BadImportance(0))
    ));
    assert!(matches!(
        quantize(GgmlType::IQ2_XXS, &vec![0f32; 256], None, &mut [0u8; 66]),
        Err(QuantizeError::Unsupported(GgmlType::IQ2_XXS))
    ));
    assert!(matches!(
        quantize_row(GgmlType::Q4_0, &x, Some(&[1.0; 32]), &mut out),
        Err(QuantizeError::RowMismatch { .. })
    ));
}
