//! The HTTP server over the real SmolLM2 model with the engine's batched forward pass.
//!
//! Prompts are given as token ids (the tokenizer is another part of the engine; these tests
//! are about batching): greedy ids of requests decoded together in 4 slots must equal the ids
//! of the same requests run one at a time.

mod common;
use common::*;
use ferrite_engine::{LoadOptions, Model};
use ferrite_server::engine::EngineBackend;
use ferrite_server::{serve, ServerOptions, TextCodec};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

/// Renders ids as `<id>` and stops on the model's end-of-sequence id; no text prompts.
struct IdCodec {
    n_vocab: usize,
    eos: u32,
}

impl TextCodec for IdCodec {
    fn n_vocab(&self) -> usize {
        self.n_vocab
    }
    fn tokenize_prompt(&self, _: &str) -> Result<Vec<u32>, String> {
        Err("this test codec takes token ids only".into())
    }
    fn tokenize_chat(&self, _: &[ferrite_server::ChatMessage]) -> Result<Vec<u32>, String> {
        Err("this test codec takes token ids only".into())
    }
    fn token_bytes(&self, id: u32) -> Vec<u8> {
        format!("<{id}>").into_bytes()
    }
    fn is_eog(&self, id: u32) -> bool {
        id == self.eos
    }
}

struct RealServer {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RealServer {
    fn drop(&mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        let _ = self.thread.take().map(|t| t.join());
    }
}

fn start_real(model: &Arc<Model>, slots: usize) -> RealServer {
    let eos = model
        .gguf()
        .metadata()
        .get_u64("tokenizer.ggml.eos_token_id")
        .unwrap()
        .unwrap() as u32;
    let codec = Arc::new(IdCodec {
        n_vocab: model.config().n_vocab,
        eos,
    });
    let backend = EngineBackend::new(model.clone(), slots, 256, Some(2)).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            serve(
                l,
                ServerOptions::default(),
                Box::new(backend),
                codec,
                async {
                    let _ = rx.await;
                },
            )
            .await
            .unwrap();
        });
    });
    RealServer {
        addr,
        stop: Some(tx),
        thread: Some(thread),
    }
}

fn request_body(i: usize) -> Value {
    // Distinct prompts of different lengths from ordinary vocabulary ids.
    let prompt: Vec<u32> = (0..5 + i)
        .map(|k| 1000 + ((i * 131 + k * 17) % 3000) as u32)
        .collect();
    json!({"prompt": prompt, "max_tokens": 6, "temperature": 0, "stream": true, "return_token_ids": true})
}

fn ids_of(r: &Resp) -> Vec<u64> {
    let (_, chunks) = stream_text(r);
    chunks
        .iter()
        .flat_map(|c| {
            c["choices"][0]["token_ids"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|v| v.as_u64().unwrap())
        .collect()
}

/// Slow (about a minute on 2 cores); crates/cli/tests/serve_openai.rs checks the same
/// property through `ferrite serve` in the default suite. Run with `--ignored`.
#[test]
#[ignore]
fn batched_greedy_ids_equal_one_at_a_time_on_smollm2() {
    let model = Model::load(ferrite_testdata::smollm2(), LoadOptions::default()).unwrap();
    let n = 5; // 4 slots + 1 queued: the fifth joins mid-flight when a slot frees
    let srv = start_real(&model, 4);
    let addr = srv.addr;
    let t = Instant::now();
    let threads: Vec<_> = (0..n)
        .map(|i| {
            std::thread::spawn(move || ids_of(&post(addr, "/v1/completions", &request_body(i))))
        })
        .collect();
    let batched: Vec<Vec<u64>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let t_batched = t.elapsed();
    drop(srv);

    let srv = start_real(&model, 1);
    let t = Instant::now();
    let alone: Vec<Vec<u64>> = (0..n)
        .map(|i| ids_of(&post(srv.addr, "/v1/completions", &request_body(i))))
        .collect();
    let t_alone = t.elapsed();
    let total: usize = batched.iter().map(Vec::len).sum();
    eprintln!(
        "{n} requests, {total} tokens: 4 slots {:.2}s, one at a time {:.2}s",
        t_batched.as_secs_f64(),
        t_alone.as_secs_f64()
    );
    for (i, (b, a)) in batched.iter().zip(&alone).enumerate() {
        assert!(!a.is_empty());
        assert_eq!(b, a, "request {i}");
    }
}
