//! `qwen3`: NeoX RoPE, per-head RMSNorm of q and k before RoPE (`attn_q_norm`/`attn_k_norm`,
//! picked up from the tensors), head size from `attention.key_length`.

use super::config::{Meta, ModelConfig, RopeStyle};
use crate::error::Result;

pub(super) fn configure(_m: &Meta, c: &mut ModelConfig) -> Result<()> {
    c.set_rope_style(RopeStyle::Neox);
    Ok(())
}
