//! `ferrite chat`: an interactive conversation in the terminal, rendered with the model's chat
//! template (or `--chat-template`), replies streamed as they are generated.
//!
//! The whole conversation is re-rendered for every message and only the tokens that differ
//! from what the session already holds are evaluated, so history costs nothing to keep. When it
//! no longer fits the context (with room for a reply), the oldest turns are dropped (the system
//! message stays). With stdin from a pipe, every line is one message and only replies are
//! printed, one after another.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use ferrite_engine::chat::{ChatTemplate, Message};
use ferrite_engine::{GenerateOptions, Prompt, StopReason};

use super::model_opts::{ModelOpts, SamplingOpts};

/// Set by Ctrl-C while a reply is being generated; the reply then stops.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static GENERATING: AtomicBool = AtomicBool::new(false);

#[derive(clap::Args, Debug)]
pub struct Args {
    /// GGUF model file
    pub model: PathBuf,
    /// A system message that starts the conversation
    #[arg(long)]
    pub system: Option<String>,
    /// A Jinja template file, or a built-in name (chatml, llama2, llama3, gemma, mistral, phi3)
    /// [default: the model's own, else the built-in that fits it]
    #[arg(long = "chat-template", value_name = "FILE|NAME")]
    pub chat_template: Option<String>,
    /// Longest reply in tokens; -1: until the model ends its turn or the context is full
    #[arg(short = 'n', long = "n-predict", default_value_t = -1, allow_hyphen_values = true)]
    pub n_predict: i64,
    #[command(flatten)]
    pub sampling: SamplingOpts,
    #[command(flatten)]
    pub model_opts: ModelOpts,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let max_tokens = match args.n_predict {
        -1 => None,
        n if n > 0 => Some(n as usize),
        n => anyhow::bail!("-n must be -1 (no limit) or positive, got {n}"),
    };
    let sampler = args.sampling.config()?;
    let (model, _) = args.model_opts.load(&args.model)?;
    let tok = model.tokenizer()?.clone();
    let template = match &args.chat_template {
        Some(a) => ChatTemplate::from_arg(a, model.gguf().metadata())?,
        None => model.chat_template()?.clone(),
    };
    let mut session = model.session(args.model_opts.session_options())?;
    let n_ctx = session.n_ctx();
    // Room kept free for the reply when deciding how much history fits.
    let reserve = max_tokens.unwrap_or((n_ctx / 4).min(512)).max(1);
    let interactive = std::io::stdin().is_terminal();

    if let Err(e) = ctrlc::set_handler(|| {
        if GENERATING.load(Ordering::SeqCst) {
            INTERRUPTED.store(true, Ordering::SeqCst);
        } else {
            std::process::exit(130);
        }
    }) {
        eprintln!("warning: Ctrl-C cannot stop a reply ({e})");
    }

    let base: Vec<Message> = args
        .system
        .iter()
        .map(|s| Message::new("system", s.as_str()))
        .collect();
    let mut history = base.clone();
    if interactive {
        eprintln!(
            "chatting with {} (context {n_ctx} tokens, template {}). /reset starts over, /exit \
             quits, Ctrl-C stops a reply.",
            args.model.display(),
            template.origin
        );
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut out = std::io::stdout();
    loop {
        if interactive {
            write!(out, "> ")?;
            out.flush()?;
        }
        let Some(line) = lines.next() else { break };
        let line = line?;
        let msg = line.trim();
        match msg {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                history = base.clone();
                session.reset();
                if interactive {
                    eprintln!("(conversation cleared)");
                }
                continue;
            }
            _ => {}
        }
        history.push(Message::new("user", msg));
        let Some(ids) = fit(
            &template,
            &tok,
            &mut history,
            base.len(),
            n_ctx - reserve.min(n_ctx - 1),
        )?
        else {
            eprintln!(
                "error: this message does not fit the context of {n_ctx} tokens with room for a \
                 reply (raise --ctx-size)"
            );
            history.pop();
            continue;
        };
        // Evaluate only what differs from the cache (at least one token, for fresh logits).
        let common = session
            .tokens()
            .iter()
            .zip(&ids)
            .take_while(|(a, b)| a == b)
            .count()
            .min(ids.len() - 1);
        session.truncate(common);
        let opts = GenerateOptions {
            max_tokens,
            sampler: sampler.clone(),
            ..Default::default()
        };
        INTERRUPTED.store(false, Ordering::SeqCst);
        GENERATING.store(true, Ordering::SeqCst);
        let result = (|| -> anyhow::Result<(String, Option<StopReason>)> {
            let mut gen = session.generate(Prompt::Ids(ids[common..].to_vec()), opts)?;
            for t in &mut gen {
                let t = t?;
                out.write_all(t.text.as_bytes())?;
                out.flush()?;
                if INTERRUPTED.load(Ordering::SeqCst) {
                    break;
                }
            }
            Ok((gen.text().to_string(), gen.stop_reason()))
        })();
        GENERATING.store(false, Ordering::SeqCst);
        let (reply, reason) = result?;
        writeln!(out)?;
        out.flush()?;
        if reason == Some(StopReason::ContextFull) {
            eprintln!("(the context is full: the reply was cut)");
        }
        history.push(Message::new("assistant", reply.trim()));
    }
    Ok(())
}

/// Renders and tokenizes the conversation, dropping the oldest turns after the `keep` first
/// messages until it takes at most `limit` tokens. `None`: even the last message alone is too
/// long.
fn fit(
    template: &ChatTemplate,
    tok: &ferrite_engine::tokenizer::Tokenizer,
    history: &mut Vec<Message>,
    keep: usize,
    limit: usize,
) -> anyhow::Result<Option<Vec<u32>>> {
    loop {
        let text = template.render_prompt(history, true, serde_json::Value::Null, tok.add_bos())?;
        let ids = tok.encode(&text, true, true)?;
        if ids.len() <= limit {
            return Ok(Some(ids));
        }
        if history.len() <= keep + 1 {
            return Ok(None);
        }
        // One turn: the oldest user message and the replies that follow it.
        history.remove(keep);
        while history.len() > keep + 1 && history[keep].role != "user" {
            history.remove(keep);
        }
    }
}
