//! `ferrite detokenize`: token ids back to text.

use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model whose tokenizer to use
    model: PathBuf,
    /// Token ids (separated by spaces or commas; a JSON array works too)
    #[arg(required = true, num_args = 1.., allow_hyphen_values = true)]
    ids: Vec<String>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let (_f, tok) = super::tokenize::load(&a.model)?;
    let mut ids = Vec::new();
    for arg in &a.ids {
        for part in arg
            .split(|c: char| c == ',' || c == '[' || c == ']' || c.is_whitespace())
            .filter(|s| !s.is_empty())
        {
            let id: u32 = part
                .parse()
                .map_err(|_| anyhow::anyhow!("'{part}' is not a token id"))?;
            if id as usize >= tok.vocab_size() {
                anyhow::bail!(
                    "token id {id} is out of range (vocabulary has {} tokens)",
                    tok.vocab_size()
                );
            }
            ids.push(id);
        }
    }
    let mut out = std::io::stdout().lock();
    out.write_all(tok.decode(&ids).as_bytes())?;
    out.write_all(b"\n")?;
    Ok(())
}
