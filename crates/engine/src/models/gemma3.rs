//! `gemma3`: embeddings scaled by √n_embd, q/k RMSNorm, post-attention and post-FFN norms
//! (tensors), GeGLU, sliding-window layers (`il % 6 < 5` unless the file says otherwise) whose
//! RoPE base is `rope.freq_base_swa` (default 10000) without frequency scaling.

use super::config::{Activation, Meta, ModelConfig, RopeStyle};
use crate::error::Result;

pub(super) fn configure(m: &Meta, c: &mut ModelConfig) -> Result<()> {
    c.set_rope_style(RopeStyle::Neox);
    c.activation = Activation::GeluTanh;
    c.embed_scale = Some((c.n_embd as f32).sqrt());
    // Gemma 3 27B (62 layers) scales queries by n_embd / n_head instead of the head size.
    let q_dim = if c.n_layer == 62 {
        c.n_embd / c.n_head
    } else {
        c.head_dim_k
    };
    c.attn_scale = 1.0 / (q_dim as f32).sqrt();
    c.final_softcap = m.opt_f32("final_logit_softcapping")?.filter(|&v| v > 0.0);
    c.sliding_window = m.opt_usize("attention.sliding_window")?.unwrap_or(0);
    c.set_swa_pattern(m, 6)?;
    let base_swa = m.f32_or("rope.freq_base_swa", 10000.0)?;
    for l in &mut c.layers {
        if let (true, Some(r)) = (l.swa, &mut l.rope) {
            r.base = base_swa;
            r.freq_scale = 1.0;
            r.yarn = None;
            r.attn_factor = 1.0;
        }
    }
    Ok(())
}
