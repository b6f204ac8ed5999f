//! Beam search: keeps the `n` best partial sequences by length-normalised log-probability
//! (sum of token log-probabilities divided by length) and returns the best finished one.

use super::log_softmax;
use crate::error::Result;

/// A sequence model beam search can fork: a [`crate::Session`], or a toy model in tests.
pub trait BeamModel: Clone {
    /// Next-token logits after the tokens fed so far.
    fn next_logits(&self) -> &[f32];
    /// Appends one token.
    fn feed(&mut self, token: u32) -> Result<()>;
}

impl BeamModel for crate::Session {
    fn next_logits(&self) -> &[f32] {
        self.logits()
    }

    fn feed(&mut self, token: u32) -> Result<()> {
        self.eval(&[token]).map(|_| ())
    }
}

#[derive(Clone)]
struct Beam<M> {
    model: M,
    tokens: Vec<u32>,
    logprob: f64,
    done: bool,
}

impl<M> Beam<M> {
    fn score(&self) -> f64 {
        self.logprob / self.tokens.len().max(1) as f64
    }
}

/// Runs beam search from `model` (whose logits are ready) for at most `max_tokens`; a beam ends
/// when `is_end(token)`. Returns the best sequence (end token included) and its normalised
/// log-probability.
pub fn beam_search<M: BeamModel>(
    model: &M,
    n_beams: usize,
    max_tokens: usize,
    is_end: impl Fn(u32) -> bool,
) -> Result<(Vec<u32>, f64)> {
    let n_beams = n_beams.max(1);
    let mut beams = vec![Beam {
        model: model.clone(),
        tokens: Vec::new(),
        logprob: 0.0,
        done: false,
    }];
    for step in 0..max_tokens {
        if beams.iter().all(|b| b.done) {
            break;
        }
        // (beam index, token, total logprob); finished beams carry over as they are.
        let mut cands: Vec<(usize, Option<u32>, f64, usize)> = Vec::new();
        for (bi, b) in beams.iter().enumerate() {
            if b.done {
                cands.push((bi, None, b.logprob, b.tokens.len()));
                continue;
            }
            for (t, lp) in super::top_logprobs(b.model.next_logits(), n_beams) {
                cands.push((bi, Some(t), b.logprob + f64::from(lp), b.tokens.len() + 1));
            }
        }
        cands.sort_by(|a, b| (b.2 / b.3 as f64).total_cmp(&(a.2 / a.3 as f64)));
        cands.truncate(n_beams);
        let mut next = Vec::with_capacity(cands.len());
        for (bi, tok, lp, _) in cands {
            let mut b = beams[bi].clone();
            if let Some(t) = tok {
                b.tokens.push(t);
                b.logprob = lp;
                if is_end(t) {
                    b.done = true;
                } else if step + 1 < max_tokens {
                    // The last token is not fed: nothing needs its logits.
                    b.model.feed(t)?;
                }
            }
            next.push(b);
        }
        beams = next;
    }
    let best = beams
        .into_iter()
        .max_by(|a, b| a.score().total_cmp(&b.score()))
        .expect("at least one beam");
    let score = best.score();
    Ok((best.tokens, score))
}

/// Log-probability of `token` under `logits` (helper for scoring).
pub fn token_logprob(logits: &[f32], token: u32) -> f32 {
    log_softmax(logits)[token as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy model over 3 tokens (0 = end) defined by a table of next-token probabilities.
    /// Greedy takes token 1 first (p 0.6) but then faces a flat 3-way split; token 2 first
    /// (p 0.4) leads to a near-certain end: over two steps 2→end (0.4·0.95) beats 1→x (0.6·0.34).
    #[derive(Clone)]
    struct Toy {
        seq: Vec<u32>,
        logits: Vec<f32>,
    }

    fn probs_after(seq: &[u32]) -> [f32; 3] {
        match seq {
            [] => [0.0001, 0.6, 0.3999],
            [1] => [0.34, 0.33, 0.33],
            [2] => [0.95, 0.025, 0.025],
            _ => [0.98, 0.01, 0.01],
        }
    }

    impl Toy {
        fn new() -> Toy {
            let mut t = Toy {
                seq: Vec::new(),
                logits: Vec::new(),
            };
            t.refresh();
            t
        }
        fn refresh(&mut self) {
            self.logits = probs_after(&self.seq).iter().map(|p| p.ln()).collect();
        }
    }

    impl BeamModel for Toy {
        fn next_logits(&self) -> &[f32] {
            &self.logits
        }
        fn feed(&mut self, token: u32) -> Result<()> {
            self.seq.push(token);
            self.refresh();
            Ok(())
        }
    }

    #[test]
    fn beam_search_finds_what_greedy_misses() {
        let toy = Toy::new();
        let (greedy, _) = beam_search(&toy, 1, 4, |t| t == 0).unwrap();
        assert_eq!(greedy[0], 1, "greedy starts with the locally best token");
        let (best, score) = beam_search(&toy, 3, 4, |t| t == 0).unwrap();
        assert_eq!(best, vec![2, 0]);
        let greedy_score = {
            let mut lp = 0.0f64;
            let mut m = Toy::new();
            for &t in &greedy {
                lp += f64::from(token_logprob(m.next_logits(), t));
                m.feed(t).unwrap();
            }
            lp / greedy.len() as f64
        };
        assert!(score > greedy_score, "{score} vs {greedy_score}");
    }
}
