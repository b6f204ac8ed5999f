//! The HTTP API over the fake backend: response shapes, streaming, logprobs, stop strings,
//! seeds, prompt caching, auth, metrics, malformed requests.

mod common;
use common::*;
use ferrite_server::fake::{fake_logits, FAKE_BOS, FAKE_EOS};
use ferrite_server::ServerOptions;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};

const ALPHABET: &str = "abcdefghijklmnopqrstuvwxyz";

fn chat_prompt_len(content: &str) -> usize {
    // BOS + "<|user|>\n{content}\n<|assistant|>\n"
    1 + format!("<|user|>\n{content}\n<|assistant|>\n").len()
}

#[test]
fn chat_completion_shape_and_greedy_text() {
    let srv = start(2, 256, 0, ServerOptions::default());
    let r = post(
        srv.addr,
        "/v1/chat/completions",
        &json!({"model": "ferrite", "messages": [{"role": "user", "content": "hi"}], "temperature": 0, "extra_field": {"x": 1}}),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["model"], "ferrite");
    let c = &v["choices"][0];
    assert_eq!(c["message"]["role"], "assistant");
    assert_eq!(c["message"]["content"], ALPHABET);
    assert_eq!(c["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], chat_prompt_len("hi"));
    // 26 letters and the end-of-sequence token.
    assert_eq!(v["usage"]["completion_tokens"], 27);
    assert_eq!(v["usage"]["total_tokens"], chat_prompt_len("hi") + 27);

    // Text parts are joined; max_tokens cuts with finish_reason "length".
    let r = post(
        srv.addr,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "system", "content": [{"type": "text", "text": "h"}, {"type": "text", "text": "i"}]}], "temperature": 0, "max_tokens": 3}),
    );
    let v = r.json();
    assert_eq!(v["choices"][0]["message"]["content"], "abc");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 3);
}

#[test]
fn streamed_chat_concatenates_to_the_non_streamed_text() {
    let srv = start(2, 256, 0, ServerOptions::default());
    for (temp, seed) in [(0.0, 0), (1.0, 42)] {
        let body = json!({"messages": [{"role": "user", "content": "Q"}], "temperature": temp, "seed": seed, "max_tokens": 40});
        let whole = post(srv.addr, "/v1/chat/completions", &body).json();
        let mut sbody = body.clone();
        sbody["stream"] = json!(true);
        sbody["stream_options"] = json!({"include_usage": true});
        let r = post(srv.addr, "/v1/chat/completions", &sbody);
        assert!(r
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream"));
        let (texts, chunks) = stream_text(&r);
        assert_eq!(
            texts[0],
            whole["choices"][0]["message"]["content"].as_str().unwrap()
        );
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert!(chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
        let fin = &chunks[chunks.len() - 2];
        assert_eq!(
            fin["choices"][0]["finish_reason"],
            whole["choices"][0]["finish_reason"]
        );
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(
            last["usage"]["completion_tokens"],
            whole["usage"]["completion_tokens"]
        );
        assert_eq!(
            last["usage"]["prompt_tokens"],
            whole["usage"]["prompt_tokens"]
        );
        assert!(chunks[..chunks.len() - 1]
            .iter()
            .all(|c| c["usage"].is_null()));
    }
}

fn log_softmax(l: &[f32]) -> Vec<f64> {
    let m = l.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z = l.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln() + m;
    l.iter().map(|&x| x as f64 - z).collect()
}

#[test]
fn completion_with_logprobs_matches_the_models_distribution() {
    let srv = start(1, 256, 0, ServerOptions::default());
    let r = post(
        srv.addr,
        "/v1/completions",
        &json!({"prompt": "x!", "max_tokens": 5, "temperature": 0, "logprobs": 3}),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(v["object"], "text_completion");
    let c = &v["choices"][0];
    assert_eq!(c["text"], "abcde");
    assert_eq!(c["finish_reason"], "length");
    let lp = &c["logprobs"];
    assert_eq!(lp["tokens"], json!(["a", "b", "c", "d", "e"]));
    assert_eq!(lp["text_offset"], json!([0, 1, 2, 3, 4]));
    // Recompute from the toy model, independently of the server's code.
    let mut hist = vec![FAKE_BOS, u32::from(b'x'), u32::from(b'!')];
    for (i, ch) in "abcde".bytes().enumerate() {
        let ls = log_softmax(&fake_logits(&hist));
        let got = lp["token_logprobs"][i].as_f64().unwrap();
        assert!(
            (got - ls[ch as usize]).abs() < 1e-4,
            "token {i}: {got} vs {}",
            ls[ch as usize]
        );
        let top = lp["top_logprobs"][i].as_object().unwrap();
        let mut order: Vec<usize> = (0..ls.len()).collect();
        order.sort_by(|&a, &b| ls[b].total_cmp(&ls[a]));
        // The format keys alternatives by text: ids with the same text (BOS/EOS have none,
        // lone bytes >= 0x80 all read as U+FFFD) collide; check the unambiguous ones.
        let text = |id: usize| {
            if id < 256 {
                String::from_utf8_lossy(&[id as u8]).into_owned()
            } else {
                String::new()
            }
        };
        let keys: Vec<String> = order[..3].iter().map(|&id| text(id)).collect();
        let distinct: std::collections::HashSet<&String> = keys.iter().collect();
        assert_eq!(top.len(), distinct.len());
        for (&id, key) in order[..3].iter().zip(&keys) {
            if keys.iter().filter(|k| *k == key).count() == 1 {
                let got = top[key]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{key:?} missing in {top:?}"));
                assert!((got - ls[id]).abs() < 1e-4);
            }
        }
        hist.push(u32::from(ch));
    }

    // Chat logprobs in the chat format.
    let v = post(
        srv.addr,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "temperature": 0, "logprobs": true, "top_logprobs": 2}),
    )
    .json();
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 2);
    assert_eq!(content[0]["token"], "a");
    assert_eq!(content[0]["bytes"], json!([97]));
    assert_eq!(content[0]["top_logprobs"].as_array().unwrap().len(), 2);
    assert_eq!(content[0]["top_logprobs"][0]["token"], "a");
    assert!(content[0]["logprob"].as_f64().unwrap() < 0.0);
}

#[test]
fn stop_strings_seeds_n_and_token_prompts() {
    let srv = start(4, 256, 0, ServerOptions::default());
    let v = post(
        srv.addr,
        "/v1/completions",
        &json!({"prompt": "x!", "max_tokens": 20, "temperature": 0, "stop": ["de", "zz"]}),
    )
    .json();
    assert_eq!(v["choices"][0]["text"], "abc");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // Streaming holds back the possible stop prefix and never sends the stop string.
    let r = post(
        srv.addr,
        "/v1/completions",
        &json!({"prompt": "x!", "max_tokens": 20, "temperature": 0, "stop": "de", "stream": true}),
    );
    let (texts, _) = stream_text(&r);
    assert_eq!(texts[0], "abc");

    // Prompts as token ids and as a list: one choice per prompt.
    let v = post(
        srv.addr,
        "/v1/completions",
        &json!({"prompt": [[FAKE_BOS, 120, 33], "!"], "max_tokens": 3, "temperature": 0}),
    )
    .json();
    assert_eq!(v["choices"][0]["text"], "abc");
    assert_eq!(v["choices"][1]["text"], "abc");
    assert_eq!(v["choices"][1]["index"], 1);
    assert_eq!(v["usage"]["prompt_tokens"], 5);

    // n choices with a seed: reproducible, and different from each other.
    let body = json!({"prompt": "Hello", "max_tokens": 12, "temperature": 1.5, "top_k": 0, "top_p": 1, "min_p": 0, "seed": 9, "n": 3});
    let a = post(srv.addr, "/v1/completions", &body).json();
    let b = post(srv.addr, "/v1/completions", &body).json();
    assert_eq!(a["choices"], b["choices"]);
    let texts: Vec<&str> = (0..3)
        .map(|i| a["choices"][i]["text"].as_str().unwrap())
        .collect();
    assert!(texts[0] != texts[1] || texts[1] != texts[2], "{texts:?}");
    assert_eq!(a["usage"]["completion_tokens"], 36);

    // Logit bias steers greedy decoding: forbid "a", force the end-of-sequence token.
    let v = post(
        srv.addr,
        "/v1/completions",
        &json!({"prompt": "x!", "max_tokens": 5, "temperature": 0, "logit_bias": {FAKE_EOS.to_string(): 100}}),
    )
    .json();
    assert_eq!(v["choices"][0]["text"], "");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

#[test]
fn a_repeated_prompt_reuses_the_cached_prefix() {
    let srv = start(1, 256, 0, ServerOptions::default());
    let body =
        json!({"prompt": "Tell me the alphabet!", "max_tokens": 8, "temperature": 0.9, "seed": 3});
    let a = post(srv.addr, "/v1/completions", &body).json();
    let before = srv.stats.tokens.load(Ordering::Relaxed);
    let b = post(srv.addr, "/v1/completions", &body).json();
    let fed = srv.stats.tokens.load(Ordering::Relaxed) - before;
    assert_eq!(
        a["choices"], b["choices"],
        "a cache hit must not change the output"
    );
    // The whole prompt is cached with the logits after it: only the generated tokens are
    // fed back.
    let plen = 1 + "Tell me the alphabet!".len();
    assert_eq!(b["usage"]["prompt_tokens_details"]["cached_tokens"], plen);
    assert!(fed < 8, "fed {fed} tokens");
    // A different prompt sharing a prefix reuses the shared part only.
    let c = post(
        srv.addr,
        "/v1/completions",
        &json!({"prompt": "Tell me a story!", "max_tokens": 2, "temperature": 0}),
    )
    .json();
    assert_eq!(
        c["usage"]["prompt_tokens_details"]["cached_tokens"],
        1 + "Tell me ".len()
    );
    assert_eq!(c["choices"][0]["text"], "ab");
}

#[test]
fn only_prompt_tokens_are_reused_from_the_cache() {
    // A slot's decoded tokens were computed another way than prompt tokens (the engine's
    // row kernels instead of its prompt GEMM): a prompt that continues an earlier prompt
    // and its reply reuses the earlier prompt only and feeds the reply again, as prompt.
    let srv = start(1, 256, 0, ServerOptions::default());
    let fed = |k: &AtomicUsize| k.load(Ordering::Relaxed);
    let first = json!({"prompt": "x!", "max_tokens": 5, "temperature": 0});
    let a = post(srv.addr, "/v1/completions", &first).json();
    assert_eq!(a["choices"][0]["text"], "abcde");
    // BOS x ! as prompt, then a b c d fed back one by one (e ends the reply unfed).
    assert_eq!(fed(&srv.stats.prompt_tokens), 3);
    assert_eq!(fed(&srv.stats.tokens), 3 + 4);
    let next = json!({"prompt": "x!abcde", "max_tokens": 2, "temperature": 0});
    let b = post(srv.addr, "/v1/completions", &next).json();
    assert_eq!(b["choices"][0]["text"], "fg");
    assert_eq!(b["usage"]["prompt_tokens_details"]["cached_tokens"], 3);
    assert_eq!(fed(&srv.stats.prompt_tokens), 3 + 5);
    // A strict prefix of the cached prompt has no kept logits: its last token is fed again.
    let prefix = json!({"prompt": "x!ab", "max_tokens": 2, "temperature": 0});
    let c = post(srv.addr, "/v1/completions", &prefix).json();
    assert_eq!(c["choices"][0]["text"], "cd");
    assert_eq!(c["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
    assert_eq!(fed(&srv.stats.prompt_tokens), 3 + 5 + 1);
}

#[test]
fn models_health_metrics_and_unknown_routes() {
    let opts = ServerOptions {
        alias: "smol".into(),
        ..Default::default()
    };
    let srv = start(3, 128, 0, opts);
    let v = get(srv.addr, "/v1/models").json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "smol");
    assert_eq!(v["data"][0]["object"], "model");
    let h = get(srv.addr, "/health");
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["status"], "ok");
    assert_eq!(h.json()["slots_idle"], 3);
    let r = post(
        srv.addr,
        "/v1/chat/completions",
        &json!({"model": "smol", "messages": [{"role": "user", "content": "x"}], "max_tokens": 4}),
    );
    assert_eq!(r.status, 200);
    let m = get(srv.addr, "/metrics");
    assert_eq!(m.status, 200);
    let text = String::from_utf8(m.body).unwrap();
    assert!(
        text.contains("ferrite_requests_total{path=\"/v1/chat/completions\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(text.contains("ferrite_completion_tokens_total 4"), "{text}");
    assert!(text.contains("ferrite_queue_depth 0"));
    assert!(text.contains("ferrite_slots_total 3"));
    assert!(text.contains("ferrite_request_duration_seconds_count"));
    let r = get(srv.addr, "/v2/nothing");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "not_found");
}

#[test]
fn api_key_is_required_on_v1_when_set() {
    let opts = ServerOptions {
        api_key: Some("sekrit".into()),
        ..Default::default()
    };
    let srv = start(1, 128, 0, opts);
    let body = json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 1}).to_string();
    for headers in [
        vec![],
        vec![("Authorization", "Bearer nope")],
        vec![("Authorization", "sekrit")],
    ] {
        let r = request(
            srv.addr,
            "POST",
            "/v1/chat/completions",
            &headers,
            body.as_bytes(),
        );
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    }
    assert_eq!(get(srv.addr, "/v1/models").status, 401);
    let r = request(
        srv.addr,
        "POST",
        "/v1/chat/completions",
        &[("Authorization", "Bearer sekrit")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200);
    let r = request(
        srv.addr,
        "GET",
        "/v1/models",
        &[("Authorization", "Bearer sekrit")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(get(srv.addr, "/health").status, 200);
}

#[test]
fn malformed_requests_get_4xx_json_errors_and_the_server_survives() {
    let srv = start(2, 256, 0, ServerOptions::default());
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let chat = |extra: Value| {
        let mut b = json!({"messages": msgs});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b.to_string().into_bytes()
    };
    let cmpl = |v: Value| v.to_string().into_bytes();
    let c = "/v1/chat/completions";
    let p = "/v1/completions";
    // (path, body, status, param)
    let cases: Vec<(&str, Vec<u8>, u16, Option<&str>)> = vec![
        (c, b"{".to_vec(), 400, None),
        (c, b"[]".to_vec(), 400, None),
        (c, b"\"hi\"".to_vec(), 400, None),
        (c, vec![0xff, 0xfe, 0x00], 400, None),
        (c, b"".to_vec(), 400, None),
        (c, b"{}".to_vec(), 400, Some("messages")),
        (c, cmpl(json!({"messages": []})), 400, Some("messages")),
        (c, cmpl(json!({"messages": "hi"})), 400, Some("messages")),
        (c, cmpl(json!({"messages": [1]})), 400, Some("messages[0]")),
        (
            c,
            cmpl(json!({"messages": [{"content": "hi"}]})),
            400,
            Some("messages[0].role"),
        ),
        (
            c,
            cmpl(json!({"messages": [{"role": "wizard", "content": "hi"}]})),
            400,
            Some("messages[0].role"),
        ),
        (
            c,
            cmpl(json!({"messages": [{"role": 5, "content": "hi"}]})),
            400,
            Some("messages[0].role"),
        ),
        (
            c,
            cmpl(json!({"messages": [{"role": "user", "content": 5}]})),
            400,
            Some("messages[0].content"),
        ),
        (
            c,
            cmpl(json!({"messages": [{"role": "user"}]})),
            400,
            Some("messages[0].content"),
        ),
        (
            c,
            cmpl(
                json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
            ),
            400,
            Some("messages[0].content[0]"),
        ),
        (
            c,
            cmpl(json!({"messages": [{"role": "user", "content": [{"type": "text", "text": 7}]}]})),
            400,
            Some("messages[0].content[0].text"),
        ),
        (
            c,
            chat(json!({"temperature": "hot"})),
            400,
            Some("temperature"),
        ),
        (
            c,
            chat(json!({"temperature": -1})),
            400,
            Some("temperature"),
        ),
        (c, chat(json!({"top_p": 1.5})), 400, Some("top_p")),
        (c, chat(json!({"top_k": -3})), 400, Some("top_k")),
        (c, chat(json!({"top_k": 1.5})), 400, Some("top_k")),
        (c, chat(json!({"min_p": "a"})), 400, Some("min_p")),
        (c, chat(json!({"max_tokens": 0})), 400, Some("max_tokens")),
        (c, chat(json!({"max_tokens": -5})), 400, Some("max_tokens")),
        (
            c,
            chat(json!({"max_tokens": 1_000_000_000_000u64})),
            400,
            Some("max_tokens"),
        ),
        (
            c,
            chat(json!({"max_tokens": "10"})),
            400,
            Some("max_tokens"),
        ),
        (
            c,
            chat(json!({"max_completion_tokens": 0})),
            400,
            Some("max_completion_tokens"),
        ),
        (c, chat(json!({"n": 0})), 400, Some("n")),
        (c, chat(json!({"n": 1000})), 400, Some("n")),
        (c, chat(json!({"stop": 5})), 400, Some("stop")),
        (c, chat(json!({"stop": [1]})), 400, Some("stop")),
        (c, chat(json!({"stop": vec!["x"; 20]})), 400, Some("stop")),
        (c, chat(json!({"seed": "x"})), 400, Some("seed")),
        (c, chat(json!({"seed": 1.5})), 400, Some("seed")),
        (c, chat(json!({"logprobs": "yes"})), 400, Some("logprobs")),
        (
            c,
            chat(json!({"logprobs": true, "top_logprobs": 50})),
            400,
            Some("top_logprobs"),
        ),
        (
            c,
            chat(json!({"top_logprobs": 2})),
            400,
            Some("top_logprobs"),
        ),
        (c, chat(json!({"logit_bias": []})), 400, Some("logit_bias")),
        (
            c,
            chat(json!({"logit_bias": {"abc": 1}})),
            400,
            Some("logit_bias"),
        ),
        (
            c,
            chat(json!({"logit_bias": {"999999": 1}})),
            400,
            Some("logit_bias"),
        ),
        (
            c,
            chat(json!({"logit_bias": {"5": 1000}})),
            400,
            Some("logit_bias"),
        ),
        (c, chat(json!({"stream": "yes"})), 400, Some("stream")),
        (
            c,
            chat(json!({"stream": true, "stream_options": "x"})),
            400,
            Some("stream_options"),
        ),
        (
            c,
            chat(json!({"stream_options": {"include_usage": 1}})),
            400,
            Some("stream_options.include_usage"),
        ),
        (
            c,
            chat(json!({"presence_penalty": 3})),
            400,
            Some("presence_penalty"),
        ),
        (
            c,
            chat(json!({"frequency_penalty": "x"})),
            400,
            Some("frequency_penalty"),
        ),
        (
            c,
            chat(json!({"repeat_penalty": 0})),
            400,
            Some("repeat_penalty"),
        ),
        (c, chat(json!({"model": 5})), 400, Some("model")),
        (c, chat(json!({"model": "gpt-9"})), 404, Some("model")),
        (p, b"{}".to_vec(), 400, Some("prompt")),
        (p, cmpl(json!({"prompt": 5})), 400, Some("prompt")),
        (p, cmpl(json!({"prompt": []})), 400, Some("prompt")),
        (p, cmpl(json!({"prompt": [99999]})), 400, Some("prompt")),
        (p, cmpl(json!({"prompt": [-1]})), 400, Some("prompt")),
        (p, cmpl(json!({"prompt": [{"a": 1}]})), 400, Some("prompt")),
        (
            p,
            cmpl(json!({"prompt": "x", "logprobs": true})),
            400,
            Some("logprobs"),
        ),
        (
            p,
            cmpl(json!({"prompt": "x", "logprobs": 100})),
            400,
            Some("logprobs"),
        ),
        (
            p,
            cmpl(json!({"prompt": "x", "max_tokens": 5000})),
            400,
            Some("max_tokens"),
        ),
        (
            p,
            cmpl(json!({"prompt": "y".repeat(300)})),
            400,
            Some("prompt"),
        ),
        (
            p,
            cmpl(json!({"prompt": vec!["a"; 10], "n": 2})),
            400,
            Some("n"),
        ),
    ];
    assert!(cases.len() >= 25);
    for (i, (path, body, status, param)) in cases.iter().enumerate() {
        let r = request(
            srv.addr,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body,
        );
        let what = format!("case {i} {path} {}", String::from_utf8_lossy(body));
        assert_eq!(
            r.status,
            *status,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let v = r.json();
        let e = &v["error"];
        assert!(
            e["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {v}"
        );
        assert!(e["type"].is_string(), "{what}: {v}");
        assert!(
            e.get("param").is_some() && e.get("code").is_some(),
            "{what}: {v}"
        );
        assert_eq!(e["param"].as_str(), *param, "{what}: {v}");
    }
    // The prompt-too-long error says by how much: 301 tokens in a context of 256.
    let r = post(srv.addr, p, &json!({"prompt": "y".repeat(300)}));
    let e = r.json()["error"].clone();
    assert_eq!(e["code"], "context_length_exceeded");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("301 tokens, 45 more than the context of 256"),
        "{e}"
    );

    // Transport-level errors: over the body limit, wrong method, unknown path.
    let big = vec![b' '; (8 << 20) + 1];
    let r = request(
        srv.addr,
        "POST",
        c,
        &[("Content-Type", "application/json")],
        &big,
    );
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "request_too_large");
    let r = get(srv.addr, c);
    assert_eq!(r.status, 405);
    assert!(r.json()["error"]["message"].is_string());
    let r = post(srv.addr, "/v1/nope", &json!({}));
    assert_eq!(r.status, 404);
    assert!(r.json()["error"]["message"].is_string());

    // Still healthy, and still generating correctly.
    assert_eq!(get(srv.addr, "/health").status, 200);
    let v = post(
        srv.addr,
        c,
        &json!({"messages": msgs, "temperature": 0, "max_tokens": 3}),
    )
    .json();
    assert_eq!(v["choices"][0]["message"]["content"], "abc");
}
