#!/usr/bin/env python3
"""Closed-loop load against an OpenAI-compatible /v1/completions endpoint (stdlib only).

C workers each send requests back to back: a unique prompt of P token ids, exactly N output
tokens (ignore_eos), streamed. Reports aggregate output tok/s (all output tokens / wall time),
TTFT p50/p99 (request start -> first streamed token), and mean TPOT, as JSON.

  serve-bench.py --url http://127.0.0.1:8080 --model smollm2 -c 4 -r 8 -p 256 -n 128

This is the interim load generator for the serving benchmarks; `ferrite bench` replaces it.
"""
import argparse
import http.client
import json
import random
import statistics
import threading
import time
import urllib.parse


def one_request(url, model, prompt, n):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": n, "temperature": 0,
                       "ignore_eos": True, "stream": True,
                       "stream_options": {"include_usage": True}})
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:300]!r}")
    first, times, usage_tokens = None, [], None
    buf = b""
    while True:
        chunk = r.read1(65536) if hasattr(r, "read1") else r.read(1)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            line = ev.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                continue
            obj = json.loads(data)
            if obj.get("usage"):
                usage_tokens = obj["usage"].get("completion_tokens")
            for c in obj.get("choices", []):
                if c.get("text"):
                    now = time.perf_counter()
                    first = first or now
                    times.append(now)
    t1 = time.perf_counter()
    conn.close()
    tokens = usage_tokens if usage_tokens is not None else len(times)
    return {"start": t0, "end": t1, "ttft": (first or t1) - t0, "tokens": tokens,
            "tpot": ((t1 - first) / (tokens - 1)) if first and tokens > 1 else 0.0}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", default="default")
    ap.add_argument("-c", "--concurrency", type=int, default=1)
    ap.add_argument("-r", "--requests", type=int, default=4)
    ap.add_argument("-p", "--prompt-tokens", type=int, default=256)
    ap.add_argument("-n", "--output-tokens", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab-lo", type=int, default=1000)
    ap.add_argument("--vocab-hi", type=int, default=20000)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    prompts = [[rng.randrange(a.vocab_lo, a.vocab_hi) for _ in range(a.prompt_tokens)]
               for _ in range(a.requests)]
    results, errors, lock = [], [], threading.Lock()
    todo = list(range(a.requests))

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop(0)
            try:
                res = one_request(a.url, a.model, prompts[i], a.output_tokens)
                with lock:
                    results.append(res)
            except Exception as e:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(str(e))

    # Warm-up request (not measured): loads caches, threads.
    one_request(a.url, a.model, [a.vocab_lo] * 8, 2)
    t0 = time.perf_counter()
    ths = [threading.Thread(target=worker) for _ in range(a.concurrency)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    wall = time.perf_counter() - t0
    ttfts = sorted(r["ttft"] for r in results)
    q = lambda p: ttfts[min(len(ttfts) - 1, int(round(p * (len(ttfts) - 1))))] if ttfts else None
    out = {"concurrency": a.concurrency, "requests": len(results), "errors": len(errors),
           "output_tokens": sum(r["tokens"] for r in results), "wall_s": wall,
           "output_tok_s": sum(r["tokens"] for r in results) / wall,
           "ttft_p50_s": q(0.5), "ttft_p99_s": q(0.99),
           "tpot_mean_s": statistics.mean(r["tpot"] for r in results) if results else None,
           "first_error": errors[0] if errors else None}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
