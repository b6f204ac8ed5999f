#!/usr/bin/env python3
"""Drives a real `ferrite serve` with the official `openai` package (run by the Rust test
crates/cli/tests/serve_openai.rs; usage: test_server_openai.py FERRITE_BIN MODEL.gguf).

Checks: /v1/models; chat; a streamed chat equal to the non-streamed greedy text; a completion
with logprobs; 32 concurrent streams with --parallel 4, each a well-formed SSE stream whose
greedy token ids equal those of the same request run alone; 10 of 32 clients disconnecting
mid-stream leave no slot stuck; a burst past slots + queue gets 429s while the server keeps
serving; SIGTERM -> exit 0. Loopback only, every loop bounded. Exits non-zero with a message on the first failed check.
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

from openai import OpenAI

PARALLEL = 4
MAX_QUEUE = 28  # 32 streams fit: 4 decoding, 28 waiting


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
         "--ctx-size", "512", "--max-queue", str(MAX_QUEUE), "--alias", "smol", "--threads", "2"],
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

    load_and_faults(port, client, msgs, text)


def sse_stream(port, prompt, max_tokens, keep_chunks=None):
    """One streamed greedy completion over a raw socket, checked strictly for SSE well-formedness.

    Returns the generated token ids. With `keep_chunks`, closes the connection after that many
    chunks (a client that disconnects mid-stream) and returns None.
    """
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "return_token_ids": True, "stream_options": {"include_usage": True}}
    c.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        raise AssertionError(f"stream status {r.status}: {r.read()[:200]!r}")
    check(r.getheader("Content-Type", "").startswith("text/event-stream"), "SSE content type")
    events, buf = [], []
    for raw in r:
        line = raw.decode()
        check(line.endswith("\n"), f"unterminated SSE line {line!r}")
        line = line.rstrip("\r\n")
        if line == "":
            if buf:
                events.append("\n".join(buf))
                buf = []
                if keep_chunks is not None and len(events) >= keep_chunks:
                    c.sock.shutdown(socket.SHUT_RDWR)
                    c.close()
                    return None
            continue
        check(line.startswith("data: "), f"not an SSE data line: {line!r}")
        buf.append(line[6:])
        if line == "data: [DONE]":
            events.append("[DONE]")
            buf = []
    check(not buf and events and events[-1] == "[DONE]", f"stream must end with [DONE]: {events[-3:]}")
    check(events.count("[DONE]") == 1, "one [DONE]")
    chunks = [json.loads(e) for e in events[:-1]]
    check(len({ch["id"] for ch in chunks}) == 1, "one id per stream")
    check(all(ch["object"] == "text_completion" for ch in chunks), "chunk objects")
    usage = chunks[-1]
    check(usage["choices"] == [] and usage["usage"]["completion_tokens"] > 0, f"usage chunk: {usage}")
    content = chunks[:-1]
    check(all(ch.get("usage") is None for ch in content), "usage only in the last chunk")
    finishes = [ch["choices"][0]["finish_reason"] for ch in content]
    check(finishes[-1] in ("stop", "length") and all(f is None for f in finishes[:-1]),
          f"finish_reason only on the last chunk: {finishes}")
    ids = [t for ch in content for t in ch["choices"][0].get("token_ids") or []]
    check(len(ids) == usage["usage"]["completion_tokens"], f"{len(ids)} ids vs usage {usage['usage']}")
    check(len(ids) == max_tokens if finishes[-1] == "length" else len(ids) < max_tokens,
          f"{len(ids)} ids of {max_tokens}, finish {finishes[-1]}")
    return ids


def run_concurrently(fn, n):
    out, errors = [None] * n, []

    def one(i):
        try:
            out[i] = fn(i)
        except BaseException as e:  # reported below: a thread's failure must fail the test
            errors.append(f"request {i}: {e!r}")
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    check(not any(th.is_alive() for th in threads), "a request never finished")
    check(not errors, "\n".join(errors))
    return out


def wait_idle(port):
    for _ in range(300):
        h = health(port)
        if h["slots_idle"] == PARALLEL and h["queue_depth"] == 0:
            return h
        time.sleep(0.1)
    raise AssertionError(f"slots still busy: {h}")


def load_and_faults(port, client, msgs, text):
    # Load: 32 concurrent streams with --parallel 4 (28 queue, joining as slots free) give the
    # token ids of the same requests run one at a time.
    n, tokens = 32, 8
    prompts = [f"Count from {i} to {i + 5}:" for i in range(n)]
    t = time.time()
    together = run_concurrently(lambda i: sse_stream(port, prompts[i], tokens), n)
    t_together = time.time() - t
    t = time.time()
    alone = [sse_stream(port, p, tokens) for p in prompts]
    t_alone = time.time() - t
    check(all(alone), f"empty outputs: {alone}")
    diff = [i for i in range(n) if together[i] != alone[i]]
    check(not diff, "batched ids differ: " + "; ".join(f"{i}: {together[i]} vs {alone[i]}" for i in diff))
    print(f"{n} streams x {tokens} tokens: together {t_together:.1f}s, one at a time {t_alone:.1f}s")

    # Faults: 10 of 32 concurrent clients disconnect after two chunks of a long stream; the
    # other 22 complete with the same ids, and afterwards no slot is stuck.
    quitters = set(range(1, n - 1, 3))  # 1, 4, ..., 28: ten clients
    check(len(quitters) == 10, "ten quitters")
    t = time.time()
    # The 22 that stay ask for 4 tokens: greedy, so their ids are a prefix of the 8 above.
    mixed = run_concurrently(
        lambda i: sse_stream(port, prompts[i], 200, keep_chunks=2) if i in quitters
        else sse_stream(port, prompts[i], 4), n)
    for i in range(n):
        check(i in quitters or mixed[i] == alone[i][:4], f"request {i} after disconnects: {mixed[i]} vs {alone[i]}")
    h = wait_idle(port)
    print(f"{len(quitters)} of {n} disconnected mid-stream ({time.time() - t:.1f}s); health afterwards: {h}")
    check(sse_stream(port, prompts[1], tokens) == alone[1], "a later request is served")

    # A burst beyond slots + queue (4 + 28) gets 429s with Retry-After; the server keeps serving.
    def one(i):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        body = {"messages": msgs, "temperature": 0, "max_tokens": 2}
        c.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        r = c.getresponse()
        data = json.loads(r.read())
        if r.status == 429:
            check(r.getheader("Retry-After") is not None and data["error"]["type"], f"429 shape: {data}")
        else:
            check(r.status == 200 and data["choices"], f"burst reply {r.status}: {data}")
        return r.status
    results = run_concurrently(one, PARALLEL + MAX_QUEUE + 12)
    check(results.count(429) >= 1 and results.count(200) >= PARALLEL, f"burst results: {results}")
    wait_idle(port)
    r = client.chat.completions.create(model="smol", messages=msgs, temperature=0, max_tokens=16)
    check(r.choices[0].message.content == text, "served after the burst")
    print("burst:", {k: results.count(k) for k in (200, 429)})


if __name__ == "__main__":
    main()
