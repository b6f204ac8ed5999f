//! `ferrite perplexity`: llama.cpp's perplexity measurement, so figures compare directly.
//!
//! The method (as llama.cpp's perplexity tool): the whole text is tokenized once (BOS first when
//! the model's metadata asks for it; special-token text is not parsed), and cut into
//! `n_chunk = n_tokens / n_ctx` windows of `n_ctx` tokens (the rest is dropped). Each window is
//! evaluated from an empty cache, its first token replaced by BOS when the model adds BOS. Only
//! the second half is scored: the predictions of tokens `n_ctx/2 + 1 .. n_ctx - 1` from the
//! logits of the positions before them, so every scored token has at least `n_ctx/2` tokens of
//! context. PPL = exp(mean NLL); the uncertainty is `PPL * sqrt((mean(NLL²) - mean(NLL)²) /
//! (count - 1))`. The running PPL after every chunk is printed as `[i]X,` like llama.cpp.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use super::model_opts::ModelOpts;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// GGUF model file
    pub model: PathBuf,
    /// Text file to measure
    #[arg(short = 'f', long)]
    pub file: PathBuf,
    /// Only the first N chunks (default: all)
    #[arg(long)]
    pub chunks: Option<usize>,
    /// -c/--ctx-size is the window (default 512 here, like llama.cpp's tool)
    #[command(flatten)]
    pub model_opts: ModelOpts,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let text = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let text = String::from_utf8_lossy(&text);
    let (model, _) = args.model_opts.load(&args.model)?;
    let n_ctx = args.model_opts.ctx_size.unwrap_or(512);
    anyhow::ensure!(
        n_ctx >= 4,
        "--ctx-size must be at least 4 for perplexity, got {n_ctx}"
    );
    let tok = model.tokenizer()?;
    let t0 = std::time::Instant::now();
    let tokens = tok.encode(&text, true, false)?;
    eprintln!(
        "tokenized {} in {:.0} ms: {} tokens",
        args.file.display(),
        t0.elapsed().as_secs_f64() * 1000.0,
        tokens.len()
    );
    anyhow::ensure!(
        tokens.len() >= 2 * n_ctx,
        "the text has {} tokens; perplexity with --ctx-size {n_ctx} needs at least {}",
        tokens.len(),
        2 * n_ctx
    );
    let mut n_chunk = tokens.len() / n_ctx;
    if let Some(c) = args.chunks {
        n_chunk = n_chunk.min(c.max(1));
    }
    let bos = tok.add_bos().then(|| tok.bos()).flatten();
    let mut sopts = args.model_opts.session_options();
    sopts.n_ctx = Some(n_ctx);
    let mut session = model.session(sopts)?;
    eprintln!(
        "perplexity over {n_chunk} chunks, n_ctx={n_ctx}, batch_size={}, threads={}",
        args.model_opts.batch_size,
        session.n_threads()
    );

    let bar = ProgressBar::new(n_chunk as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} chunks, {elapsed} (ETA {eta}) {msg}")
            .expect("valid template"),
    );
    let nv = model.config().n_vocab;
    let first = n_ctx / 2;
    let mut acc = Accumulator::default();
    let mut out = std::io::stdout().lock();
    for i in 0..n_chunk {
        let mut chunk = tokens[i * n_ctx..(i + 1) * n_ctx].to_vec();
        if let Some(b) = bos {
            chunk[0] = b;
        }
        session.reset();
        // Logits of positions first..n_ctx-1 (the last one predicts past the window: unused).
        let logits = session.eval_tail(&chunk, n_ctx - first)?;
        for k in 0..n_ctx - 1 - first {
            let row = &logits[k * nv..(k + 1) * nv];
            acc.add(nll(row, chunk[first + 1 + k]));
        }
        let ppl = acc.ppl();
        bar.suspend(|| -> std::io::Result<()> {
            write!(out, "[{}]{:.4},", i + 1, ppl)?;
            out.flush()
        })?;
        bar.set_message(format!("PPL {ppl:.4}"));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let (ppl, err) = acc.estimate();
    writeln!(out)?;
    writeln!(out, "Final estimate: PPL = {ppl:.4} +/- {err:.5}")?;
    Ok(())
}

/// Negative log-likelihood of `target` under the softmax of `logits` (f64 sum, as llama.cpp).
fn nll(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    -(f64::from(logits[target as usize] - max) - sum.ln())
}

/// Sums of NLL and NLL² over scored tokens.
#[derive(Default, Debug)]
struct Accumulator {
    nll: f64,
    nll2: f64,
    count: usize,
}

impl Accumulator {
    fn add(&mut self, v: f64) {
        self.nll += v;
        self.nll2 += v * v;
        self.count += 1;
    }

    fn ppl(&self) -> f64 {
        (self.nll / self.count as f64).exp()
    }

    /// PPL and its uncertainty (standard error of the mean NLL, scaled by PPL).
    fn estimate(&self) -> (f64, f64) {
        let n = self.count as f64;
        let mean = self.nll / n;
        let ppl = mean.exp();
        let var = self.nll2 / n - mean * mean;
        let err = if var > 0.0 && self.count > 1 {
            (var / (n - 1.0)).sqrt() * ppl
        } else {
            0.0
        };
        (ppl, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nll_and_estimate_by_hand() {
        // Uniform over 4 tokens: NLL = ln 4 for any target, so PPL = 4 and no spread.
        let v = nll(&[0.5, 0.5, 0.5, 0.5], 2);
        assert!((v - 4f64.ln()).abs() < 1e-12);
        let mut a = Accumulator::default();
        for x in [1.0, 2.0, 3.0] {
            a.add(x);
        }
        let (ppl, err) = a.estimate();
        assert!((ppl - 2f64.exp()).abs() < 1e-12);
        // var = (1+4+9)/3 - 4 = 2/3; sqrt(2/3 / 2) = sqrt(1/3).
        assert!((err - (1.0f64 / 3.0).sqrt() * ppl).abs() < 1e-12);
    }
}
