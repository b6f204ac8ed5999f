//! Model families and the one generic decoder-only transformer that runs them all.
//!
//! [`config`] turns GGUF metadata into a typed [`ModelConfig`]; each family file (`llama.rs`,
//! `gemma3.rs`, ...) adjusts that config for its differences (RoPE style, norms, windows,
//! soft-capping...). Tensor-level variations (biases, fused QKV, q/k norms, post norms,
//! experts) are detected from the tensor names by [`decoder`].

pub mod config;
pub mod decoder;
mod gemma2;
mod gemma3;
mod llama;
mod mistral3;
mod phi3;
mod qwen2;
mod qwen3;
mod smollm3;

use ferrite_gguf::Metadata;

pub use config::{Activation, LayerConfig, ModelConfig, Rope, RopeStyle};
pub use decoder::{Decoder, LogitsFor, Scratch};

use crate::error::{Error, Result};
use config::Meta;

type Configure = fn(&Meta, &mut ModelConfig) -> Result<()>;

const FAMILIES: &[(&str, Configure)] = &[
    ("llama", llama::configure),
    ("qwen2", qwen2::configure),
    ("qwen3", qwen3::configure),
    ("gemma3", gemma3::configure),
    ("gemma2", gemma2::configure),
    ("smollm3", smollm3::configure),
    ("phi3", phi3::configure),
    ("mistral3", mistral3::configure),
];

/// The `general.architecture` values ferrite runs.
pub fn supported_architectures() -> Vec<&'static str> {
    FAMILIES.iter().map(|(n, _)| *n).collect()
}

/// Reads the model configuration from a file's metadata. `n_vocab` comes from the embedding
/// tensor (the vocabulary-size key is optional in GGUF).
pub fn config_from_metadata(md: &Metadata, n_vocab: usize) -> Result<ModelConfig> {
    let arch = md.require_str("general.architecture")?;
    let configure = FAMILIES
        .iter()
        .find(|(n, _)| *n == arch)
        .map(|(_, f)| f)
        .ok_or_else(|| Error::UnsupportedArch {
            arch: arch.to_string(),
            supported: supported_architectures().join(", "),
        })?;
    let m = Meta { md, arch };
    let mut c = ModelConfig::common(&m, n_vocab)?;
    configure(&m, &mut c)?;
    Ok(c)
}
