//! `llama`: Llama 2/3, Mistral, Mixtral (experts), SmolLM2, TinyLlama. Adjacent-pair RoPE,
//! SwiGLU; experts when the file has `expert_count`. The defaults of [`ModelConfig::common`].

use super::config::{Meta, ModelConfig};
use crate::error::Result;

pub(super) fn configure(_m: &Meta, _c: &mut ModelConfig) -> Result<()> {
    Ok(())
}
