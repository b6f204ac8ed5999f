//! `phi3`: Phi-3 / Phi-4-mini. NeoX RoPE; fused `attn_qkv` and fused `ffn_up` (gate half then up
//! half), both detected from the tensors by the decoder.

use super::config::{Meta, ModelConfig, RopeStyle};
use crate::error::{Error, Result};

pub(super) fn configure(m: &Meta, c: &mut ModelConfig) -> Result<()> {
    c.set_rope_style(RopeStyle::Neox);
    if let Some(w) = m.opt_usize("attention.sliding_window")? {
        // Phi-3 files carry a window as large as the context; llama.cpp applies it to every
        // layer.
        c.sliding_window = w;
        for l in &mut c.layers {
            l.swa = w > 0;
        }
    }
    if m.md.contains_key(&m.key("rope.scaling.attn_factor")) {
        return Err(Error::Invalid(
            "phi3 LongRoPE (rope.scaling.attn_factor / rope_factors_*) is not supported".into(),
        ));
    }
    Ok(())
}
