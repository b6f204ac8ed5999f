//! `ferrite serve`: the OpenAI-compatible HTTP server (see the `ferrite-server` crate).

use anyhow::{bail, Context};
use ferrite_engine::{LoadOptions, Model};
use ferrite_server::engine::{EngineBackend, EngineCodec};
use ferrite_server::{serve, ServerOptions, TextCodec};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// GGUF model file
    model: PathBuf,
    /// Address to listen on (loopback by default)
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Sequences decoded together in one batched forward pass (slots)
    #[arg(long, default_value_t = 1)]
    parallel: usize,
    /// Context size of EACH slot in tokens (default: the model's, capped at 4096)
    #[arg(long)]
    ctx_size: Option<usize>,
    /// Threads for the forward pass (default: physical cores)
    #[arg(long)]
    threads: Option<usize>,
    /// Require `Authorization: Bearer KEY` on /v1/*
    #[arg(long)]
    api_key: Option<String>,
    /// Model id clients use (default: the file name without .gguf)
    #[arg(long)]
    alias: Option<String>,
    /// Requests that may wait for a slot; past this, 429 Too Many Requests
    #[arg(long, default_value_t = 64)]
    max_queue: usize,
    /// Chat template: a built-in name or a file (default: the model's own)
    #[arg(long)]
    chat_template: Option<String>,
    /// Largest request body in bytes
    #[arg(long, default_value_t = 8 << 20)]
    body_limit: usize,
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    eprintln!("ferrite serve: shutting down");
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.parallel == 0 {
        bail!("--parallel must be at least 1");
    }
    let model = Model::load(&args.model, LoadOptions::default())
        .with_context(|| format!("loading {}", args.model.display()))?;
    let n_ctx = args.ctx_size.unwrap_or_else(|| model.default_n_ctx());
    let alias = args.alias.clone().unwrap_or_else(|| {
        args.model
            .file_stem()
            .map_or("model".into(), |s| s.to_string_lossy().into_owned())
    });
    let codec: Arc<dyn TextCodec> = Arc::new(
        EngineCodec::from_model(&model, args.chat_template.as_deref())
            .map_err(anyhow::Error::msg)?,
    );
    let backend = EngineBackend::new(model, args.parallel, n_ctx, args.threads)?;
    let opts = ServerOptions {
        max_queue: args.max_queue,
        api_key: args.api_key,
        alias,
        body_limit: args.body_limit,
        ..Default::default()
    };
    // The async side only moves bytes; inference runs on the scheduler's own thread.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("binding {}:{}", args.host, args.port))?;
        eprintln!(
            "ferrite serve: {} on http://{} ({} slots of {n_ctx} tokens)",
            opts.alias,
            listener.local_addr()?,
            args.parallel
        );
        serve(listener, opts, Box::new(backend), codec, shutdown_signal()).await?;
        anyhow::Ok(())
    })?;
    Ok(())
}
