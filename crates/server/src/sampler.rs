//! Per-request sampling: turns one slot's last-position logits into the next token id.
//!
//! The chain, in llama.cpp's order: logit bias → repetition / frequency / presence penalties
//! over the last `penalty_last_n` tokens → (temperature ≤ 0: argmax) → top-k → top-p → min-p →
//! temperature → a draw from a seeded generator. Each request owns its [`Sampler`], so a fixed
//! seed gives the same tokens whatever else the server is doing.

use std::collections::HashMap;

/// Sampling settings of one request (defaults: llama.cpp server's).
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    /// 0 disables.
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// 1 disables; > 1 discourages repeats.
    pub repeat_penalty: f32,
    /// How many of the latest tokens the penalties look at.
    pub penalty_last_n: usize,
    /// Added to the logits of the given ids before anything else.
    pub logit_bias: Vec<(u32, f32)>,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repeat_penalty: 1.0,
            penalty_last_n: 64,
            logit_bias: Vec::new(),
            seed: 0,
        }
    }
}

/// A sampler with its own random state.
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: u64,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = params.seed ^ 0x853c_49e6_748f_ea9b;
        Sampler { params, rng }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// splitmix64 → uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Picks the next token. `history` is the sequence so far (prompt and generated tokens).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let p = &self.params;
        let mut l: Vec<f32> = logits
            .iter()
            .map(|&x| if x.is_nan() { f32::NEG_INFINITY } else { x })
            .collect();
        for &(id, bias) in &p.logit_bias {
            if let Some(x) = l.get_mut(id as usize) {
                *x += bias;
            }
        }
        let penalise =
            p.repeat_penalty != 1.0 || p.presence_penalty != 0.0 || p.frequency_penalty != 0.0;
        if penalise && p.penalty_last_n > 0 {
            let window = &history[history.len().saturating_sub(p.penalty_last_n)..];
            let mut counts: HashMap<u32, u32> = HashMap::new();
            for &t in window {
                *counts.entry(t).or_default() += 1;
            }
            for (&t, &c) in &counts {
                if let Some(x) = l.get_mut(t as usize) {
                    if p.repeat_penalty != 1.0 {
                        *x = if *x > 0.0 {
                            *x / p.repeat_penalty
                        } else {
                            *x * p.repeat_penalty
                        };
                    }
                    *x -= c as f32 * p.frequency_penalty + p.presence_penalty;
                }
            }
        }
        if p.temperature <= 0.0 {
            return argmax(&l);
        }
        let mut cand: Vec<(u32, f32)> = l
            .iter()
            .enumerate()
            .filter(|(_, x)| x.is_finite())
            .map(|(i, &x)| (i as u32, x))
            .collect();
        if cand.is_empty() {
            return argmax(&l);
        }
        cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if p.top_k > 0 && p.top_k < cand.len() {
            cand.truncate(p.top_k);
        }
        // Probabilities of the untempered logits decide top-p and min-p, as in llama.cpp.
        let max = cand[0].1;
        let mut probs: Vec<f64> = cand.iter().map(|c| f64::from(c.1 - max).exp()).collect();
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|q| *q /= sum);
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = cand.len();
            for (i, q) in probs.iter().enumerate() {
                acc += q;
                if acc >= f64::from(p.top_p) {
                    keep = i + 1;
                    break;
                }
            }
            cand.truncate(keep);
            probs.truncate(keep);
        }
        if p.min_p > 0.0 {
            let floor = probs[0] * f64::from(p.min_p);
            let keep = probs.iter().take_while(|&&q| q >= floor).count().max(1);
            cand.truncate(keep);
        }
        let t = f64::from(p.temperature);
        let weights: Vec<f64> = cand
            .iter()
            .map(|c| (f64::from(c.1 - max) / t).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut r = self.next_f64() * total;
        for (c, w) in cand.iter().zip(&weights) {
            if r < *w {
                return c.0;
            }
            r -= w;
        }
        cand[cand.len() - 1].0
    }
}

/// Index of the largest logit (the first one on ties); 0 for an empty slice.
pub fn argmax(l: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in l.iter().enumerate() {
        if x > l[best] || (l[best].is_nan() && !x.is_nan()) {
            best = i;
        }
    }
    best as u32
}

/// Natural-log softmax probability of `chosen` over the full vocabulary, and the `k` most likely
/// ids with theirs (best first).
pub fn logprobs(logits: &[f32], chosen: u32, k: usize) -> (f32, Vec<(u32, f32)>) {
    let max = logits
        .iter()
        .copied()
        .filter(|x| !x.is_nan())
        .fold(f32::NEG_INFINITY, f32::max);
    let lse = logits
        .iter()
        .filter(|x| !x.is_nan())
        .map(|&x| f64::from(x - max).exp())
        .sum::<f64>()
        .ln() as f32
        + max;
    let lp = |x: f32| {
        if x.is_nan() {
            f32::NEG_INFINITY
        } else {
            x - lse
        }
    };
    let chosen_lp = logits
        .get(chosen as usize)
        .map_or(f32::NEG_INFINITY, |&x| lp(x));
    let mut top: Vec<(u32, f32)> = Vec::new();
    if k > 0 {
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        let k = k.min(idx.len());
        let cmp = |a: &u32, b: &u32| {
            lp(logits[*b as usize])
                .total_cmp(&lp(logits[*a as usize]))
                .then(a.cmp(b))
        };
        if k < idx.len() {
            idx.select_nth_unstable_by(k - 1, cmp);
            idx.truncate(k);
        }
        idx.sort_by(cmp);
        top = idx
            .into_iter()
            .map(|i| (i, lp(logits[i as usize])))
            .collect();
    }
    (chosen_lp, top)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greedy() -> SamplingParams {
        SamplingParams {
            temperature: 0.0,
            ..Default::default()
        }
    }

    #[test]
    fn greedy_takes_argmax_after_bias() {
        let l = [0.0, 3.0, 1.0];
        assert_eq!(Sampler::new(greedy()).sample(&l, &[]), 1);
        let p = SamplingParams {
            logit_bias: vec![(2, 5.0), (99, 1.0)],
            ..greedy()
        };
        assert_eq!(Sampler::new(p).sample(&l, &[]), 2);
    }

    #[test]
    fn penalties_touch_only_recent_tokens() {
        let l = [2.0, 1.9, 0.0];
        let p = SamplingParams {
            repeat_penalty: 1.1,
            ..greedy()
        };
        // 2.0 / 1.1 = 1.818 < 1.9: token 0 loses its lead once it is in the window.
        assert_eq!(Sampler::new(p.clone()).sample(&l, &[0]), 1);
        assert_eq!(Sampler::new(p.clone()).sample(&l, &[2]), 0);
        let p = SamplingParams {
            penalty_last_n: 1,
            ..p
        };
        assert_eq!(Sampler::new(p).sample(&l, &[0, 2]), 0);
        let p = SamplingParams {
            frequency_penalty: 0.06,
            ..greedy()
        };
        assert_eq!(Sampler::new(p.clone()).sample(&l, &[0]), 0);
        assert_eq!(Sampler::new(p).sample(&l, &[0, 0]), 1);
    }

    #[test]
    fn top_k_and_top_p_restrict_the_draw() {
        let l = [1.0, 0.9, 0.8, 0.7, -5.0];
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 2,
            top_p: 1.0,
            min_p: 0.0,
            ..Default::default()
        };
        let mut s = Sampler::new(p);
        for _ in 0..200 {
            assert!(s.sample(&l, &[]) < 2);
        }
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.01,
            min_p: 0.0,
            ..Default::default()
        };
        let mut s = Sampler::new(p);
        for _ in 0..50 {
            assert_eq!(s.sample(&l, &[]), 0);
        }
    }

    #[test]
    fn same_seed_same_tokens_and_all_candidates_reachable() {
        let l: Vec<f32> = (0..8).map(|i| i as f32 * 0.01).collect();
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 7,
            ..Default::default()
        };
        let a: Vec<u32> = {
            let mut s = Sampler::new(p.clone());
            (0..100).map(|_| s.sample(&l, &[])).collect()
        };
        let b: Vec<u32> = {
            let mut s = Sampler::new(p);
            (0..100).map(|_| s.sample(&l, &[])).collect()
        };
        assert_eq!(a, b);
        for t in 0..8 {
            assert!(a.contains(&t), "token {t} never drawn");
        }
    }

    #[test]
    fn logprobs_are_a_log_softmax() {
        let l = [0.0f32, 1.0, 2.0];
        let (lp, top) = logprobs(&l, 1, 2);
        let z = (0f64.exp() + 1f64.exp() + 2f64.exp()).ln();
        assert!((f64::from(lp) - (1.0 - z)).abs() < 1e-6);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].0, 2);
        assert_eq!(top[1].0, 1);
        assert!((f64::from(top[0].1) - (2.0 - z)).abs() < 1e-6);
    }
}
