#!/usr/bin/env bash
# Greedy-answer agreement of each requantized variant with its F16 reference on
# scripts/quality-prompts.jsonl (`ferrite eval greedy`): exact-match rate, mean common prefix and
# expect-regex success of both. Files come from scripts/quant-report.sh (WORK folder).
set -euo pipefail
source "$(dirname "$0")/common.sh"
models=${MODELS:-"smollm2 gemma3"}
types=${TYPES:-"source q8_0 q4_k q4_0 mxfp4 nvfp4 nvfp4-2l"}
tokens=${MAX_TOKENS:-48}
work=${WORK:-$HOME/.cache/ferrite/quant-report}
ferrite=${FERRITE_BIN:-$root/target/release/ferrite}
prompts=$root/scripts/quality-prompts.jsonl
echo "| model | weights | exact match vs F16 | mean common prefix (of $tokens) | expect success (variant / F16) |"
echo "|---|---|---|---|---|"
for m in $models; do
  for ty in $types; do
    r=$("$ferrite" eval greedy -m "$work/$m-$ty.gguf" --reference "$work/$m-f16.gguf" \
        --prompts "$prompts" --max-tokens "$tokens" -t "${THREADS:-2}" 2>/dev/null)
    python3 - "$m" "$ty" "$r" <<'PY'
import json, sys
m, ty, r = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
ok = lambda k: "n/a" if r[k] is None else "%.0f%%" % (100 * r[k])
print("| %s | %s | %.0f%% | %.1f | %s / %s |" % (m, ty, 100 * r["exact_match_rate"],
      r["mean_common_prefix"], ok("a_success_rate"), ok("b_success_rate")))
PY
  done
done
