#!/usr/bin/env bash
# Speculative decoding on and off against one `ferrite serve`, measured with `ferrite bench` in
# one run: for each prompt of scripts/spec-prompts.jsonl (code rename, verbatim quote, tool
# output echo, free-form chat), greedy requests alternate between speculation off (the
# per-request `"speculative": false`) and on (the server's --speculative), REPS times each,
# ending at EOS or MAX_TOKENS. Prints a Markdown table for BENCHMARKS.md: output speed (tokens
# after the first / time after the first, per request, median), speedup (median over the
# pairs of on / the off run just before it, and the pairs' range), acceptance from the
# server's usage, and whether the two answers were identical. Idle machine, never during a build.
#
#   scripts/spec-bench.sh                                    # smollm2, ngram:k=4,min_n=2,max_n=4
#   SPEC=draft:smollm2,k=4 MODEL=/tmp/smol-f16.gguf scripts/spec-bench.sh
set -euo pipefail
source "$(dirname "$0")/common.sh"
model=${MODEL:-smollm2}
threads=${THREADS:-2}
spec=${SPEC:-ngram:k=4,min_n=2,max_n=4}
reps=${REPS:-3}
max=${MAX_TOKENS:-160}
work=${WORK:-/tmp/ferrite-spec-bench}
ferrite=$(ferrite_bin)
rm -rf "$work"; mkdir -p "$work"
port=18090
"$ferrite" serve -m "$model" --served-model-name m --port $port -t "$threads" \
  --speculative "$spec" 2>"$work/serve.log" &
spid=$!
trap 'kill $spid 2>/dev/null || true' EXIT
wait_for "http://127.0.0.1:$port/ready"
stamp "threads: $threads  model: $model  speculative: $spec  reps: $reps  max tokens: $max"
bench() {  # bench OUT EXTRA_BODY PROMPT_FILE
  "$ferrite" bench run --url "http://127.0.0.1:$port" --model m --workload "file:$3" --requests 1 \
    --warmup 0 --output-tokens "$max" --extra-body "$2" --json "$1" >/dev/null
}
n=$(grep -c . "$root/scripts/spec-prompts.jsonl")
for i in $(seq "$n"); do
  sed -n "${i}p" "$root/scripts/spec-prompts.jsonl" >"$work/p$i.jsonl"
  [[ $i == 1 ]] && bench "$work/warmup.json" '{"ignore_eos": false}' "$work/p1.jsonl"
  for r in $(seq "$reps"); do
    bench "$work/off-$i-$r.json" '{"ignore_eos": false, "speculative": false}' "$work/p$i.jsonl"
    bench "$work/on-$i-$r.json" '{"ignore_eos": false}' "$work/p$i.jsonl"
  done
done
python3 - "$work" "$n" "$reps" "$root/scripts/spec-prompts.jsonl" <<'PY'
import json, statistics, sys
work, n, reps, prompts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
names = [json.loads(l)["name"] for l in open(prompts) if l.strip()]
def load(kind, i, r):
    d = json.load(open(f"{work}/{kind}-{i}-{r}.json"))
    rec = d["records"][0]
    text = "".join(e["content"] for e in rec["attempts"][-1]["events"])
    return d["metrics"]["output_speed_tok_s"]["p50"], d.get("speculative") or {}, text, rec["metrics"]["output_tokens"]
print("| workload | output tok/s off | output tok/s on | speedup | pairs min–max | output tokens | drafted | accepted | acceptance | accepted per output token | identical |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for i in range(1, n + 1):
    offs, ons, d, a, outs, same = [], [], 0, 0, 0, True
    for r in range(1, reps + 1):
        s0, _, t0, _ = load("off", i, r)
        s1, sp, t1, n1 = load("on", i, r)
        offs.append(s0); ons.append(s1); outs += n1; same &= t0 == t1
        d += sp.get("draft_tokens", 0); a += sp.get("accepted_tokens", 0)
    off, on = statistics.median(offs), statistics.median(ons)
    # Each on run is compared with the off run just before it (same load on a shared host).
    ratios = [b / a for a, b in zip(offs, ons)]
    print(f"| {names[i-1]} | {off:.1f} | {on:.1f} | {statistics.median(ratios):.2f}x | "
          f"{min(ratios):.2f}–{max(ratios):.2f} | {outs // reps} | {d} | {a} | "
          f"{a / d if d else 0:.2f} | {a / outs if outs else 0:.2f} | {'yes' if same else 'NO'} |")
PY
