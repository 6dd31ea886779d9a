#!/usr/bin/env bash
# ferrite against llama.cpp on llama.cpp's own random-weight test files: `test-llama-archs -o`
# writes one GGUF per architecture (with the optional tensors llama.cpp's loader accepts:
# biases, second-level scales, fused expert tensors, and a tokenizer-less vocabulary), and
# both engines print the logits of the same 64 token ids and 16 greedy tokens. Prints the
# largest |Δlogit| and whether the greedy tokens agree, per architecture; fails past 1e-3.
#
#   scripts/check-llama-archs.sh [ARCH...]      (default: qwen3 qwen3moe deepseek2)
set -euo pipefail
source "$(dirname "$0")/common.sh"
bin=$("${FERRITE_ANCHOR_SCRIPT:-$root/../shared/anchors/llama-cpp.sh}")
ferrite=$(ferrite_bin)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
archs=("$@")
((${#archs[@]})) || archs=(qwen3 qwen3moe deepseek2)
tokens=$(python3 -c "import random; random.seed(1); print(','.join(str(random.randrange(128)) for _ in range(64)))")
status=0
for a in "${archs[@]}"; do
  "$bin/test-llama-archs" -a "^$a\$" -s 42 -o "$tmp" >/dev/null 2>&1
  for f in "$tmp/$a"-*.gguf; do
    "$ferrite" eval logits -m "$f" --tokens "$tokens" --generate 16 --json > "$tmp/ours.json"
    "$root/scripts/reference-logits.sh" "$f" "$tokens" 16 > "$tmp/theirs.json"
    python3 - "$f" "$tmp/ours.json" "$tmp/theirs.json" <<'PY' || status=1
import json, os, sys
name, a, b = os.path.basename(sys.argv[1]), json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
diff = max(abs(x - y) for r, s in zip(a["logits"], b["logits"]) for x, y in zip(r, s))
same = a["greedy"] == b["greedy"]
print(f"{name}: max |Δlogit| {diff:.2e} over {len(a['logits'])} positions, greedy {'equal' if same else 'DIFFERENT'}")
sys.exit(0 if diff <= 1e-3 and same else 1)
PY
  done
done
exit $status
