//! Turning logits into the next token: a chain of samplers in llama.cpp's order (logit bias,
//! repetition/frequency/presence penalties, top-k, typical-p, top-p, min-p, temperature, then a
//! draw from a seeded RNG), greedy when the temperature is 0, and beam search in [`beam`].
//!
//! ```
//! use ferrite_engine::sampling::{Sampler, SamplerConfig};
//! let logits = [0.0, 3.0, 1.0, 2.9];
//! let mut greedy = Sampler::new(SamplerConfig { temperature: 0.0, ..Default::default() });
//! assert_eq!(greedy.sample(&logits, &[]), 1);
//! // Top-k 2 leaves tokens 1 and 3; a fixed seed makes the draw reproducible.
//! let cfg = SamplerConfig { top_k: 2, seed: 7, ..Default::default() };
//! let a: Vec<u32> = { let mut s = Sampler::new(cfg.clone()); (0..20).map(|_| s.sample(&logits, &[])).collect() };
//! let b: Vec<u32> = { let mut s = Sampler::new(cfg); (0..20).map(|_| s.sample(&logits, &[])).collect() };
//! assert_eq!(a, b);
//! assert!(a.iter().all(|&t| t == 1 || t == 3));
//! ```

pub mod beam;

/// Sampling settings. Defaults are llama.cpp's.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// 0 (or below): greedy.
    pub temperature: f32,
    /// 0: off.
    pub top_k: usize,
    /// 1: off.
    pub top_p: f32,
    /// 0: off.
    pub min_p: f32,
    /// 1: off.
    pub typical_p: f32,
    /// 1: off. Positive logits are divided by it, negative ones multiplied.
    pub repeat_penalty: f32,
    /// Subtracted once per occurrence in the window.
    pub frequency_penalty: f32,
    /// Subtracted once if the token occurs in the window.
    pub presence_penalty: f32,
    /// Penalty window: the last N tokens of the history (0: none).
    pub penalty_last_n: usize,
    /// Added to the logits of the given tokens before anything else.
    pub logit_bias: Vec<(u32, f32)>,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            typical_p: 1.0,
            repeat_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            penalty_last_n: 64,
            logit_bias: Vec::new(),
            seed: 0x5eed,
        }
    }
}

/// A small, fast, seedable PRNG (SplitMix64): reproducible draws without a dependency.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A candidate token and its (adjusted) logit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub id: u32,
    pub logit: f32,
}

/// Natural-log softmax of `logits` over the full vocabulary. A NaN logit counts as -inf (its
/// log-probability is -inf and it does not spoil the others); all -inf gives all -inf.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return vec![f32::NEG_INFINITY; logits.len()];
    }
    let sum: f64 = logits
        .iter()
        .filter(|l| !l.is_nan())
        .map(|&l| f64::from(l - max).exp())
        .sum();
    let lse = max + sum.ln() as f32;
    logits
        .iter()
        .map(|&l| {
            if l.is_nan() {
                f32::NEG_INFINITY
            } else {
                l - lse
            }
        })
        .collect()
}

/// The `k` most likely tokens with their log-probabilities, best first.
pub fn top_logprobs(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let lp = log_softmax(logits);
    let mut idx: Vec<u32> = (0..lp.len() as u32).collect();
    let k = k.min(idx.len());
    if k == 0 {
        return Vec::new();
    }
    idx.select_nth_unstable_by(k - 1, |&a, &b| lp[b as usize].total_cmp(&lp[a as usize]));
    idx.truncate(k);
    idx.sort_by(|&a, &b| lp[b as usize].total_cmp(&lp[a as usize]).then(a.cmp(&b)));
    idx.into_iter().map(|i| (i, lp[i as usize])).collect()
}

/// Adds the logit bias (ids not among the candidates are ignored).
pub fn apply_logit_bias(c: &mut [Candidate], bias: &[(u32, f32)]) {
    for &(id, b) in bias {
        // Candidates fresh from the logits sit at their id's index: no search over the vocabulary.
        let x = match c.get(id as usize) {
            Some(x) if x.id == id => c.get_mut(id as usize),
            _ => c.iter_mut().find(|x| x.id == id),
        };
        if let Some(x) = x {
            x.logit += b;
        }
    }
}

/// Repetition (llama.cpp's sign-aware division), frequency and presence penalties for the
/// tokens of `window`.
pub fn apply_penalties(c: &mut [Candidate], window: &[u32], repeat: f32, freq: f32, presence: f32) {
    if window.is_empty() || (repeat == 1.0 && freq == 0.0 && presence == 0.0) {
        return;
    }
    let mut counts = std::collections::HashMap::<u32, u32>::new();
    for &t in window {
        *counts.entry(t).or_default() += 1;
    }
    for x in c.iter_mut() {
        if let Some(&n) = counts.get(&x.id) {
            if x.logit > 0.0 {
                x.logit /= repeat;
            } else {
                x.logit *= repeat;
            }
            x.logit -= n as f32 * freq + presence;
        }
    }
}

fn desc(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

fn sort_desc(c: &mut [Candidate]) {
    c.sort_by(desc);
}

fn probs(c: &[Candidate]) -> Vec<f32> {
    let max = c.iter().map(|x| x.logit).fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = c.iter().map(|x| f64::from(x.logit - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|&v| (v / s) as f32).collect()
}

/// Keeps the `k` highest logits (sorted best first).
pub fn top_k(c: &mut Vec<Candidate>, k: usize) {
    if k > 0 && k < c.len() {
        // Select before sorting: a full sort of the vocabulary per token is what costs.
        c.select_nth_unstable_by(k - 1, desc);
        c.truncate(k);
    }
    sort_desc(c);
}

/// Keeps the smallest prefix (by probability) whose mass reaches `p`.
pub fn top_p(c: &mut Vec<Candidate>, p: f32) {
    if p >= 1.0 {
        return;
    }
    sort_desc(c);
    let pr = probs(c);
    let mut cum = 0.0;
    let mut keep = c.len();
    for (i, &q) in pr.iter().enumerate() {
        cum += q;
        if cum >= p {
            keep = i + 1;
            break;
        }
    }
    c.truncate(keep.max(1));
}

/// Keeps tokens whose probability is at least `p` times the best one's.
pub fn min_p(c: &mut Vec<Candidate>, p: f32) {
    if p <= 0.0 || c.is_empty() {
        return;
    }
    let max = c.iter().map(|x| x.logit).fold(f32::NEG_INFINITY, f32::max);
    let thresh = max + p.ln();
    c.retain(|x| x.logit >= thresh);
}

/// Locally typical sampling: keeps the tokens whose surprise is closest to the entropy until
/// their mass reaches `p`.
pub fn typical_p(c: &mut Vec<Candidate>, p: f32) {
    if p >= 1.0 || c.len() < 2 {
        return;
    }
    let pr = probs(c);
    let ent: f32 = pr.iter().filter(|&&q| q > 0.0).map(|&q| -q * q.ln()).sum();
    let mut order: Vec<usize> = (0..c.len()).collect();
    let shift = |i: usize| (-pr[i].max(f32::MIN_POSITIVE).ln() - ent).abs();
    order.sort_by(|&a, &b| shift(a).total_cmp(&shift(b)));
    let mut cum = 0.0;
    let mut keep = order.len();
    for (n, &i) in order.iter().enumerate() {
        cum += pr[i];
        if cum >= p {
            keep = n + 1;
            break;
        }
    }
    let kept: Vec<Candidate> = order[..keep].iter().map(|&i| c[i]).collect();
    *c = kept;
}

/// A configured sampler with its RNG state.
#[derive(Clone, Debug)]
pub struct Sampler {
    pub config: SamplerConfig,
    rng: Rng,
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Sampler {
        let rng = Rng::new(config.seed);
        Sampler { config, rng }
    }

    pub fn is_greedy(&self) -> bool {
        self.config.temperature <= 0.0
    }

    /// Picks the next token from `logits` given the tokens so far (`history`, for penalties).
    /// NaN logits count as -inf, so a bad row can never be drawn over a finite one.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let cfg = &self.config;
        let mut c: Vec<Candidate> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| Candidate {
                id: i as u32,
                logit: if l.is_nan() { f32::NEG_INFINITY } else { l },
            })
            .collect();
        apply_logit_bias(&mut c, &cfg.logit_bias);
        let window = &history[history.len().saturating_sub(cfg.penalty_last_n)..];
        apply_penalties(
            &mut c,
            window,
            cfg.repeat_penalty,
            cfg.frequency_penalty,
            cfg.presence_penalty,
        );
        // Lowest id wins ties, like llama.cpp's greedy sampler.
        let greedy = c
            .iter()
            .fold(None::<Candidate>, |best, &x| match best {
                Some(b) if b.logit >= x.logit => Some(b),
                _ => Some(x),
            })
            .map_or(0, |b| b.id);
        if self.is_greedy() {
            return greedy;
        }
        c.retain(|x| x.logit > f32::NEG_INFINITY);
        if c.is_empty() {
            return greedy;
        }
        top_k(&mut c, cfg.top_k);
        typical_p(&mut c, cfg.typical_p);
        top_p(&mut c, cfg.top_p);
        min_p(&mut c, cfg.min_p);
        for x in c.iter_mut() {
            x.logit /= cfg.temperature;
        }
        let pr = probs(&c);
        let r = self.rng.next_f64() as f32;
        let mut cum = 0.0;
        for (x, &q) in c.iter().zip(&pr) {
            cum += q;
            if r < cum {
                return x.id;
            }
        }
        c.last().map_or(0, |x| x.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(l: &[f32]) -> Vec<Candidate> {
        l.iter()
            .enumerate()
            .map(|(i, &logit)| Candidate {
                id: i as u32,
                logit,
            })
            .collect()
    }

    fn ids(c: &[Candidate]) -> Vec<u32> {
        let mut v: Vec<u32> = c.iter().map(|x| x.id).collect();
        v.sort();
        v
    }

    #[test]
    fn top_k_keeps_exactly_k() {
        let mut c = cands(&[0.1, 5.0, 3.0, -1.0, 4.0, 2.0]);
        top_k(&mut c, 3);
        assert_eq!(ids(&c), vec![1, 2, 4]);
        let mut c = cands(&[1.0, 2.0]);
        top_k(&mut c, 10);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        // probabilities 0.5, 0.25, 0.125, 0.125
        let l = [2f32.ln() * 2.0, 2f32.ln(), 0.0, 0.0];
        let mut c = cands(&l);
        top_p(&mut c, 0.7);
        assert_eq!(ids(&c), vec![0, 1], "0.5 < 0.7 <= 0.75");
        let mut c = cands(&l);
        top_p(&mut c, 0.5);
        assert_eq!(ids(&c), vec![0]);
        let mut c = cands(&l);
        top_p(&mut c, 0.8);
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn min_p_is_relative_to_the_best() {
        let l = [2f32.ln() * 2.0, 2f32.ln(), 0.0];
        let mut c = cands(&l);
        min_p(&mut c, 0.3); // p = 4/7, 2/7, 1/7 -> keep p >= 0.3 * 4/7
        assert_eq!(ids(&c), vec![0, 1]);
    }

    #[test]
    fn typical_prefers_tokens_near_the_entropy() {
        // Three equally likely tokens (surprise ln 3 = the entropy) and one far less likely
        // (surprise ~13): the outlier goes, the typical three stay.
        let mut c = cands(&[2.0, 2.0, 2.0, -10.0]);
        typical_p(&mut c, 0.9);
        assert_eq!(ids(&c), vec![0, 1, 2]);
        let mut c = cands(&[2.0, 2.0, 2.0, -10.0]);
        typical_p(&mut c, 0.5);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn penalties_change_exactly_the_penalised_tokens() {
        let l = [2.0, -2.0, 1.0, 3.0];
        let mut c = cands(&l);
        apply_penalties(&mut c, &[0, 1, 1], 2.0, 0.5, 0.25);
        assert_eq!(c[0].logit, 2.0 / 2.0 - 0.5 - 0.25);
        assert_eq!(c[1].logit, -2.0 * 2.0 - 1.0 - 0.25);
        assert_eq!(c[2].logit, 1.0);
        assert_eq!(c[3].logit, 3.0);
        let mut c = cands(&l);
        apply_logit_bias(&mut c, &[(2, 5.0)]);
        assert_eq!(
            c.iter().map(|x| x.logit).collect::<Vec<_>>(),
            vec![2.0, -2.0, 6.0, 3.0]
        );
    }

    #[test]
    fn penalty_window_is_the_last_n() {
        let logits = [1.0, 1.1];
        let cfg = SamplerConfig {
            temperature: 0.0,
            repeat_penalty: 2.0,
            penalty_last_n: 1,
            ..Default::default()
        };
        let mut s = Sampler::new(cfg);
        assert_eq!(
            s.sample(&logits, &[1, 0]),
            1,
            "only the last token (0) is penalised"
        );
        assert_eq!(s.sample(&logits, &[0, 1]), 0);
    }

    #[test]
    fn same_seed_same_output_different_seed_differs() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let run = |seed| {
            let mut s = Sampler::new(SamplerConfig {
                seed,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                temperature: 1.5,
                ..Default::default()
            });
            (0..64).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn top_k_selection_equals_a_full_sort() {
        let l: Vec<f32> = (0..500).map(|i| ((i * 7919) % 263) as f32 * 0.1).collect();
        for k in [1, 2, 40, 263, 499, 500, 501] {
            let mut a = cands(&l);
            top_k(&mut a, k);
            let mut b = cands(&l);
            sort_desc(&mut b);
            b.truncate(k);
            assert_eq!(a, b, "k = {k}: same ids in the same order, ties by id");
        }
    }

    #[test]
    fn logit_bias_by_index_and_after_reordering() {
        let mut c = cands(&[1.0, 2.0, 3.0]);
        apply_logit_bias(&mut c, &[(0, 10.0), (7, 1.0)]);
        assert_eq!(c[0].logit, 11.0, "id 7 is no candidate: ignored");
        sort_desc(&mut c); // ids no longer at their index
        apply_logit_bias(&mut c, &[(2, 0.5)]);
        assert_eq!(c.iter().find(|x| x.id == 2).unwrap().logit, 3.5);
        assert_eq!(c.iter().find(|x| x.id == 0).unwrap().logit, 11.0);
    }

    #[test]
    fn nan_logits_never_win_and_do_not_spoil_logprobs() {
        let l = [f32::NAN, 1.0, f32::NAN, 0.5];
        let mut g = Sampler::new(SamplerConfig {
            temperature: 0.0,
            ..Default::default()
        });
        assert_eq!(g.sample(&l, &[]), 1);
        let mut s = Sampler::new(SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..Default::default()
        });
        for _ in 0..100 {
            let t = s.sample(&l, &[]);
            assert!(t == 1 || t == 3, "drew {t}");
        }
        assert_eq!(
            s.sample(&[f32::NAN; 3], &[]),
            0,
            "nothing finite: greedy's pick"
        );
        let lp = log_softmax(&l);
        assert_eq!(lp[0], f32::NEG_INFINITY);
        let z = (1f64.exp() + 0.5f64.exp()).ln();
        assert!((f64::from(lp[1]) - (1.0 - z)).abs() < 1e-6);
        assert_eq!(
            top_logprobs(&l, 2).iter().map(|x| x.0).collect::<Vec<_>>(),
            [1, 3]
        );
        assert!(log_softmax(&[f32::NEG_INFINITY; 2])
            .iter()
            .all(|&x| x == f32::NEG_INFINITY));
    }

    #[test]
    fn log_softmax_and_top_logprobs() {
        let lp = top_logprobs(&[0.0, 0.0, 2f32.ln()], 2);
        assert_eq!(lp[0].0, 2);
        assert!((lp[0].1 - 0.5f32.ln()).abs() < 1e-6);
        assert_eq!(lp[1].0, 0, "ties: lower id first");
    }
}
