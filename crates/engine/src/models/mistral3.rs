//! `mistral3`: Ministral 3 style. Adjacent-pair RoPE with YaRN scaling (read by
//! [`ModelConfig::common`]) and llama-4 attention temperature on q.

use super::config::{AttnTemperature, Meta, ModelConfig};
use crate::error::Result;

pub(super) fn configure(m: &Meta, c: &mut ModelConfig) -> Result<()> {
    if let Some(scale) = m.opt_f32("attention.temperature_scale")? {
        if scale != 0.0 {
            let floor = m
                .opt_usize("rope.scaling.original_context_length")?
                .unwrap_or(c.n_ctx_train)
                .max(1);
            c.attn_temperature = Some(AttnTemperature {
                scale,
                floor: floor as f32,
            });
        }
    }
    Ok(())
}
