//! TQ1_0 and TQ2_0: ternary weights (-1, 0, +1) times one f16 scale per 256 elements, for
//! models trained ternary (BitNet b1.58). TQ2_0 stores 2 bits per weight; TQ1_0 packs five
//! trits per byte (3⁵ = 243 ≤ 256) for 1.69 bits per weight.
//!
//! Codes are `round(x / max|x|)`, rounding half away from zero, as the `gguf` Python package
//! does (tests compare bit for bit).

use super::put_f16;

fn trits(x: &[f32]) -> (f32, [u8; 256]) {
    let d = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut t = [1u8; 256];
    for (ti, &v) in t.iter_mut().zip(x) {
        *ti = ((v * id).round().clamp(-1.0, 1.0) as i8 + 1) as u8;
    }
    (d, t)
}

/// Five (or four) trits, most significant first, as a base-3 number scaled so that the
/// decoder's `(byte · 3^k · 3) >> 8` recovers trit `k`.
fn pack_trits(ts: &[u8]) -> u8 {
    let mut v = 0u16;
    for &t in ts {
        v = v * 3 + u16::from(t);
    }
    for _ in ts.len()..5 {
        v *= 3;
    }
    (v * 256).div_ceil(243) as u8
}

pub(super) fn tq1_0(x: &[f32], _qw: Option<&[f32]>, out: &mut [u8]) {
    let (d, t) = trits(x);
    // Bytes 0..32: trits j, j+32, .., j+128; bytes 32..48: 160 + (j, j+16, .., j+64);
    // bytes 48..52: 240 + (j, j+4, j+8, j+12).
    for j in 0..32 {
        out[j] = pack_trits(&[t[j], t[j + 32], t[j + 64], t[j + 96], t[j + 128]]);
    }
    for j in 0..16 {
        let b = 160 + j;
        out[32 + j] = pack_trits(&[t[b], t[b + 16], t[b + 32], t[b + 48], t[b + 64]]);
    }
    for j in 0..4 {
        let b = 240 + j;
        out[48 + j] = pack_trits(&[t[b], t[b + 4], t[b + 8], t[b + 12]]);
    }
    put_f16(&mut out[52..54], d);
}

pub(super) fn tq2_0(x: &[f32], _qw: Option<&[f32]>, out: &mut [u8]) {
    let (d, t) = trits(x);
    for h in 0..2 {
        for i in 0..32 {
            let b = 128 * h + i;
            out[32 * h + i] = t[b] | (t[b + 32] << 2) | (t[b + 64] << 4) | (t[b + 96] << 6);
        }
    }
    put_f16(&mut out[64..66], d);
}
