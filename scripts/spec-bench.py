#!/usr/bin/env python3
"""Speculative decoding on and off against one running `ferrite serve`, in one run.

For each prompt (copy-heavy: code rename, verbatim quote, tool output echoed; and free-form
chat), sends the same greedy chat request with `speculative: false` and with n-gram drafting,
alternating, `--reps` times each, streamed. Decode speed = (output tokens - 1) / (last token -
first token). Prints a Markdown table: decode tok/s off / on, speedup, acceptance rate
(accepted / drafted) and mean accepted length (1 + accepted / verification rounds is not
visible per request; we report accepted drafts per output token instead), and checks the two
outputs are identical (greedy).

  spec-bench.py --url http://127.0.0.1:8080 --model smollm2 [--reps 3] [--max-tokens 160]
"""
import argparse
import http.client
import json
import statistics
import time
import urllib.parse

CODE = '''def summarize(orders):
    total = 0
    count = 0
    for order in orders:
        if order["status"] == "paid":
            total += order["amount"]
            count += 1
    average = total / count if count else 0
    return {"total": total, "count": count, "average": average}
'''
QUOTE = ("The committee met on Tuesday to review the budget. After a long discussion, the members "
         "agreed to postpone the vote until the next meeting, citing the need for more detailed "
         "figures from the finance department. The chair thanked everyone for their patience.")
TOOL = json.dumps({"results": [{"city": "Paris", "temp_c": 18, "sky": "cloudy"},
                               {"city": "Lyon", "temp_c": 21, "sky": "sunny"},
                               {"city": "Nice", "temp_c": 24, "sky": "sunny"}]})
PROMPTS = {
    "code rename": f"Rewrite this Python code, renaming the variable `total` to `running_sum`. "
                   f"Output only the code.\n\n{CODE}",
    "verbatim quote": f"Repeat the following paragraph exactly, word for word:\n\n{QUOTE}",
    "tool output echo": f"The weather tool returned:\n{TOOL}\nReport each city's temperature and sky "
                        f"exactly as the tool gave them, one line per city.",
    "free-form chat": "Write a short story about a lighthouse keeper who finds a message in a bottle.",
}


def run(url, model, prompt, spec, max_tokens):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=900)
    body = {"model": model, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, "speculative": spec}
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200, r.read()
    text, times, usage, buf = [], [], None, b""
    while True:
        chunk = r.read1(65536)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            if not ev.startswith(b"data: ") or ev == b"data: [DONE]":
                continue
            obj = json.loads(ev[6:])
            if obj.get("usage"):
                usage = obj["usage"]
            for c in obj.get("choices", []):
                if c["delta"].get("content") is not None:
                    times.append(time.perf_counter())
                    text.append(c["delta"]["content"])
    n = usage["completion_tokens"]
    decode = (n - 1) / (times[-1] - times[0]) if n > 1 and times[-1] > times[0] else 0.0
    spec_u = usage.get("speculative") or {}
    return "".join(text), decode, n, spec_u.get("draft_tokens", 0), spec_u.get("accepted_tokens", 0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--k", type=int, default=4)
    a = ap.parse_args()
    on = {"k": a.k, "min_n": 2, "max_n": 4}
    print("| workload | decode tok/s off | decode tok/s on | speedup | drafted | accepted | acceptance | accepted per output token | identical |")
    print("|---|---|---|---|---|---|---|---|---|")
    run(a.url, a.model, "Hi", False, 4)  # warm-up
    for name, prompt in PROMPTS.items():
        offs, ons, drafted, accepted, outs, same = [], [], 0, 0, 0, True
        for _ in range(a.reps):
            t0, d0, n0, _, _ = run(a.url, a.model, prompt, False, a.max_tokens)
            t1, d1, n1, dr, ac = run(a.url, a.model, prompt, on, a.max_tokens)
            offs.append(d0)
            ons.append(d1)
            drafted += dr
            accepted += ac
            outs += n1
            same &= (t0 == t1)
        off, onm = statistics.median(offs), statistics.median(ons)
        acc = accepted / drafted if drafted else 0.0
        print(f"| {name} | {off:.1f} | {onm:.1f} | {onm / off:.2f}x | {drafted} | {accepted} | "
              f"{acc:.2f} | {accepted / outs:.2f} | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
