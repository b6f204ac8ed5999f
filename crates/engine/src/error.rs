//! The engine's error type: every failure names what went wrong and where.
//!
//! Each message is whole: a variant that wraps a lower layer's error puts that error's
//! message in its own, and so does not also return it from `source()` (a chain printer such
//! as anyhow's `{:#}` would print it twice).

use ferrite_gguf::{GgufError, MetadataError};
use ferrite_quant::QuantError;

/// Everything that can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("model metadata: {0}")]
    Metadata(MetadataError),
    #[error("metadata key '{key}': {message}")]
    BadMetadata { key: String, message: String },
    #[error("unsupported architecture '{arch}' (supported: {supported})")]
    UnsupportedArch { arch: String, supported: String },
    #[error("tensor '{0}' is missing from the model file")]
    MissingTensor(String),
    #[error("tensor '{name}' has shape {found:?}, expected {expected:?}")]
    TensorShape {
        name: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },
    #[error("tensor '{name}': {error}")]
    Quant { name: String, error: QuantError },
    #[error(
        "context is full: {needed} tokens needed, the context holds {n_ctx} (raise --ctx-size)"
    )]
    ContextFull { needed: usize, n_ctx: usize },
    #[error("token id {id} is out of range (vocabulary size {n_vocab})")]
    BadToken { id: u32, n_vocab: usize },
    #[error("tokenizer: {0}")]
    Tokenizer(crate::tokenizer::TokenizerError),
    #[error(transparent)]
    Chat(#[from] crate::chat::ChatError),
    #[error("{0}")]
    Invalid(String),
}

impl From<MetadataError> for Error {
    fn from(e: MetadataError) -> Self {
        Error::Metadata(e)
    }
}

impl From<crate::tokenizer::TokenizerError> for Error {
    fn from(e: crate::tokenizer::TokenizerError) -> Self {
        Error::Tokenizer(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
