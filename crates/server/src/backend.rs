//! The narrow interface between the server and a model.
//!
//! The scheduler owns one [`BatchBackend`] on its inference thread and calls
//! [`BatchBackend::forward`] once per step with the new tokens of every active slot; the HTTP
//! handlers share one [`TextCodec`] to turn requests into token ids, and the scheduler uses it to
//! turn ids back into text. Anything that implements these two traits can be served.

use std::fmt;

pub use ferrite_engine::batch::TokenRole;

/// Index of a slot: one independent sequence with its own KV-cache region, `0..n_slots`.
pub type SlotId = usize;

/// The new tokens of one slot for one batched forward pass.
#[derive(Clone, Copy, Debug)]
pub struct BatchItem<'a> {
    pub slot: SlotId,
    /// Tokens to append to the slot's sequence (one while decoding, many while prefilling).
    pub tokens: &'a [u32],
    /// Prompt tokens, or the token sampled at the previous step. A backend may compute the
    /// two differently (the engine's prompts take its faster prompt path), as long as a
    /// slot's results depend only on its own tokens and their roles, never on its batch.
    pub role: TokenRole,
}

/// A failed forward pass; the scheduler fails the requests of the batch and clears their slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendError(pub String);

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BackendError {}

/// A model that decodes several independent sequences ("slots") in one batched forward pass.
pub trait BatchBackend: Send {
    /// How many slots the backend holds.
    fn n_slots(&self) -> usize;
    /// Context length of each slot (tokens its KV cache can hold).
    fn n_ctx(&self) -> usize;
    /// Vocabulary size (length of each logits vector).
    fn n_vocab(&self) -> usize;
    /// Appends each item's tokens to its slot's sequence and returns, per item and in the same
    /// order, the logits after the item's last token. Each slot appears at most once.
    fn forward(&mut self, items: &[BatchItem<'_>]) -> Result<Vec<Vec<f32>>, BackendError>;
    /// Forgets everything the slot holds.
    fn clear_slot(&mut self, slot: SlotId);
    /// Keeps the first `n_keep` tokens of the slot's sequence and forgets the rest (prompt
    /// caching: a new request that shares a prefix with what the slot holds starts from there;
    /// the scheduler only keeps tokens that were fed as prompt, so that a reply is the same
    /// with or without a cache hit).
    fn truncate_slot(&mut self, slot: SlotId, n_keep: usize);
}

/// One chat message, already validated (role is `system`, `user` or `assistant`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// Text in and out: tokenization, chat-template rendering, detokenization, end-of-generation ids.
pub trait TextCodec: Send + Sync {
    /// Vocabulary size; token ids in requests must be below it.
    fn n_vocab(&self) -> usize;
    /// Token ids of a raw completion prompt (BOS as the model asks, special tokens parsed).
    fn tokenize_prompt(&self, text: &str) -> Result<Vec<u32>, String>;
    /// Token ids of a conversation rendered with the model's chat template, ending with the
    /// assistant's generation prompt.
    fn tokenize_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, String>;
    /// The bytes a token stands for when generated (may be part of a UTF-8 sequence).
    fn token_bytes(&self, id: u32) -> Vec<u8>;
    /// Whether generating this token ends the reply (EOS, EOT, ...).
    fn is_eog(&self, id: u32) -> bool;
}
