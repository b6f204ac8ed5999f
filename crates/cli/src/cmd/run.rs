//! `ferrite run`: generate text from a prompt, streamed to stdout as it is produced, or one JSON
//! line at the end (`--json`) with the ids, the text, optional log-probabilities, the stop reason
//! and timings.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use ferrite_engine::{GenerateOptions, Prompt};
use serde_json::json;

use super::model_opts::{ModelOpts, SamplingOpts};

/// Tokens generated when `-n` is not given (fewer if the context holds fewer).
pub const DEFAULT_N_PREDICT: usize = 256;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// GGUF model file
    pub model: PathBuf,
    /// The prompt (tokenized like llama.cpp's completion mode: BOS if the model's metadata
    /// asks for it, special-token text such as <|im_start|> recognised)
    #[arg(short = 'p', long, required_unless_present = "file")]
    pub prompt: Option<String>,
    /// Read the prompt from a file
    #[arg(short = 'f', long, conflicts_with = "prompt")]
    pub file: Option<PathBuf>,
    /// Tokens to generate; -1: until an end-of-generation token or a full context
    /// [default: 256, or what the context holds]
    #[arg(short = 'n', long = "n-predict", allow_hyphen_values = true)]
    pub n_predict: Option<i64>,
    /// Beam search with N beams (length-normalised; sampling flags are then ignored and the
    /// text appears when the search ends)
    #[arg(long, default_value_t = 1)]
    pub beams: usize,
    /// Stop when the generated text contains this string (repeatable)
    #[arg(long)]
    pub stop: Vec<String>,
    /// Print one JSON object at the end instead of streaming text
    #[arg(long)]
    pub json: bool,
    /// With --json: the K most likely tokens at every generated position
    #[arg(long, value_name = "K")]
    pub logprobs: Option<usize>,
    #[command(flatten)]
    pub sampling: SamplingOpts,
    #[command(flatten)]
    pub model_opts: ModelOpts,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let prompt = match (&args.prompt, &args.file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the prompt file {}", f.display()))?,
        (None, None) => unreachable!("clap requires -p or -f"),
    };
    let n_predict = match args.n_predict {
        None => None,
        Some(-1) => Some(None),
        Some(n) if n >= 0 => Some(Some(n as usize)),
        Some(n) => anyhow::bail!("-n must be -1 (no limit) or at least 0, got {n}"),
    };
    anyhow::ensure!(args.beams >= 1, "--beams must be at least 1");
    let sampler = args.sampling.config()?;

    let (model, load_ms) = args.model_opts.load(&args.model)?;
    let ids = model.tokenize(&prompt)?;
    let mut sopts = args.model_opts.session_options();
    if args.beams > 1 && sopts.n_ctx.is_none() {
        // Every beam copies the KV cache: keep it as small as the request allows.
        let want = ids.len() + n_predict.flatten().unwrap_or(DEFAULT_N_PREDICT);
        sopts.n_ctx = Some(want.min(model.default_n_ctx()).max(ids.len()));
    }
    let mut session = model.session(sopts)?;
    let room = (session.n_ctx() + 1).saturating_sub(ids.len());
    let max_tokens = match n_predict {
        // The default never asks for more than the context holds (an over-long prompt is
        // still reported by `generate`).
        None if room > 0 => Some(DEFAULT_N_PREDICT.min(room)),
        None => None,
        Some(n) => n,
    };
    let opts = GenerateOptions {
        max_tokens,
        sampler,
        stop: args.stop.clone(),
        logprobs: args.logprobs.unwrap_or(0),
        beams: args.beams,
    };
    let started = std::time::Instant::now();
    let mut ttft_ms = None;
    let mut gen = session.generate(Prompt::Ids(ids), opts)?;
    let mut out = std::io::stdout().lock();
    let mut gen_ids = Vec::new();
    let mut top = Vec::new();
    for token in &mut gen {
        let token = token?;
        ttft_ms.get_or_insert_with(|| started.elapsed().as_secs_f64() * 1000.0);
        gen_ids.push(token.id);
        if args.logprobs.is_some() {
            top.push(
                token
                    .top_logprobs
                    .iter()
                    .map(|&(id, lp)| json!({"id": id, "logprob": lp}))
                    .collect::<Vec<_>>(),
            );
        }
        if !args.json && !token.text.is_empty() {
            out.write_all(token.text.as_bytes())?;
            out.flush()?;
        }
    }
    let reason = gen
        .stop_reason()
        .context("generation ended without a stop reason")?;
    let t = gen.timings();
    if args.json {
        let mut v = json!({
            "prompt_ids": gen.prompt_ids(),
            "ids": gen_ids,
            "text": gen.text(),
        });
        if args.logprobs.is_some() {
            v["top_logprobs"] = json!(top);
        }
        v["stop_reason"] = json!(reason.as_str());
        v["timings"] = json!({
            "load_ms": load_ms,
            "ttft_ms": ttft_ms,
            "prompt_tokens_per_s": t.prompt_tokens_per_s(),
            "gen_tokens_per_s": t.gen_tokens_per_s(),
        });
        writeln!(out, "{v}")?;
    } else {
        if out.is_terminal() && !gen.text().ends_with('\n') {
            writeln!(out)?;
        }
        eprintln!(
            "[prompt: {} tokens, {:.1} tok/s | generated: {} tokens, {:.1} tok/s | stop: {} | load {:.0} ms]",
            t.prompt_tokens,
            t.prompt_tokens_per_s(),
            t.generated_tokens,
            t.gen_tokens_per_s(),
            reason.as_str(),
            load_ms
        );
    }
    Ok(())
}
