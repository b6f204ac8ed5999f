//! Built-in chat templates for models whose file carries none, written for ferrite in the
//! Hugging Face template dialect. Those that start with `bos_token` do so like the models'
//! official templates; [`super::ChatTemplate::render_prompt`] drops it when the tokenizer adds
//! BOS itself.

/// `(name, template)`.
pub const BUILTINS: &[(&str, &str)] = &[
    ("chatml", CHATML),
    ("llama2", LLAMA2),
    ("llama3", LLAMA3),
    ("gemma", GEMMA),
    ("mistral", MISTRAL),
    ("phi3", PHI3),
];

const CHATML: &str = include_str!("templates/chatml.jinja");

const LLAMA2: &str = include_str!("templates/llama2.jinja");

const LLAMA3: &str = include_str!("templates/llama3.jinja");

const GEMMA: &str = include_str!("templates/gemma.jinja");

const MISTRAL: &str = include_str!("templates/mistral.jinja");

const PHI3: &str = include_str!("templates/phi3.jinja");
