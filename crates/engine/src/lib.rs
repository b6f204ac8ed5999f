//! # ferrite-engine: from GGUF weights to tokens and text
//!
//! Model configs and the generic decoder (`models`), KV cache, sampling, tokenizers and chat
//! templates.

pub mod chat;
pub mod tokenizer;
