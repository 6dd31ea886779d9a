#!/usr/bin/env bash
# ferrite serve (n-gram speculation on, and off per request) against llama-server on the same
# model and threads, through `ferrite bench compare`: one workload, interleaved across the three
# targets in rounds, with ratios to llama-server and bootstrap intervals. Two workloads: the
# copy-heavy prompts of scripts/spec-prompts.jsonl (where drafts pay) and the quality prompts
# (with `expect` patterns). llama-server renders the GGUF chat template (--jinja), as ferrite
# does, so both see the same prompt tokens, and answers end at the model's end of turn
# (ignore_eos off: llama.cpp masks EOS under ignore_eos, ferrite samples past it as vLLM does,
# so forced lengths would not compare answers). Prints the verdict tables for BENCHMARKS.md.
# Idle machine only.
#
#   scripts/compare-servers.sh                      # smollm2, 2 threads
#   MODEL=gemma3 THREADS=1 scripts/compare-servers.sh
set -euo pipefail
source "$(dirname "$0")/common.sh"
anchor=${FERRITE_ANCHOR_SCRIPT:-$root/../shared/anchors/llama-cpp.sh}
model=${MODEL:-smollm2}
threads=${THREADS:-2}
conc=${CONC:-2}
requests=${REQUESTS:-20}
out_tokens=${OUTPUT:-96}
work=${WORK:-/tmp/ferrite-compare-servers}
bin=$("$anchor")
ferrite=$(ferrite_bin)
path=$("$ferrite" pull "$model" | tail -1)
rm -rf "$work"; mkdir -p "$work"
fport=18180; lport=18181
"$ferrite" serve -m "$path" --served-model-name "$model" --port $fport -t "$threads" \
  --speculative ngram:k=4,min_n=2,max_n=4 2>"$work/ferrite.log" &
fpid=$!
"$bin/llama-server" -m "$path" --port $lport -t "$threads" -np "$conc" -c $((conc * 2048)) \
  --no-webui --jinja >"$work/llama-server.log" 2>&1 &
lpid=$!
trap 'kill $fpid $lpid 2>/dev/null || true' EXIT
for u in "http://127.0.0.1:$fport/ready" "http://127.0.0.1:$lport/health"; do
  wait_for "$u"
done
stamp "threads: $threads  model: $(basename "$path")  concurrency: $conc  requests: $requests  output tokens: $out_tokens"
for w in spec-prompts quality-prompts; do
  echo
  echo "### workload: scripts/$w.jsonl"
  echo
  "$ferrite" bench compare \
    --target "name=llama-server,url=http://127.0.0.1:$lport,model=$model,extra-body={\"ignore_eos\": false}" \
    --target "name=ferrite,url=http://127.0.0.1:$fport,model=$model,extra-body={\"ignore_eos\": false}" \
    --target "name=ferrite-no-spec,url=http://127.0.0.1:$fport,model=$model,extra-body={\"ignore_eos\": false, \"speculative\": false}" \
    --workload "file:$root/scripts/$w.jsonl" --concurrency "$conc" --requests "$requests" \
    --output-tokens "$out_tokens" --warmup 1 --json "$work/$w.json" --html "$work/$w.html"
done
