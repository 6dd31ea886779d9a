#!/usr/bin/env bash
# ferrite vs llama.cpp on the same GGUF files, same machine, same run: llama-bench pp512/tg128
# and `ferrite bench model` alternate per model and thread count, and the ratios are printed as a
# Markdown table (paste it into BENCHMARKS.md). Run on an idle machine, never during a build.
#
#   scripts/bench-vs-llamacpp.sh            # threads 1 and 2, 5 repetitions
#   THREADS="2" REPS=10 scripts/bench-vs-llamacpp.sh
#   MODELS="smollm2 /path/to/model.gguf" scripts/bench-vs-llamacpp.sh   # names or GGUF paths
set -euo pipefail
source "$(dirname "$0")/common.sh"
anchor=${FERRITE_ANCHOR_SCRIPT:-$root/../shared/anchors/llama-cpp.sh}
threads=${THREADS:-"1 2"}
reps=${REPS:-5}
models=${MODELS:-"smollm2 gemma3"}

bin=$("$anchor")
# FERRITE_BIN: a prebuilt binary (skips the build, e.g. to measure while sources change).
ferrite=$(ferrite_bin)

stamp
echo
echo "| model | threads | llama.cpp pp512 | ferrite pp512 | ratio | llama.cpp tg128 | ferrite tg128 | ratio |"
echo "|---|---|---|---|---|---|---|---|"
for m in $models; do
  if [[ -f $m ]]; then path=$m; m=$(basename "$m" .gguf); else path=$("$ferrite" pull "$m"); fi
  for t in $threads; do
    lj=$("$bin/llama-bench" -m "$path" -t "$t" -p 512 -n 128 -r "$reps" -o json 2>/dev/null)
    fj=$("$ferrite" bench model -m "$path" -t "$t" -p 512 -n 128 -r "$reps" --json)
    python3 - "$m" "$t" "$lj" "$fj" <<'PY'
import json, sys
m, t, lj, fj = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
pp = next(r["avg_ts"] for r in lj if r["n_prompt"] > 0 and r["n_gen"] == 0)
tg = next(r["avg_ts"] for r in lj if r["n_gen"] > 0 and r["n_prompt"] == 0)
fpp, ftg = fj["pp_tok_s"], fj["tg_tok_s"]
print(f"| {m} | {t} | {pp:.1f} | {fpp:.1f} | {fpp/pp:.2f}x | {tg:.1f} | {ftg:.1f} | {ftg/tg:.2f}x |")
PY
  done
done
