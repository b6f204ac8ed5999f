//! # ferrite-engine: from GGUF weights to tokens and text
//!
//! Model configs and the generic decoder ([`models`]), the [`kv_cache`], [`sampling`],
//! [`tokenizer`]s and [`chat`] templates, the library API in [`session`]: load a [`Model`]
//! once, open any number of independent [`Session`]s on it, [`generate`] text from a prompt
//! as a stream of tokens (`Session::generate`), and [`batch`] for decoding many sequences in
//! one forward pass. The [`Model`] owns its tokenizer ([`Model::tokenize`]) and chat template
//! ([`Model::format_chat`]).

pub mod batch;
pub mod chat;
pub mod error;
pub mod generate;
pub mod kv_cache;
pub mod models;
pub mod ops;
pub mod sampling;
pub mod session;
pub mod tokenizer;
pub mod weights;

pub use error::{Error, Result};
pub use generate::{Completion, GenerateOptions, Generation, Prompt, StopReason, Token};
pub use kv_cache::KvType;
pub use session::{LoadOptions, Model, Session, SessionOptions};
