#!/usr/bin/env bash
# llama.cpp's logits for a token-id prompt and its greedy continuation, in the JSON form of
# `ferrite eval logits --json`, from the pinned llama.cpp (../shared/anchors/llama-cpp.sh)
# through libllama's C API (scripts/reference-logits.c, compiled once beside the anchor).
#
#   scripts/reference-logits.sh MODEL.gguf 1,5,9,... [N_GENERATE] > reference.json
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
model=$1 tokens=$2 generate=${3:-0}
bin=$("${FERRITE_ANCHOR_SCRIPT:-$here/../../shared/anchors/llama-cpp.sh}")
src=$(cd "$bin/../.." && pwd)
exe=$bin/ferrite-reference-logits
if [[ ! -x $exe || $here/reference-logits.c -nt $exe ]]; then
  cc -O2 -o "$exe" "$here/reference-logits.c" -I"$src/include" -I"$src/ggml/include" \
    -L"$bin" -lllama -lggml -lggml-base -Wl,-rpath,"$bin" >&2
fi
"$exe" "$model" "$tokens" "$generate"
