//! `ferrite template`: render a conversation with the model's chat template.

use std::path::PathBuf;

use anyhow::Context;
use ferrite_engine::chat::{ChatTemplate, Message};
use ferrite_gguf::GgufFile;

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model whose chat template to use
    model: PathBuf,
    /// JSON file: an array of {"role", "content"} (or an object with a "messages" array)
    #[arg(long)]
    messages: PathBuf,
    /// Do not end with the assistant's turn header
    #[arg(long)]
    no_generation_prompt: bool,
    /// A template file, or a built-in name: chatml, llama2, llama3, gemma, mistral, phi3
    #[arg(long, value_name = "FILE|NAME")]
    chat_template: Option<String>,
    /// Extra template variables as a JSON object, e.g. '{"enable_thinking": false}'
    #[arg(long, value_name = "JSON")]
    chat_template_kwargs: Option<String>,
}

/// The template `--chat-template` names, else the model's own (or its built-in fallback).
pub fn resolve(md: &ferrite_gguf::Metadata, arg: Option<&str>) -> anyhow::Result<ChatTemplate> {
    Ok(match arg {
        Some(a) => ChatTemplate::from_arg(a, md)?,
        None => ChatTemplate::from_metadata(md, None)?,
    })
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let f = GgufFile::open(&a.model).with_context(|| format!("opening {}", a.model.display()))?;
    let tmpl = resolve(f.metadata(), a.chat_template.as_deref())?;
    let raw = std::fs::read_to_string(&a.messages)
        .with_context(|| format!("reading {}", a.messages.display()))?;
    let v: serde_json::Value = serde_json::from_str(&raw)
        .with_context(|| format!("{} is not JSON", a.messages.display()))?;
    let list = match v {
        serde_json::Value::Object(mut o) => o.remove("messages").unwrap_or_default(),
        other => other,
    };
    let msgs: Vec<Message> = serde_json::from_value(list).with_context(|| {
        format!(
            "{}: expected an array of {{\"role\": ..., \"content\": ...}}",
            a.messages.display()
        )
    })?;
    let kwargs = match &a.chat_template_kwargs {
        Some(s) => serde_json::from_str(s).context("--chat-template-kwargs is not JSON")?,
        None => serde_json::Value::Null,
    };
    let out = tmpl.render(&msgs, !a.no_generation_prompt, kwargs)?;
    let mut stdout = std::io::stdout().lock();
    std::io::Write::write_all(&mut stdout, out.as_bytes())?;
    Ok(())
}
