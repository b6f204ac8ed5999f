//! # ferrite-server: an OpenAI-compatible HTTP API over the engine
//!
//! The pieces, from the wire inwards:
//! - [`http`]: the axum router (`/v1/chat/completions`, `/v1/completions`, `/v1/models`,
//!   `/health`, `/metrics`), API-key check, body limit, request log, graceful shutdown.
//! - [`request`]: validation of the OpenAI request bodies into typed requests (every known field
//!   type-checked, unknown fields ignored), errors in OpenAI's shape.
//! - [`scheduler`]: continuous batching on a dedicated OS thread: N slots decode together, one
//!   batched forward per step, a bounded queue behind them, prompt-prefix reuse.
//! - [`backend`]: the two narrow traits the scheduler drives ([`BatchBackend`] for the model,
//!   [`TextCodec`] for text), so the HTTP and batching layers do not depend on a particular model.
//! - [`engine`]: the real model as a [`BatchBackend`].
//! - [`fake`]: a deterministic toy backend and byte-level codec for tests.

pub mod backend;
pub mod engine;
pub mod fake;
pub mod http;
pub mod metrics;
pub mod request;
pub mod scheduler;
pub mod text;

pub use backend::{
    BackendError, BatchBackend, BatchItem, ChatMessage, SlotId, TextCodec, TokenRole,
};
pub use http::{serve, ServerOptions};
