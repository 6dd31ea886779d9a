//! Timing checks for the tests against the scripted mock: they hold on a loaded 2-vCPU host
//! (CI runs beside other work) and still fail on a wrong formula. A timed figure is checked two
//! ways:
//!
//! - **Against the client's raw event log** ([`check_against_events`], [`check_tasks`],
//!   [`check_throughput`]): the figure is recomputed here from the recorded timestamps,
//!   independently of `metrics.rs` and `report.rs`, and must agree to float rounding.
//!   Scheduling delay moves both sides alike, so this holds however busy the host is, and it is
//!   what catches a wrong formula (N_out where N_out − 1 belongs, TTFO taken for TTFT, think
//!   time left out of a task).
//! - **Against the script**: the mock sends no event before its deadline (deadlines run from
//!   the request's arrival) and the client's clock starts before the request leaves, so a
//!   scripted delay is a floor the measurement cannot go under ([`scripted_floor`]); above it a
//!   busy scheduler may add up to [`LATE_MS`] per sequential step (a call or a pause). Figures
//!   made of gaps between events (TPOT, ITL, output speed) have no floor: a late event
//!   lengthens one gap and shortens the next. Their medians over many gaps are compared with a
//!   wide two-sided margin ([`near_script`]); the raw-log check carries their formula.
#![allow(dead_code)] // each test binary uses part of this module

use ferrite_bench::client::RawEvent;
use ferrite_bench::run::RequestRecord;
use ferrite_bench::Report;
use ferrite_testkit::mock_openai::Script;
use std::time::Duration;

/// A mock with the given first-token delay and per-token time and a 5-token chat template;
/// other fields default.
pub fn script(ttft_ms: u64, per_token_ms: u64) -> Script {
    Script {
        ttft: Duration::from_millis(ttft_ms),
        per_token: Duration::from_millis(per_token_ms),
        template_tokens: 5,
        ..Script::default()
    }
}

/// What a busy scheduler may add to one sequential step of a scripted run. With a busy loop on
/// each of 2 cores (`scripts/stress-tests.sh`, 20 runs on an AMD EPYC), one call ran at most
/// 5 ms late and a four-step task 13.5 ms; 40 ms per step leaves a wide margin for a CI host
/// that is busier still.
pub const LATE_MS: f64 = 40.0;

/// Equal up to float rounding (sums and quotients computed in a different order).
pub fn exact(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= 1e-9 * want.abs().max(1.0),
        "{what}: got {got}, want {want}"
    );
}

/// With `FERRITE_TIMING_LOG=FILE` (`scripts/stress-tests.sh` sets it), every script check
/// appends `what, how far from the script, the allowance` to FILE, so a stress run can report
/// how close the worst case came to its bound.
fn log_margin(what: &str, off: f64, allowed: f64) {
    use std::io::Write;
    if let Some(path) = std::env::var_os("FERRITE_TIMING_LOG") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("FERRITE_TIMING_LOG is writable");
        writeln!(f, "{what}\t{off:.3}\t{allowed:.3}").expect("timing log write");
    }
}

/// A scripted delay is a floor: `want ≤ got ≤ want + max(5% of want, LATE_MS × steps)`.
pub fn scripted_floor(got: f64, want: f64, steps: usize, what: &str) {
    let slack = (0.05 * want).max(LATE_MS * steps as f64);
    log_margin(what, got - want, slack);
    assert!(
        got >= want - 1e-6 && got <= want + slack,
        "{what}: got {got:.3} ms, scripted {want:.3} ms (allowed: up to {slack:.0} ms late, never early)"
    );
}

/// A rate over a scripted duration is a ceiling: the run cannot be faster than its script, and
/// it is slower by at most the floor's allowance on the duration.
pub fn scripted_ceiling(got: f64, rate: f64, duration_ms: f64, steps: usize, what: &str) {
    let slack = (0.05 * duration_ms).max(LATE_MS * steps as f64);
    let lowest = rate * duration_ms / (duration_ms + slack);
    log_margin(what, (rate - got) / rate, (rate - lowest) / rate);
    assert!(
        got <= rate * (1.0 + 1e-9) && got >= lowest,
        "{what}: got {got:.3}, scripted {rate:.3} (allowed: down to {lowest:.3}, never above)"
    );
}

/// A median of gaps between events, within `rel` of the script on either side.
pub fn near_script(got: f64, want: f64, rel: f64, what: &str) {
    log_margin(what, (got - want).abs() / want, rel);
    assert!(
        (got - want).abs() <= rel * want,
        "{what}: got {got:.3}, scripted {want:.3} ± {:.0}%",
        rel * 100.0
    );
}

/// The median, as the report's percentiles interpolate (numpy's default).
fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty(), "median of nothing");
    v.sort_by(f64::total_cmp);
    let pos = 0.5 * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// An event that carries generated text: answer, reasoning or a tool call (written out here
/// rather than taken from the library, so the check does not share its definition).
fn carries_text(e: &RawEvent) -> bool {
    !(e.content.is_empty() && e.reasoning.is_empty() && e.tool_calls.is_empty())
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Every successful call's figures, recomputed from its last attempt's events with the
/// documented formulas (times since the scheduled send; N_out from the server's usage):
/// TTFT = first event with any text, TTFO = first with answer text, E2E = end of stream,
/// TPOT = (E2E − TTFT)/(N_out − 1), ITL = gaps between text events, per-request ITL = (last −
/// first text)/(N_out − 1), output speed = (N_out − 1)/(last − first text). Each must equal
/// the record's value, and each report median the median of the recomputed values. Returns how
/// many calls were checked.
pub fn check_against_events(r: &Report) -> usize {
    let mut cols: [(&str, Vec<f64>); 6] = [
        ("ttft_ms", vec![]),
        ("ttfo_ms", vec![]),
        ("e2e_ms", vec![]),
        ("tpot_ms", vec![]),
        ("itl_request_ms", vec![]),
        ("output_speed_tok_s", vec![]),
    ];
    let mut itl = Vec::new();
    for rec in r.records.iter().filter(|x| x.metrics.is_some()) {
        let m = rec.metrics.as_ref().unwrap();
        let at = rec.attempts.last().unwrap();
        let n = at
            .events
            .iter()
            .rev()
            .find_map(|e| e.usage)
            .expect("these checks need server usage")
            .completion_tokens;
        assert!(n > 1, "calls of one token have no TPOT to check");
        let text: Vec<f64> = at
            .events
            .iter()
            .filter(|e| carries_text(e))
            .map(|e| ms(e.t))
            .collect();
        let (first, last) = (text[0], text[text.len() - 1]);
        let ttfo = at
            .events
            .iter()
            .find(|e| !e.content.is_empty())
            .map(|e| ms(e.t));
        let e2e = ms(at.end);
        let want = [
            first,
            ttfo.unwrap_or(f64::NAN),
            e2e,
            (e2e - first) / (n - 1) as f64,
            (last - first) / (n - 1) as f64,
            (n - 1) as f64 / ((last - first) / 1e3),
        ];
        let got = [
            Some(m.ttft_ms),
            m.ttfo_ms,
            Some(m.e2e_ms),
            m.tpot_ms,
            m.itl_request_ms,
            m.output_speed_tok_s,
        ];
        for ((name, col), (g, w)) in cols.iter_mut().zip(got.iter().zip(want)) {
            if *name == "ttfo_ms" && ttfo.is_none() {
                assert!(g.is_none(), "ttfo_ms without answer text");
                continue;
            }
            let g = g.unwrap_or_else(|| panic!("{name} missing for call {}", rec.index));
            exact(
                g,
                w,
                &format!("{name} of call ({}, {})", rec.index, rec.call),
            );
            col.push(w);
        }
        let gaps: Vec<f64> = text.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(m.itl_ms.len(), gaps.len(), "ITL gaps of call {}", rec.index);
        for (g, w) in m.itl_ms.iter().zip(&gaps) {
            exact(*g, *w, "ITL gap");
        }
        itl.extend(gaps);
    }
    let checked = cols[0].1.len();
    for (name, col) in cols.into_iter().chain([("itl_ms", itl)]) {
        if col.is_empty() {
            continue;
        }
        assert_eq!(r.metrics[name]["n"], col.len(), "{name} samples");
        exact(
            r.metrics[name]["p50"].as_f64().unwrap(),
            median(col),
            &format!("{name} p50"),
        );
    }
    checked
}

/// When a record's last attempt ended, since the start of the measured phase.
fn end_ms(rec: &RequestRecord) -> f64 {
    rec.scheduled_ms + ms(rec.attempts.last().unwrap().end)
}

/// Each completed task's wall-clock is the end of its last call (any copy) minus its scheduled
/// start, and the report's median is theirs. Returns the recomputed wall-clocks.
pub fn check_tasks(r: &Report) -> Vec<f64> {
    let mut walls = Vec::new();
    for t in r.task_records.iter().filter(|t| t.completed) {
        let end = r
            .records
            .iter()
            .filter(|x| x.index == t.index)
            .map(end_ms)
            .fold(f64::MIN, f64::max);
        exact(t.elapsed_ms, end - t.scheduled_ms, "task wall-clock");
        walls.push(end - t.scheduled_ms);
    }
    exact(
        r.tasks["wall_clock_ms"]["p50"].as_f64().unwrap(),
        median(walls.clone()),
        "task wall-clock p50",
    );
    walls
}

/// Whole-run output throughput: Σ N_out (server usage) over the last end minus the first
/// scheduled send. Returns that duration in ms.
pub fn check_throughput(r: &Report) -> f64 {
    let first = r
        .records
        .iter()
        .map(|x| x.scheduled_ms)
        .fold(f64::MAX, f64::min);
    let last = r.records.iter().map(end_ms).fold(f64::MIN, f64::max);
    let tokens: usize = r
        .records
        .iter()
        .filter(|x| x.metrics.is_some())
        .filter_map(|x| x.attempts.last().unwrap().usage())
        .map(|u| u.completion_tokens)
        .sum();
    exact(
        r.throughput["output_tok_s"].as_f64().unwrap(),
        tokens as f64 / ((last - first) / 1e3),
        "output throughput",
    );
    last - first
}

/// Steady-state output throughput: the window runs from the start of the `concurrency`-th call
/// to the start of the last; a call's N_out is spread evenly over its text events, and the
/// events inside the window count. Returns that window in ms.
pub fn check_steady(r: &Report, concurrency: usize) -> f64 {
    let mut starts: Vec<f64> = r.records.iter().map(|x| x.scheduled_ms).collect();
    starts.sort_by(f64::total_cmp);
    let (a, b) = (starts[concurrency - 1], starts[starts.len() - 1]);
    let mut tokens = 0.0;
    for rec in r.records.iter().filter(|x| x.metrics.is_some()) {
        let at = rec.attempts.last().unwrap();
        let n = at.usage().unwrap().completion_tokens as f64;
        let times: Vec<f64> = at
            .events
            .iter()
            .filter(|e| carries_text(e))
            .map(|e| rec.scheduled_ms + ms(e.t))
            .collect();
        let inside = times.iter().filter(|&&t| (a..=b).contains(&t)).count();
        tokens += n / times.len() as f64 * inside as f64;
    }
    let st = &r.throughput["steady_state"];
    exact(
        st["output_tok_s"].as_f64().unwrap(),
        tokens / ((b - a) / 1e3),
        "steady output tok/s",
    );
    b - a
}
