"""Drive a running `ferrite serve` with the official OpenAI Python SDK.

Usage: openai_client.py BASE_URL MODEL [API_KEY]
Exits non-zero with a message on the first failed check.
"""
import sys

import openai
from openai import OpenAI

from checks import check

base, model = sys.argv[1], sys.argv[2]
key = sys.argv[3] if len(sys.argv) > 3 else "none"
client = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=300)
msgs = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


# Models.
ids = [m.id for m in client.models.list().data]
check(model in ids, f"/v1/models lists {model}: {ids}")

# Chat, greedy.
r = client.chat.completions.create(model=model, messages=msgs, max_tokens=16, temperature=0)
c = r.choices[0]
check(r.object == "chat.completion" and c.message.role == "assistant", "chat completion shape")
check("Paris" in c.message.content, f"greedy answer mentions Paris: {c.message.content!r}")
check(c.finish_reason in ("stop", "length"), f"finish_reason {c.finish_reason}")
u = r.usage
check(u.total_tokens == u.prompt_tokens + u.completion_tokens, "usage adds up")
check(u.prompt_tokens_details is not None and u.prompt_tokens_details.cached_tokens is not None, "cached_tokens reported")
greedy_text = c.message.content

# Same prompt again hits the prefix cache and gives the same text.
r2 = client.chat.completions.create(model=model, messages=msgs, max_tokens=16, temperature=0)
check(r2.choices[0].message.content == greedy_text, "greedy output identical on a prefix-cache hit")
check(r2.usage.prompt_tokens_details.cached_tokens > 0, f"second call hit the cache: {r2.usage.prompt_tokens_details}")

# Streaming with include_usage.
stream = client.chat.completions.create(
    model=model, messages=msgs, max_tokens=16, temperature=0, stream=True,
    stream_options={"include_usage": True})
parts, usage, n_chunks, finish = [], None, 0, None
for ch in stream:
    n_chunks += 1
    if ch.usage is not None:
        usage = ch.usage
        check(ch.choices == [], "usage chunk has no choices")
    for cc in ch.choices:
        if cc.delta.content:
            parts.append(cc.delta.content)
        if cc.finish_reason:
            finish = cc.finish_reason
check("".join(parts) == greedy_text, f"streamed text equals the unary text: {''.join(parts)!r}")
check(usage is not None and usage.completion_tokens == r.usage.completion_tokens, "final usage chunk")
check(finish == c.finish_reason, "streamed finish_reason")

# Completions (legacy), raw prompt.
r = client.completions.create(model=model, prompt="The capital of France is", max_tokens=8, temperature=0)
check(r.object == "text_completion" and len(r.choices[0].text) > 0, f"completion: {r.choices[0].text!r}")

# n = 2 and seeds: reproducible.
kw = dict(model=model, messages=[{"role": "user", "content": "Write a short poem."}],
          max_tokens=24, temperature=1.0, seed=42, n=2)
a = client.chat.completions.create(**kw)
b = client.chat.completions.create(**kw)
check(len(a.choices) == 2, "n=2 gives two choices")
check([x.message.content for x in a.choices] == [x.message.content for x in b.choices], "same seed, same output")
check(a.choices[0].message.content != a.choices[1].message.content, "the two choices differ")

# Logprobs.
r = client.chat.completions.create(model=model, messages=msgs, max_tokens=4, temperature=0,
                                   logprobs=True, top_logprobs=3)
lp = r.choices[0].logprobs.content
check(len(lp) == r.usage.completion_tokens and all(len(t.top_logprobs) == 3 for t in lp), "logprobs per token")
check(all(t.logprob <= 0 for t in lp) and abs(lp[0].logprob - lp[0].top_logprobs[0].logprob) < 1e-5,
      "greedy token is the top logprob")

# Stop strings: the text ends before the stop string.
full = client.completions.create(model=model, prompt="1, 2, 3, 4,", max_tokens=16, temperature=0).choices[0].text
stop = full.strip()[:2] if len(full.strip()) >= 2 else None
if stop:
    r = client.completions.create(model=model, prompt="1, 2, 3, 4,", max_tokens=16, temperature=0, stop=[stop])
    check(r.choices[0].text == full[:full.find(stop)] and r.choices[0].finish_reason == "stop",
          f"stop {stop!r}: {r.choices[0].text!r} from {full!r}")

# Errors come back as the SDK's exception classes.
try:
    client.chat.completions.create(model=model, messages=msgs, temperature=-1)
    check(False, "temperature -1 rejected")
except openai.BadRequestError as e:
    check(e.status_code == 400 and "temperature" in str(e), "temperature -1 is a 400 naming the field")

print("all SDK checks passed")
