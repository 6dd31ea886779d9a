#!/usr/bin/env bash
# The long-context shapes of issue 23, ferrite serve against llama-server on the same model,
# threads and prompts, through `ferrite bench compare` (both servers up, requests interleaved
# target by target, ratios to llama-server with bootstrap intervals):
#
#   cold      unique prompts of COLD_TOKENS (Gemma 3: 10,000; SmolLM2: 7,500) and 64 output
#             tokens: cold TTFT, and TPOT at that depth
#   decode-N  unique prompts of N tokens (4,000 and 8,000; SmolLM2 4,000 and 7,500), 128 output
#             tokens: TPOT (decoding N tokens deep)
#   warm      10,000-token prompts sharing their first 9,600 tokens (8 measured after a
#             warm-up that primes the prefix): TTFT with the prefix cached (ferrite's prefix
#             cache, llama-server's slot cache); Gemma 3 only
#   claims    `ferrite bench verify` against ferrite alone, claims stated as a provider would:
#             warm 10K TTFT p50 and p99 under 1 s; cold 10K TPOT p50 under 10 ms (Gemma 3 only)
#   agent     10-call agent tasks, 300-token tool results, 64 output tokens, 2 tasks at once:
#             task wall-clock (SmolLM2 only)
#
# Peak RSS of each server (VmHWM) is printed at the end. Idle machine only; ~25 minutes.
#
#   scripts/bench-long-context.sh                 # both models, 2 threads
#   MODEL=gemma3 SHAPES="cold warm" scripts/bench-long-context.sh
set -euo pipefail
source "$(dirname "$0")/common.sh"
anchor=${FERRITE_ANCHOR_SCRIPT:-$root/../shared/anchors/llama-cpp.sh}
threads=${THREADS:-2}
models=${MODEL:-"gemma3 smollm2"}
work=${WORK:-/tmp/ferrite-long-context}
bin=$("$anchor")
ferrite=$(ferrite_bin)
rm -rf "$work"; mkdir -p "$work"
fport=18190; lport=18191

compare() { # name, then bench flags
  local name=$1; shift
  echo
  echo "### $model: $name"
  echo
  "$ferrite" bench compare \
    --target "name=llama-server,url=http://127.0.0.1:$lport,model=$model" \
    --target "name=ferrite,url=http://127.0.0.1:$fport,model=$model" \
    --json "$work/$model-$name.json" "$@"
}

for model in $models; do
  path=$("$ferrite" pull "$model" | tail -1)
  case $model in
    gemma3) ctx=12288; cold=10000; depths="4000 8000"; default_shapes="cold decode warm claims" ;;
    *) ctx=8192; cold=7500; depths="4000 7500"; default_shapes="cold decode agent" ;;
  esac
  shapes=${SHAPES:-$default_shapes}
  # Two slots for the agent shape's two tasks; one otherwise (one request at a time).
  slots=1; [[ " $shapes " == *" agent "* ]] && slots=2
  "$ferrite" serve -m "$path" --served-model-name "$model" --port $fport -t "$threads" \
    --max-model-len $ctx --kv-cache-mib 1024 2>"$work/$model-ferrite.log" &
  fpid=$!
  "$bin/llama-server" -m "$path" --port $lport -t "$threads" -np $slots -c $((slots * ctx)) \
    --no-webui --jinja >"$work/$model-llama-server.log" 2>&1 &
  lpid=$!
  trap 'kill $fpid $lpid 2>/dev/null || true' EXIT
  for u in "http://127.0.0.1:$fport/ready" "http://127.0.0.1:$lport/health"; do
    wait_for "$u"
  done
  stamp "threads: $threads  model: $(basename "$path")"
  for shape in $shapes; do
    case $shape in
      cold) compare "cold $cold" --input-tokens $cold --output-tokens 64 --requests 3 --warmup 0 ;;
      decode) for n in $depths; do
          compare "decode at $n" --input-tokens "$n" --output-tokens 128 --requests 2 --warmup 0
        done ;;
      warm) compare "warm 10K prefix" --workload shared-prefix --shared-prefix-tokens 9600 \
          --input-tokens 10000 --output-tokens 16 --requests 8 --warmup 1 ;;
      claims)
        echo; echo "### $model: claims"; echo
        verify=("$ferrite" bench verify --url "http://127.0.0.1:$fport" --model "$model")
        "${verify[@]}" --workload shared-prefix --shared-prefix-tokens 9600 --input-tokens 10000 \
          --output-tokens 16 --requests 8 --warmup 1 \
          --claim "ttft_ms.p50<1000" --claim "ttft_ms.p99<1000" || true
        "${verify[@]}" --input-tokens $cold --output-tokens 64 --requests 3 --warmup 0 \
          --claim "tpot_ms.p50<10" || true ;;
      agent) compare "agent 10 calls" --agent-calls 10 --agent-tool-tokens 300 \
          --output-tokens 64 --concurrency 2 --requests 4 --warmup 0 ;;
    esac
  done
  echo
  for p in "ferrite:$fpid" "llama-server:$lpid"; do
    echo "peak RSS $model ${p%%:*}: $(awk '/VmHWM/ {print $2/1024 " MiB"}' "/proc/${p##*:}/status")"
  done
  kill $fpid $lpid; wait $fpid $lpid 2>/dev/null || true
done
