//! `ferrite tokenize`: text to token ids with the model's own tokenizer.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use ferrite_engine::tokenizer::Tokenizer;
use ferrite_gguf::GgufFile;

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model whose tokenizer to use
    model: PathBuf,
    /// The text to tokenize (or use --file)
    #[arg(allow_hyphen_values = true, required_unless_present = "file")]
    text: Option<String>,
    /// Read the text from this file instead (byte-exact)
    #[arg(long, conflicts_with = "text")]
    file: Option<PathBuf>,
    /// Do not add BOS/EOS even if the model asks for them
    #[arg(long)]
    no_bos: bool,
    /// Treat special-token text (e.g. <|im_end|>) as plain text
    #[arg(long)]
    no_special: bool,
    /// Print exactly one JSON array of ids
    #[arg(long)]
    json: bool,
}

/// Loads the tokenizer of a model file.
pub fn load(model: &std::path::Path) -> anyhow::Result<(GgufFile, Tokenizer)> {
    let f = GgufFile::open(model).with_context(|| format!("opening {}", model.display()))?;
    let tok = Tokenizer::from_metadata(f.metadata())
        .with_context(|| format!("loading the tokenizer of {}", model.display()))?;
    Ok((f, tok))
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let text = match (&a.text, &a.file) {
        (_, Some(p)) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        (Some(t), None) => t.clone(),
        (None, None) => anyhow::bail!("give TEXT or --file"),
    };
    let (_f, tok) = load(&a.model)?;
    let ids = tok.encode(&text, !a.no_bos, !a.no_special)?;
    // Write errors (a closed pipe) are reported, not panicked on as `println!` would.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if a.json {
        writeln!(out, "{}", serde_json::to_string(&ids)?)?;
    } else {
        for id in ids {
            let piece = String::from_utf8_lossy(&tok.token_to_piece(id)).into_owned();
            writeln!(out, "{id:>7} {piece:?}")?;
        }
    }
    out.flush()?;
    Ok(())
}
