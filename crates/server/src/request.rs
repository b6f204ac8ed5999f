//! OpenAI request bodies → typed requests, and errors in OpenAI's shape.
//!
//! Every field the server knows is type- and range-checked and named in the error
//! (`param`); fields it does not know are ignored, as OpenAI-compatible servers do.

use crate::backend::ChatMessage;
use ferrite_engine::sampling::SamplerConfig;
use serde_json::{json, Map, Value};

/// An error response: `{"error": {"message", "type", "param", "code"}}` with an HTTP status.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn new(
        status: u16,
        kind: &'static str,
        code: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code,
        }
    }

    /// 400 about one field.
    pub fn param(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.into()),
            code: None,
        }
    }

    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completion,
}

/// One prompt to generate from.
#[derive(Clone, Debug, PartialEq)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
    Chat(Vec<ChatMessage>),
}

/// A validated generation request.
#[derive(Clone, Debug, PartialEq)]
pub struct GenRequest {
    pub endpoint: Endpoint,
    pub model: Option<String>,
    /// Chat: exactly one; completions: one per prompt in the `prompt` array.
    pub prompts: Vec<Prompt>,
    pub max_tokens: Option<usize>,
    /// `seed` is filled in by the caller when the request has none.
    pub params: SamplerConfig,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    /// `Some(k)`: per-token log-probabilities with `k` alternatives.
    pub logprobs: Option<usize>,
    pub n: usize,
    pub stream: bool,
    pub include_usage: bool,
    /// Extension (as in vLLM): report the generated token ids (`token_ids` per choice).
    pub return_token_ids: bool,
}

/// Bounds that depend on the model and server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub n_vocab: usize,
    pub n_ctx: usize,
    /// Most sequences (prompts × n) one request may ask for.
    pub max_sequences: usize,
}

pub const MAX_TOP_LOGPROBS: i64 = 20;
pub const MAX_STOP: usize = 16;

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong(param: &str, want: &str, got: &Value) -> ApiError {
    ApiError::param(
        param,
        format!("`{param}` must be {want}, got {}", type_name(got)),
    )
}

/// The field, treating `null` as absent.
fn get<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.get(key).filter(|v| !v.is_null())
}

fn number(m: &Map<String, Value>, key: &str, lo: f64, hi: f64) -> Result<Option<f32>, ApiError> {
    let Some(v) = get(m, key) else {
        return Ok(None);
    };
    let x = v.as_f64().ok_or_else(|| wrong(key, "a number", v))?;
    if !(lo..=hi).contains(&x) {
        return Err(ApiError::param(
            key,
            format!("`{key}` must be between {lo} and {hi}, got {x}"),
        ));
    }
    Ok(Some(x as f32))
}

fn integer(m: &Map<String, Value>, key: &str, lo: i64, hi: i64) -> Result<Option<i64>, ApiError> {
    let Some(v) = get(m, key) else {
        return Ok(None);
    };
    let x = match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_u64().map(|_| i64::MAX))
            .ok_or_else(|| wrong(key, "an integer", v))?,
        _ => return Err(wrong(key, "an integer", v)),
    };
    if x < lo || x > hi {
        return Err(ApiError::param(
            key,
            format!("`{key}` must be between {lo} and {hi}, got {v}"),
        ));
    }
    Ok(Some(x))
}

fn boolean(m: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match get(m, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(wrong(key, "a boolean", v)),
    }
}

/// Parses and validates a request body.
pub fn parse(endpoint: Endpoint, body: &[u8], limits: Limits) -> Result<GenRequest, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            400,
            "invalid_request_error",
            Some("invalid_json"),
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(m) = v else {
        return Err(ApiError::new(
            400,
            "invalid_request_error",
            Some("invalid_json"),
            format!("the body must be a JSON object, got {}", type_name(&v)),
        ));
    };
    let model = match get(&m, "model") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) => return Err(wrong("model", "a string", v)),
    };
    let prompts = match endpoint {
        Endpoint::Chat => vec![Prompt::Chat(messages(&m)?)],
        Endpoint::Completion => prompt(&m, limits.n_vocab)?,
    };

    let mut max_tokens = None;
    for key in ["max_tokens", "max_completion_tokens"] {
        if let Some(v) = get(&m, key) {
            let x = v.as_i64().ok_or_else(|| wrong(key, "an integer", v))?;
            if x <= 0 {
                return Err(ApiError::param(
                    key,
                    format!("`{key}` must be at least 1, got {x}"),
                ));
            }
            if x as u64 > limits.n_ctx as u64 {
                return Err(ApiError::param(
                    key,
                    format!(
                        "`{key}` is {x} but the context holds only {} tokens",
                        limits.n_ctx
                    ),
                ));
            }
            max_tokens = Some(x as usize);
        }
    }

    let mut p = SamplerConfig::default();
    if let Some(x) = number(&m, "temperature", 0.0, 10.0)? {
        p.temperature = x;
    }
    if let Some(x) = number(&m, "top_p", 0.0, 1.0)? {
        p.top_p = x;
    }
    if let Some(x) = integer(&m, "top_k", 0, i64::MAX)? {
        p.top_k = usize::try_from(x).unwrap_or(usize::MAX).min(limits.n_vocab);
    }
    if let Some(x) = number(&m, "min_p", 0.0, 1.0)? {
        p.min_p = x;
    }
    if let Some(x) = number(&m, "presence_penalty", -2.0, 2.0)? {
        p.presence_penalty = x;
    }
    if let Some(x) = number(&m, "frequency_penalty", -2.0, 2.0)? {
        p.frequency_penalty = x;
    }
    if let Some(x) = number(&m, "repeat_penalty", 0.0, 10.0)? {
        if x <= 0.0 {
            return Err(ApiError::param(
                "repeat_penalty",
                "`repeat_penalty` must be greater than 0",
            ));
        }
        p.repeat_penalty = x;
    }
    let seed = match get(&m, "seed") {
        None => None,
        Some(v @ Value::Number(n)) => Some(
            n.as_u64()
                .or_else(|| n.as_i64().map(|x| x as u64))
                .ok_or_else(|| wrong("seed", "an integer", v))?,
        ),
        Some(v) => return Err(wrong("seed", "an integer", v)),
    };
    if let Some(v) = get(&m, "logit_bias") {
        let Value::Object(b) = v else {
            return Err(wrong(
                "logit_bias",
                "an object mapping token ids to numbers",
                v,
            ));
        };
        for (k, x) in b {
            let id: u32 = k
                .trim()
                .parse()
                .ok()
                .filter(|&id: &u32| (id as usize) < limits.n_vocab)
                .ok_or_else(|| {
                    ApiError::param(
                        "logit_bias",
                        format!(
                            "`logit_bias` key {k:?} is not a token id below {}",
                            limits.n_vocab
                        ),
                    )
                })?;
            let bias = x
                .as_f64()
                .filter(|b| (-100.0..=100.0).contains(b))
                .ok_or_else(|| {
                    ApiError::param(
                        "logit_bias",
                        format!("`logit_bias[{k}]` must be a number between -100 and 100"),
                    )
                })?;
            p.logit_bias.push((id, bias as f32));
        }
    }

    let stop = match get(&m, "stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => {
            if a.len() > MAX_STOP {
                return Err(ApiError::param(
                    "stop",
                    format!(
                        "`stop` has {} entries, at most {MAX_STOP} are allowed",
                        a.len()
                    ),
                ));
            }
            a.iter()
                .map(|s| {
                    s.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| wrong("stop", "a string or an array of strings", s))
                })
                .collect::<Result<_, _>>()?
        }
        Some(v) => return Err(wrong("stop", "a string or an array of strings", v)),
    };

    let logprobs = match endpoint {
        Endpoint::Chat => {
            let on = boolean(&m, "logprobs")?.unwrap_or(false);
            let top = integer(&m, "top_logprobs", 0, MAX_TOP_LOGPROBS)?;
            if top.is_some() && !on {
                return Err(ApiError::param(
                    "top_logprobs",
                    "`top_logprobs` needs `logprobs` set to true",
                ));
            }
            on.then(|| top.unwrap_or(0) as usize)
        }
        Endpoint::Completion => integer(&m, "logprobs", 0, MAX_TOP_LOGPROBS)?.map(|k| k as usize),
    };

    let n = integer(&m, "n", 1, limits.max_sequences as i64)?.unwrap_or(1) as usize;
    if n * prompts.len() > limits.max_sequences {
        return Err(ApiError::param(
            "n",
            format!(
                "{} prompts × n = {} sequences, at most {} are allowed",
                prompts.len(),
                n * prompts.len(),
                limits.max_sequences
            ),
        ));
    }
    let stream = boolean(&m, "stream")?.unwrap_or(false);
    let include_usage = match get(&m, "stream_options") {
        None => false,
        Some(Value::Object(o)) => boolean(o, "include_usage")
            .map_err(|e| ApiError {
                param: Some("stream_options.include_usage".into()),
                ..e
            })?
            .unwrap_or(false),
        Some(v) => return Err(wrong("stream_options", "an object", v)),
    };

    let return_token_ids = boolean(&m, "return_token_ids")?.unwrap_or(false);

    Ok(GenRequest {
        endpoint,
        model,
        prompts,
        max_tokens,
        params: p,
        seed,
        stop,
        logprobs,
        n,
        stream,
        include_usage,
        return_token_ids,
    })
}

fn messages(m: &Map<String, Value>) -> Result<Vec<ChatMessage>, ApiError> {
    let v =
        get(m, "messages").ok_or_else(|| ApiError::param("messages", "`messages` is required"))?;
    let Value::Array(a) = v else {
        return Err(wrong("messages", "an array", v));
    };
    if a.is_empty() {
        return Err(ApiError::param("messages", "`messages` must not be empty"));
    }
    let mut out = Vec::with_capacity(a.len());
    for (i, msg) in a.iter().enumerate() {
        let at = format!("messages[{i}]");
        let Value::Object(o) = msg else {
            return Err(wrong(&at, "an object", msg));
        };
        let role = match o.get("role") {
            Some(Value::String(r)) => r.as_str(),
            Some(v) => return Err(wrong(&format!("{at}.role"), "a string", v)),
            None => {
                return Err(ApiError::param(
                    format!("{at}.role"),
                    format!("`{at}.role` is required"),
                ))
            }
        };
        let role = match role {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            other => {
                return Err(ApiError::param(
                    format!("{at}.role"),
                    format!(
                    "`{at}.role` {other:?} is not supported (system, developer, user, assistant)"
                ),
                ))
            }
        };
        let content = match o.get("content") {
            None | Some(Value::Null) if role == "assistant" => String::new(),
            None | Some(Value::Null) => {
                return Err(ApiError::param(
                    format!("{at}.content"),
                    format!("`{at}.content` is required"),
                ))
            }
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => {
                let mut s = String::new();
                for (j, part) in parts.iter().enumerate() {
                    let pat = format!("{at}.content[{j}]");
                    let ty = part.get("type").and_then(Value::as_str);
                    match (ty, part.get("text")) {
                        (Some("text"), Some(Value::String(t))) => s.push_str(t),
                        (Some("text"), other) => {
                            return Err(wrong(
                                &format!("{pat}.text"),
                                "a string",
                                other.unwrap_or(&Value::Null),
                            ))
                        }
                        (Some(t), _) => {
                            return Err(ApiError::param(
                                pat,
                                format!("content part type {t:?} is not supported (only \"text\")"),
                            ))
                        }
                        (None, _) => {
                            return Err(ApiError::param(
                                pat,
                                "a content part needs a string `type`",
                            ));
                        }
                    }
                }
                s
            }
            Some(v) => {
                return Err(wrong(
                    &format!("{at}.content"),
                    "a string or an array of text parts",
                    v,
                ))
            }
        };
        out.push(ChatMessage {
            role: role.to_string(),
            content,
        });
    }
    Ok(out)
}

fn prompt(m: &Map<String, Value>, n_vocab: usize) -> Result<Vec<Prompt>, ApiError> {
    let want = "a string, an array of strings, an array of token ids or an array of such arrays";
    let v = get(m, "prompt").ok_or_else(|| ApiError::param("prompt", "`prompt` is required"))?;
    let tokens = |a: &[Value]| -> Result<Vec<u32>, ApiError> {
        a.iter()
            .map(|t| {
                t.as_u64()
                    .filter(|&id| id < n_vocab as u64)
                    .map(|id| id as u32)
                    .ok_or_else(|| {
                        ApiError::param(
                            "prompt",
                            format!("`prompt` token {t} is not a token id below {n_vocab}"),
                        )
                    })
            })
            .collect()
    };
    match v {
        Value::String(s) => Ok(vec![Prompt::Text(s.clone())]),
        Value::Array(a) if a.is_empty() => {
            Err(ApiError::param("prompt", "`prompt` must not be empty"))
        }
        Value::Array(a) if a.iter().all(Value::is_number) => Ok(vec![Prompt::Tokens(tokens(a)?)]),
        Value::Array(a) => a
            .iter()
            .map(|p| match p {
                Value::String(s) => Ok(Prompt::Text(s.clone())),
                Value::Array(t) => Ok(Prompt::Tokens(tokens(t)?)),
                other => Err(wrong("prompt", want, other)),
            })
            .collect(),
        other => Err(wrong("prompt", want, other)),
    }
}
