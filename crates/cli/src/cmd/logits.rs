//! `ferrite logits`: evaluates a sequence in one pass (teacher forcing) and prints, for every
//! position, the top next-token log-probabilities as one JSON line. The tool for comparing
//! numerics with a reference.

use std::path::PathBuf;

use ferrite_engine::sampling::top_logprobs;
use serde_json::json;

use super::model_opts::{parse_ids, ModelOpts};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// GGUF model file
    pub model: PathBuf,
    /// Token ids, comma-separated
    #[arg(long, conflicts_with = "prompt", required_unless_present = "prompt")]
    pub ids: Option<String>,
    /// Text to tokenize (BOS per the model's metadata, special tokens parsed)
    #[arg(short = 'p', long)]
    pub prompt: Option<String>,
    /// Log-probabilities listed per position
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    #[command(flatten)]
    pub model_opts: ModelOpts,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (model, _) = args.model_opts.load(&args.model)?;
    let ids = match (&args.ids, &args.prompt) {
        (Some(s), _) => parse_ids(s)?,
        (None, Some(p)) => model.tokenize(p)?,
        (None, None) => unreachable!("clap requires one of --ids / -p"),
    };
    anyhow::ensure!(!ids.is_empty(), "no token ids given");
    let mut opts = args.model_opts.session_options();
    opts.n_ctx
        .get_or_insert(ids.len().max(model.default_n_ctx()));
    let mut s = model.session(opts)?;
    let logits = s.eval_all(&ids)?;
    let nv = model.config().n_vocab;
    let top: Vec<Vec<serde_json::Value>> = logits
        .chunks_exact(nv)
        .map(|row| {
            top_logprobs(row, args.top)
                .into_iter()
                .map(|(id, lp)| json!({"id": id, "logprob": lp}))
                .collect()
        })
        .collect();
    println!("{}", json!({"ids": ids, "top": top}));
    Ok(())
}
