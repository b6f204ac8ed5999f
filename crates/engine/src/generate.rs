//! Text generation on a [`Session`]: prompt in, a stream of tokens with their text out.
//!
//! [`Session::generate`] evaluates the prompt (text is tokenized like llama.cpp's completion
//! mode: BOS when the model's metadata asks for it and the session is empty, special-token text
//! recognised) and returns a [`Generation`], an iterator of [`Token`]s. It stops on any
//! end-of-generation token, on a stop string, at `max_tokens`, or when the context is full;
//! [`Generation::stop_reason`] then says which. Text that could be the start of a stop string
//! is held back until it is known not to be one, so a stop string never reaches the caller.
//!
//! ```
//! use ferrite_engine::{GenerateOptions, Model, SessionOptions, StopReason};
//! use ferrite_engine::sampling::SamplerConfig;
//! # let file = ferrite_engine::session::tiny_test_model();
//! // `Model::load("model.gguf", Default::default())` for a file on disk.
//! let model = Model::from_gguf(file)?;
//! let mut session = model.session(SessionOptions::default())?;
//! let opts = GenerateOptions {
//!     max_tokens: Some(8),
//!     sampler: SamplerConfig { temperature: 0.0, ..Default::default() }, // greedy
//!     logprobs: 2,
//!     ..Default::default()
//! };
//! let mut gen = session.generate("once upon a time", opts)?;
//! let mut text = String::new();
//! for token in &mut gen {
//!     let token = token?;
//!     text.push_str(&token.text); // stream it
//!     assert!(token.logprob <= 0.0 && token.top_logprobs.len() == 2);
//! }
//! assert!(matches!(gen.stop_reason(), Some(StopReason::MaxTokens | StopReason::Eog)));
//! assert_eq!(text, gen.text());
//!
//! // A chat turn: the model's chat template (or the built-in one that fits it), then the reply
//! // in one go. `finish` runs the generation to its end.
//! use ferrite_engine::chat::Message;
//! let prompt = model.format_chat(&[Message::new("user", "hello")], true)?;
//! let opts = GenerateOptions { max_tokens: Some(4), stop: vec!["\n".into()], ..Default::default() };
//! let reply = model.session(SessionOptions::default())?.generate(prompt, opts)?.finish()?;
//! assert!(reply.tokens.len() <= 4 && !reply.text.contains('\n'));
//! # Ok::<(), ferrite_engine::Error>(())
//! ```

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::sampling::beam::beam_search;
use crate::sampling::{Sampler, SamplerConfig};
use crate::session::Session;
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// What to continue from: text (tokenized) or token ids (used as they are).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

impl From<&str> for Prompt {
    fn from(s: &str) -> Self {
        Prompt::Text(s.to_string())
    }
}

impl From<String> for Prompt {
    fn from(s: String) -> Self {
        Prompt::Text(s)
    }
}

impl From<Vec<u32>> for Prompt {
    fn from(ids: Vec<u32>) -> Self {
        Prompt::Ids(ids)
    }
}

impl From<&[u32]> for Prompt {
    fn from(ids: &[u32]) -> Self {
        Prompt::Ids(ids.to_vec())
    }
}

/// How to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    /// At most this many tokens; `None`: until an end-of-generation token or a full context.
    /// A limit the context cannot hold is an error before anything is evaluated.
    pub max_tokens: Option<usize>,
    /// Sampling chain and seed (temperature 0: greedy).
    pub sampler: SamplerConfig,
    /// Generation ends when the text contains one of these; the text stops before it.
    pub stop: Vec<String>,
    /// Alternatives listed per token in [`Token::top_logprobs`] (0: none).
    pub logprobs: usize,
    /// Beam search with this many beams when above 1 (length-normalised log-probability; the
    /// sampler settings are then ignored and tokens arrive once the search is done).
    pub beams: usize,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: None,
            sampler: SamplerConfig::default(),
            stop: Vec::new(),
            logprobs: 0,
            beams: 1,
        }
    }
}

/// One generated token.
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub id: u32,
    /// Text released with this token: its own piece, plus text held back earlier while it
    /// could have started a stop string, minus what is still held back. Concatenated over a
    /// generation it gives [`Generation::text`]. End-of-generation tokens have none.
    pub text: String,
    /// Natural log of this token's probability under the full-vocabulary softmax of the raw
    /// logits (before penalties, top-k, temperature...).
    pub logprob: f32,
    /// The `logprobs` most likely tokens at this step, best first, same measure.
    pub top_logprobs: Vec<(u32, f32)>,
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// An end-of-generation token (EOS, end of turn...).
    Eog,
    /// `max_tokens` reached.
    MaxTokens,
    /// A stop string appeared.
    Stop,
    /// The context is full.
    ContextFull,
}

impl StopReason {
    /// OpenAI / llama.cpp style: `eos`, `length` (max tokens or full context) or `stop`.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Eog => "eos",
            StopReason::MaxTokens | StopReason::ContextFull => "length",
            StopReason::Stop => "stop",
        }
    }
}

/// Time spent, for tokens-per-second figures.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timings {
    pub prompt_tokens: usize,
    pub prompt_time: Duration,
    pub generated_tokens: usize,
    /// From the end of the prompt's evaluation to the last token.
    pub generation_time: Duration,
}

impl Timings {
    pub fn prompt_tokens_per_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_time.as_secs_f64().max(1e-9)
    }
    pub fn gen_tokens_per_s(&self) -> f64 {
        self.generated_tokens as f64 / self.generation_time.as_secs_f64().max(1e-9)
    }
}

/// A finished generation (see [`Generation::finish`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    pub prompt_ids: Vec<u32>,
    pub tokens: Vec<Token>,
    pub text: String,
    pub stop_reason: StopReason,
    pub timings: Timings,
}

impl Completion {
    pub fn ids(&self) -> Vec<u32> {
        self.tokens.iter().map(|t| t.id).collect()
    }
}

/// A token with its log-probability and the best alternatives.
type Scored = (u32, f32, Vec<(u32, f32)>);

/// A running generation: an iterator of tokens. The session holds the prompt and every
/// generated token but the last (nothing needs its logits; evaluate it yourself to continue
/// from it).
pub struct Generation<'s> {
    session: &'s mut Session,
    tokenizer: Tokenizer,
    sampler: Sampler,
    opts: GenerateOptions,
    prompt_ids: Vec<u32>,
    decoder: StreamDecoder,
    /// Sampled, not yet evaluated.
    pending: Option<u32>,
    /// Beam search's result: (id, logprob, top) in order, handed out one per `next`.
    beam_queue: Option<std::collections::VecDeque<Scored>>,
    generated: Vec<u32>,
    /// Every piece decoded so far (up to a stop string) and how much of it was released.
    text: String,
    released: usize,
    stop_reason: Option<StopReason>,
    failed: bool,
    timings: Timings,
    started: Instant,
}

impl Session {
    /// Evaluates `prompt` and returns the generation that continues it. Errors (an empty
    /// prompt, a prompt or `max_tokens` the context cannot hold, a model without a tokenizer)
    /// come before anything is evaluated.
    pub fn generate(
        &mut self,
        prompt: impl Into<Prompt>,
        opts: GenerateOptions,
    ) -> Result<Generation<'_>> {
        let tokenizer = self.model().tokenizer()?.clone();
        let ids = match prompt.into() {
            // BOS only at the very start of a sequence.
            Prompt::Text(t) => tokenizer.encode(&t, self.tokens().is_empty(), true)?,
            Prompt::Ids(ids) => ids,
        };
        if ids.is_empty() && self.logits().is_empty() {
            return Err(Error::Invalid(
                "empty prompt: give at least one token to continue from".into(),
            ));
        }
        let held = self.tokens().len() + ids.len();
        if held > self.n_ctx() {
            return Err(Error::ContextFull {
                needed: held,
                n_ctx: self.n_ctx(),
            });
        }
        if let Some(n) = opts.max_tokens {
            // The last generated token is never evaluated.
            let needed = held + n.saturating_sub(1);
            if n > 0 && needed > self.n_ctx() {
                return Err(Error::Invalid(format!(
                    "the prompt ({held} tokens) and {n} tokens to generate need a context of \
                     {needed}, it holds {} (raise --ctx-size or lower -n)",
                    self.n_ctx()
                )));
            }
        }
        let t0 = Instant::now();
        if !ids.is_empty() {
            self.eval(&ids)?;
        }
        let prompt_time = t0.elapsed();
        let decoder = StreamDecoder::continuing(&tokenizer).skip_special(true);
        let mut g = Generation {
            sampler: Sampler::new(opts.sampler.clone()),
            session: self,
            tokenizer,
            opts,
            decoder,
            pending: None,
            beam_queue: None,
            generated: Vec::new(),
            text: String::new(),
            released: 0,
            stop_reason: None,
            failed: false,
            timings: Timings {
                prompt_tokens: ids.len(),
                prompt_time,
                ..Default::default()
            },
            started: Instant::now(),
            prompt_ids: ids,
        };
        if g.opts.max_tokens == Some(0) {
            g.stop_reason = Some(StopReason::MaxTokens);
        }
        Ok(g)
    }
}

impl Generation<'_> {
    /// Why generation ended; `None` while it runs (or after an error).
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop_reason
    }

    /// The prompt's token ids as evaluated.
    pub fn prompt_ids(&self) -> &[u32] {
        &self.prompt_ids
    }

    /// Token ids generated so far.
    pub fn generated_ids(&self) -> &[u32] {
        &self.generated
    }

    /// Text released so far.
    pub fn text(&self) -> &str {
        &self.text[..self.released]
    }

    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// Runs to the end and returns everything.
    pub fn finish(mut self) -> Result<Completion> {
        let mut tokens = Vec::new();
        for t in &mut self {
            tokens.push(t?);
        }
        Ok(Completion {
            prompt_ids: self.prompt_ids.clone(),
            tokens,
            text: self.text().to_string(),
            stop_reason: self.stop_reason.unwrap_or(StopReason::MaxTokens),
            timings: self.timings,
        })
    }

    fn step(&mut self) -> Result<Token> {
        let (id, logprob, top) = match &mut self.beam_queue {
            Some(q) => q
                .pop_front()
                .ok_or_else(|| Error::Invalid("beam search produced no token".into()))?,
            None if self.opts.beams > 1 => {
                self.run_beams()?;
                return self.step();
            }
            None => {
                if let Some(t) = self.pending.take() {
                    self.session.eval(&[t])?;
                }
                let logits = self.session.logits();
                let id = self.sampler.sample(logits, self.session.tokens());
                let (logprob, top) = scores(logits, id, self.opts.logprobs);
                (id, logprob, top)
            }
        };
        self.generated.push(id);
        let mut stop = None;
        if self.tokenizer.is_eog(id) {
            stop = Some(StopReason::Eog);
        } else {
            let piece = self.decoder.push(id);
            self.text.push_str(&piece);
            if let Some(at) = self.find_stop() {
                self.text.truncate(at);
                stop = Some(StopReason::Stop);
            }
        }
        if stop.is_none() {
            if Some(self.generated.len()) == self.opts.max_tokens {
                stop = Some(StopReason::MaxTokens);
            } else if self.beam_queue.as_ref().is_some_and(|q| q.is_empty()) {
                // Beam search ended on its length limit (the context).
                stop = Some(StopReason::ContextFull);
            } else if self.session.tokens().len() >= self.session.n_ctx() {
                // This token could not be evaluated: nothing can follow it.
                stop = Some(StopReason::ContextFull);
            }
        }
        let end = match stop {
            Some(reason) => {
                if reason != StopReason::Stop {
                    let rest = self.decoder.finish();
                    self.text.push_str(&rest);
                }
                self.stop_reason = Some(reason);
                self.timings.generation_time = self.started.elapsed();
                self.text.len()
            }
            None => {
                if self.beam_queue.is_none() {
                    self.pending = Some(id);
                }
                self.text.len() - self.held_back()
            }
        };
        let text = self.text[self.released..end].to_string();
        self.released = end;
        self.timings.generated_tokens = self.generated.len();
        self.timings.generation_time = self.started.elapsed();
        Ok(Token {
            id,
            text,
            logprob,
            top_logprobs: top,
        })
    }

    /// Where a complete stop string starts in the unreleased text.
    fn find_stop(&self) -> Option<usize> {
        let tail = &self.text[self.released..];
        self.opts
            .stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| tail.find(s.as_str()))
            .min()
            .map(|at| self.released + at)
    }

    /// Bytes at the end of the text that could be the start of a stop string.
    fn held_back(&self) -> usize {
        let tail = &self.text[self.released..];
        let mut hold = 0;
        for s in self.opts.stop.iter() {
            for (k, _) in s.char_indices().skip(1) {
                if k > hold && tail.ends_with(&s[..k]) {
                    hold = k;
                }
            }
        }
        hold
    }

    /// Runs beam search to the end and queues its tokens with their scores (the session is
    /// then advanced along the best sequence, so per-token log-probabilities come from one
    /// teacher-forced pass).
    fn run_beams(&mut self) -> Result<()> {
        let room = self.session.n_ctx() + 1 - self.session.tokens().len();
        let max = self.opts.max_tokens.unwrap_or(room).min(room);
        let tok = self.tokenizer.clone();
        let (best, _) = beam_search(&*self.session, self.opts.beams, max, |t| tok.is_eog(t))?;
        let mut rows = self.session.logits().to_vec();
        if best.len() > 1 {
            rows.extend(self.session.eval_all(&best[..best.len() - 1])?);
        }
        let nv = self.session.model().config().n_vocab;
        let queue = best
            .iter()
            .zip(rows.chunks_exact(nv))
            .map(|(&id, row)| {
                let (lp, top) = scores(row, id, self.opts.logprobs);
                (id, lp, top)
            })
            .collect();
        self.beam_queue = Some(queue);
        Ok(())
    }
}

/// The log-probability of `id` and the `k` most likely tokens.
fn scores(logits: &[f32], id: u32, k: usize) -> (f32, Vec<(u32, f32)>) {
    let top = if k == 0 {
        Vec::new()
    } else {
        crate::sampling::top_logprobs(logits, k)
    };
    (log_prob_of(logits, id), top)
}

fn log_prob_of(logits: &[f32], id: u32) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    logits
        .get(id as usize)
        .map_or(f32::NEG_INFINITY, |&l| l - max - sum.ln() as f32)
}

impl Iterator for Generation<'_> {
    type Item = Result<Token>;

    fn next(&mut self) -> Option<Result<Token>> {
        if self.stop_reason.is_some() || self.failed {
            return None;
        }
        let r = self.step();
        // An error ends the generation (no stop reason); nothing follows it.
        self.failed = r.is_err();
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::log_softmax;
    use crate::{Model, SessionOptions};
    use std::sync::Arc;

    fn model() -> Arc<Model> {
        Model::from_gguf(crate::session::tiny_test_model()).unwrap()
    }

    fn greedy(max: Option<usize>) -> GenerateOptions {
        GenerateOptions {
            max_tokens: max,
            sampler: SamplerConfig {
                temperature: 0.0,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn session(m: &Arc<Model>, n_ctx: usize) -> Session {
        m.session(SessionOptions {
            n_ctx: Some(n_ctx),
            n_threads: Some(1),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn greedy_generation_is_the_argmax_path_with_logprobs() {
        let m = model();
        let mut s = session(&m, 64);
        let mut opts = greedy(Some(10));
        opts.logprobs = 3;
        let c = s.generate("hello world", opts).unwrap().finish().unwrap();
        assert_eq!(c.prompt_ids[0], 1, "BOS: the metadata asks for it");
        assert_eq!(c.tokens.len(), 10);
        assert_eq!(c.stop_reason, StopReason::MaxTokens);
        // The same path by hand, one token at a time, with its log-probabilities.
        let mut r = session(&m, 64);
        let mut logits = r.eval(&c.prompt_ids).unwrap().to_vec();
        for t in &c.tokens {
            let lp = log_softmax(&logits);
            let best = (0..lp.len())
                .max_by(|&a, &b| lp[a].total_cmp(&lp[b]))
                .unwrap();
            assert_eq!(t.id as usize, best);
            assert!((t.logprob - lp[best]).abs() < 1e-5);
            assert_eq!(t.top_logprobs.len(), 3);
            assert_eq!(t.top_logprobs[0].0 as usize, best);
            logits = r.eval(&[t.id]).unwrap().to_vec();
        }
        let text: String = c.tokens.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(text, c.text);
        assert_eq!(c.text, m.tokenizer().unwrap().decode_with(&c.ids(), true));
        // The session holds the prompt and all generated tokens but the last.
        assert_eq!(s.tokens().len(), c.prompt_ids.len() + 9);
    }

    #[test]
    fn stop_strings_end_the_text_and_are_never_released() {
        let m = model();
        let full = session(&m, 64)
            .generate("abc", greedy(Some(24)))
            .unwrap()
            .finish()
            .unwrap();
        assert!(full.text.len() >= 6, "{:?}", full.text);
        let stop = full.text[3..5].to_string();
        let at = full.text.find(&stop).unwrap();
        let mut opts = greedy(Some(24));
        opts.stop = vec!["zzzzzz".into(), stop.clone()];
        let mut s = session(&m, 64);
        let mut g = s.generate("abc", opts).unwrap();
        let mut pieces = Vec::new();
        for t in &mut g {
            pieces.push(t.unwrap().text);
        }
        assert_eq!(g.stop_reason(), Some(StopReason::Stop));
        assert_eq!(g.text(), &full.text[..at]);
        assert_eq!(pieces.concat(), g.text());
        assert!(pieces.iter().all(|p| !p.contains(&stop)));
    }

    #[test]
    fn end_of_generation_token_stops() {
        let m = model();
        let mut opts = greedy(Some(5));
        opts.sampler.logit_bias = vec![(2, 1000.0)];
        let c = session(&m, 64)
            .generate("abc", opts)
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(c.ids(), vec![2]);
        assert_eq!(c.stop_reason, StopReason::Eog);
        assert_eq!(c.text, "");
    }

    #[test]
    fn context_limits_are_errors_or_a_stop() {
        let m = model();
        let prompt = m.tokenize("abc").unwrap();
        assert_eq!(prompt.len(), 5); // BOS, ▁, a, b, c
        let mut s = session(&m, 8);
        let e = s.generate("abc", greedy(Some(5))).err().unwrap();
        assert!(e.to_string().contains("need a context of 9"), "{e}");
        let e = s.generate("abcdefghij", greedy(None)).err().unwrap();
        assert!(
            matches!(
                e,
                Error::ContextFull {
                    needed: 12,
                    n_ctx: 8
                }
            ),
            "{e}"
        );
        // Until the context is full: 8 - 5 tokens evaluated, plus one that is not.
        let c = s.generate("abc", greedy(None)).unwrap().finish().unwrap();
        assert_eq!(c.tokens.len(), 4);
        assert_eq!(c.stop_reason, StopReason::ContextFull);
        assert_eq!(s.tokens().len(), 8);
        let e = session(&m, 8)
            .generate(Vec::new(), greedy(None))
            .err()
            .unwrap();
        assert!(e.to_string().contains("empty prompt"), "{e}");
    }

    #[test]
    fn seeded_sampling_is_reproducible() {
        let m = model();
        let run = |seed| {
            let opts = GenerateOptions {
                max_tokens: Some(16),
                sampler: SamplerConfig {
                    seed,
                    temperature: 1.5,
                    top_k: 0,
                    top_p: 1.0,
                    min_p: 0.0,
                    ..Default::default()
                },
                ..Default::default()
            };
            session(&m, 64)
                .generate("abc", opts)
                .unwrap()
                .finish()
                .unwrap()
                .ids()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[test]
    fn beam_search_generation_scores_at_least_greedy() {
        let m = model();
        let score = |opts: GenerateOptions| {
            let c = session(&m, 64)
                .generate("abc", opts)
                .unwrap()
                .finish()
                .unwrap();
            // Teacher-forced check of the reported log-probabilities.
            let mut s = session(&m, 64);
            let mut all = c.prompt_ids.clone();
            all.extend(c.ids());
            let rows = s.eval_all(&all).unwrap();
            let nv = m.config().n_vocab;
            for (i, t) in c.tokens.iter().enumerate() {
                let lp = log_softmax(&rows[(c.prompt_ids.len() - 1 + i) * nv..][..nv]);
                assert!((lp[t.id as usize] - t.logprob).abs() < 1e-4);
            }
            c.tokens.iter().map(|t| f64::from(t.logprob)).sum::<f64>() / c.tokens.len() as f64
        };
        let g = score(greedy(Some(6)));
        let mut opts = greedy(Some(6));
        opts.beams = 4;
        let b = score(opts);
        assert!(b >= g - 1e-6, "beam {b} < greedy {g}");
    }
}
