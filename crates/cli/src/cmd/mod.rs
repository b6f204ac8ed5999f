//! One module per subcommand: its arguments (clap) and its `run`.

pub mod bench;
pub mod chat;
pub mod detokenize;
pub mod dump;
pub mod inspect;
pub mod logits;
pub mod model_opts;
pub mod perplexity;
pub mod quantize;
pub mod run;
pub mod serve;
pub mod template;
pub mod tokenize;
