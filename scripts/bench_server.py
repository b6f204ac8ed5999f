#!/usr/bin/env python3
"""Throughput of `ferrite serve` with --parallel 4 against --parallel 1.

usage: scripts/bench_server.py FERRITE_BIN MODEL.gguf [--requests N] [--tokens T] [--threads K]

Starts the server on a loopback port for each setting, sends N concurrent streaming greedy
completions of T tokens each, and prints total generated tokens per second and the ratio.
"""
import argparse
import http.client
import json
import socket
import subprocess
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stream(port, prompt, tokens, out, i):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = {"prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    c.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    n = 0
    for line in r:
        line = line.decode().strip()
        if line.startswith("data: {"):
            d = json.loads(line[6:])
            if d.get("usage"):
                n = d["usage"]["completion_tokens"]
    out[i] = n


def run(binary, model, parallel, n_req, tokens, threads):
    port = free_port()
    p = subprocess.Popen([binary, "serve", model, "--port", str(port), "--parallel", str(parallel),
                          "--ctx-size", "512", "--threads", str(threads), "--max-queue", str(n_req)],
                         stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        out = [0] * n_req
        t = time.time()
        ths = [threading.Thread(target=stream, args=(port, f"Write a short story number {i}:", tokens, out, i))
               for i in range(n_req)]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        dt = time.time() - t
        return sum(out), dt
    finally:
        p.terminate()
        p.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("model")
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    rates = {}
    for par in (1, 4):
        n, dt = run(a.binary, a.model, par, a.requests, a.tokens, a.threads)
        rates[par] = n / dt
        print(f"--parallel {par}: {n} tokens in {dt:.1f}s = {rates[par]:.1f} tokens/s")
    print(f"ratio parallel 4 / parallel 1: {rates[4] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
