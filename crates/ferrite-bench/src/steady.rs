//! Steady-state throughput: the part of a run when the load was what was asked for, without the
//! ramp-up (fewer than `concurrency` requests started yet) and the ramp-down (no request left to
//! start, in-flight ones draining).

use serde_json::{json, Value};

use crate::run::RequestRecord;

/// Throughput over the window from the start of the `concurrency`-th request to the start of the
/// last one (closed loop; open loop uses concurrency 1: first to last arrival). Output tokens
/// are attributed to the text events that carried them (a request's N_out spread evenly over
/// its text events, exact when each chunk is one token) and counted if the event falls inside
/// the window; requests count when they end inside it. `null` (with why) when the window is
/// shorter than `min_window_s`.
pub fn steady_state(records: &[RequestRecord], concurrency: usize, min_window_s: f64) -> Value {
    let mut starts: Vec<f64> = records.iter().map(|r| r.scheduled_ms).collect();
    starts.sort_by(f64::total_cmp);
    let (Some(&a), Some(&b)) = (starts.get(concurrency.max(1) - 1), starts.last()) else {
        return json!({"window": null, "why": "fewer requests than the concurrency"});
    };
    let secs = (b - a) / 1e3;
    if secs < min_window_s {
        return json!({"window": null, "why": format!(
            "steady window {secs:.2} s is shorter than {min_window_s} s: send more requests"
        )});
    }
    let (mut tokens, mut ended) = (0f64, 0usize);
    for r in records {
        let (Some(m), Some(at)) = (&r.metrics, r.attempts.last()) else {
            continue;
        };
        let times: Vec<f64> = at
            .events
            .iter()
            .filter(|e| e.has_text())
            .map(|e| r.run_ms(e.t))
            .collect();
        if !times.is_empty() {
            let per = m.output_tokens as f64 / times.len() as f64;
            tokens += per * times.iter().filter(|&&t| t >= a && t <= b).count() as f64;
        }
        let end = r.run_ms(at.end);
        ended += usize::from(end >= a && end <= b);
    }
    json!({
        "window_ms": [a, b],
        "duration_s": secs,
        "output_tok_s": tokens / secs,
        "requests_per_s": ended as f64 / secs,
    })
}
