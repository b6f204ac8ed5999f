//! Scale searches shared by the k-quants and IQ4 formats.
//!
//! Each picks the scale (and for asymmetric codes the minimum) of a small group of values so as
//! to minimise a weighted squared reconstruction error `Σ w·(x − d·q)²`, by trying a short
//! ladder of candidate inverse scales around the naive "largest value on the largest code" one
//! and, for each rounding they produce, taking the least-squares optimum scale for that
//! rounding. This is the approach of ggml's `make_qx_quants` family; the weights come from
//! the caller (the values themselves, or an importance vector).

use super::nearest_int;

/// Below this a group is treated as all zeros (ggml's GROUP_MAX_EPS).
pub(super) const GROUP_MAX_EPS: f32 = 1e-15;

/// Symmetric codes in `-nmax..nmax` (`l[i]` stored as `q + nmax`), returning the scale.
/// `w` are per-element weights.
pub(super) fn symmetric(x: &[f32], w: &[f32], nmax: i32, l: &mut [i8]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let code = |v: f32, iscale: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let eval = |iscale: f32| -> (f32, f32) {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for (&v, &wi) in x.iter().zip(w) {
            let q = code(v, iscale) as f32;
            sumlx += wi * v * q;
            suml2 += wi * q * q;
        }
        (sumlx, suml2)
    };
    // Putting the extreme value on -nmax uses the one extra negative code.
    let mut best_iscale = -nmaxf / max;
    let (sumlx, suml2) = eval(best_iscale);
    let mut scale = if suml2 > 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for step in -9..=9 {
        if step == 0 {
            continue;
        }
        let iscale = -(nmaxf + 0.1 * step as f32) / max;
        let (sumlx, suml2) = eval(iscale);
        // sumlx²/suml2 is the error reduction of the optimal scale for this rounding.
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            scale = sumlx / suml2;
            best = scale * sumlx;
            best_iscale = iscale;
        }
    }
    for (li, &v) in l.iter_mut().zip(x) {
        *li = (code(v, best_iscale) + nmax) as i8;
    }
    scale
}

/// Asymmetric codes `0..=nmax` with `x ≈ scale·l − min` (`min ≥ 0` is returned as the value to
/// subtract). Tries inverse scales `(nmax + rmin + rdelta·k) / (max − min)` for `k in 0..=nstep`.
#[allow(clippy::too_many_arguments)]
/// Groups are at most 32 elements.
pub(super) fn asymmetric(
    x: &[f32],
    w: &[f32],
    nmax: i32,
    l: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x.iter().copied().fold(f32::INFINITY, f32::min);
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // The minimum is subtracted by the decoder; a positive one would waste code range.
    if min > 0.0 {
        min = 0.0;
    }
    if max == min || !(max - min).is_finite() {
        l.fill(0);
        return (0.0, -min);
    }
    let sum_w: f32 = w.iter().sum();
    let sum_x: f32 = w.iter().zip(x).map(|(a, b)| a * b).sum();
    let nmaxf = nmax as f32;
    let err = |scale: f32, mn: f32, codes: &[u8]| -> f32 {
        let mut e = 0.0f32;
        for i in 0..n {
            let diff = scale * f32::from(codes[i]) + mn - x[i];
            e += w[i] * if use_mad { diff.abs() } else { diff * diff };
        }
        e
    };
    let quant = |iscale: f32, mn: f32, codes: &mut [u8]| {
        for (c, &v) in codes.iter_mut().zip(x) {
            *c = nearest_int(iscale * (v - mn)).clamp(0, nmax) as u8;
        }
    };
    let iscale = nmaxf / (max - min);
    let mut scale = 1.0 / iscale;
    quant(iscale, min, l);
    let mut best_err = err(scale, min, l);
    let mut aux_buf = [0u8; 32];
    let aux = &mut aux_buf[..n];
    for k in 0..=nstep {
        let iscale = (rmin + rdelta * k as f32 + nmaxf) / (max - min);
        quant(iscale, min, aux);
        let (mut sl, mut sl2, mut sxl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let q = f32::from(aux[i]);
            sl += w[i] * q;
            sl2 += w[i] * q * q;
            sxl += w[i] * q * x[i];
        }
        // Weighted least squares for (scale, offset) given these codes.
        let det = sum_w * sl2 - sl * sl;
        if det > 0.0 {
            let mut this_scale = (sum_w * sxl - sum_x * sl) / det;
            let mut this_min = (sl2 * sum_x - sl * sxl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sxl / sl2;
            }
            let e = err(this_scale, this_min, aux);
            if e < best_err {
                l.copy_from_slice(aux);
                best_err = e;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Codes `0..=nmax` for non-negative values (sub-block scales and mins) with `x ≈ d·l`,
/// returning `d`. After the ladder search, codes are moved one at a time while that lowers
/// the weighted error.
pub(super) fn positive(x: &[f32], w: &[f32], nmax: i32, l: &mut [u8]) -> f32 {
    let max = x.iter().copied().fold(0.0f32, f32::max);
    if max < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let code = |v: f32, iscale: f32| nearest_int(iscale * v).clamp(0, nmax);
    let mse = |iscale: f32| -> f32 {
        let scale = 1.0 / iscale;
        x.iter()
            .zip(w)
            .map(|(&v, &wi)| {
                let d = v - scale * code(v, iscale) as f32;
                wi * d * d
            })
            .sum()
    };
    let mut best_iscale = nmaxf / max;
    let mut best = mse(best_iscale);
    for step in -4..=4 {
        if step == 0 {
            continue;
        }
        let iscale = (0.1 * step as f32 + nmaxf) / max;
        let m = mse(iscale);
        if m < best {
            best = m;
            best_iscale = iscale;
        }
    }
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..x.len() {
        let q = code(x[i], best_iscale);
        l[i] = q as u8;
        sumlx += w[i] * x[i] * q as f32;
        suml2 += w[i] * (q * q) as f32;
    }
    for _ in 0..5 {
        let mut changed = false;
        for i in 0..x.len() {
            let q = f32::from(l[i]);
            let slx = sumlx - w[i] * x[i] * q;
            let sl2 = suml2 - w[i] * q * q;
            if slx > 0.0 && sl2 > 0.0 {
                let nq = nearest_int(x[i] * sl2 / slx).clamp(0, nmax);
                if nq != i32::from(l[i]) {
                    let nqf = nq as f32;
                    let slx2 = slx + w[i] * x[i] * nqf;
                    let sl22 = sl2 + w[i] * nqf * nqf;
                    if slx2 > 0.0 && slx2 * slx2 * suml2 > sumlx * sumlx * sl22 {
                        l[i] = nq as u8;
                        sumlx = slx2;
                        suml2 = sl22;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Q3_K-style symmetric codes in `-nmax..nmax` with weights `x²`, refined by moving single
/// codes while the optimal-scale error drops. `l` gets `q + nmax`.
pub(super) fn symmetric_refined(x: &[f32], nmax: i32, l: &mut [i8]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let mut q: Vec<i32> = x
        .iter()
        .map(|&v| nearest_int(iscale * v).clamp(-nmax, nmax - 1))
        .collect();
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for (&v, &qi) in x.iter().zip(&q) {
        let w = v * v;
        sumlx += w * v * qi as f32;
        suml2 += w * (qi * qi) as f32;
    }
    for _ in 0..5 {
        let mut changed = false;
        for i in 0..x.len() {
            let w = x[i] * x[i];
            let qi = q[i] as f32;
            let slx = sumlx - w * x[i] * qi;
            if slx > 0.0 {
                let sl2 = suml2 - w * qi * qi;
                let nq = nearest_int(x[i] * sl2 / slx).clamp(-nmax, nmax - 1);
                if nq != q[i] {
                    let nqf = nq as f32;
                    let slx2 = slx + w * x[i] * nqf;
                    let sl22 = sl2 + w * nqf * nqf;
                    if sl22 > 0.0 && slx2 * slx2 * suml2 > sumlx * sumlx * sl22 {
                        q[i] = nq;
                        sumlx = slx2;
                        suml2 = sl22;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for (li, &qi) in l.iter_mut().zip(&q) {
        *li = (qi + nmax) as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}
