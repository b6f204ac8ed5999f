//! The `ferrite` command-line tool: one subcommand per job, each in its own module under `cmd/`.

use clap::{Parser, Subcommand};

mod cmd;

#[derive(Parser)]
#[command(
    name = "ferrite",
    version,
    about = "Run large language models stored as GGUF files"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a GGUF file's metadata, architecture summary and tensor table
    Inspect(cmd::inspect::Args),
    /// Write one tensor, dequantized to f32, as a NumPy .npy file
    Dump(cmd::dump::Args),
    /// Write a copy of a model with its tensors in another type
    Quantize(cmd::quantize::Args),
    /// Turn text into token ids with the model's tokenizer
    Tokenize(cmd::tokenize::Args),
    /// Turn token ids back into text
    Detokenize(cmd::detokenize::Args),
    /// Render a conversation with the model's chat template
    Template(cmd::template::Args),
    /// Generate text from a prompt
    Run(cmd::run::Args),
    /// Chat with a model in the terminal
    Chat(cmd::chat::Args),
    /// Print next-token log-probabilities for every position of a sequence
    Logits(cmd::logits::Args),
    /// Measure perplexity on a text file
    Perplexity(cmd::perplexity::Args),
    /// Measure prompt-processing and generation speed
    Bench(cmd::bench::Args),
    /// Serve an OpenAI-compatible HTTP API
    Serve(cmd::serve::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Dump(a) => cmd::dump::run(a),
        Command::Quantize(a) => cmd::quantize::run(a),
        Command::Tokenize(a) => cmd::tokenize::run(a),
        Command::Detokenize(a) => cmd::detokenize::run(a),
        Command::Template(a) => cmd::template::run(a),
        Command::Run(a) => cmd::run::run(a),
        Command::Chat(a) => cmd::chat::run(a),
        Command::Logits(a) => cmd::logits::run(a),
        Command::Perplexity(a) => cmd::perplexity::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Serve(a) => cmd::serve::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
