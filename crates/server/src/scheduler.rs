//! Continuous batching on a dedicated OS thread.
//!
//! The HTTP handlers submit [`Job`]s (one per choice) through [`SchedulerHandle::try_submit`],
//! which refuses at once when `parallel + max_queue` jobs are already admitted. The inference
//! thread owns the [`BatchBackend`] and N slots; each step it
//! 1. takes new jobs, drops queued or running jobs whose client went away (the event channel is
//!    closed: a disconnect frees its slot within one step),
//! 2. gives free slots to queued jobs in arrival order, preferring the free slot whose cached
//!    prompt tokens share the longest prefix with the prompt (prompt caching; tokens a slot
//!    decoded are not reused, as the backend computes them with other arithmetic than
//!    prompt tokens and a cache hit must not change a reply),
//! 3. runs ONE forward over every active slot: one new token per decoding slot, and prompt
//!    chunks of prefilling slots within a token budget,
//! 4. samples per slot with its own [`ferrite_engine::sampling::Sampler`] (seeded per request)
//!    and streams [`Event`]s back.
//!
//! Nothing here blocks the async runtime: events go through unbounded tokio channels (bounded in
//! practice by `max_tokens ≤ n_ctx` per job).

use crate::backend::{BatchBackend, BatchItem, TextCodec, TokenRole};
use crate::text::TextStream;
use ferrite_engine::sampling::{log_softmax, top_logprobs, Sampler, SamplerConfig};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// Why a reply ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-generation token or stop string.
    Stop,
    /// `max_tokens` reached or the slot's context is full.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// One generated token, with log-probabilities when the request asked for them.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenInfo {
    pub id: u32,
    /// Natural log of its full-vocabulary softmax probability (before sampling adjustments).
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// What the inference thread tells a request's handler.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A generated token and the text that may be sent after it (often the token's text,
    /// sometimes empty while a UTF-8 character or possible stop string is incomplete).
    Token {
        index: usize,
        text: String,
        /// The token's id; `None` for text flushed at the end.
        id: Option<u32>,
        /// Log-probabilities, when the job asked for them.
        token: Option<TokenInfo>,
    },
    /// The choice is complete.
    Done {
        index: usize,
        finish: FinishReason,
        prompt_tokens: usize,
        completion_tokens: usize,
        cached_tokens: usize,
        ids: Vec<u32>,
    },
    /// The choice failed (backend error or shutdown); no more events for it.
    Error { index: usize, message: String },
}

/// One sequence to generate (one choice of one request).
#[derive(Debug)]
pub struct Job {
    pub index: usize,
    pub prompt: Vec<u32>,
    pub params: SamplerConfig,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    /// `Some(k)`: report each token's log-probability and the `k` best alternatives.
    pub logprobs: Option<usize>,
    pub events: UnboundedSender<Event>,
}

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    pub max_queue: usize,
    /// Most prompt tokens one step feeds (decoding slots always get their token).
    pub max_batch_tokens: usize,
    /// How long in-flight jobs may keep running after shutdown begins.
    pub shutdown_grace: Duration,
}

/// Live figures, read by `/metrics` and `/health`.
#[derive(Debug, Default)]
pub struct SchedStats {
    pub active: AtomicUsize,
    pub queued: AtomicUsize,
    pub prompt_tokens: AtomicU64,
    pub cached_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    pub steps: AtomicU64,
    pub cancelled: AtomicU64,
    pub backend_errors: AtomicU64,
}

/// Why a submission was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// Slots and queue are full.
    Busy,
    ShuttingDown,
}

enum Command {
    Jobs(Vec<Job>),
    Shutdown,
}

/// The handlers' side of the scheduler; cheap to clone.
#[derive(Clone)]
pub struct SchedulerHandle {
    tx: mpsc::Sender<Command>,
    load: Arc<AtomicUsize>,
    capacity: usize,
    shutting_down: Arc<AtomicBool>,
    pub stats: Arc<SchedStats>,
    pub n_slots: usize,
    pub n_ctx: usize,
    pub n_vocab: usize,
}

impl SchedulerHandle {
    /// Admits all of `jobs` or none.
    pub fn try_submit(&self, jobs: Vec<Job>) -> Result<(), SubmitError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(SubmitError::ShuttingDown);
        }
        let k = jobs.len();
        self.load
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| {
                (l + k <= self.capacity).then_some(l + k)
            })
            .map_err(|_| SubmitError::Busy)?;
        if self.tx.send(Command::Jobs(jobs)).is_err() {
            self.load.fetch_sub(k, Ordering::SeqCst);
            return Err(SubmitError::ShuttingDown);
        }
        Ok(())
    }

    /// Jobs admitted and not finished (running or queued).
    pub fn load(&self) -> usize {
        self.load.load(Ordering::SeqCst)
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Refuses new jobs; running ones get the grace period, queued ones are cancelled.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let _ = self.tx.send(Command::Shutdown);
    }
}

/// Starts the inference thread.
pub fn spawn(
    backend: Box<dyn BatchBackend>,
    codec: Arc<dyn TextCodec>,
    cfg: SchedulerConfig,
) -> std::io::Result<(SchedulerHandle, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel();
    let n_slots = backend.n_slots();
    let handle = SchedulerHandle {
        tx,
        load: Arc::new(AtomicUsize::new(0)),
        capacity: n_slots + cfg.max_queue,
        shutting_down: Arc::new(AtomicBool::new(false)),
        stats: Arc::new(SchedStats::default()),
        n_slots,
        n_ctx: backend.n_ctx(),
        n_vocab: backend.n_vocab(),
    };
    let mut sched = Scheduler {
        slots: (0..n_slots).map(|_| Slot::default()).collect(),
        queue: VecDeque::new(),
        backend,
        codec,
        rx,
        load: handle.load.clone(),
        stats: handle.stats.clone(),
        cfg,
        shutdown_at: None,
    };
    let join = std::thread::Builder::new()
        .name("ferrite-inference".into())
        .spawn(move || sched.run())?;
    Ok((handle, join))
}

#[derive(Default)]
struct Slot {
    /// Tokens the backend holds for this slot.
    cached: Vec<u32>,
    /// How many leading `cached` tokens were fed as prompt: the part a new prompt may reuse.
    prompt_len: usize,
    /// The logits after those `prompt_len` tokens, kept from the forward pass that fed the
    /// last of them: a new prompt equal to them (a regenerated reply) samples from these
    /// without a forward pass.
    prompt_logits: Option<Vec<f32>>,
    active: Option<Active>,
}

impl Slot {
    /// The cached tokens a new prompt may start from.
    fn reusable(&self) -> &[u32] {
        &self.cached[..self.prompt_len]
    }

    fn truncate(&mut self, n: usize) {
        self.cached.truncate(n);
        if n < self.prompt_len {
            self.prompt_len = n;
            self.prompt_logits = None;
        }
    }
}

struct Active {
    job: Job,
    sampler: Sampler,
    /// Tokens to feed at the next forward (prompt remainder, or the last sampled token).
    pending: Vec<u32>,
    generated: Vec<u32>,
    text: TextStream,
    cached_tokens: usize,
}

impl Active {
    /// What `pending` holds: the prompt until the first token is sampled, then that token.
    fn role(&self) -> TokenRole {
        if self.generated.is_empty() {
            TokenRole::Prompt
        } else {
            TokenRole::Decoded
        }
    }
}

struct Scheduler {
    slots: Vec<Slot>,
    queue: VecDeque<Job>,
    backend: Box<dyn BatchBackend>,
    codec: Arc<dyn TextCodec>,
    rx: mpsc::Receiver<Command>,
    load: Arc<AtomicUsize>,
    stats: Arc<SchedStats>,
    cfg: SchedulerConfig,
    shutdown_at: Option<Instant>,
}

impl Scheduler {
    fn run(&mut self) {
        loop {
            let idle = self.queue.is_empty() && self.slots.iter().all(|s| s.active.is_none());
            if idle {
                if self.shutdown_at.is_some() {
                    return;
                }
                match self.rx.recv() {
                    Ok(cmd) => self.command(cmd),
                    Err(_) => return,
                }
            }
            loop {
                match self.rx.try_recv() {
                    Ok(cmd) => self.command(cmd),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        self.shutdown_at.get_or_insert_with(Instant::now);
                        break;
                    }
                }
            }
            if let Some(t) = self.shutdown_at {
                while let Some(job) = self.queue.pop_front() {
                    self.fail_queued(job, "the server is shutting down");
                }
                if t.elapsed() >= self.cfg.shutdown_grace {
                    for i in 0..self.slots.len() {
                        self.fail_slot(i, "the server is shutting down");
                    }
                }
            }
            self.reap_disconnected();
            self.admit();
            self.publish();
            if self.slots.iter().any(|s| s.active.is_some()) {
                self.step();
            }
            self.publish();
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Jobs(jobs) => self.queue.extend(jobs),
            Command::Shutdown => {
                self.shutdown_at.get_or_insert_with(Instant::now);
            }
        }
        self.publish();
    }

    fn publish(&self) {
        let active = self.slots.iter().filter(|s| s.active.is_some()).count();
        self.stats.active.store(active, Ordering::Relaxed);
        self.stats.queued.store(self.queue.len(), Ordering::Relaxed);
    }

    fn release(&self) {
        self.load.fetch_sub(1, Ordering::SeqCst);
    }

    fn fail_queued(&self, job: Job, msg: &str) {
        let _ = job.events.send(Event::Error {
            index: job.index,
            message: msg.to_string(),
        });
        self.release();
    }

    /// Ends a slot's job with an error; its cache is dropped, since a failed forward may have
    /// left it half-written.
    fn fail_slot(&mut self, i: usize, msg: &str) {
        if let Some(a) = self.slots[i].active.take() {
            let _ = a.job.events.send(Event::Error {
                index: a.job.index,
                message: msg.to_string(),
            });
            self.backend.clear_slot(i);
            self.slots[i].truncate(0);
            self.release();
        }
    }

    fn reap_disconnected(&mut self) {
        let before = self.queue.len();
        self.queue.retain(|j| !j.events.is_closed());
        for _ in self.queue.len()..before {
            self.release();
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
        }
        for slot in &mut self.slots {
            if slot
                .active
                .as_ref()
                .is_some_and(|a| a.job.events.is_closed())
            {
                // The cache stays valid: it holds exactly the tokens fed so far.
                slot.active = None;
                self.load.fetch_sub(1, Ordering::SeqCst);
                self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn admit(&mut self) {
        let n_ctx = self.backend.n_ctx();
        while !self.queue.is_empty() {
            let free: Vec<usize> = (0..self.slots.len())
                .filter(|&i| self.slots[i].active.is_none())
                .collect();
            if free.is_empty() {
                return;
            }
            let Some(job) = self.queue.pop_front() else {
                return;
            };
            if job.prompt.is_empty() || job.prompt.len() > n_ctx {
                let msg = format!(
                    "prompt of {} tokens does not fit a context of {n_ctx}",
                    job.prompt.len()
                );
                self.fail_queued(job, &msg);
                continue;
            }
            // Longest shared prefix wins; on a tie, the emptiest slot (keeps other caches).
            let (slot, lcp) = free
                .iter()
                .map(|&i| (i, common_prefix(self.slots[i].reusable(), &job.prompt)))
                .max_by(|a, b| {
                    a.1.cmp(&b.1).then(
                        self.slots[b.0]
                            .cached
                            .len()
                            .cmp(&self.slots[a.0].cached.len()),
                    )
                })
                .unwrap_or((free[0], 0));
            // At least one prompt token must be fed to get logits, unless the slot kept the
            // logits after exactly this prompt.
            let kept = &self.slots[slot];
            let logits = (lcp == job.prompt.len() && lcp == kept.prompt_len)
                .then(|| kept.prompt_logits.clone())
                .flatten();
            let keep = if logits.is_some() {
                lcp
            } else {
                lcp.min(job.prompt.len() - 1)
            };
            self.backend.truncate_slot(slot, keep);
            self.slots[slot].truncate(keep);
            self.stats
                .prompt_tokens
                .fetch_add(job.prompt.len() as u64, Ordering::Relaxed);
            self.stats
                .cached_tokens
                .fetch_add(keep as u64, Ordering::Relaxed);
            let stop = job.stop.clone();
            self.slots[slot].active = Some(Active {
                sampler: Sampler::new(job.params.clone()),
                pending: job.prompt[keep..].to_vec(),
                generated: Vec::new(),
                text: TextStream::new(stop),
                cached_tokens: keep,
                job,
            });
            if let Some(logits) = logits {
                self.sample(slot, &logits);
            }
        }
    }

    fn step(&mut self) {
        // Decoding slots first (one token each), then prompt chunks within the budget.
        let mut plan: Vec<(usize, usize)> = Vec::new();
        for (i, s) in self.slots.iter().enumerate() {
            if let Some(a) = &s.active {
                if a.pending.len() == 1 {
                    plan.push((i, 1));
                }
            }
        }
        let mut budget = self.cfg.max_batch_tokens.max(1);
        for (i, s) in self.slots.iter().enumerate() {
            if let Some(a) = &s.active {
                if a.pending.len() > 1 && budget > 0 {
                    let take = a.pending.len().min(budget);
                    budget -= take;
                    plan.push((i, take));
                }
            }
        }
        if plan.is_empty() {
            return;
        }
        let result = {
            let items: Vec<BatchItem<'_>> = plan
                .iter()
                .filter_map(|&(i, take)| {
                    self.slots[i].active.as_ref().map(|a| BatchItem {
                        slot: i,
                        tokens: &a.pending[..take],
                        role: a.role(),
                    })
                })
                .collect();
            self.backend.forward(&items)
        };
        self.stats.steps.fetch_add(1, Ordering::Relaxed);
        let n_vocab = self.backend.n_vocab();
        let logits = match result {
            Ok(l) if l.len() == plan.len() && l.iter().all(|v| v.len() == n_vocab) => l,
            Ok(_) => {
                self.backend_failed(&plan, "the model returned logits of the wrong shape");
                return;
            }
            Err(e) => {
                self.backend_failed(&plan, &format!("inference failed: {e}"));
                return;
            }
        };
        for (&(i, take), logits) in plan.iter().zip(logits) {
            let slot = &mut self.slots[i];
            let Some(a) = slot.active.as_mut() else {
                continue;
            };
            let prompt = a.role() == TokenRole::Prompt && slot.prompt_len == slot.cached.len();
            slot.cached.extend(a.pending.drain(..take));
            if prompt {
                slot.prompt_len = slot.cached.len();
            }
            if a.pending.is_empty() {
                self.sample(i, &logits);
            }
            if prompt {
                self.slots[i].prompt_logits = Some(logits);
            }
        }
    }

    fn backend_failed(&mut self, plan: &[(usize, usize)], msg: &str) {
        eprintln!("ferrite-server: {msg}");
        self.stats.backend_errors.fetch_add(1, Ordering::Relaxed);
        for &(i, _) in plan {
            self.fail_slot(i, msg);
        }
    }

    fn sample(&mut self, i: usize, logits: &[f32]) {
        let n_ctx = self.backend.n_ctx();
        let slot = &mut self.slots[i];
        let Some(a) = slot.active.as_mut() else {
            return;
        };
        let tok = a.sampler.sample(logits, &slot.cached);
        a.generated.push(tok);
        self.stats.completion_tokens.fetch_add(1, Ordering::Relaxed);
        let finish = if self.codec.is_eog(tok) {
            Some(FinishReason::Stop)
        } else {
            let info = a.job.logprobs.map(|k| {
                // Of the model's distribution, before any sampler setting, as OpenAI reports.
                let logprob = log_softmax(logits)
                    .get(tok as usize)
                    .copied()
                    .unwrap_or(f32::NEG_INFINITY);
                TokenInfo {
                    id: tok,
                    logprob,
                    top: top_logprobs(logits, k),
                }
            });
            let (text, stopped) = a.text.push(&self.codec.token_bytes(tok));
            let sent = a.job.events.send(Event::Token {
                index: a.job.index,
                text,
                id: Some(tok),
                token: info,
            });
            if sent.is_err() {
                // Disconnected: reap_disconnected frees the slot next step.
                return;
            }
            if stopped {
                Some(FinishReason::Stop)
            } else if a.generated.len() >= a.job.max_tokens || slot.cached.len() >= n_ctx {
                Some(FinishReason::Length)
            } else {
                a.pending.push(tok);
                None
            }
        };
        if let Some(finish) = finish {
            let Some(mut a) = slot.active.take() else {
                return;
            };
            let rest = a.text.finish();
            // Text held back for a possible stop string is part of the reply after all.
            if !rest.is_empty() {
                let _ = a.job.events.send(Event::Token {
                    index: a.job.index,
                    text: rest,
                    id: None,
                    token: None,
                });
            }
            let _ = a.job.events.send(Event::Done {
                index: a.job.index,
                finish,
                prompt_tokens: a.job.prompt.len(),
                completion_tokens: a.generated.len(),
                cached_tokens: a.cached_tokens,
                ids: a.generated,
            });
            self.load.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
