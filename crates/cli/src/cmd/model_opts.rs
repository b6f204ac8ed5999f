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
        let size = std::fs::metadata(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        if size > 1 << 30 && !self.no_mmap {
            eprintln!(
                "mapping {} ({:.1} GiB)...",
                path.display(),
                size as f64 / (1u64 << 30) as f64
            );
        }
        let model = Model::load(
            path,
            LoadOptions {
                mmap: !self.no_mmap,
            },
        )
        .with_context(|| format!("cannot load {}", path.display()))?;
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
