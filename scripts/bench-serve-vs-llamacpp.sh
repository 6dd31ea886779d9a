#!/usr/bin/env bash
# Serving throughput, ferrite serve vs llama-server, same model, same threads, same run:
# closed-loop streams at 1, 4 and 16 concurrency, unique 256-token chat prompts (sized through the
# measured template overhead), 128 output tokens, measured with `ferrite bench run`.
# Prints a Markdown table for BENCHMARKS.md. Run on an idle machine, never during a build.
#
#   scripts/bench-serve-vs-llamacpp.sh                 # smollm2, 2 threads
#   MODEL=gemma3 THREADS=1 CONC="1 4" scripts/bench-serve-vs-llamacpp.sh
set -euo pipefail
source "$(dirname "$0")/common.sh"
anchor=${FERRITE_ANCHOR_SCRIPT:-$root/../shared/anchors/llama-cpp.sh}
model=${MODEL:-smollm2}
threads=${THREADS:-2}
conc=${CONC:-"1 4 16"}
bin=$("$anchor")
ferrite=$(ferrite_bin)
path=$("$ferrite" pull "$model")
fport=18080; lport=18081
"$ferrite" serve -m "$path" --served-model-name "$model" --port $fport -t "$threads" \
  --max-num-seqs 16 --kv-cache-mib 1024 2>/tmp/ferrite-serve-bench.log &
fpid=$!
"$bin/llama-server" -m "$path" --port $lport -t "$threads" -np 16 -c $((16 * 512)) \
  --no-webui >/tmp/llama-server-bench.log 2>&1 &
lpid=$!
trap 'kill $fpid $lpid 2>/dev/null || true' EXIT
for u in "http://127.0.0.1:$fport/ready" "http://127.0.0.1:$lport/health"; do
  wait_for "$u"
done
stamp "threads: $threads  model: $(basename "$path")"
echo
echo "| streams | server | requests | output tok/s | TTFT p50 (s) | TTFT p99 (s) | mean TPOT (ms) |"
echo "|---|---|---|---|---|---|---|"
declare -A tput
for c in $conc; do
  r=$(( c < 4 ? 4 : 2 * c ))
  for s in llama-server ferrite; do
    port=$([[ $s == ferrite ]] && echo $fport || echo $lport)
    out=/tmp/ferrite-bench-$s-$c.json
    "$ferrite" bench run --url "http://127.0.0.1:$port" --model "$model" --concurrency "$c" \
      --requests "$r" --input-tokens 256 --output-tokens 128 --warmup 1 --json "$out" >/dev/null
    tput[$s]=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["throughput"]["output_tok_s"])' "$out")
    python3 - "$s" "$c" "$out" <<'PY'
import json, sys
s, c, j = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3]))
q, m = j["requests"], j["metrics"]
err = f" ({q['failed']} failed: {q['errors'][0]})" if q["failed"] else ""
print(f"| {c} | {s} | {q['completed']}{err} | {j['throughput']['output_tok_s']:.1f} | "
      f"{m['ttft_ms']['p50'] / 1e3:.2f} | {m['ttft_ms']['p99'] / 1e3:.2f} | {m['tpot_ms']['mean']:.1f} |")
PY
  done
  python3 -c 'import sys; print(f"| {sys.argv[1]} | **ratio ferrite/llama-server** | | **{float(sys.argv[2])/float(sys.argv[3]):.2f}x** | | | |")' "$c" "${tput[ferrite]}" "${tput[llama-server]}"
done
