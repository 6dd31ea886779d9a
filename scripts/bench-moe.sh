#!/usr/bin/env bash
# ferrite vs llama.cpp on the synthetic mixture-of-experts models (BENCHMARKS.md, "Mixture of
# experts"): a Qwen3-MoE with Qwen3-30B-A3B widths and a DeepSeek with V2-Lite widths, random
# Q4_K weights written by `ferrite-testkit`'s synthetic-model example (seeded: the same bytes
# every time; about 1.5 GB each, cached), llama-bench and `ferrite bench model` alternating
# in the same run (scripts/bench-vs-llamacpp.sh).
#
#   scripts/bench-moe.sh                 # threads 1 and 2, 3 repetitions
#   THREADS=2 REPS=5 scripts/bench-moe.sh
set -euo pipefail
source "$(dirname "$0")/common.sh"
cache=${FERRITE_BENCH_MODELS:-$HOME/.cache/ferrite-bench}
mkdir -p "$cache"
(cd "$root" && cargo build --quiet --release -p ferrite-testkit --example synthetic-model)
models=()
for preset in qwen3moe-bench deepseek2-bench; do
  f=$cache/$preset.gguf
  if [[ ! -f $f ]]; then
    echo "writing $f (a few minutes)" >&2
    "$root/target/release/examples/synthetic-model" "$preset" "$f.tmp" && mv "$f.tmp" "$f"
  fi
  models+=("$f")
done
MODELS="${models[*]}" REPS=${REPS:-3} exec "$root/scripts/bench-vs-llamacpp.sh"
