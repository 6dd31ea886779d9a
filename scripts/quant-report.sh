#!/usr/bin/env bash
# Quality and speed of requantized models, ferrite beside llama.cpp: for each model, its F16
# dequantized copy is the reference; every variant is written by `ferrite quantize` from it
# (token_embd/output kept at Q8_0, so the rows compare the formats of the layer weights), then
# scored with `ferrite eval perplexity` and `llama-perplexity` on two texts, compared against the
# reference with `ferrite eval compare` (KL, top-1), and timed with `ferrite bench model`.
# Prints a Markdown table for BENCHMARKS.md. Run on an idle machine, never during a build.
#
#   scripts/quant-report.sh                      # both models, all variants
#   MODELS=smollm2 TYPES="q4_0 nvfp4" REPS=3 scripts/quant-report.sh
set -euo pipefail
source "$(dirname "$0")/common.sh"
anchor=${FERRITE_ANCHOR_SCRIPT:-$root/../shared/anchors/llama-cpp.sh}
models=${MODELS:-"smollm2 gemma3"}
types=${TYPES:-"source q8_0 q4_k q4_0 mxfp4 nvfp4 nvfp4-2l"}
reps=${REPS:-3}
threads=${THREADS:-2}
work=${WORK:-$HOME/.cache/ferrite/quant-report}
texts="/usr/share/common-licenses/Apache-2.0 /usr/share/common-licenses/MPL-2.0"
mkdir -p "$work"
bin=$("$anchor")
ferrite=$(ferrite_bin)

stamp "threads: $threads"
echo
echo "| model | weights | MiB | PPL Apache ferrite / llama.cpp | PPL MPL ferrite / llama.cpp | KL vs F16 (mean / p99) | top-1 vs F16 | pp512 tok/s | tg128 tok/s |"
echo "|---|---|---|---|---|---|---|---|---|"
for m in $models; do
  src=$("$ferrite" pull "$m")
  ref=$work/$m-f16.gguf
  [[ -f $ref ]] || "$ferrite" quantize -i "$src" -o "$ref" --type f16 2>/dev/null
  for ty in $types; do
    if [[ $ty == source ]]; then
      f=$src
    else
      f=$work/$m-$ty.gguf
      [[ -f $f ]] || "$ferrite" quantize -i "$ref" -o "$f" --type "$ty" --keep-output q8_0 -t "$threads" 2>/dev/null
    fi
    ppl=()
    for t in $texts; do
      fp=$("$ferrite" eval perplexity -m "$f" --file "$t" -t "$threads" --json 2>/dev/null | python3 -c 'import json,sys; print("%.3f" % json.load(sys.stdin)["ppl"])')
      lp=$("$bin/llama-perplexity" -m "$f" -f "$t" -c 512 -t "$threads" 2>&1 | sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p')
      ppl+=("$fp / ${lp:-fails}")
    done
    cmp=$("$ferrite" eval compare -m "$f" --reference "$ref" --file /usr/share/common-licenses/Apache-2.0 -t "$threads" 2>/dev/null)
    speed=$("$ferrite" bench model -m "$f" -t "$threads" -p 512 -n 128 -r "$reps" --json)
    python3 - "$m" "$ty" "$f" "${ppl[0]}" "${ppl[1]}" "$cmp" "$speed" <<'PY'
import json, os, sys
m, ty, f, a, b, cmp, speed = sys.argv[1:]
c, s = json.loads(cmp), json.loads(speed)
name = f"source ({os.path.basename(f)})" if ty == "source" else ty
print(f"| {m} | {name} | {os.path.getsize(f)/2**20:.1f} | {a} | {b} | {c['kl_mean']:.4f} / {c['kl_p99']:.3f} "
      f"| {100*c['top1_agreement']:.1f}% | {s['pp_tok_s']:.0f} | {s['tg_tok_s']:.1f} |")
PY
  done
done
