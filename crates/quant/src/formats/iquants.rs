//! The i-quants: weights snapped to points of a fixed lattice ("grid") with per-group signs
//! and small scales (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S), and the
//! non-linear 4-bit codebook types (IQ4_NL, IQ4_XS). Grid tables live in [`super::tables`].
//!
//! Layouts (bytes): IQ2_XXS `d, qs[64]` (66: per 32 elements two u32, four grid bytes then
//! four 7-bit sign codes and a 4-bit scale); IQ2_XS `d, qs[32] (u16), scales[8]` (74);
//! IQ2_S `d, qs[32], signs[32], qh[8], scales[8]` (82); IQ3_XXS `d, qs[64], scales[8] (u32)`
//! (98); IQ3_S `d, qs[64], qh[8], signs[32], scales[4]` (110); IQ1_S `d, qs[32], qh[8] (u16)`
//! (50); IQ1_M `qs[32], qh[16], scales[8]` (56; the f16 scale is spread over the top nibbles
//! of the four u16 scale words); IQ4_NL `d, qs[16]` (18); IQ4_XS `d, scales_h (u16),
//! scales_l[4], qs[128]` (136).

use super::tables::{IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID};
use super::{f16_at, f16_to_f32, row_fn, u16_at, u32_at};

/// The 7-bit sign codes of IQ2_XXS/IQ2_XS/IQ3_XXS stand for 8 sign bits whose parity is
/// even: the eighth bit is the parity of the other seven.
const KSIGNS: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut i = 0;
    while i < 128 {
        t[i] = i as u8 | (((i as u8).count_ones() as u8 & 1) << 7);
        i += 1;
    }
    t
};

/// The IQ4_NL/IQ4_XS codebook (a 4-bit non-uniform grid).
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// `v * -1.0` when `negative`, `v` otherwise, with the hardware's NaN rule: a NaN operand
/// comes out unchanged (its sign is kept). Written out because the compiler may turn a
/// multiplication by ±1 into a sign flip, which would flip NaN signs and break bit-equality
/// with the reference (numpy multiplies by ±1.0).
#[inline]
fn apply_sign(v: f32, negative: bool) -> f32 {
    if negative && !v.is_nan() {
        -v
    } else {
        v
    }
}

/// Writes `out[k] = (db * grid_byte_k) * (±1 by sign bit k)` for an 8-wide grid row.
#[inline]
fn put8(out: &mut [f32], db: f32, row: u64, signs: u8) {
    for (k, o) in out.iter_mut().take(8).enumerate() {
        let g = f32::from((row >> (8 * k)) as u8);
        *o = apply_sign(db * g, (signs >> k) & 1 != 0);
    }
}

/// The same for two 4-wide rows (IQ3 grids) sharing one byte of sign bits.
#[inline]
fn put4x2(out: &mut [f32], db: f32, rows: [u32; 2], signs: u8) {
    for (k, o) in out.iter_mut().take(8).enumerate() {
        let g = f32::from((rows[k / 4] >> (8 * (k % 4))) as u8);
        *o = apply_sign(db * g, (signs >> k) & 1 != 0);
    }
}

pub fn dequantize_block_iq2_xxs(b: &[u8; 66], out: &mut [f32; 256]) {
    let d = f16_at(b, 0);
    for (ib, sub) in out.chunks_exact_mut(32).enumerate() {
        let grid = u32_at(b, 2 + 8 * ib);
        let aux = u32_at(b, 6 + 8 * ib);
        let db = d * (0.5 + (aux >> 28) as f32) * 0.25;
        for (l, o) in sub.chunks_exact_mut(8).enumerate() {
            let row = IQ2XXS_GRID[((grid >> (8 * l)) & 0xff) as usize];
            let signs = KSIGNS[((aux >> (7 * l)) & 0x7f) as usize];
            put8(o, db, row, signs);
        }
    }
}

pub fn dequantize_block_iq2_xs(b: &[u8; 74], out: &mut [f32; 256]) {
    let d = f16_at(b, 0);
    for (i, o) in out.chunks_exact_mut(8).enumerate() {
        let q = u16_at(b, 2 + 2 * i);
        let nibble = (b[66 + i / 4] >> (4 * ((i / 2) % 2))) & 0x0f;
        let db = d * (0.5 + f32::from(nibble)) * 0.25;
        put8(
            o,
            db,
            IQ2XS_GRID[usize::from(q & 511)],
            KSIGNS[usize::from(q >> 9)],
        );
    }
}

pub fn dequantize_block_iq2_s(b: &[u8; 82], out: &mut [f32; 256]) {
    let d = f16_at(b, 0);
    for (i, o) in out.chunks_exact_mut(8).enumerate() {
        let high = (b[66 + i / 4] >> (2 * (i % 4))) & 3;
        let idx = usize::from(b[2 + i]) | (usize::from(high) << 8);
        let nibble = (b[74 + i / 4] >> (4 * ((i / 2) % 2))) & 0x0f;
        let db = d * (0.5 + f32::from(nibble)) * 0.25;
        put8(o, db, IQ2S_GRID[idx], b[34 + i]);
    }
}

pub fn dequantize_block_iq3_xxs(b: &[u8; 98], out: &mut [f32; 256]) {
    let d = f16_at(b, 0);
    for (ib, sub) in out.chunks_exact_mut(32).enumerate() {
        let aux = u32_at(b, 66 + 4 * ib);
        let db = d * (0.5 + (aux >> 28) as f32) * 0.5;
        for (l, o) in sub.chunks_exact_mut(8).enumerate() {
            let q = 2 + 8 * ib + 2 * l;
            let rows = [
                IQ3XXS_GRID[usize::from(b[q])],
                IQ3XXS_GRID[usize::from(b[q + 1])],
            ];
            put4x2(o, db, rows, KSIGNS[((aux >> (7 * l)) & 0x7f) as usize]);
        }
    }
}

pub fn dequantize_block_iq3_s(b: &[u8; 110], out: &mut [f32; 256]) {
    let d = f16_at(b, 0);
    let idx = |i: usize| usize::from(b[2 + i]) | (usize::from((b[66 + i / 8] >> (i % 8)) & 1) << 8);
    for (i, o) in out.chunks_exact_mut(8).enumerate() {
        // One 4-bit scale per 32 elements: (1 + 2s) in integers, then times d.
        let nibble = (b[106 + i / 8] >> (4 * ((i / 4) % 2))) & 0x0f;
        let db = d * f32::from(1 + 2 * nibble);
        let rows = [IQ3S_GRID[idx(2 * i)], IQ3S_GRID[idx(2 * i + 1)]];
        put4x2(o, db, rows, b[74 + i]);
    }
}

/// IQ1 grid row `row` plus `delta`, times `dl`, into 8 outputs.
#[inline]
fn put_iq1(out: &mut [f32], dl: f32, row: u64, delta: f32) {
    for (k, o) in out.iter_mut().take(8).enumerate() {
        let g = f32::from((row >> (8 * k)) as u8 as i8);
        *o = dl * (g + delta);
    }
}

const IQ1_DELTA: f32 = 0.125;

pub fn dequantize_block_iq1_s(b: &[u8; 50], out: &mut [f32; 256]) {
    let d = f16_at(b, 0);
    for (ib, sub) in out.chunks_exact_mut(32).enumerate() {
        let qh = u16_at(b, 34 + 2 * ib);
        let dl = d * f32::from(2 * ((qh >> 12) & 7) + 1);
        let delta = if qh & 0x8000 != 0 {
            -IQ1_DELTA
        } else {
            IQ1_DELTA
        };
        for (l, o) in sub.chunks_exact_mut(8).enumerate() {
            let idx = usize::from(b[2 + 4 * ib + l]) | (usize::from((qh >> (3 * l)) & 7) << 8);
            put_iq1(o, dl, IQ1S_GRID[idx], delta);
        }
    }
}

pub fn dequantize_block_iq1_m(b: &[u8; 56], out: &mut [f32; 256]) {
    let sc = [u16_at(b, 48), u16_at(b, 50), u16_at(b, 52), u16_at(b, 54)];
    let d = f16_to_f32(
        (sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000),
    );
    for (i, o) in out.chunks_exact_mut(8).enumerate() {
        // Each group of 16 elements (two grid rows) has a 3-bit scale.
        let g16 = i / 2;
        let s = (sc[g16 / 4] >> (3 * (g16 % 4))) & 7;
        let dl = d * f32::from(2 * s + 1);
        let qh = b[32 + i / 2] >> (4 * (i % 2));
        let idx = usize::from(b[i]) | (usize::from(qh & 7) << 8);
        let delta = if qh & 8 != 0 { -IQ1_DELTA } else { IQ1_DELTA };
        put_iq1(o, dl, IQ1S_GRID[idx], delta);
    }
}

pub fn dequantize_block_iq4_nl(b: &[u8; 18], out: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for j in 0..16 {
        let q = b[2 + j];
        out[j] = d * f32::from(KVALUES_IQ4NL[usize::from(q & 0x0f)]);
        out[j + 16] = d * f32::from(KVALUES_IQ4NL[usize::from(q >> 4)]);
    }
}

pub fn dequantize_block_iq4_xs(b: &[u8; 136], out: &mut [f32; 256]) {
    let d = f16_at(b, 0);
    let scales_h = u16_at(b, 2);
    for (ib, sub) in out.chunks_exact_mut(32).enumerate() {
        let low = (b[4 + ib / 2] >> (4 * (ib % 2))) & 0x0f;
        let high = ((scales_h >> (2 * ib)) & 3) as u8;
        let dl = d * f32::from(((low | (high << 4)) as i8) - 32);
        for j in 0..16 {
            let q = b[8 + 16 * ib + j];
            sub[j] = dl * f32::from(KVALUES_IQ4NL[usize::from(q & 0x0f)]);
            sub[j + 16] = dl * f32::from(KVALUES_IQ4NL[usize::from(q >> 4)]);
        }
    }
}

row_fn!(dequantize_row_iq2_xxs, dequantize_block_iq2_xxs, 66, 256);
row_fn!(dequantize_row_iq2_xs, dequantize_block_iq2_xs, 74, 256);
row_fn!(dequantize_row_iq2_s, dequantize_block_iq2_s, 82, 256);
row_fn!(dequantize_row_iq3_xxs, dequantize_block_iq3_xxs, 98, 256);
row_fn!(dequantize_row_iq3_s, dequantize_block_iq3_s, 110, 256);
row_fn!(dequantize_row_iq1_s, dequantize_block_iq1_s, 50, 256);
row_fn!(dequantize_row_iq1_m, dequantize_block_iq1_m, 56, 256);
row_fn!(dequantize_row_iq4_nl, dequantize_block_iq4_nl, 18, 32);
row_fn!(dequantize_row_iq4_xs, dequantize_block_iq4_xs, 136, 256);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ksigns_have_even_parity() {
        for (i, &s) in KSIGNS.iter().enumerate() {
            assert_eq!(s & 0x7f, i as u8);
            assert_eq!(s.count_ones() % 2, 0);
        }
    }
}
