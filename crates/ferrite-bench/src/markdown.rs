//! The human-readable report: provenance line, workload actually achieved, every metric with its
//! formula, throughput, request outcomes and cost (`ferrite bench run` prints it;
//! `--markdown FILE` writes it).

use std::fmt::Write;

use serde_json::Value;

use crate::report::Report;

/// The metrics shown, in order.
pub const METRICS: [&str; 8] = [
    "ttft_ms",
    "ttfo_ms",
    "tpot_ms",
    "itl_ms",
    "itl_request_ms",
    "e2e_ms",
    "output_speed_tok_s",
    "prefill_tok_s",
];

/// Render `report` as Markdown.
pub fn render_markdown(report: &Report) -> String {
    let mut o = String::new();
    let p = &report.provenance;
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let _ = writeln!(
        o,
        "{} · {} · model {} · fingerprint {} · client {}",
        s(&p["date"]),
        s(&p["endpoint"]),
        report.config.model,
        s(&p["system_fingerprint"]),
        s(&p["client_cpu"]),
    );
    let w = &report.workload;
    let load = match report.config.rate {
        Some(r) => format!("Poisson arrivals at {r} req/s"),
        None => format!("concurrency {}", report.config.concurrency),
    };
    let _ = writeln!(
        o,
        "\nworkload: {}; warm-up: {}; input {}, achieved p50 {} ({}{}); output {} requested, achieved p50 {}, {} mismatches; {load}\n",
        s(&w["kind"]),
        s(&w["warm_up"]),
        match w["input_tokens_requested"].as_u64() {
            Some(n) => format!("{n} tokens requested"),
            None => "as the prompts are".to_string(),
        },
        w["input_tokens_achieved"]["p50"],
        s(&w["token_source"]),
        match w["input_length_mismatches"].as_u64() {
            Some(0) | None => String::new(),
            Some(k) => format!(", {k} prompts not of the requested length"),
        },
        w["output_tokens_requested"],
        w["output_tokens_achieved"]["p50"],
        w["output_length_mismatches"],
    );
    let cached = &w["input_cached_tokens"];
    if cached["max"].as_f64().unwrap_or(0.0) > 0.0 {
        let _ = writeln!(
            o,
            "prompt tokens served from the server's cache (usage.cached_tokens): p50 {}, max {} of {} prompts reporting it; more than the chat template's shared start means the prompts were not all new to the server\n",
            cached["p50"], cached["max"], cached["n"],
        );
    }
    let _ = writeln!(o, "| metric | p50 | p90 | p99 | mean | n | formula |");
    let _ = writeln!(o, "|---|---|---|---|---|---|---|");
    let f = |x: &Value| x.as_f64().map_or("-".into(), |v| format!("{v:.1}"));
    for k in METRICS {
        let m = &report.metrics[k];
        let _ = writeln!(
            o,
            "| {k} | {} | {} | {} | {} | {} | {} |",
            f(&m["p50"]),
            f(&m["p90"]),
            f(&m["p99"]),
            f(&m["mean"]),
            m["n"],
            s(&report.formulas[k])
        );
    }
    let t = &report.throughput;
    let r = &report.requests;
    let n = |v: &Value| v.as_f64().unwrap_or(0.0);
    let _ = writeln!(
        o,
        "\nthroughput: {:.2} req/s, {:.1} output tok/s, {:.1} total tok/s over {:.1} s\nrequests: {} completed, {} failed, {} attempts ({} retries, {} re-sent after the server closed a pooled connection), error rate {:.3}",
        n(&t["requests_per_s"]),
        n(&t["output_tok_s"]),
        n(&t["total_tok_s"]),
        n(&t["duration_s"]),
        r["completed"],
        r["failed"],
        r["attempts"],
        r["retries"],
        r["stale_connection_resends"],
        n(&r["error_rate"]),
    );
    let tk = &report.tasks;
    if report.config.workload.is_agent() {
        let w = &tk["wall_clock_ms"];
        let _ = writeln!(
            o,
            "tasks: {} completed, {} failed; wall-clock p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, mean {:.0} ms ({:.1} calls, {:.0} ms think time per task)",
            tk["completed"],
            tk["failed"],
            n(&w["p50"]),
            n(&w["p90"]),
            n(&w["p99"]),
            n(&w["mean"]),
            n(&tk["calls_per_task"]["mean"]),
            n(&tk["think_ms"]["mean"]),
        );
    }
    let st = &t["steady_state"];
    if st["output_tok_s"].is_number() {
        let _ = writeln!(
            o,
            "steady state (ramp-up and drain excluded): {:.1} output tok/s, {:.2} req/s over {:.1} s",
            n(&st["output_tok_s"]),
            n(&st["requests_per_s"]),
            n(&st["duration_s"]),
        );
    } else if let Some(why) = st["why"].as_str() {
        let _ = writeln!(o, "steady state: none ({why})");
    }
    let g = &t["goodput"];
    if !g.is_null() {
        let slos: Vec<String> = g["slos"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| format!("{} {} {}", s(&x["metric"]), s(&x["op"]), x["value"]))
                    .collect()
            })
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "goodput ({}): {} requests met every SLO ({:.1}%), {:.2} req/s, {:.1} output tok/s",
            slos.join(", "),
            g["requests_meeting_all"],
            100.0 * n(&g["share_of_requests"]),
            n(&g["requests_per_s"]),
            n(&g["output_tok_s"]),
        );
    }
    let sp = &report.speculative;
    if !sp.is_null() {
        let _ = writeln!(
            o,
            "speculative decoding (server usage): {} drafted, {} accepted, acceptance {:.2}, {:.2} of output tokens from accepted drafts",
            sp["draft_tokens"],
            sp["accepted_tokens"],
            n(&sp["acceptance_rate"]),
            n(&sp["accepted_per_output_token"]),
        );
    }
    for (name, v) in [
        ("tool calls", &report.tool_calls),
        ("structured answers", &report.structured),
    ] {
        if !v.is_null() {
            let _ = writeln!(
                o,
                "{name}: {} of {} valid ({:.1}%; name known, arguments validate against the schema)",
                v["valid"],
                v["checked"],
                100.0 * n(&v["valid_rate"]),
            );
        }
    }
    if !report.cost.is_null() {
        let c = &report.cost;
        let _ = writeln!(
            o,
            "cost: ${:.6} total, ${:.6} per completed request, ${:.6} per completed task (server usage; cached tokens at the cached price)",
            n(&c["total_usd"]),
            n(&c["per_completed_request_usd"]),
            n(&c["per_completed_task_usd"]),
        );
    }
    o
}
