//! Flags shared by the subcommands that run a model (`run`, `chat`, `logits`, `perplexity`).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use ferrite_engine::{KvType, LoadOptions, Model, SessionOptions};

#[derive(clap::Args, Debug, Clone)]
pub struct ModelOpts {
    /// Context size in tokens (default: the model's training context, at most 4096)
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx_size: Option<usize>,
    /// Tokens per forward batch when processing a prompt
    #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
    pub batch_size: usize,
    /// Worker threads (default: the number of physical cores)
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// KV cache element type
    #[arg(long = "kv-type", default_value = "f16")]
    pub kv_type: KvType,
    /// Read the model into memory instead of memory-mapping it
    #[arg(long = "no-mmap")]
    pub no_mmap: bool,
}

impl ModelOpts {
    /// Loads the model; returns it and the load time in milliseconds.
    pub fn load(&self, path: &std::path::Path) -> anyhow::Result<(Arc<Model>, f64)> {
        let t = Instant::now();
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        let model = Model::load(
            path,
            LoadOptions {
                mmap: !self.no_mmap,
            },
        )
        .with_context(|| format!("cannot load {}", path.display()))?;
        if !self.no_mmap {
            page_in_with_progress(&model);
        }
        Ok((model, t.elapsed().as_secs_f64() * 1000.0))
    }

    pub fn session_options(&self) -> SessionOptions {
        SessionOptions {
            n_ctx: self.ctx_size,
            kv_type: self.kv_type,
            kv_cache: true,
            n_threads: self.threads,
            batch_size: self.batch_size,
        }
    }
}

/// Parses `1,2,3` (spaces allowed).
/// Files at least this large get their weights paged in up front, with a progress bar.
const PAGE_IN_THRESHOLD: u64 = 128 << 20;

/// Touches one byte of every page of every tensor the model reads through the mapping, so
/// the first forward pass does not stall on page faults with no sign of life; the bar (bytes,
/// ETA) shows on stderr when it is a terminal. Small files are left to fault in lazily: it
/// takes milliseconds. Tensors the engine packed into memory of its own at load (and whose
/// pages it released) are skipped: paging them back in would double the memory.
fn page_in_with_progress(model: &Model) {
    let file = model.gguf();
    let mapped = || file.tensors().iter().filter(|t| !file.is_released(t));
    let total: u64 = mapped().map(|t| t.n_bytes).sum();
    if total < PAGE_IN_THRESHOLD {
        return;
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "loading {bar:30} {binary_bytes}/{binary_total_bytes} eta {eta}",
        )
        .expect("valid progress template"),
    );
    const PAGE: usize = 4096;
    let mut checksum = 0u8;
    for t in mapped() {
        let data = file.tensor_data(t);
        for chunk in data.chunks(16 << 20) {
            checksum ^= chunk.iter().step_by(PAGE).fold(0, |a, &b| a ^ b);
            bar.inc(chunk.len() as u64);
        }
    }
    std::hint::black_box(checksum);
    bar.finish_and_clear();
}

pub fn parse_ids(s: &str) -> anyhow::Result<Vec<u32>> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| {
            x.parse::<u32>()
                .with_context(|| format!("bad token id '{x}' in --ids"))
        })
        .collect()
}

/// Sampling flags shared by `run` and `chat`. Defaults are llama.cpp's.
#[derive(clap::Args, Debug, Clone)]
pub struct SamplingOpts {
    /// Temperature; 0 is greedy (always the most likely token)
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temp: f32,
    /// Keep only the K most likely tokens (0: off)
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches P (1: off)
    #[arg(long = "top-p", default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens less likely than P times the most likely one (0: off)
    #[arg(long = "min-p", default_value_t = 0.05)]
    pub min_p: f32,
    /// Locally typical sampling (1: off)
    #[arg(long = "typical", default_value_t = 1.0)]
    pub typical_p: f32,
    /// Penalise tokens seen in the last --repeat-last-n tokens (1: off)
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Window of the repetition, frequency and presence penalties
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Subtracted from a token's logit if it occurs in the window
    #[arg(long = "presence-penalty", default_value_t = 0.0)]
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once per occurrence in the window
    #[arg(long = "frequency-penalty", default_value_t = 0.0)]
    pub frequency_penalty: f32,
    /// Random seed (default: a new one each run)
    #[arg(short = 's', long)]
    pub seed: Option<u64>,
}

impl SamplingOpts {
    /// The sampler settings, after checking every value is in range.
    pub fn config(&self) -> anyhow::Result<ferrite_engine::sampling::SamplerConfig> {
        let finite = |name: &str, v: f32| {
            anyhow::ensure!(v.is_finite(), "{name} must be a finite number, got {v}");
            Ok(())
        };
        finite("--temp", self.temp)?;
        finite("--presence-penalty", self.presence_penalty)?;
        finite("--frequency-penalty", self.frequency_penalty)?;
        for (name, v) in [
            ("--top-p", self.top_p),
            ("--min-p", self.min_p),
            ("--typical", self.typical_p),
        ] {
            anyhow::ensure!(
                (0.0..=1.0).contains(&v),
                "{name} must be in [0, 1], got {v}"
            );
        }
        anyhow::ensure!(
            self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0,
            "--repeat-penalty must be positive, got {}",
            self.repeat_penalty
        );
        let seed = self.seed.unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            t ^ (u64::from(std::process::id()) << 32)
        });
        Ok(ferrite_engine::sampling::SamplerConfig {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            typical_p: self.typical_p,
            repeat_penalty: self.repeat_penalty,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            penalty_last_n: self.repeat_last_n,
            logit_bias: Vec::new(),
            seed,
        })
    }
}
