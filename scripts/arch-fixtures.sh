#!/usr/bin/env bash
# Regenerates the committed llama.cpp logits of the synthetic architecture fixtures
# (crates/ferrite-engine/tests/fixtures/arch/*.json, checked by the engine's arch_fixtures
# test): each model of ferrite_testkit::arch_fixtures is written by our GGUF writer (seeded, so
# the test rebuilds the same bytes), run through the pinned llama.cpp's C API
# (scripts/reference-logits.sh) and its output stored with 7 significant digits.
#
#   scripts/arch-fixtures.sh [NAME...]      (default: every fixture)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/crates/ferrite-engine/tests/fixtures/arch
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cargo build -q --release -p ferrite-testkit --example arch-fixture
fixture=$root/target/release/examples/arch-fixture
names=("$@")
((${#names[@]})) || mapfile -t names < <("$fixture" list)
for name in "${names[@]}"; do
  read -r tokens generate < <("$fixture" write "$name" "$tmp/$name.gguf")
  "$root/scripts/reference-logits.sh" "$tmp/$name.gguf" "$tokens" "$generate" |
    python3 -c '
import json, sys
r = json.load(sys.stdin)
r["tokens"] = [int(t) for t in sys.argv[1].split(",")]
r["logits"] = [[float(f"{v:.7g}") for v in row] for row in r["logits"]]
json.dump(r, sys.stdout, separators=(",", ":"))
print()' "$tokens" > "$out/$name.json"
  echo "$name: $(wc -c < "$out/$name.json") bytes" >&2
done
