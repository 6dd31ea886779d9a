#!/usr/bin/env bash
# Generation and prompt speed of the 4-bit formats against Q4_0 (same bits per weight), ferrite
# and llama-bench side by side on the same files, alternating formats each round so drift on a
# shared machine hits all of them alike. Files come from scripts/quant-report.sh (WORK folder).
# Prints per-format medians over rounds and each format's ratio to Q4_0.
#
#   ROUNDS=5 MODELS="smollm2 gemma3" scripts/fp4-speed.sh
set -euo pipefail
source "$(dirname "$0")/common.sh"
anchor=${FERRITE_ANCHOR_SCRIPT:-$root/../shared/anchors/llama-cpp.sh}
models=${MODELS:-"smollm2 gemma3"}
types=${TYPES:-"q4_0 nvfp4 nvfp4-2l mxfp4"}
rounds=${ROUNDS:-5}
threads=${THREADS:-2}
work=${WORK:-$HOME/.cache/ferrite/quant-report}
bin=$("$anchor")
ferrite=${FERRITE_BIN:-$root/target/release/ferrite}
out=$(mktemp)
stamp "threads: $threads  rounds: $rounds"
for r in $(seq "$rounds"); do
  for m in $models; do
    for ty in $types; do
      f=$work/$m-$ty.gguf
      [[ -f $f ]] || { echo "missing $f (run scripts/quant-report.sh first)" >&2; exit 1; }
      fj=$("$ferrite" bench model -m "$f" -t "$threads" -p 512 -n 128 -r 1 --json)
      lj=$("$bin/llama-bench" -m "$f" -t "$threads" -p 512 -n 128 -r 1 -o json 2>/dev/null || echo '[]')
      echo "$m $ty $fj $lj" | python3 -c '
import json, sys
line = sys.stdin.read().split(" ", 2)
m, ty, rest = line
dec = json.JSONDecoder()
fj, i = dec.raw_decode(rest)
lj, _ = dec.raw_decode(rest[i:].strip())
pp = next((x["avg_ts"] for x in lj if x["n_prompt"] > 0 and x["n_gen"] == 0), float("nan"))
tg = next((x["avg_ts"] for x in lj if x["n_gen"] > 0 and x["n_prompt"] == 0), float("nan"))
print(m, ty, fj["pp_tok_s"], fj["tg_tok_s"], pp, tg)' >> "$out"
    done
  done
done
python3 - "$out" <<'PY'
import statistics as st, sys, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    m, ty, *v = line.split()
    rows[(m, ty)].append([float(x) for x in v])
print()
print("| model | weights | ferrite pp512 | ferrite tg128 | tg vs Q4_0 (ferrite) | llama.cpp pp512 | llama.cpp tg128 | tg ferrite / llama.cpp |")
print("|---|---|---|---|---|---|---|---|")
for (m, ty), v in rows.items():
    med = [st.median(c) for c in zip(*v)]
    q = [st.median(c) for c in zip(*rows[(m, "q4_0")])] if (m, "q4_0") in rows else med
    print(f"| {m} | {ty} | {med[0]:.0f} | {med[1]:.1f} | {med[1]/q[1]:.2f}x | {med[2]:.0f} | {med[3]:.1f} | {med[1]/med[3]:.2f}x |")
PY
rm -f "$out"
