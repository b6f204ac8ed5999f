//! `qwen2`: Qwen2 / Qwen2.5. NeoX RoPE; q/k/v biases (picked up from the tensors).

use super::config::{Meta, ModelConfig, RopeStyle};
use crate::error::Result;

pub(super) fn configure(_m: &Meta, c: &mut ModelConfig) -> Result<()> {
    c.set_rope_style(RopeStyle::Neox);
    Ok(())
}
