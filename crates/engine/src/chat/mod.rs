//! Chat templates: turning a conversation into the prompt text a model was trained on.
//!
//! Templates are Hugging Face Jinja templates (`tokenizer.chat_template` in GGUF metadata, or
//! a named variant `tokenizer.chat_template.<name>`), rendered with minijinja configured as
//! `transformers` configures Jinja2: `trim_blocks`, `lstrip_blocks`, loop controls, Python string
//! and dict methods (`strip`, `split`, `startswith`, `items`, ... via minijinja-contrib's
//! pycompat), `raise_exception`, `strftime_now` and a Python-compatible `tojson`. Rendering is
//! bounded by a fuel limit so a runaway template fails instead of hanging.
//!
//! A model without a template (the Gemma 3 file ferrite is tested on has none) gets a built-in
//! one chosen from its architecture, name and vocabulary (see [`builtin`]).
//!
//! Reasoning models write their thoughts between think tags; [`split_reasoning`] and
//! [`ReasoningMode`] let the caller show, hide or separate them.

pub mod builtin;

use std::fmt::Write as _;
use std::path::Path;

use ferrite_gguf::{Array, Metadata, Value as GValue};
use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, Error, ErrorKind, Value};
use serde::{Deserialize, Serialize};

/// Instructions a template may execute before rendering is abandoned.
pub const FUEL: u64 = 2_000_000;

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Why a template could not be loaded or rendered.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("unknown built-in chat template '{0}' (known: chatml, llama2, llama3, gemma, mistral, phi3)")]
    UnknownBuiltin(String),
    #[error("the model has no chat template named '{0}'")]
    NoNamedTemplate(String),
    #[error("reading chat template {path}: {err}")]
    Io { path: String, err: std::io::Error },
    /// The template failed to parse or render; the message (minijinja's alternate form)
    /// shows the template lines around the fault, so the error is not also a `source()`.
    #[error("chat template: {0:#}")]
    Render(Error),
    #[error("chat template kwargs must be a JSON object, got {0}")]
    Kwargs(String),
}

impl From<Error> for ChatError {
    fn from(e: Error) -> Self {
        ChatError::Render(e)
    }
}

/// A chat template and the special-token texts it may refer to.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    /// Where the template came from: `metadata`, `builtin:<name>` or a file path.
    pub origin: String,
    pub bos_token: String,
    pub eos_token: String,
}

fn token_text(md: &Metadata, key: &str) -> String {
    let id = md.get(key).and_then(GValue::as_u64);
    match (id, md.get("tokenizer.ggml.tokens")) {
        (Some(id), Some(GValue::Array(Array::String(t)))) => {
            t.get(id as usize).unwrap_or_default().to_string()
        }
        _ => String::new(),
    }
}

/// The built-in template that fits a model without one.
pub fn builtin_for(md: &Metadata) -> &'static str {
    let arch = md.architecture().unwrap_or("").to_lowercase();
    let name = md
        .get("general.name")
        .and_then(GValue::as_str)
        .unwrap_or("")
        .to_lowercase();
    let has = |t: &str| match md.get("tokenizer.ggml.tokens") {
        Some(GValue::Array(Array::String(v))) => v.iter().any(|x| x == t),
        _ => false,
    };
    if has("<|im_start|>") {
        "chatml"
    } else if arch.starts_with("gemma") || has("<start_of_turn>") {
        "gemma"
    } else if has("<|start_header_id|>") {
        "llama3"
    } else if arch.starts_with("phi3") || has("<|assistant|>") {
        "phi3"
    } else if arch.contains("mistral") || name.contains("mistral") {
        "mistral"
    } else if arch == "llama" {
        "llama2"
    } else {
        "chatml"
    }
}

impl ChatTemplate {
    pub fn new(source: impl Into<String>, origin: impl Into<String>) -> Self {
        ChatTemplate {
            source: source.into(),
            origin: origin.into(),
            bos_token: String::new(),
            eos_token: String::new(),
        }
    }

    /// The model's template (`name` picks `tokenizer.chat_template.<name>`), else the
    /// built-in that fits its architecture, name and vocabulary. BOS/EOS texts come from the
    /// vocabulary.
    pub fn from_metadata(md: &Metadata, name: Option<&str>) -> Result<Self, ChatError> {
        let mut t = match name {
            Some(n) => {
                let key = format!("tokenizer.chat_template.{n}");
                match md.get(&key).and_then(GValue::as_str) {
                    Some(s) => ChatTemplate::new(s, key),
                    None => return Err(ChatError::NoNamedTemplate(n.to_string())),
                }
            }
            None => match md.get("tokenizer.chat_template").and_then(GValue::as_str) {
                Some(s) => ChatTemplate::new(s, "metadata"),
                None => Self::builtin(builtin_for(md))?,
            },
        };
        t.bos_token = token_text(md, "tokenizer.ggml.bos_token_id");
        t.eos_token = token_text(md, "tokenizer.ggml.eos_token_id");
        Ok(t)
    }

    /// A built-in template by name: chatml, llama2, llama3, gemma, mistral, phi3.
    pub fn builtin(name: &str) -> Result<Self, ChatError> {
        builtin::BUILTINS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(n, s)| ChatTemplate::new(*s, format!("builtin:{n}")))
            .ok_or_else(|| ChatError::UnknownBuiltin(name.to_string()))
    }

    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ChatError> {
        let p = path.as_ref();
        let s = std::fs::read_to_string(p).map_err(|err| ChatError::Io {
            path: p.display().to_string(),
            err,
        })?;
        Ok(ChatTemplate::new(s, p.display().to_string()))
    }

    /// What `--chat-template X` means: a file if `X` is one, else a built-in name. BOS/EOS
    /// texts are taken from the model.
    pub fn from_arg(arg: &str, md: &Metadata) -> Result<Self, ChatError> {
        let mut t = if Path::new(arg).is_file() {
            Self::from_file(arg)?
        } else {
            Self::builtin(arg)?
        };
        t.bos_token = token_text(md, "tokenizer.ggml.bos_token_id");
        t.eos_token = token_text(md, "tokenizer.ggml.eos_token_id");
        Ok(t)
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders the conversation exactly as Jinja2 would. `extra_kwargs` (a JSON object, or
    /// null) adds template variables such as `enable_thinking`.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        extra_kwargs: serde_json::Value,
    ) -> Result<String, ChatError> {
        let mut ctx = match extra_kwargs {
            serde_json::Value::Null => serde_json::Map::new(),
            serde_json::Value::Object(m) => m,
            other => return Err(ChatError::Kwargs(other.to_string())),
        };
        // serde_json keeps insertion order (preserve_order), as Python dicts do: `tojson`
        // of a message must print `role` before `content`.
        let msgs = serde_json::to_value(messages).expect("messages serialize");
        ctx.insert("messages".into(), msgs);
        ctx.insert("add_generation_prompt".into(), add_generation_prompt.into());
        ctx.entry("bos_token")
            .or_insert_with(|| self.bos_token.clone().into());
        ctx.entry("eos_token")
            .or_insert_with(|| self.eos_token.clone().into());
        let env = environment();
        let tmpl = env.template_from_str(&self.source)?;
        Ok(tmpl.render(Value::from_serialize(&ctx))?)
    }

    /// [`ChatTemplate::render`] for tokenizing: when the tokenizer adds BOS itself
    /// (`add_bos`), a BOS text the template wrote at the start is dropped (as llama.cpp does),
    /// so the prompt does not start with two BOS tokens.
    pub fn render_prompt(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        extra_kwargs: serde_json::Value,
        add_bos: bool,
    ) -> Result<String, ChatError> {
        let s = self.render(messages, add_generation_prompt, extra_kwargs)?;
        if add_bos && !self.bos_token.is_empty() {
            if let Some(rest) = s.strip_prefix(&self.bos_token) {
                return Ok(rest.to_string());
            }
        }
        Ok(s)
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_fuel(Some(FUEL));
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env.add_filter("tojson", tojson);
    env
}

fn raise_exception(msg: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

fn strftime_now(fmt: String) -> Result<String, Error> {
    let mut s = String::new();
    write!(s, "{}", chrono::Local::now().format(&fmt)).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: bad format {fmt:?}"),
        )
    })?;
    Ok(s)
}

/// Python's `json.dumps(x, ensure_ascii=False, indent=indent)`, as `transformers` defines
/// `tojson` (minijinja's own escapes HTML characters, which changes prompts).
fn tojson(v: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    let _: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    py_json(&v, indent, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

fn py_json(v: &Value, indent: Option<usize>, level: usize, out: &mut String) -> Result<(), Error> {
    let nl = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', n * level));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if let Ok(i) = i64::try_from(v.clone()) {
                let _ = write!(out, "{i}");
            } else {
                let f = f64::try_from(v.clone())?;
                if f.is_finite() {
                    let _ = write!(out, "{f:?}");
                } else if f.is_nan() {
                    out.push_str("NaN");
                } else {
                    out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
                }
            }
        }
        ValueKind::String => py_str(v.as_str().unwrap_or(""), out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                nl(out, level + 1);
                py_json(x, indent, level + 1, out)?;
            }
            nl(out, level);
            out.push(']');
        }
        ValueKind::Map => {
            let keys: Vec<Value> = v.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                nl(out, level + 1);
                match k.as_str() {
                    Some(s) => py_str(s, out),
                    None => py_str(&k.to_string(), out),
                }
                out.push_str(": ");
                py_json(&v.get_item(k)?, indent, level + 1, out)?;
            }
            nl(out, level);
            out.push('}');
        }
        _ => py_str(&v.to_string(), out),
    }
    Ok(())
}

fn py_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// What to do with reasoning text between think tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReasoningMode {
    /// Leave the text as generated, tags included.
    #[default]
    Show,
    /// Drop the reasoning and its tags.
    Hide,
    /// Return the reasoning apart from the answer.
    Separate,
}

/// Splits generated text into `(reasoning, answer)` at `<think>`...`</think>` at its start
/// (leading whitespace allowed). An opened but unclosed block (generation still thinking, or
/// cut off) is all reasoning. Templates that open the block themselves (the model's output
/// then starts inside it) are handled by a closing tag with no opening one.
pub fn split_reasoning(text: &str) -> (Option<&str>, &str) {
    const OPEN: &str = "<think>";
    const CLOSE: &str = "</think>";
    let t = text.trim_start();
    if let Some(rest) = t.strip_prefix(OPEN) {
        return match rest.find(CLOSE) {
            Some(i) => (Some(&rest[..i]), &rest[i + CLOSE.len()..]),
            None => (Some(rest), ""),
        };
    }
    match text.find(CLOSE) {
        Some(i) if !text[..i].contains(OPEN) => (Some(&text[..i]), &text[i + CLOSE.len()..]),
        _ => (None, text),
    }
}

/// Applies a [`ReasoningMode`]: returns `(answer, reasoning)`; reasoning is `Some` only with
/// `Separate` and only when there was any.
pub fn apply_reasoning(text: &str, mode: ReasoningMode) -> (String, Option<String>) {
    match mode {
        ReasoningMode::Show => (text.to_string(), None),
        ReasoningMode::Hide => (split_reasoning(text).1.trim_start().to_string(), None),
        ReasoningMode::Separate => {
            let (r, a) = split_reasoning(text);
            (a.trim_start().to_string(), r.map(|r| r.trim().to_string()))
        }
    }
}

#[cfg(test)]
mod tests;
