//! Many sequences over one model, decoded together: the engine side of the server's
//! continuous batching.
//!
//! A [`MultiSession`] holds `n_slots` independent KV caches. [`MultiSession::eval`] appends
//! new tokens to any subset of slots in ONE forward pass (see
//! [`Decoder::forward_seqs`](crate::models::Decoder::forward_seqs)) and returns each slot's
//! next-token logits; slots can be cleared or rewound (prompt caching) independently.
//!
//! Each item says whether its tokens are prompt or the token decoded at the previous step
//! ([`TokenRole`]): the two take different matmul routes (prompt speed for prompts), and a
//! slot's results depend on its own tokens and their roles only, never on its batch. So a
//! prefix kept for prompt caching gives the bits of a fresh run only if it was fed as prompt.
//!
//! ```
//! # use ferrite_engine::{Model, batch::{MultiSession, TokenRole::*}};
//! let model = Model::from_gguf(ferrite_engine::session::tiny_test_model())?;
//! let mut ms = MultiSession::new(model, 2, 64, Default::default(), Some(1))?;
//! let logits = ms.eval(&[(0, &[1, 2, 3][..], Prompt), (1, &[4][..], Decoded)])?;
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
pub use crate::models::decoder::TokenRole;
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
    pub fn eval(&mut self, items: &[(usize, &[u32], TokenRole)]) -> Result<Vec<Vec<f32>>> {
        let n_slots = self.caches.len();
        let mut seen = vec![false; n_slots];
        for &(slot, _, _) in items {
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
            .map(|&(slot, tokens, role)| SeqTokens {
                kv: by_slot[slot].take().expect("slots checked distinct"),
                tokens,
                role,
            })
            .collect();
        self.model
            .decoder()
            .forward_seqs(&self.pool, &mut seqs, &mut self.scratch)?;
        drop(seqs);
        for &(slot, tokens, _) in items {
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
    use crate::session::{tiny_test_model, tiny_test_model_of, SessionOptions};
    use ferrite_gguf::GgmlType;
    use TokenRole::{Decoded, Prompt};

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
        let items: Vec<(usize, &[u32], TokenRole)> = vec![
            (2, prompts[2], Prompt),
            (0, prompts[0], Prompt),
            (1, prompts[1], Prompt),
        ];
        let got = ms.eval(&items).unwrap();
        for (k, &(slot, toks, _)) in items.iter().enumerate() {
            let want = solo[slot].eval(toks).unwrap().to_vec();
            assert!(max_diff(&got[k], &want) < 1e-5, "slot {slot}");
        }
        // Steps 2..: decode one token per slot, a slot sitting out now and then.
        for step in 0..6u32 {
            let items: Vec<(usize, Vec<u32>)> = (0..3)
                .filter(|&s| !(step % 3 == 1 && s == 1))
                .map(|s| (s, vec![(step * 5 + s as u32) % 32]))
                .collect();
            let refs: Vec<(usize, &[u32], TokenRole)> = items
                .iter()
                .map(|(s, t)| (*s, t.as_slice(), Decoded))
                .collect();
            let got = ms.eval(&refs).unwrap();
            for (k, (slot, toks)) in items.iter().enumerate() {
                let want = solo[*slot].eval(toks).unwrap().to_vec();
                assert!(max_diff(&got[k], &want) < 1e-5, "step {step} slot {slot}");
            }
        }
        // Rewinding a slot (prompt caching) and re-feeding gives the same logits again.
        let before = ms.tokens(0).to_vec();
        ms.truncate(0, 3);
        let again = ms.eval(&[(0, &before[3..], Prompt)]).unwrap();
        solo[0].truncate(3);
        let want = solo[0].eval(&before[3..]).unwrap().to_vec();
        assert!(max_diff(&again[0], &want) < 1e-5);
    }

    /// A slot's logits depend on its own tokens and their roles, to the bit: a prompt fed
    /// whole and alone, or cut into three pieces batched with other slots' prompts and
    /// decoded tokens (on another thread count), ends with the same logits, and so does
    /// every decoded token after it. The weights are quantized so that prompts take the GEMM
    /// and decoded tokens the row kernels where the CPU has the GEMM.
    #[test]
    fn a_slot_gets_the_same_bits_alone_or_batched() {
        for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
            let model = Model::from_gguf(tiny_test_model_of(ty)).unwrap();
            let prompt: Vec<u32> = (0..21).map(|i| (i * 7 + 3) % 32).collect();
            let decoded = [5u32, 9, 11, 4];
            let mut solo = MultiSession::new(model.clone(), 1, 64, KvType::F16, Some(1)).unwrap();
            let mut want = solo.eval(&[(0, &prompt, Prompt)]).unwrap();
            for t in decoded {
                want.extend(solo.eval(&[(0, &[t][..], Decoded)]).unwrap());
            }

            let mut ms = MultiSession::new(model.clone(), 3, 64, KvType::F16, Some(2)).unwrap();
            let other: Vec<u32> = (0..17).map(|i| (i * 5 + 1) % 32).collect();
            ms.eval(&[(0, &[1, 2, 3][..], Prompt)]).unwrap();
            ms.eval(&[
                (2, &other[..10], Prompt),
                (0, &[4][..], Decoded),
                (1, &prompt[..3], Prompt),
            ])
            .unwrap();
            ms.eval(&[
                (0, &[6][..], Decoded),
                (1, &prompt[3..12], Prompt),
                (2, &other[10..], Prompt),
            ])
            .unwrap();
            let mut got = ms
                .eval(&[(0, &[7][..], Decoded), (1, &prompt[12..], Prompt)])
                .unwrap()
                .split_off(1);
            for (step, t) in decoded.into_iter().enumerate() {
                let out = ms
                    .eval(&[
                        (2, &[step as u32][..], Decoded),
                        (1, &[t][..], Decoded),
                        (0, &[8][..], Decoded),
                    ])
                    .unwrap();
                got.push(out[1].clone());
            }
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    g.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{ty}: logits {i} differ"
                );
            }

            // The roles matter where prompts have the GEMM: the same prompt fed as decoded
            // rows ends in other bits, so the comparison above could catch a wrong route.
            if ferrite_quant::gemm::available() {
                let mut rows = MultiSession::new(model, 1, 64, KvType::F16, Some(1)).unwrap();
                let other_route = rows.eval(&[(0, &prompt, Decoded)]).unwrap();
                assert_ne!(other_route[0], want[0], "{ty}: routes round alike");
            }
        }
    }

    #[test]
    fn bad_input_is_an_error_and_changes_nothing() {
        let model = Model::from_gguf(tiny_test_model()).unwrap();
        let mut ms = MultiSession::new(model, 2, 4, KvType::F16, Some(1)).unwrap();
        ms.eval(&[(0, &[1, 2][..], Prompt)]).unwrap();
        assert!(ms
            .eval(&[(0, &[1][..], Decoded), (0, &[2][..], Decoded)])
            .is_err());
        assert!(ms.eval(&[(5, &[1][..], Prompt)]).is_err());
        assert!(ms.eval(&[(1, &[][..], Prompt)]).is_err());
        assert!(ms.eval(&[(1, &[99][..], Prompt)]).is_err());
        // Slot 0 would overflow its 4-token context: nothing is written anywhere.
        assert!(ms
            .eval(&[(1, &[3][..], Prompt), (0, &[1, 2, 3][..], Decoded)])
            .is_err());
        assert_eq!(ms.tokens(0), &[1, 2]);
        assert_eq!(ms.tokens(1), &[] as &[u32]);
    }
}
