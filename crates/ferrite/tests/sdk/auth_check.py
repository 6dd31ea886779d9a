"""With keys set: no key and a wrong key get 401 (AuthenticationError); the right key works."""
import sys

import openai
from openai import OpenAI

base, model, key = sys.argv[1], sys.argv[2], sys.argv[3]
for bad in ["", "sk-wrong"]:
    try:
        OpenAI(base_url=base + "/v1", api_key=bad or "x", max_retries=0,
               default_headers={} if bad else {"Authorization": ""}).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        print("FAILED: request without a valid key succeeded", file=sys.stderr)
        sys.exit(1)
    except openai.AuthenticationError as e:
        assert e.status_code == 401
        print("ok: 401 for", repr(bad) if bad else "a missing key")
r = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0).chat.completions.create(
    model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
print("ok: the right key works:", r.choices[0].message.content)
