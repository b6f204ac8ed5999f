//! `gemma2`: like gemma3 without q/k norm, plus soft-capping of attention scores and final
//! logits, sliding window on every other layer, and an output always tied to the embeddings.

use super::config::{Activation, Meta, ModelConfig, RopeStyle};
use crate::error::Result;

pub(super) fn configure(m: &Meta, c: &mut ModelConfig) -> Result<()> {
    c.set_rope_style(RopeStyle::Neox);
    c.activation = Activation::GeluTanh;
    c.embed_scale = Some((c.n_embd as f32).sqrt());
    // Gemma 2 27B (46 layers) scales queries by n_embd / n_head instead of the head size.
    let q_dim = if c.n_layer == 46 {
        c.n_embd / c.n_head
    } else {
        c.head_dim_k
    };
    c.attn_scale = 1.0 / (q_dim as f32).sqrt();
    c.attn_softcap = Some(m.f32_or("attn_logit_softcapping", 50.0)?).filter(|&v| v > 0.0);
    c.final_softcap = Some(m.f32_or("final_logit_softcapping", 30.0)?).filter(|&v| v > 0.0);
    c.sliding_window = m.opt_usize("attention.sliding_window")?.unwrap_or(4096);
    c.set_swa_pattern(m, 2)?;
    if let Some(base_swa) = m.opt_f32("rope.freq_base_swa")? {
        for l in &mut c.layers {
            if let (true, Some(r)) = (l.swa, &mut l.rope) {
                r.base = base_swa;
            }
        }
    }
    c.force_tied_output = true;
    Ok(())
}
