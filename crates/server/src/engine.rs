//! The real model behind the server: [`EngineBackend`] implements [`BatchBackend`] over the
//! engine's [`MultiSession`] (one KV cache per slot, every active slot in one forward pass);
//! [`EngineCodec`] implements [`TextCodec`] with the model's tokenizer and chat template.

use crate::backend::{BackendError, BatchBackend, BatchItem, ChatMessage, SlotId, TextCodec};
use ferrite_engine::batch::MultiSession;
use ferrite_engine::chat::{ChatTemplate, Message};
use ferrite_engine::tokenizer::Tokenizer;
use ferrite_engine::{KvType, Model};
use std::sync::Arc;

pub struct EngineBackend {
    ms: MultiSession,
}

impl EngineBackend {
    /// `n_slots` sequences of `n_ctx` tokens each; `n_threads`: `None` for the physical cores.
    pub fn new(
        model: Arc<Model>,
        n_slots: usize,
        n_ctx: usize,
        n_threads: Option<usize>,
    ) -> ferrite_engine::Result<Self> {
        Ok(EngineBackend {
            ms: MultiSession::new(model, n_slots, n_ctx, KvType::F16, n_threads)?,
        })
    }
}

impl BatchBackend for EngineBackend {
    fn n_slots(&self) -> usize {
        self.ms.n_slots()
    }
    fn n_ctx(&self) -> usize {
        self.ms.n_ctx()
    }
    fn n_vocab(&self) -> usize {
        self.ms.model().config().n_vocab
    }
    fn forward(&mut self, items: &[BatchItem<'_>]) -> Result<Vec<Vec<f32>>, BackendError> {
        let items: Vec<_> = items.iter().map(|i| (i.slot, i.tokens, i.role)).collect();
        self.ms
            .eval(&items)
            .map_err(|e| BackendError(e.to_string()))
    }
    fn clear_slot(&mut self, slot: SlotId) {
        self.ms.clear(slot);
    }
    fn truncate_slot(&mut self, slot: SlotId, n_keep: usize) {
        self.ms.truncate(slot, n_keep);
    }
}

/// The model's tokenizer and chat template (both from its GGUF metadata) as a [`TextCodec`].
pub struct EngineCodec {
    tok: Tokenizer,
    template: ChatTemplate,
}

impl EngineCodec {
    /// `template`: a built-in template name or a file (as `--chat-template`), else the
    /// model's own or the built-in fallback for its architecture.
    pub fn from_model(model: &Model, template: Option<&str>) -> Result<Self, String> {
        let md = model.gguf().metadata();
        let tok = Tokenizer::from_metadata(md).map_err(|e| format!("tokenizer: {e}"))?;
        let template = match template {
            Some(arg) => ChatTemplate::from_arg(arg, md),
            None => ChatTemplate::from_metadata(md, None),
        }
        .map_err(|e| format!("chat template: {e}"))?;
        Ok(EngineCodec { tok, template })
    }
}

impl TextCodec for EngineCodec {
    fn n_vocab(&self) -> usize {
        self.tok.vocab_size()
    }
    fn tokenize_prompt(&self, text: &str) -> Result<Vec<u32>, String> {
        // Completion mode as llama.cpp: BOS as the metadata asks, special tokens parsed.
        self.tok.encode(text, true, true).map_err(|e| e.to_string())
    }
    fn tokenize_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, String> {
        let msgs: Vec<Message> = messages
            .iter()
            .map(|m| Message::new(m.role.clone(), m.content.clone()))
            .collect();
        let text = self
            .template
            .render_prompt(&msgs, true, serde_json::Value::Null, self.tok.add_bos())
            .map_err(|e| format!("chat template: {e}"))?;
        self.tokenize_prompt(&text)
    }
    fn token_bytes(&self, id: u32) -> Vec<u8> {
        self.tok.token_to_piece(id)
    }
    fn is_eog(&self, id: u32) -> bool {
        self.tok.is_eog(id)
    }
}
