//! The real model behind the server: [`EngineBackend`] implements [`BatchBackend`] over the
//! engine's [`MultiSession`] (one KV cache per slot, every active slot in one forward pass).

use crate::backend::{BackendError, BatchBackend, BatchItem, SlotId};
use ferrite_engine::batch::MultiSession;
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
        let items: Vec<(usize, &[u32])> = items.iter().map(|i| (i.slot, i.tokens)).collect();
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
