//! Many sequences over one model, decoded together: the engine side of the server's
//! continuous batching.
//!
//! A [`MultiSession`] holds `n_slots` independent KV caches. [`MultiSession::eval`] appends
//! new tokens to any subset of slots in ONE forward pass (see
//! [`Decoder::forward_seqs`](crate::models::Decoder::forward_seqs)) and returns each slot's
//! next-token logits; slots can be cleared or rewound (prompt caching) independently.
//!
//! ```
//! # use ferrite_engine::{Model, batch::MultiSession};
//! let model = Model::from_gguf(ferrite_engine::session::tiny_test_model())?;
//! let mut ms = MultiSession::new(model, 2, 64, Default::default(), Some(1))?;
//! let logits = ms.eval(&[(0, &[1, 2, 3][..]), (1, &[4][..])])?;
//! assert_eq!(logits.len(), 2);
//! assert_eq!(ms.tokens(0), &[1, 2, 3]);
//! ms.truncate(0, 1); // keep the first token's cache
//! # Ok::<(), ferrite_engine::Error>(())
//! ```

use std::sync::Arc;

use ferrite_quant::matmul::ThreadPool;

use crate::error::{Error, Result};
use crate::kv_cache::{KvCache, KvType};
use crate::models::decoder::SeqTokens;
use crate::models::Scratch;
use crate::session::{physical_cores, Model};

/// `n_slots` sequences of up to `n_ctx` tokens each, on one model.
pub struct MultiSession {
    model: Arc<Model>,
    pool: ThreadPool,
    caches: Vec<KvCache>,
    tokens: Vec<Vec<u32>>,
    scratch: Scratch,
    n_ctx: usize,
}

impl MultiSession {
    /// `n_threads`: `None` for the number of physical cores.
    pub fn new(
        model: Arc<Model>,
        n_slots: usize,
        n_ctx: usize,
        kv_type: KvType,
        n_threads: Option<usize>,
    ) -> Result<MultiSession> {
        if n_slots == 0 || n_ctx == 0 {
            return Err(Error::Invalid(
                "slot count and context size must be positive".into(),
            ));
        }
        let caches = (0..n_slots)
            .map(|_| model.decoder().new_cache(kv_type, n_ctx))
            .collect();
        Ok(MultiSession {
            pool: ThreadPool::new(n_threads.unwrap_or_else(physical_cores)),
            caches,
            tokens: vec![Vec::new(); n_slots],
            scratch: Scratch::default(),
            n_ctx,
            model,
        })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn n_slots(&self) -> usize {
        self.caches.len()
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Tokens a slot holds.
    pub fn tokens(&self, slot: usize) -> &[u32] {
        self.tokens.get(slot).map_or(&[], Vec::as_slice)
    }

    /// Appends `tokens` to each listed slot (each slot at most once) in one forward pass and
    /// returns, in the same order, the next-token logits of each. On error no slot changed.
    pub fn eval(&mut self, items: &[(usize, &[u32])]) -> Result<Vec<Vec<f32>>> {
        let n_slots = self.caches.len();
        let mut seen = vec![false; n_slots];
        for &(slot, _) in items {
            if slot >= n_slots {
                return Err(Error::Invalid(format!(
                    "slot {slot} does not exist ({n_slots} slots)"
                )));
            }
            if std::mem::replace(&mut seen[slot], true) {
                return Err(Error::Invalid(format!("slot {slot} listed twice")));
            }
        }
        // Hand out disjoint &mut caches in the order of `items`.
        let mut by_slot: Vec<Option<&mut KvCache>> = self.caches.iter_mut().map(Some).collect();
        let mut seqs: Vec<SeqTokens<'_>> = items
            .iter()
            .map(|&(slot, tokens)| SeqTokens {
                kv: by_slot[slot].take().expect("slots checked distinct"),
                tokens,
            })
            .collect();
        self.model
            .decoder()
            .forward_seqs(&self.pool, &mut seqs, &mut self.scratch)?;
        drop(seqs);
        for &(slot, tokens) in items {
            self.tokens[slot].extend_from_slice(tokens);
        }
        let n_vocab = self.model.config().n_vocab;
        Ok(self
            .scratch
            .logits
            .chunks_exact(n_vocab)
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// Forgets a slot's tokens.
    pub fn clear(&mut self, slot: usize) {
        self.truncate(slot, 0);
    }

    /// Keeps the first `n` tokens of a slot (and their cache).
    pub fn truncate(&mut self, slot: usize, n: usize) {
        if let (Some(kv), Some(t)) = (self.caches.get_mut(slot), self.tokens.get_mut(slot)) {
            let n = n.min(t.len());
            kv.truncate(n);
            t.truncate(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{tiny_test_model, SessionOptions};

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// Batched logits equal those of independent sessions fed the same tokens (the per-row
    /// maths is identical; only the thread split of attention could reorder sums).
    #[test]
    fn batched_equals_separate_sessions() {
        let model = Model::from_gguf(tiny_test_model()).unwrap();
        let opts = SessionOptions {
            n_ctx: Some(64),
            kv_type: KvType::F32,
            n_threads: Some(1),
            ..Default::default()
        };
        let mut ms = MultiSession::new(model.clone(), 3, 64, KvType::F32, Some(1)).unwrap();
        let mut solo: Vec<_> = (0..3)
            .map(|_| model.session(opts.clone()).unwrap())
            .collect();
        // Step 1: prompts of different lengths in one batch, listed out of slot order.
        let prompts: [&[u32]; 3] = [&[1, 2, 3, 4, 5], &[7], &[9, 8, 7]];
        let items: Vec<(usize, &[u32])> = vec![(2, prompts[2]), (0, prompts[0]), (1, prompts[1])];
        let got = ms.eval(&items).unwrap();
        for (k, &(slot, toks)) in items.iter().enumerate() {
            let want = solo[slot].eval(toks).unwrap().to_vec();
            assert!(max_diff(&got[k], &want) < 1e-5, "slot {slot}");
        }
        // Steps 2..: decode one token per slot, a slot sitting out now and then.
        for step in 0..6u32 {
            let items: Vec<(usize, Vec<u32>)> = (0..3)
                .filter(|&s| !(step % 3 == 1 && s == 1))
                .map(|s| (s, vec![(step * 5 + s as u32) % 32]))
                .collect();
            let refs: Vec<(usize, &[u32])> =
                items.iter().map(|(s, t)| (*s, t.as_slice())).collect();
            let got = ms.eval(&refs).unwrap();
            for (k, (slot, toks)) in items.iter().enumerate() {
                let want = solo[*slot].eval(toks).unwrap().to_vec();
                assert!(max_diff(&got[k], &want) < 1e-5, "step {step} slot {slot}");
            }
        }
        // Rewinding a slot (prompt caching) and re-feeding gives the same logits again.
        let before = ms.tokens(0).to_vec();
        ms.truncate(0, 3);
        let again = ms.eval(&[(0, &before[3..])]).unwrap();
        solo[0].truncate(3);
        let want = solo[0].eval(&before[3..]).unwrap().to_vec();
        assert!(max_diff(&again[0], &want) < 1e-5);
    }

    #[test]
    fn bad_input_is_an_error_and_changes_nothing() {
        let model = Model::from_gguf(tiny_test_model()).unwrap();
        let mut ms = MultiSession::new(model, 2, 4, KvType::F16, Some(1)).unwrap();
        ms.eval(&[(0, &[1, 2][..])]).unwrap();
        assert!(ms.eval(&[(0, &[1][..]), (0, &[2][..])]).is_err());
        assert!(ms.eval(&[(5, &[1][..])]).is_err());
        assert!(ms.eval(&[(1, &[][..])]).is_err());
        assert!(ms.eval(&[(1, &[99][..])]).is_err());
        // Slot 0 would overflow its 4-token context: nothing is written anywhere.
        assert!(ms.eval(&[(1, &[3][..]), (0, &[1, 2, 3][..])]).is_err());
        assert_eq!(ms.tokens(0), &[1, 2]);
        assert_eq!(ms.tokens(1), &[] as &[u32]);
    }
}
