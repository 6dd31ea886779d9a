#!/usr/bin/env bash
# Regenerates crates/ferrite-tokenizer/tests/fixtures/templates/*.json: llama.cpp's rendering
# (llama-server --jinja, POST /apply-template) of a set of conversations — plain turns, earlier
# reasoning, reasoning turned off (chat_template_kwargs), tools with a call and its result — under the chat templates of the Qwen3 and
# DeepSeek families (from the pinned llama.cpp's models/templates). The tokenizer's
# chat_templates test renders the same conversations with minijinja and wants the same text.
#
#   scripts/template-fixtures.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$("${FERRITE_ANCHOR_SCRIPT:-$root/../shared/anchors/llama-cpp.sh}")
templates=$(cd "$bin/../.." && pwd)/models/templates
out=$root/crates/ferrite-tokenizer/tests/fixtures/templates
port=${PORT:-8793}
tmp=$(mktemp -d)
trap 'kill "${server:-0}" 2>/dev/null || true; rm -rf "$tmp"' EXIT
# Any model llama-server loads will do: the template comes from the file given.
(cd "$root" && cargo build -q --release -p ferrite-testkit --example arch-fixture)
"$root/target/release/examples/arch-fixture" write qwen3-f32 "$tmp/model.gguf" >/dev/null
for name in Qwen-Qwen3-0.6B Qwen3-Coder deepseek-ai-DeepSeek-V3.1 deepseek-ai-DeepSeek-R1-Distill-Qwen-32B; do
  "$bin/llama-server" -m "$tmp/model.gguf" --port "$port" --jinja -c 512 \
    --chat-template-file "$templates/$name.jinja" >"$tmp/server.log" 2>&1 &
  server=$!
  for _ in $(seq 100); do curl -sf "localhost:$port/health" >/dev/null && break; sleep 0.2; done
  python3 - "$templates/$name.jinja" "$port" "$out/$name.json" <<'PY'
import json, sys, urllib.request
template, port, dest = sys.argv[1], sys.argv[2], sys.argv[3]
weather = {"type": "function", "function": {"name": "get_weather", "description": "Current weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}}
call = {"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
cases = [
    ("one turn", [{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "Hello!"}], None),
    ("thinking off", [{"role": "user", "content": "Hello!"}], None, {"enable_thinking": False}),
    ("several turns", [{"role": "user", "content": "Hi"},
                       {"role": "assistant", "content": "Hello! How can I help?"},
                       {"role": "user", "content": "Tell me a joke."}], None),
    ("earlier reasoning", [{"role": "user", "content": "2+2?"},
                           {"role": "assistant", "content": "<think>\nSimple sum.\n</think>\n\n4"},
                           {"role": "user", "content": "And 3+3?"}], None),
    ("tools", [{"role": "system", "content": "Use tools."},
               {"role": "user", "content": "Weather in Paris?"}], [weather]),
    ("tool call and result", [{"role": "user", "content": "Weather in Paris?"},
                              {"role": "assistant", "content": None, "tool_calls": [call]},
                              {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"}],
     [weather]),
]
rendered = []
for name, messages, tools, *kwargs in cases:
    kwargs = kwargs[0] if kwargs else None
    body = {"messages": messages}
    if tools:
        body["tools"] = tools
    if kwargs:
        body["chat_template_kwargs"] = kwargs
    req = urllib.request.Request(f"http://localhost:{port}/apply-template", json.dumps(body).encode(),
                                 {"content-type": "application/json"})
    try:
        prompt = json.load(urllib.request.urlopen(req))["prompt"]
    except Exception as e:  # a template that cannot render a case is recorded as such
        prompt = None
        print(f"{dest}: {name}: {e}", file=sys.stderr)
    rendered.append({"name": name, "messages": messages, "tools": tools,
                     "chat_template_kwargs": kwargs, "prompt": prompt})
json.dump({"template": open(template).read(), "cases": rendered}, open(dest, "w"), indent=1,
          ensure_ascii=False)
print(f"{dest}: {sum(c['prompt'] is not None for c in rendered)} cases", file=sys.stderr)
PY
  kill "$server"; wait "$server" 2>/dev/null || true
done
