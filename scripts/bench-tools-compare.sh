#!/usr/bin/env bash
# ferrite bench, guidellm and aiperf against the same llama-server, same workload, one run each
# in turn: unique synthetic prompts of IN tokens, OUT output tokens (ignore_eos), CONC streams,
# N requests. Prints TTFT and ITL medians side by side as a Markdown table for BENCHMARKS.md.
# Run on an idle machine, never during a build.
#
#   scripts/bench-tools-compare.sh                  # smollm2, 2 threads, 128 in / 64 out, conc 1
#   CONC=4 N=32 scripts/bench-tools-compare.sh
#   SERVER_CPUS=0 CLIENT_CPUS=1 THREADS=1 scripts/bench-tools-compare.sh   # pinned apart
#
# The Python tools are heavy clients (aiperf runs several worker processes); on a 2-vCPU machine
# they take CPU from the server and inflate its latencies. Pin server and clients to different
# CPUs to compare definitions rather than client overhead.
#
# Needs guidellm and aiperf (TOOLS_VENV, default /tmp/benchtools: python3 -m venv /tmp/benchtools
# && /tmp/benchtools/bin/pip install guidellm aiperf gguf). Both need a tokenizer directory
# offline; this script writes one from the GGUF with transformers (TOKENIZER_DIR).
set -euo pipefail
source "$(dirname "$0")/common.sh"
anchor=${FERRITE_ANCHOR_SCRIPT:-$root/../shared/anchors/llama-cpp.sh}
model=${MODEL:-smollm2}
threads=${THREADS:-2}
conc=${CONC:-1}
n=${N:-24}
in_tok=${IN:-128}
out_tok=${OUT:-64}
venv=${TOOLS_VENV:-/tmp/benchtools}
pin_server=(); pin_client=()
[[ -n ${SERVER_CPUS:-} ]] && pin_server=(taskset -c "$SERVER_CPUS")
[[ -n ${CLIENT_CPUS:-} ]] && pin_client=(taskset -c "$CLIENT_CPUS")
work=${WORK:-/tmp/bench-tools-compare}
bin=$("$anchor")
ferrite=$(ferrite_bin)
path=$("$ferrite" pull "$model")
tok=${TOKENIZER_DIR:-$work/tokenizer}
mkdir -p "$work"
if [[ ! -f $tok/tokenizer.json ]]; then
  "$venv/bin/python" - "$path" "$tok" <<'PY'
import os, sys
from transformers import AutoTokenizer
t = AutoTokenizer.from_pretrained(os.path.dirname(sys.argv[1]), gguf_file=os.path.basename(sys.argv[1]))
t.save_pretrained(sys.argv[2])
PY
fi
port=18082
"${pin_server[@]}" "$bin/llama-server" -m "$path" --port $port -t "$threads" -np "$conc" -c $((conc * 1024)) \
  --no-webui >"$work/llama-server.log" 2>&1 &
lpid=$!
trap 'kill $lpid 2>/dev/null || true' EXIT
wait_for "http://127.0.0.1:$port/health"
url=http://127.0.0.1:$port
stamp "server threads: $threads${SERVER_CPUS:+ on CPU $SERVER_CPUS, clients on CPU ${CLIENT_CPUS:-any}}  model: $(basename "$path")  workload: $in_tok in / $out_tok out, concurrency $conc, $n requests"

"${pin_client[@]}" "$ferrite" bench run --url "$url" --model "$model" --input-tokens "$in_tok" --output-tokens "$out_tok" \
  --concurrency "$conc" --requests "$n" --warmup 2 --json "$work/ferrite.json" >"$work/ferrite.txt"

rm -rf "$work/guidellm.json"
"${pin_client[@]}" "$venv/bin/guidellm" run \
  --backend "kind=openai_http,target=$url,model=$model" \
  --profile "kind=concurrent,streams=$conc" \
  --constraint "kind=max_requests,count=$n" \
  --data "kind=synthetic_text,prompt_tokens=$in_tok,output_tokens=$out_tok" \
  --tokenizer "kind=huggingface_auto,model=$tok" \
  --output "kind=json,path=$work/guidellm.json" --disable-console-interactive >"$work/guidellm.txt" 2>&1

rm -rf "$work/aiperf"
"${pin_client[@]}" "$venv/bin/aiperf" profile --model "$model" --url "$url" --endpoint-type chat --streaming \
  --tokenizer "$tok" --concurrency "$conc" --request-count "$n" --warmup-request-count 2 \
  --synthetic-input-tokens-mean "$in_tok" --synthetic-input-tokens-stddev 0 \
  --output-tokens-mean "$out_tok" --output-tokens-stddev 0 --extra-inputs ignore_eos:true \
  --ui-type none --no-gpu-telemetry --artifact-dir "$work/aiperf" >"$work/aiperf.txt" 2>&1

# ferrite bench again, last, at the prompt length the server saw from the Python tools (they
# size the prompt text, not the templated prompt): separates that from definitions and drift.
seen=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["benchmarks"][0]["metrics"]["prompt_token_count"]["successful"]["median"]))' "$work/guidellm.json")
"${pin_client[@]}" "$ferrite" bench run --url "$url" --model "$model" --input-tokens "$seen" --output-tokens "$out_tok" \
  --concurrency "$conc" --requests "$n" --warmup 2 --json "$work/ferrite-matched.json" >"$work/ferrite-matched.txt"

python3 "$root/scripts/bench-tools-table.py" "$work"
