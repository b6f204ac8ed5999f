//! Plain float formats: F32 (a copy), F16 and BF16 (round to nearest even).

pub(super) fn f32_block(x: &[f32], _qw: Option<&[f32]>, out: &mut [u8]) {
    out.copy_from_slice(&x[0].to_le_bytes());
}

pub(super) fn f16_block(x: &[f32], _qw: Option<&[f32]>, out: &mut [u8]) {
    super::put_f16(out, x[0]);
}

/// BF16 is the top half of an f32. Rounding is to nearest even on the dropped half; a NaN is
/// kept a (quiet) NaN, since rounding its payload could carry it into the infinity pattern.
pub(super) fn bf16_block(x: &[f32], _qw: Option<&[f32]>, out: &mut [u8]) {
    let bits = x[0].to_bits();
    let h = if bits & 0x7fff_ffff > 0x7f80_0000 {
        ((bits >> 16) | 0x40) as u16
    } else {
        ((u64::from(bits) + 0x7fff + u64::from((bits >> 16) & 1)) >> 16) as u16
    };
    out.copy_from_slice(&h.to_le_bytes());
}
