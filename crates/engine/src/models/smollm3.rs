//! `smollm3`: llama-like, but every fourth layer has no positional encoding (NoPE). llama.cpp
//! hard-codes the step (4); the file has no key for it.

use super::config::{Meta, ModelConfig};
use crate::error::Result;

const NO_ROPE_LAYER_STEP: usize = 4;

pub(super) fn configure(_m: &Meta, c: &mut ModelConfig) -> Result<()> {
    for (il, l) in c.layers.iter_mut().enumerate() {
        if (il + 1) % NO_ROPE_LAYER_STEP == 0 {
            l.rope = None;
        }
    }
    Ok(())
}
