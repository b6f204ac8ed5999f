//! The panel GEMM against the row-at-a-time scalar kernels (themselves checked against the
//! dequantized products), for every type with a panel form, on odd shapes: a last panel with
//! fewer than eight rows, activation counts that leave every tail size of the microkernel.

use super::*;
use crate::kernels::tests::{magnitude, random_acts, random_weights, Rng};
use crate::kernels::{kernel_for, Isa, SUPPORTED};

fn check(simd: bool) {
    let mut rng = Rng::new(11);
    let pools: Vec<ThreadPool> = (1..=2).map(ThreadPool::new).collect();
    let mut checked = 0;
    for &ty in SUPPORTED {
        let Some(g) = group_size(ty) else { continue };
        let sc = kernel_for(ty, Isa::Scalar).unwrap();
        let bs = ty.block_size() as usize;
        for (k, n_rows, n_b) in [(bs, 13, 1), (3 * bs, 8, 15), (2 * bs, 3, 8), (bs, 17, 11)] {
            let w: Vec<u8> = (0..n_rows)
                .flat_map(|_| random_weights(&mut rng, ty, k))
                .collect();
            let x: Vec<f32> = (0..n_b).flat_map(|_| random_acts(&mut rng, k)).collect();
            let rb = w.len() / n_rows;
            let ab = sc.act.row_bytes(k).unwrap();
            let mut want = vec![0f32; n_rows * n_b];
            let mut tol = vec![0f32; n_rows * n_b];
            for b in 0..n_b {
                let mut a = vec![0u8; ab];
                kernels::quantize_row(sc.act, &x[b * k..(b + 1) * k], &mut a);
                let (mut codes, mut da, mut sa) =
                    (vec![0i8; k], vec![0f32; k / g], vec![0f32; k / g]);
                spread_row(sc.act, g, &a, &mut codes, &mut da, &mut sa);
                for r in 0..n_rows {
                    let wr = &w[r * rb..(r + 1) * rb];
                    want[b * n_rows + r] = sc.dot(wr, &a);
                    // The panel form sums D·q·a and M·Σa separately: allow a few ulps of
                    // both terms, plus the reference's own block-order rounding.
                    let (mut q, mut d, mut m) =
                        (vec![0u8; k], vec![0f32; k / g], vec![0f32; k / g]);
                    decode::decode_row(ty, wr, &mut q, &mut d, &mut m);
                    let mut terms = 0f32;
                    for grp in 0..k / g {
                        let qa: i32 = (grp * g..(grp + 1) * g)
                            .map(|i| (i32::from(q[i]) * i32::from(codes[i])).abs())
                            .sum();
                        terms += (d[grp] * da[grp]).abs() * qa as f32 + (m[grp] * sa[grp]).abs();
                    }
                    tol[b * n_rows + r] = 4e-6 * terms + 1e-5 * magnitude(&sc, wr, &a) + 1e-6;
                }
            }
            for pool in &pools {
                let mut y = vec![f32::NAN; n_rows * n_b];
                let layout = Layout { packed: false };
                matmul(pool, &sc, layout, &w, rb, n_rows, k, &x, n_b, &mut y, simd);
                for (i, (got, e)) in y.iter().zip(&want).enumerate() {
                    assert!(
                        (got - e).abs() <= tol[i],
                        "{ty} simd={simd} {n_rows}x{k} n_b={n_b} t={}: y[{i}] = {got}, want {e} (tol {})",
                        pool.n_threads(),
                        tol[i]
                    );
                    checked += 1;
                }
            }
        }
    }
    eprintln!("{checked} panel-GEMM outputs checked (simd={simd})");
}

#[test]
fn scalar_panel_gemm_matches_row_kernels() {
    check(false);
}

#[test]
fn simd_panel_gemm_matches_row_kernels() {
    if !available() {
        eprintln!(
            "AVX-512 VNNI not available on this CPU: the SIMD panel kernel is not tested here"
        );
        return;
    }
    check(true);
}
