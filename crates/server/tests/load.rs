//! Continuous batching, queueing and faults over the fake backend: concurrent streams give the
//! same tokens as sequential runs, a burst past the queue gets 429s, clients that hang up free
//! their slots, shutdown ends in-flight streams in bounded time.

mod common;
use common::*;
use ferrite_engine::sampling::SamplerConfig;
use ferrite_server::fake::{FakeBackend, FakeCodec, FAKE_EOS};
use ferrite_server::scheduler::{self, Event, Job, SchedulerConfig};
use ferrite_server::ServerOptions;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn body(i: usize, max_tokens: usize) -> Value {
    json!({
        "prompt": format!("request {i}: "),
        "max_tokens": max_tokens,
        "temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0,
        "seed": i,
        "stream": true,
        "return_token_ids": true,
    })
}

fn stream_ids(r: &Resp) -> Vec<u64> {
    let (_, chunks) = stream_text(r);
    let fin: Vec<&Value> = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(fin.len(), 1, "one finish chunk");
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

#[test]
fn concurrent_streams_match_one_at_a_time_runs() {
    let opts = ServerOptions {
        max_queue: 32,
        ..Default::default()
    };
    let srv = start(4, 512, 2, opts);
    let addr = srv.addr;
    let threads: Vec<_> = (0..32)
        .map(|i| {
            std::thread::spawn(move || stream_ids(&post(addr, "/v1/completions", &body(i, 24))))
        })
        .collect();
    let batched: Vec<Vec<u64>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(
        srv.stats.max_items.load(Ordering::Relaxed) >= 2,
        "requests were never batched"
    );
    drop(srv);
    // Sequential reference on a fresh one-slot server.
    let srv = start(1, 512, 0, ServerOptions::default());
    for (i, ids) in batched.iter().enumerate() {
        let alone = stream_ids(&post(srv.addr, "/v1/completions", &body(i, 24)));
        assert!(!alone.is_empty());
        assert_eq!(ids, &alone, "request {i}");
    }
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Opens a streaming request and reads until `n` SSE events arrived; returns the socket.
fn open_stream(addr: SocketAddr, body: &Value, n: usize) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let b = body.to_string();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
        b.len()
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while seen.windows(6).filter(|w| w == b"data: ").count() < n {
        let k = s.read(&mut buf).unwrap();
        assert!(
            k > 0,
            "stream ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..k]);
    }
    s
}

fn long_chat(max_tokens: usize) -> Value {
    // The end-of-sequence token is banned: the reply runs to max_tokens.
    json!({"messages": [{"role": "user", "content": "go"}], "stop": [], "max_tokens": max_tokens, "temperature": 0, "stream": true,
           "logit_bias": {FAKE_EOS.to_string(): -100}, "unknown_field_ignored": true})
}

#[test]
fn a_disconnect_frees_the_slot_within_a_step() {
    // Straight at the scheduler: after the receiver is dropped, at most one more forward runs
    // for the slot (one may already be under way) before it is free.
    let mut backend = FakeBackend::new(1, 4096);
    backend.step_delay = Duration::from_millis(2);
    let stats = backend.stats.clone();
    let cfg = SchedulerConfig {
        max_queue: 0,
        max_batch_tokens: 64,
        shutdown_grace: Duration::from_secs(1),
    };
    let (h, join) = scheduler::spawn(Box::new(backend), Arc::new(FakeCodec), cfg).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let job = Job {
        index: 0,
        prompt: vec![u32::from(b'A')],
        params: SamplerConfig {
            temperature: 0.0,
            ..Default::default()
        },
        max_tokens: 4000,
        stop: vec![],
        logprobs: None,
        events: tx,
    };
    h.try_submit(vec![job]).unwrap();
    for _ in 0..5 {
        assert!(matches!(rx.blocking_recv(), Some(Event::Token { .. })));
    }
    let f0 = stats.forwards.load(Ordering::SeqCst);
    drop(rx);
    wait_until("the slot to be freed", Duration::from_secs(5), || {
        h.load() == 0
    });
    let extra = stats.forwards.load(Ordering::SeqCst) - f0;
    assert!(extra <= 2, "{extra} forwards ran after the disconnect");
    assert_eq!(h.stats.cancelled.load(Ordering::SeqCst), 1);
    h.begin_shutdown();
    drop(h);
    join.join().unwrap();
}

#[test]
fn clients_hanging_up_mid_stream_leave_no_slot_stuck() {
    let opts = ServerOptions {
        max_queue: 32,
        ..Default::default()
    };
    let srv = start(4, 4096, 2, opts);
    let addr = srv.addr;
    let threads: Vec<_> = (0..32)
        .map(|i| {
            std::thread::spawn(move || {
                if i % 3 == 0 && i < 30 {
                    // 10 of 32: read a few chunks of a long reply, then hang up.
                    let s = open_stream(addr, &long_chat(3000), 3);
                    drop(s);
                    None
                } else {
                    Some(stream_ids(&post(addr, "/v1/completions", &body(i, 16))))
                }
            })
        })
        .collect();
    let done: Vec<_> = threads
        .into_iter()
        .filter_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(done.len(), 22);
    wait_until("all slots idle", Duration::from_secs(10), || {
        let h = get(addr, "/health").json();
        h["slots_idle"] == 4 && h["queue_depth"] == 0
    });
    let m = String::from_utf8(get(addr, "/metrics").body).unwrap();
    assert!(m.contains("ferrite_cancelled_total 10"), "{m}");
    // And the server still serves.
    let v = post(
        addr,
        "/v1/completions",
        &json!({"prompt": "x!", "max_tokens": 3, "temperature": 0}),
    )
    .json();
    assert_eq!(v["choices"][0]["text"], "abc");
}

#[test]
fn a_burst_past_the_queue_gets_429_and_the_server_keeps_serving() {
    let opts = ServerOptions {
        max_queue: 2,
        ..Default::default()
    };
    let srv = start(2, 4096, 2, opts);
    let addr = srv.addr;
    // Two running, two queued (streams answer with headers at once, so all four are admitted).
    let holders: Vec<TcpStream> = (0..4)
        .map(|_| open_stream(addr, &long_chat(150), 1))
        .collect();
    wait_until("2 running and 2 queued", Duration::from_secs(5), || {
        let h = get(addr, "/health").json();
        h["slots_processing"] == 2 && h["queue_depth"] == 2
    });
    let burst: Vec<_> = (0..12)
        .map(|_| {
            std::thread::spawn(move || {
                post(
                    addr,
                    "/v1/chat/completions",
                    &json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 2}),
                )
            })
        })
        .collect();
    for t in burst {
        let r = t.join().unwrap();
        assert_eq!(r.status, 429);
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    }
    // The held streams run to completion, then new work is admitted.
    for mut s in holders {
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(String::from_utf8_lossy(&rest).contains("data: [DONE]"));
    }
    let v = post(
        addr,
        "/v1/completions",
        &json!({"prompt": "x!", "max_tokens": 3, "temperature": 0}),
    )
    .json();
    assert_eq!(v["choices"][0]["text"], "abc");
    let m = String::from_utf8(get(addr, "/metrics").body).unwrap();
    assert!(m.contains("status=\"429\"} 12"), "{m}");
}

#[test]
fn shutdown_finishes_short_requests_and_cancels_long_ones_quickly() {
    let opts = ServerOptions {
        shutdown_grace: Duration::from_millis(400),
        ..Default::default()
    };
    let mut srv = start(3, 8192, 5, opts);
    let addr = srv.addr;
    let long: Vec<TcpStream> = (0..2)
        .map(|_| open_stream(addr, &long_chat(5000), 2))
        .collect();
    let short = open_stream(addr, &long_chat(30), 2);
    let took = srv.shutdown();
    assert!(took < Duration::from_secs(4), "shutdown took {took:?}");
    let read_all = |mut s: TcpStream| {
        let mut v = Vec::new();
        let _ = s.read_to_end(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    };
    let short = read_all(short);
    assert!(short.contains("\"finish_reason\":\"length\""), "{short}");
    for s in long {
        let text = read_all(s);
        assert!(text.contains("shutting down"), "{text}");
        assert!(text.contains("data: [DONE]"));
    }
    assert!(
        TcpStream::connect(addr).is_err(),
        "still accepting after shutdown"
    );
}
