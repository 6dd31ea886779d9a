#!/usr/bin/env bash
# What structured output costs while decoding: against one `ferrite serve`, `ferrite bench run`
# alternates unconstrained rounds and rounds whose requests carry a JSON schema (an array of at
# least 40 objects, so every answer decodes its whole OUTPUT tokens under the grammar), at 1
# and at 8 concurrent streams, greedy and sampled (temperature 1), REPS rounds each. Prints a Markdown table for BENCHMARKS.md:
# TPOT p50 and output tok/s per round kind (medians over the rounds), the overhead, the engine
# thread's grammar work as a share of the constrained runs' time (ferrite_structured_output_
# seconds_total: a bound on the overhead that neighbours' noise does not move), tokens per
# answer (both cut at OUTPUT), and the server's mask-time histogram (count, mean). Then the
# grammar_masks example: token-table build time next to model load time, and per-mask p50/p99.
# Idle machine, never during a build.
#
#   scripts/structured-bench.sh                 # smollm2
#   MODEL=gemma3 scripts/structured-bench.sh
set -euo pipefail
source "$(dirname "$0")/common.sh"
model=${MODEL:-smollm2}
threads=${THREADS:-2}
reps=${REPS:-3}
out_tokens=${OUTPUT:-128}
work=${WORK:-/tmp/ferrite-structured-bench}
ferrite=$(ferrite_bin)
rm -rf "$work"; mkdir -p "$work"
port=18091
"$ferrite" serve -m "$model" --served-model-name m --port $port -t "$threads" 2>"$work/serve.log" &
spid=$!
trap 'kill $spid 2>/dev/null || true' EXIT
wait_for "http://127.0.0.1:$port/ready"
stamp "threads: $threads  model: $model  reps: $reps  output tokens: $out_tokens"
grep -m1 "token table" "$work/serve.log" | sed 's/\x1b\[[0-9;]*m//g' || true
schema='{"type": "array", "minItems": 40, "items": {"type": "object", "properties": {
  "id": {"type": "integer", "minimum": 0, "maximum": 999}, "name": {"type": "string", "maxLength": 12},
  "ok": {"type": "boolean"}, "tags": {"type": "array", "maxItems": 3, "items": {"enum": ["red", "green", "blue"]}}},
  "required": ["id", "name", "ok", "tags"], "additionalProperties": false}}'
constrained="{\"response_format\": {\"type\": \"json_schema\", \"json_schema\": {\"name\": \"rows\", \"schema\": $schema}}}"
# Every run its own seed: its prompts are new to the server, so no run decodes beside fewer
# prefills than another thanks to the prefix cache.
grammar_seconds() {
  curl -s "http://127.0.0.1:$port/metrics" | awk '/^ferrite_structured_output_seconds_total/ {print $2}'
}
# Each run also records the engine thread's grammar work during it (OUT.grammar, seconds).
bench() {  # bench OUT CONCURRENCY EXTRA_BODY SEED
  local n=$(( $2 == 1 ? 6 : 16 )) before
  before=$(grammar_seconds)
  "$ferrite" bench run --url "http://127.0.0.1:$port" --model m --input-tokens 64 \
    --output-tokens "$out_tokens" --concurrency "$2" --requests "$n" --warmup 1 \
    --extra-body "$3" --seed "$4" --json "$1" >/dev/null
  python3 -c "print($(grammar_seconds) - $before)" >"$1.grammar"
}
# Greedy (the bench's default) and sampled (temperature 1, where every token needs the mask).
sampled='"temperature": 1.0, "seed": 7'
seed=100
for c in 1 8; do
  for r in $(seq "$reps"); do
    bench "$work/plain-greedy-$c-$r.json" "$c" '{}' $((seed += 1))
    bench "$work/json-greedy-$c-$r.json" "$c" "$constrained" $((seed += 1))
    bench "$work/plain-sampled-$c-$r.json" "$c" "{$sampled}" $((seed += 1))
    bench "$work/json-sampled-$c-$r.json" "$c" "${constrained%\}}, $sampled}" $((seed += 1))
  done
done
python3 - "$work" "$reps" <<'EOF'
import json, statistics, sys
work, reps = sys.argv[1], int(sys.argv[2])
print("| streams | decoding | TPOT p50 plain (ms) | TPOT p50 JSON schema (ms) | overhead (range over rounds) | output tok/s plain | output tok/s JSON | grammar work / run time | tokens per answer (plain / JSON) |")
print("|---|---|---|---|---|---|---|---|---|")
for c in (1, 8):
    for mode in ("greedy", "sampled"):
        load = lambda kind, r: json.load(open(f"{work}/{kind}-{mode}-{c}-{r}.json"))
        col = lambda kind, f: statistics.median(f(load(kind, r)) for r in range(1, reps + 1))
        tpot = lambda r: r["metrics"]["tpot_ms"]["p50"]
        tps = lambda r: r["throughput"]["output_tok_s"]
        n_out = lambda r: r["workload"]["output_tokens_achieved"]["p50"]
        a, b = col("plain", tpot), col("json", tpot)
        per = [tpot(load("json", r)) / tpot(load("plain", r)) - 1 for r in range(1, reps + 1)]
        # The engine thread's grammar work over the constrained runs' wall time (warm-ups
        # included in both): what the grammar can cost at most, since the engine thread is
        # busy through a run.
        busy = sum(float(open(f"{work}/json-{mode}-{c}-{r}.json.grammar").read()) for r in range(1, reps + 1))
        wall = sum(load("json", r)["throughput"]["duration_s"] for r in range(1, reps + 1))
        print(f"| {c} | {mode} | {a:.2f} | {b:.2f} | {100 * (b / a - 1):+.1f}% ({100 * min(per):+.1f} to {100 * max(per):+.1f}) | "
              f"{col('plain', tps):.1f} | {col('json', tps):.1f} | {100 * busy / wall:.1f}% | {col('plain', n_out):.0f} / {col('json', n_out):.0f} |")
EOF
metrics=$(curl -s "http://127.0.0.1:$port/metrics")
count=$(echo "$metrics" | awk '/^ferrite_structured_output_mask_seconds_count/ {print $2}')
sum=$(echo "$metrics" | awk '/^ferrite_structured_output_mask_seconds_sum/ {print $2}')
skipped=$(echo "$metrics" | awk '/^ferrite_structured_output_masks_skipped_total/ {print $2}')
echo
echo "server: $count masks computed, mean $(python3 -c "print(f'{1e6 * $sum / max($count, 1):.1f}')") µs; $skipped greedy tokens taken without a mask"
kill $spid 2>/dev/null || true
wait $spid 2>/dev/null || true
path=$("$ferrite" pull "$model" 2>/dev/null | tail -1)
(cd "$root" && cargo run --quiet --release -p ferrite-engine --example grammar_masks -- "$path" 20)
