#!/usr/bin/env python3
"""Drives a real `ferrite serve` with the official `openai` package (run by the Rust test
crates/cli/tests/serve_openai.rs; usage: test_server_openai.py FERRITE_BIN MODEL.gguf).

Loopback only, every loop bounded. Exits non-zero with a message on the first failed check.
"""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from openai import OpenAI, RateLimitError

PARALLEL = 4


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def main():
    binary, model = sys.argv[1], sys.argv[2]
    port = free_port()
    proc = subprocess.Popen(
        [binary, "serve", model, "--port", str(port), "--parallel", str(PARALLEL),
         "--ctx-size", "512", "--max-queue", "4", "--alias", "smol", "--threads", "2"],
        stderr=subprocess.PIPE, text=True)
    log = []
    threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True).start()
    try:
        run_checks(port)
        # Graceful shutdown: SIGTERM → exit 0 within a few seconds.
        t = time.time()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
        check(code == 0, f"exit code after SIGTERM: {code}")
        print(f"SIGTERM → exit 0 in {time.time() - t:.1f}s")
    except BaseException:
        proc.kill()
        proc.wait()
        sys.stderr.write("".join(log[-40:]))
        raise


def wait_healthy(port):
    for _ in range(600):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("server never became healthy")


def health(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/health")
    return json.loads(c.getresponse().read())


def run_checks(port):
    wait_healthy(port)
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=300)
    msgs = [{"role": "user", "content": "What is the capital of France?"}]

    models = client.models.list()
    check([m.id for m in models.data] == ["smol"], f"models: {models}")

    r = client.chat.completions.create(model="smol", messages=msgs, temperature=0, max_tokens=16)
    text = r.choices[0].message.content
    check(r.object == "chat.completion" and r.id.startswith("chatcmpl-"), f"shape: {r}")
    check(len(text) > 0 and r.choices[0].finish_reason in ("stop", "length"), f"reply: {r}")
    check(r.usage.prompt_tokens > 5 and 0 < r.usage.completion_tokens <= 16, f"usage: {r.usage}")
    print("chat:", repr(text))

    pieces, usage = [], None
    for chunk in client.chat.completions.create(model="smol", messages=msgs, temperature=0, max_tokens=16,
                                                stream=True, stream_options={"include_usage": True}):
        if chunk.usage is not None:
            usage = chunk.usage
        for ch in chunk.choices:
            pieces.append(ch.delta.content or "")
    check("".join(pieces) == text, f"stream {''.join(pieces)!r} != {text!r}")
    check(usage is not None and usage.completion_tokens == r.usage.completion_tokens, f"stream usage {usage}")

    c = client.completions.create(model="smol", prompt="The sky is", max_tokens=6, temperature=0, logprobs=3)
    lp = c.choices[0].logprobs
    check(len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) >= 1, f"logprobs: {lp}")
    check(all(x <= 0 for x in lp.token_logprobs), f"logprobs must be <= 0: {lp.token_logprobs}")
    check("".join(lp.tokens) == c.choices[0].text, f"tokens {lp.tokens} vs text {c.choices[0].text!r}")
    print("completion:", repr(c.choices[0].text))

    # Concurrent streams (more than the slots) give the ids of one-at-a-time runs.
    n = 8
    prompts = [f"Count from {i} to {i + 5}:" for i in range(n)]

    def stream_ids(p, out, i):
        ids = []
        for chunk in client.completions.create(model="smol", prompt=p, max_tokens=8, temperature=0, stream=True,
                                               extra_body={"return_token_ids": True}):
            for ch in chunk.choices:
                ids.extend((ch.model_extra or {}).get("token_ids") or [])
        out[i] = ids

    together = [None] * n
    t = time.time()
    threads = [threading.Thread(target=stream_ids, args=(p, together, i)) for i, p in enumerate(prompts)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=600)
    t_together = time.time() - t
    alone = [None] * n
    t = time.time()
    for i, p in enumerate(prompts):
        stream_ids(p, alone, i)
    t_alone = time.time() - t
    check(all(a for a in alone), f"empty outputs: {alone}")
    check(together == alone, f"batched ids differ:\n{together}\n{alone}")
    print(f"{n} streams: together {t_together:.1f}s, one at a time {t_alone:.1f}s")

    # Disconnects: streams dropped after their first chunks leave no slot stuck.
    for _ in range(3):
        s = client.chat.completions.create(model="smol", messages=msgs, temperature=0, max_tokens=200, stream=True)
        it = iter(s)
        next(it)
        next(it)
        s.close()
    for _ in range(300):
        h = health(port)
        if h["slots_idle"] == PARALLEL and h["queue_depth"] == 0:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"slots still busy after disconnects: {h}")

    # A burst beyond slots + queue gets 429s; the server keeps serving.
    results = []

    def one():
        try:
            client.chat.completions.create(model="smol", messages=msgs, temperature=0, max_tokens=4)
            results.append(200)
        except RateLimitError:
            results.append(429)
    threads = [threading.Thread(target=one) for _ in range(PARALLEL + 4 + 6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=600)
    check(results.count(429) >= 1 and results.count(200) >= 1, f"burst results: {results}")
    r = client.chat.completions.create(model="smol", messages=msgs, temperature=0, max_tokens=16)
    check(r.choices[0].message.content == text, "served after the burst")
    print("burst:", {k: results.count(k) for k in (200, 429)})


if __name__ == "__main__":
    main()
