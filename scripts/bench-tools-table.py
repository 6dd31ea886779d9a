#!/usr/bin/env python3
"""Reads the result files bench-tools-compare.sh left in WORK and prints one Markdown table:
TTFT and ITL medians (each tool under its own definition), prompt tokens the server saw, E2E
and errors, with the ratio to ferrite bench."""
import json
import sys
from pathlib import Path

work = Path(sys.argv[1])
rows = []

def ferrite_row(name, path):
    f = json.loads(path.read_text())
    m = f["metrics"]
    return (name, m["ttft_ms"]["p50"], m["itl_ms"]["p50"], m["tpot_ms"]["p50"],
            m["e2e_ms"]["p50"], f["workload"]["input_tokens_achieved"]["p50"],
            f["requests"]["failed"])


rows.append(ferrite_row("ferrite bench", work / "ferrite.json"))

g = json.loads((work / "guidellm.json").read_text())["benchmarks"][0]["metrics"]
med = lambda k: g[k]["successful"]["median"]
rows.append(("guidellm", med("time_to_first_token_ms"), med("inter_token_latency_ms"),
             med("time_per_output_token_ms"), 1e3 * med("request_latency"),
             med("prompt_token_count"), g["request_totals"]["errored"]))

a = json.loads((work / "aiperf" / "profile_export_aiperf.json").read_text())
ap = lambda k: a[k]["p50"]
usage_in = a.get("usage_prompt_tokens", {}).get("p50")
rows.append(("aiperf", ap("time_to_first_token"), ap("inter_token_latency"),
             ap("inter_token_latency"), ap("request_latency"), usage_in,
             a.get("error_request_count", {}).get("avg", 0)))

if (work / "ferrite-matched.json").exists():
    rows.append(ferrite_row("ferrite bench, run last, at the others' prompt length",
                            work / "ferrite-matched.json"))
base = rows[0]
print("| tool | TTFT p50 (ms) | ITL p50 (ms) | TPOT-like p50 (ms) | E2E p50 (ms) | prompt tokens (server) | failed | TTFT / ferrite | ITL / ferrite |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r[0]} | {r[1]:.1f} | {r[2]:.2f} | {r[3]:.2f} | {r[4]:.0f} | {r[5]} | {r[6]} | "
          f"{r[1] / base[1]:.2f} | {r[2] / base[2]:.2f} |")
print()
print("Definitions: ferrite ITL = per-chunk gaps pooled, TPOT = (E2E − TTFT)/(N_out − 1); "
      "guidellm ITL = (t_last − t_first)/(N_out − 1) per request, its TPOT = E2E/N_out "
      "(first token included); aiperf ITL = (E2E − TTFT)/(OSL − 1) per request.")
