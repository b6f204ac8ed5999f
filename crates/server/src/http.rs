//! The HTTP layer: axum router, handlers, SSE streaming, API key, body limit, request log,
//! graceful shutdown.
//!
//! Handlers never run inference: they validate, tokenize (on tokio's blocking pool), submit jobs
//! to the [`scheduler`] and turn its events into OpenAI responses.

use crate::backend::{BatchBackend, TextCodec};
use crate::metrics::Metrics;
use crate::request::{parse, ApiError, Endpoint, GenRequest, Limits, Prompt};
use crate::scheduler::{
    self, Event, FinishReason, Job, SchedulerConfig, SchedulerHandle, SubmitError, TokenInfo,
};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::{Future, IntoFuture};
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Server settings besides the model (slots come from the backend: `--parallel`).
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Requests (sequences) that may wait for a slot; past it, 429.
    pub max_queue: usize,
    /// Required as `Authorization: Bearer KEY` on `/v1/*` when set.
    pub api_key: Option<String>,
    /// The model id clients name (`--alias`, else the file name).
    pub alias: String,
    /// Largest accepted request body, bytes.
    pub body_limit: usize,
    /// Most prompt tokens one batched step feeds.
    pub max_batch_tokens: usize,
    /// How long in-flight requests may finish after SIGINT/SIGTERM before they are cancelled.
    pub shutdown_grace: Duration,
    /// Most sequences (prompts × n) in one request.
    pub max_sequences: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_queue: 64,
            api_key: None,
            alias: "ferrite".into(),
            body_limit: 8 << 20,
            max_batch_tokens: 512,
            shutdown_grace: Duration::from_secs(2),
            max_sequences: 16,
        }
    }
}

struct Inner {
    sched: SchedulerHandle,
    codec: Arc<dyn TextCodec>,
    opts: ServerOptions,
    metrics: Metrics,
    created: u64,
    ids: AtomicU64,
}

#[derive(Clone)]
struct AppState(Arc<Inner>);

impl ApiError {
    fn into_response_with_headers(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = (status, Json(self.body())).into_response();
        if self.status == 429 || self.status == 503 {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.into_response_with_headers()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A pseudo-random 64-bit value (ids, default seeds): a counter through splitmix64, keyed by
/// the start time.
fn random_u64(st: &Inner) -> u64 {
    let mut z = st
        .ids
        .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One log line per request, written when the last reference goes: for a stream, after its
/// last byte, so the line carries the token counts and the full duration.
struct ReqLog {
    method: String,
    path: String,
    metric_path: String,
    start: Instant,
    status: AtomicU16,
    prompt_tokens: AtomicUsize,
    completion_tokens: AtomicUsize,
    state: AppState,
}

impl Drop for ReqLog {
    fn drop(&mut self) {
        let secs = self.start.elapsed().as_secs_f64();
        let status = self.status.load(Ordering::Relaxed);
        eprintln!(
            "{} {} {} prompt_tokens={} completion_tokens={} {:.1}ms",
            self.method,
            self.path,
            status,
            self.prompt_tokens.load(Ordering::Relaxed),
            self.completion_tokens.load(Ordering::Relaxed),
            secs * 1e3
        );
        self.state
            .0
            .metrics
            .observe(&self.metric_path, status, secs);
    }
}

async fn log_requests(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let metric_path = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let log = Arc::new(ReqLog {
        method: req.method().to_string(),
        path: req.uri().path().chars().take(200).collect(),
        metric_path,
        start: Instant::now(),
        status: AtomicU16::new(0),
        prompt_tokens: AtomicUsize::new(0),
        completion_tokens: AtomicUsize::new(0),
        state: st,
    });
    req.extensions_mut().insert(log.clone());
    let resp = next.run(req).await;
    log.status.store(resp.status().as_u16(), Ordering::Relaxed);
    resp
}

/// Byte-wise comparison whose time does not depend on where the first difference is.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_key(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(key) = &st.0.opts.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let ok = given.is_some_and(|g| same_secret(g.as_bytes(), key.as_bytes()));
        if !ok {
            let msg = if given.is_some() {
                "incorrect API key provided"
            } else {
                "missing API key: send `Authorization: Bearer KEY`"
            };
            return ApiError::new(401, "invalid_request_error", Some("invalid_api_key"), msg)
                .into_response();
        }
    }
    next.run(req).await
}

/// Builds the router (exposed for tests that drive it without a socket).
fn router(st: AppState) -> Router {
    let limit = st.0.opts.body_limit;
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route_layer(middleware::from_fn_with_state(st.clone(), require_key));
    Router::new()
        .merge(v1)
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(st.clone(), log_requests))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(st)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        404,
        "invalid_request_error",
        Some("not_found"),
        format!("no route for {} {}", req.method(), req.uri().path()),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        405,
        "invalid_request_error",
        Some("method_not_allowed"),
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

async fn health(State(st): State<AppState>) -> Response {
    let s = &st.0.sched;
    if s.is_shutting_down() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "shutting down"})),
        )
            .into_response();
    }
    let busy = s.stats.active.load(Ordering::Relaxed);
    Json(json!({
        "status": "ok",
        "slots_idle": s.n_slots.saturating_sub(busy),
        "slots_processing": busy,
        "queue_depth": s.stats.queued.load(Ordering::Relaxed),
    }))
    .into_response()
}

async fn metrics(State(st): State<AppState>) -> Response {
    let body = st.0.metrics.render(&st.0.sched.stats, st.0.sched.n_slots);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn models(State(st): State<AppState>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": st.0.opts.alias,
            "object": "model",
            "created": st.0.created,
            "owned_by": "ferrite",
            "meta": {"n_ctx_slot": st.0.sched.n_ctx, "n_vocab": st.0.sched.n_vocab, "n_slots": st.0.sched.n_slots},
        }]
    }))
}

async fn chat(
    State(st): State<AppState>,
    Extension(log): Extension<Arc<ReqLog>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    generate(st, log, Endpoint::Chat, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn completions(
    State(st): State<AppState>,
    Extension(log): Extension<Arc<ReqLog>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    generate(st, log, Endpoint::Completion, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

fn body_error(r: BytesRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            413,
            "invalid_request_error",
            Some("request_too_large"),
            "the request body is over the size limit",
        )
    } else {
        ApiError::new(
            400,
            "invalid_request_error",
            None,
            format!("could not read the request body: {}", r.body_text()),
        )
    }
}

/// Everything a response needs besides the generated text.
struct Meta {
    endpoint: Endpoint,
    id: String,
    created: u64,
    model: String,
    prompt_tokens: usize,
    choices: usize,
    logprobs: Option<usize>,
    return_token_ids: bool,
}

async fn generate(
    st: AppState,
    log: Arc<ReqLog>,
    endpoint: Endpoint,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let inner = &st.0;
    let body = body.map_err(body_error)?;
    let limits = Limits {
        n_vocab: inner.sched.n_vocab,
        n_ctx: inner.sched.n_ctx,
        max_sequences: inner.opts.max_sequences,
    };
    let req: GenRequest = parse(endpoint, &body, limits)?;
    drop(body);
    if let Some(m) = &req.model {
        if m != &inner.opts.alias {
            return Err(ApiError {
                param: Some("model".into()),
                ..ApiError::new(
                    404,
                    "invalid_request_error",
                    Some("model_not_found"),
                    format!(
                        "the model {m:?} does not exist; this server serves {:?}",
                        inner.opts.alias
                    ),
                )
            });
        }
    }
    // Tokenizing a large prompt takes real CPU time: keep it off the async workers.
    let codec = inner.codec.clone();
    let prompts = req.prompts.clone();
    let tokenized = tokio::task::spawn_blocking(move || {
        prompts
            .iter()
            .map(|p| match p {
                Prompt::Text(s) => codec.tokenize_prompt(s),
                Prompt::Tokens(t) => Ok(t.clone()),
                Prompt::Chat(m) => codec.tokenize_chat(m),
            })
            .collect::<Result<Vec<_>, String>>()
    })
    .await
    .map_err(|e| ApiError::new(500, "server_error", None, format!("tokenizer failed: {e}")))?;
    let param = if endpoint == Endpoint::Chat {
        "messages"
    } else {
        "prompt"
    };
    let tokenized = tokenized.map_err(|e| ApiError::param(param, e))?;
    let n_ctx = inner.sched.n_ctx;
    for t in &tokenized {
        if t.is_empty() {
            return Err(ApiError::param(param, "the prompt is empty (0 tokens)"));
        }
        if t.len() > n_ctx {
            return Err(ApiError {
                code: Some("context_length_exceeded"),
                ..ApiError::param(
                    param,
                    format!(
                        "the prompt is {} tokens, {} more than the context of {n_ctx} tokens",
                        t.len(),
                        t.len() - n_ctx
                    ),
                )
            });
        }
    }
    let max_tokens = req.max_tokens.unwrap_or(match endpoint {
        Endpoint::Chat => n_ctx,
        // OpenAI's legacy completions default.
        Endpoint::Completion => 16,
    });
    let base_seed = req.seed.unwrap_or_else(|| random_u64(inner));
    let (tx, rx) = mpsc::unbounded_channel();
    let mut jobs = Vec::new();
    for (p, prompt) in tokenized.iter().enumerate() {
        for j in 0..req.n {
            let index = p * req.n + j;
            let mut params = req.params.clone();
            params.seed = base_seed.wrapping_add(index as u64);
            jobs.push(Job {
                index,
                prompt: prompt.clone(),
                params,
                max_tokens,
                stop: req.stop.clone(),
                logprobs: req.logprobs,
                events: tx.clone(),
            });
        }
    }
    drop(tx);
    let n_jobs = jobs.len();
    match inner.sched.try_submit(jobs) {
        Ok(()) => {}
        Err(SubmitError::Busy) => {
            return Err(ApiError::new(
                429,
                "rate_limit_error",
                Some("rate_limit_exceeded"),
                format!(
                    "all {} slots and {} queue places are taken; retry later",
                    inner.sched.n_slots, inner.opts.max_queue
                ),
            ))
        }
        Err(SubmitError::ShuttingDown) => {
            return Err(ApiError::new(
                503,
                "server_error",
                Some("shutting_down"),
                "the server is shutting down",
            ))
        }
    }
    let prompt_tokens: usize = tokenized.iter().map(Vec::len).sum();
    log.prompt_tokens.store(prompt_tokens, Ordering::Relaxed);
    let prefix = if endpoint == Endpoint::Chat {
        "chatcmpl"
    } else {
        "cmpl"
    };
    let meta = Meta {
        endpoint,
        id: format!(
            "{prefix}-{:016x}{:08x}",
            random_u64(inner),
            random_u64(inner) as u32
        ),
        created: unix_now(),
        model: inner.opts.alias.clone(),
        prompt_tokens,
        choices: n_jobs,
        logprobs: req.logprobs,
        return_token_ids: req.return_token_ids,
    };
    if req.stream {
        Ok(stream_response(
            st.clone(),
            log,
            meta,
            rx,
            req.include_usage,
        ))
    } else {
        collect_response(&st, &log, meta, rx).await
    }
}

#[derive(Default)]
struct Choice {
    text: String,
    ids: Vec<u32>,
    tokens: Vec<TokenInfo>,
    finish: Option<FinishReason>,
}

fn usage(prompt: usize, completion: usize, cached: usize) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

fn event_error(st: &AppState, message: String) -> ApiError {
    if st.0.sched.is_shutting_down() {
        ApiError::new(503, "server_error", Some("shutting_down"), message)
    } else {
        ApiError::new(500, "server_error", None, message)
    }
}

async fn collect_response(
    st: &AppState,
    log: &ReqLog,
    meta: Meta,
    mut rx: mpsc::UnboundedReceiver<Event>,
) -> Result<Response, ApiError> {
    let mut choices: Vec<Choice> = (0..meta.choices).map(|_| Choice::default()).collect();
    let (mut done, mut completion, mut cached) = (0, 0, 0);
    while done < meta.choices {
        match rx.recv().await {
            Some(Event::Token {
                index, text, token, ..
            }) => {
                if let Some(c) = choices.get_mut(index) {
                    c.text.push_str(&text);
                    c.tokens.extend(token);
                }
            }
            Some(Event::Done {
                index,
                finish,
                completion_tokens,
                cached_tokens,
                ids,
                ..
            }) => {
                if let Some(c) = choices.get_mut(index) {
                    c.finish = Some(finish);
                    c.ids = ids;
                }
                completion += completion_tokens;
                cached += cached_tokens;
                done += 1;
            }
            Some(Event::Error { message, .. }) => return Err(event_error(st, message)),
            None => return Err(event_error(st, "the inference thread stopped".into())),
        }
    }
    log.completion_tokens.store(completion, Ordering::Relaxed);
    let codec = &*st.0.codec;
    let body_choices: Vec<Value> = choices
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let finish = c.finish.map(FinishReason::as_str);
            let lp = meta
                .logprobs
                .map(|_| logprobs_json(meta.endpoint, codec, &c.tokens, 0));
            let mut v = match meta.endpoint {
                Endpoint::Chat => json!({
                    "index": i,
                    "message": {"role": "assistant", "content": c.text},
                    "logprobs": lp,
                    "finish_reason": finish,
                }),
                Endpoint::Completion => json!({
                    "index": i,
                    "text": c.text,
                    "logprobs": lp,
                    "finish_reason": finish,
                }),
            };
            if meta.return_token_ids {
                v["token_ids"] = json!(c.ids);
            }
            v
        })
        .collect();
    let object = match meta.endpoint {
        Endpoint::Chat => "chat.completion",
        Endpoint::Completion => "text_completion",
    };
    Ok(Json(json!({
        "id": meta.id,
        "object": object,
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": concat!("ferrite-", env!("CARGO_PKG_VERSION")),
        "choices": body_choices,
        "usage": usage(meta.prompt_tokens, completion, cached),
    }))
    .into_response())
}

fn token_text(codec: &dyn TextCodec, id: u32) -> (String, Vec<u8>) {
    let b = codec.token_bytes(id);
    (String::from_utf8_lossy(&b).into_owned(), b)
}

/// Log-probabilities in the endpoint's format; `offset` is where the first token's text starts
/// in the completion (completions' `text_offset`).
fn logprobs_json(
    endpoint: Endpoint,
    codec: &dyn TextCodec,
    tokens: &[TokenInfo],
    offset: usize,
) -> Value {
    match endpoint {
        Endpoint::Chat => {
            let content: Vec<Value> = tokens
                .iter()
                .map(|t| {
                    let (s, b) = token_text(codec, t.id);
                    let top: Vec<Value> = t
                        .top
                        .iter()
                        .map(|&(id, lp)| {
                            let (s, b) = token_text(codec, id);
                            json!({"token": s, "logprob": lp, "bytes": b})
                        })
                        .collect();
                    json!({"token": s, "logprob": t.logprob, "bytes": b, "top_logprobs": top})
                })
                .collect();
            json!({"content": content})
        }
        Endpoint::Completion => {
            let mut off = offset;
            let mut toks = Vec::new();
            let mut lps = Vec::new();
            let mut tops = Vec::new();
            let mut offs = Vec::new();
            for t in tokens {
                let (s, _) = token_text(codec, t.id);
                offs.push(off);
                off += s.len();
                toks.push(s);
                lps.push(t.logprob);
                let top: serde_json::Map<String, Value> = t
                    .top
                    .iter()
                    .map(|&(id, lp)| (token_text(codec, id).0, json!(lp)))
                    .collect();
                tops.push(Value::Object(top));
            }
            json!({"tokens": toks, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offs})
        }
    }
}

/// State of one SSE response.
struct Streamer {
    st: AppState,
    log: Arc<ReqLog>,
    meta: Meta,
    rx: mpsc::UnboundedReceiver<Event>,
    include_usage: bool,
    outbox: VecDeque<String>,
    done: usize,
    finished: bool,
    completion: usize,
    cached: usize,
    /// Completions' `text_offset` per choice.
    offsets: Vec<usize>,
}

impl Streamer {
    fn chunk(&self, choice: Value) -> String {
        let object = match self.meta.endpoint {
            Endpoint::Chat => "chat.completion.chunk",
            Endpoint::Completion => "text_completion",
        };
        let mut v = json!({
            "id": self.meta.id,
            "object": object,
            "created": self.meta.created,
            "model": self.meta.model,
            "system_fingerprint": concat!("ferrite-", env!("CARGO_PKG_VERSION")),
            "choices": [choice],
        });
        if self.include_usage {
            v["usage"] = Value::Null;
        }
        v.to_string()
    }

    fn on_event(&mut self, ev: Option<Event>) {
        match ev {
            Some(Event::Token {
                index,
                text,
                id,
                token,
            }) => {
                let lp = match (&token, self.meta.logprobs) {
                    (Some(t), Some(_)) => {
                        let off = self.offsets.get(index).copied().unwrap_or(0);
                        Some(logprobs_json(
                            self.meta.endpoint,
                            &*self.st.0.codec,
                            std::slice::from_ref(t),
                            off,
                        ))
                    }
                    _ => None,
                };
                let ids = id.filter(|_| self.meta.return_token_ids);
                if text.is_empty() && lp.is_none() && ids.is_none() {
                    return;
                }
                if let Some(o) = self.offsets.get_mut(index) {
                    *o += token
                        .as_ref()
                        .map_or(0, |t| token_text(&*self.st.0.codec, t.id).0.len());
                }
                let choice = match self.meta.endpoint {
                    Endpoint::Chat => {
                        json!({"index": index, "delta": {"content": text}, "logprobs": lp, "finish_reason": null})
                    }
                    Endpoint::Completion => {
                        json!({"index": index, "text": text, "logprobs": lp, "finish_reason": null})
                    }
                };
                let mut choice = choice;
                if let Some(id) = ids {
                    choice["token_ids"] = json!([id]);
                }
                let c = self.chunk(choice);
                self.outbox.push_back(c);
            }
            Some(Event::Done {
                index,
                finish,
                completion_tokens,
                cached_tokens,
                ..
            }) => {
                self.done += 1;
                self.completion += completion_tokens;
                self.cached += cached_tokens;
                let choice = match self.meta.endpoint {
                    Endpoint::Chat => {
                        json!({"index": index, "delta": {}, "logprobs": null, "finish_reason": finish.as_str()})
                    }
                    Endpoint::Completion => {
                        json!({"index": index, "text": "", "logprobs": null, "finish_reason": finish.as_str()})
                    }
                };
                let c = self.chunk(choice);
                self.outbox.push_back(c);
                if self.done == self.meta.choices {
                    self.close();
                }
            }
            Some(Event::Error { message, .. }) => {
                let e = event_error(&self.st, message);
                self.outbox.push_back(e.body().to_string());
                self.close();
            }
            None => {
                let e = event_error(&self.st, "the inference thread stopped".into());
                self.outbox.push_back(e.body().to_string());
                self.close();
            }
        }
    }

    fn close(&mut self) {
        if self.include_usage && self.done == self.meta.choices {
            let mut v = json!({
                "id": self.meta.id,
                "object": if self.meta.endpoint == Endpoint::Chat { "chat.completion.chunk" } else { "text_completion" },
                "created": self.meta.created,
                "model": self.meta.model,
                "choices": [],
            });
            v["usage"] = usage(self.meta.prompt_tokens, self.completion, self.cached);
            self.outbox.push_back(v.to_string());
        }
        self.outbox.push_back("[DONE]".into());
        self.finished = true;
        self.log
            .completion_tokens
            .store(self.completion, Ordering::Relaxed);
    }
}

fn stream_response(
    st: AppState,
    log: Arc<ReqLog>,
    meta: Meta,
    rx: mpsc::UnboundedReceiver<Event>,
    include_usage: bool,
) -> Response {
    let mut s = Streamer {
        offsets: vec![0; meta.choices],
        st,
        log,
        meta,
        rx,
        include_usage,
        outbox: VecDeque::new(),
        done: 0,
        finished: false,
        completion: 0,
        cached: 0,
    };
    if s.meta.endpoint == Endpoint::Chat {
        for i in 0..s.meta.choices {
            let c = s.chunk(json!({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}));
            s.outbox.push_back(c);
        }
    }
    let stream = futures_util::stream::unfold(s, |mut s| async move {
        loop {
            if let Some(d) = s.outbox.pop_front() {
                return Some((Ok::<_, Infallible>(SseEvent::default().data(d)), s));
            }
            if s.finished {
                return None;
            }
            let ev = s.rx.recv().await;
            s.on_event(ev);
        }
    });
    Sse::new(stream).into_response()
}

/// Serves until `shutdown` completes, then stops accepting, lets in-flight requests finish for
/// `opts.shutdown_grace` (cancelling what is left), and returns once the inference thread has
/// stopped. The backend's slot count is the number of parallel sequences.
pub async fn serve<F>(
    listener: TcpListener,
    opts: ServerOptions,
    backend: Box<dyn BatchBackend>,
    codec: Arc<dyn TextCodec>,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let grace = opts.shutdown_grace;
    let (handle, join) = scheduler::spawn(
        backend,
        codec.clone(),
        SchedulerConfig {
            max_queue: opts.max_queue,
            max_batch_tokens: opts.max_batch_tokens,
            shutdown_grace: grace,
        },
    )?;
    let st = AppState(Arc::new(Inner {
        sched: handle.clone(),
        codec,
        opts,
        metrics: Metrics::default(),
        created: unix_now(),
        ids: AtomicU64::new(unix_now() ^ u64::from(std::process::id()) << 32),
    }));
    let app = router(st.clone());
    drop(st);
    let (began_tx, began_rx) = tokio::sync::oneshot::channel::<()>();
    let h = handle.clone();
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            h.begin_shutdown();
            let _ = began_tx.send(());
        })
        .into_future();
    // Idle keep-alive connections close at once; streams end when the scheduler finishes or
    // cancels them. This bound covers clients that keep a connection open regardless.
    let deadline = async move {
        if began_rx.await.is_ok() {
            tokio::time::sleep(grace + Duration::from_secs(2)).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let result = tokio::select! {
        r = server => r,
        () = deadline => {
            eprintln!("ferrite-server: connections still open after the shutdown grace period; closing them");
            Ok(())
        }
    };
    handle.begin_shutdown();
    drop(handle);
    // A forward pass under way cannot be interrupted; do not let a slow one hold the exit.
    let joined = tokio::task::spawn_blocking(move || join.join());
    if tokio::time::timeout(Duration::from_secs(3), joined)
        .await
        .is_err()
    {
        eprintln!(
            "ferrite-server: the inference thread is still in a forward pass; exiting without it"
        );
    }
    result
}
