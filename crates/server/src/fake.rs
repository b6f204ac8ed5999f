//! A deterministic toy model and byte-level codec, so the HTTP layer, batching, queueing and
//! fault handling can be tested without real weights.
//!
//! Vocabulary: ids 0..=255 are bytes, [`FAKE_BOS`] and [`FAKE_EOS`] follow. The logits after a
//! sequence are a pseudo-random function of the WHOLE sequence (so a slot whose cache holds the
//! wrong tokens gives different results), plus a large bonus on one "intended" next token:
//! after a lowercase letter the next letter, after `z` the end-of-sequence token, after an
//! uppercase letter the next one cyclically (`Z` → `A`, never ending), after anything else `a`.
//! So greedy decoding of `"x!"` gives `"abc…z"` then stops, and of `"A"` runs until
//! `max_tokens`.

use crate::backend::{
    BackendError, BatchBackend, BatchItem, ChatMessage, SlotId, TextCodec, TokenRole,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const FAKE_BOS: u32 = 256;
pub const FAKE_EOS: u32 = 257;
pub const FAKE_VOCAB: usize = 258;

/// What the fake backend has seen, for tests to assert on batching.
#[derive(Debug, Default)]
pub struct FakeStats {
    /// Forward calls.
    pub forwards: AtomicUsize,
    /// Largest number of slots in one forward call.
    pub max_items: AtomicUsize,
    /// Tokens processed in total (prompt reuse lowers it).
    pub tokens: AtomicUsize,
    /// Of those, the tokens fed as prompt ([`TokenRole::Prompt`]).
    pub prompt_tokens: AtomicUsize,
}

/// The toy model: per-slot token histories stand for the KV cache.
pub struct FakeBackend {
    slots: Vec<Vec<u32>>,
    n_ctx: usize,
    /// Sleep per forward call, to make steps take time like a real model's.
    pub step_delay: Duration,
    pub stats: Arc<FakeStats>,
}

impl FakeBackend {
    pub fn new(n_slots: usize, n_ctx: usize) -> Self {
        FakeBackend {
            slots: vec![Vec::new(); n_slots],
            n_ctx,
            step_delay: Duration::ZERO,
            stats: Arc::new(FakeStats::default()),
        }
    }
}

/// The toy model's logits after `history`.
pub fn fake_logits(history: &[u32]) -> Vec<f32> {
    // FNV-1a over the whole history, then a splitmix-style hash per vocabulary entry.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &t in history {
        h ^= u64::from(t);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut logits: Vec<f32> = (0..FAKE_VOCAB as u64)
        .map(|v| {
            let mut z = h ^ v.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0
        })
        .collect();
    let target = match history.last().copied() {
        Some(t) if (u32::from(b'a')..u32::from(b'z')).contains(&t) => t + 1,
        Some(t) if t == u32::from(b'z') => FAKE_EOS,
        Some(t) if (u32::from(b'A')..u32::from(b'Z')).contains(&t) => t + 1,
        Some(t) if t == u32::from(b'Z') => u32::from(b'A'),
        _ => u32::from(b'a'),
    };
    logits[target as usize] += 4.0;
    logits
}

impl BatchBackend for FakeBackend {
    fn n_slots(&self) -> usize {
        self.slots.len()
    }
    fn n_ctx(&self) -> usize {
        self.n_ctx
    }
    fn n_vocab(&self) -> usize {
        FAKE_VOCAB
    }
    fn forward(&mut self, items: &[BatchItem<'_>]) -> Result<Vec<Vec<f32>>, BackendError> {
        self.stats.forwards.fetch_add(1, Ordering::Relaxed);
        self.stats
            .max_items
            .fetch_max(items.len(), Ordering::Relaxed);
        if !self.step_delay.is_zero() {
            std::thread::sleep(self.step_delay);
        }
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let n_ctx = self.n_ctx;
            let slot = self
                .slots
                .get_mut(item.slot)
                .ok_or_else(|| BackendError(format!("no slot {}", item.slot)))?;
            if item.tokens.is_empty() {
                return Err(BackendError(format!("slot {}: no tokens", item.slot)));
            }
            if slot.len() + item.tokens.len() > n_ctx {
                return Err(BackendError(format!(
                    "slot {}: {} + {} tokens exceed the context of {n_ctx}",
                    item.slot,
                    slot.len(),
                    item.tokens.len()
                )));
            }
            if let Some(&bad) = item.tokens.iter().find(|&&t| t as usize >= FAKE_VOCAB) {
                return Err(BackendError(format!("token {bad} out of vocabulary")));
            }
            slot.extend_from_slice(item.tokens);
            self.stats
                .tokens
                .fetch_add(item.tokens.len(), Ordering::Relaxed);
            if item.role == TokenRole::Prompt {
                self.stats
                    .prompt_tokens
                    .fetch_add(item.tokens.len(), Ordering::Relaxed);
            }
            out.push(fake_logits(slot));
        }
        Ok(out)
    }
    fn clear_slot(&mut self, slot: SlotId) {
        if let Some(s) = self.slots.get_mut(slot) {
            s.clear();
        }
    }
    fn truncate_slot(&mut self, slot: SlotId, n_keep: usize) {
        if let Some(s) = self.slots.get_mut(slot) {
            s.truncate(n_keep);
        }
    }
}

/// Byte-level codec for [`FakeBackend`]: a prompt is BOS then its UTF-8 bytes; the chat
/// template is `<|role|>\ncontent\n` per message then `<|assistant|>\n`.
pub struct FakeCodec;

impl TextCodec for FakeCodec {
    fn n_vocab(&self) -> usize {
        FAKE_VOCAB
    }
    fn tokenize_prompt(&self, text: &str) -> Result<Vec<u32>, String> {
        Ok(std::iter::once(FAKE_BOS)
            .chain(text.bytes().map(u32::from))
            .collect())
    }
    fn tokenize_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, String> {
        let mut s = String::new();
        for m in messages {
            s.push_str(&format!("<|{}|>\n{}\n", m.role, m.content));
        }
        s.push_str("<|assistant|>\n");
        self.tokenize_prompt(&s)
    }
    fn token_bytes(&self, id: u32) -> Vec<u8> {
        u8::try_from(id).map(|b| vec![b]).unwrap_or_default()
    }
    fn is_eog(&self, id: u32) -> bool {
        id == FAKE_EOS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logits_follow_the_alphabet_and_depend_on_history() {
        let argmax = |l: &[f32]| {
            l.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0 as u32
        };
        assert_eq!(
            argmax(&fake_logits(&[FAKE_BOS, u32::from(b'c')])),
            u32::from(b'd')
        );
        assert_eq!(argmax(&fake_logits(&[u32::from(b'z')])), FAKE_EOS);
        assert_eq!(argmax(&fake_logits(&[u32::from(b'Z')])), u32::from(b'A'));
        assert_ne!(fake_logits(&[1, 2, 3]), fake_logits(&[4, 2, 3]));
    }
}
