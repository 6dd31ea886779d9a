//! `ferrite bench verify`: check claims such as `output_speed_tok_s.p50>=230` or
//! `ttft_ms.p50<=1000` against a run, with a confidence interval for each measured value and a
//! list of what the run did not cover.

use serde::Serialize;

use crate::metrics::RequestMetrics;
use crate::report::Report;
use crate::{Error, Result};

/// Comparison of a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Op {
    /// `>=`
    Ge,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `<`
    Lt,
}

impl Op {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Ge => a >= b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Lt => a < b,
        }
    }
}

/// A parsed claim: `metric.stat OP value`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Claim {
    /// As written.
    pub text: String,
    /// Per-request metric (`ttft_ms`, `tpot_ms`, `e2e_ms`, `output_speed_tok_s`, …).
    pub metric: String,
    /// `mean`, `p50`, `p90`, `p95`, `p99`, `min` or `max`.
    pub stat: String,
    /// Comparison.
    pub op: Op,
    /// Claimed value.
    pub value: f64,
}

const METRICS: [&str; 6] = [
    "ttft_ms",
    "ttfo_ms",
    "tpot_ms",
    "e2e_ms",
    "output_speed_tok_s",
    "prefill_tok_s",
];
const STATS: [&str; 7] = ["mean", "p50", "p90", "p95", "p99", "min", "max"];

/// Parse `metric.stat<op>value`.
pub fn parse_claim(s: &str) -> Result<Claim> {
    let t = s.replace(' ', "");
    let (pos, op, len) = [(">=", Op::Ge), ("<=", Op::Le), (">", Op::Gt), ("<", Op::Lt)]
        .iter()
        .find_map(|(sym, op)| t.find(sym).map(|p| (p, *op, sym.len())))
        .ok_or_else(|| {
            Error::Config(format!(
                "claim {s:?}: expected metric.stat>=value (or <=, >, <)"
            ))
        })?;
    let (lhs, rhs) = (&t[..pos], &t[pos + len..]);
    let (metric, stat) = lhs
        .rsplit_once('.')
        .ok_or_else(|| Error::Config(format!("claim {s:?}: expected metric.stat on the left")))?;
    if !METRICS.contains(&metric) {
        return Err(Error::Config(format!(
            "claim {s:?}: unknown metric {metric:?} (one of {})",
            METRICS.join(", ")
        )));
    }
    if !STATS.contains(&stat) {
        return Err(Error::Config(format!(
            "claim {s:?}: unknown statistic {stat:?} (one of {})",
            STATS.join(", ")
        )));
    }
    let value: f64 = rhs
        .parse()
        .map_err(|_| Error::Config(format!("claim {s:?}: {rhs:?} is not a number")))?;
    Ok(Claim {
        text: s.to_string(),
        metric: metric.into(),
        stat: stat.into(),
        op,
        value,
    })
}

/// The verdict on one claim.
#[derive(Debug, Clone, Serialize)]
pub struct ClaimResult {
    /// The claim.
    pub claim: Claim,
    /// Measured value of the statistic.
    pub measured: Option<f64>,
    /// 95% confidence interval of the statistic (order-statistic interval for percentiles,
    /// normal interval for the mean; none for min/max).
    pub ci95: Option<(f64, f64)>,
    /// Whether the measured value satisfies the claim.
    pub holds: bool,
    /// Whether the whole confidence interval satisfies it.
    pub holds_with_confidence: bool,
    /// Samples.
    pub n: usize,
}

fn values(report: &Report, metric: &str) -> Vec<f64> {
    let get = |m: &RequestMetrics| -> Option<f64> {
        match metric {
            "ttft_ms" => Some(m.ttft_ms),
            "ttfo_ms" => m.ttfo_ms,
            "tpot_ms" => m.tpot_ms,
            "e2e_ms" => Some(m.e2e_ms),
            "output_speed_tok_s" => m.output_speed_tok_s,
            "prefill_tok_s" => m.prefill_tok_s,
            _ => None,
        }
    };
    let mut v: Vec<f64> = report
        .records
        .iter()
        .filter_map(|r| r.metrics.as_ref().and_then(get))
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Evaluate `claim` on `report`.
pub fn evaluate(report: &Report, claim: &Claim) -> ClaimResult {
    let v = values(report, &claim.metric);
    let n = v.len();
    let stats = crate::metrics::Stats::of(&v);
    let (measured, ci) = if n == 0 {
        (None, None)
    } else {
        match claim.stat.as_str() {
            "mean" => {
                let var =
                    v.iter().map(|x| (x - stats.mean).powi(2)).sum::<f64>() / (n.max(2) - 1) as f64;
                let h = 1.96 * (var / n as f64).sqrt();
                (Some(stats.mean), Some((stats.mean - h, stats.mean + h)))
            }
            "min" => (Some(stats.min), None),
            "max" => (Some(stats.max), None),
            p => {
                let (q, x) = match p {
                    "p50" => (0.5, stats.p50),
                    "p90" => (0.9, stats.p90),
                    "p95" => (0.95, stats.p95),
                    _ => (0.99, stats.p99),
                };
                // Distribution-free interval: ranks n·q ± 1.96·sqrt(n·q·(1−q)).
                let (c, h) = (n as f64 * q, 1.96 * (n as f64 * q * (1.0 - q)).sqrt());
                let lo = ((c - h).floor().max(1.0) as usize).min(n) - 1;
                let hi = ((c + h).ceil().max(1.0) as usize).min(n) - 1;
                (Some(x), Some((v[lo], v[hi])))
            }
        }
    };
    let holds = measured.is_some_and(|m| claim.op.holds(m, claim.value));
    let holds_with_confidence = match (ci, measured) {
        (Some((lo, hi)), Some(_)) => {
            claim.op.holds(lo, claim.value) && claim.op.holds(hi, claim.value)
        }
        (None, Some(m)) => claim.op.holds(m, claim.value),
        _ => false,
    };
    ClaimResult {
        claim: claim.clone(),
        measured,
        ci95: ci,
        holds,
        holds_with_confidence,
        n,
    }
}

/// Reader's-checklist items this run did not cover.
pub fn not_covered(report: &Report) -> Vec<&'static str> {
    let mut out = Vec::new();
    if report.config.concurrency <= 1 && report.config.rate.is_none() {
        out.push("load: only one request at a time (interactive); no concurrent load");
    }
    if report.config.retries == 0 {
        out.push("errors and retries: no retries allowed; failures end requests");
    }
    if report.cost.is_null() {
        out.push("cost: no prices given, cost per request or task not computed");
    }
    out.push("quality: output quality not compared (bench quality)");
    if !report.config.workload.is_agent() {
        out.push("agent tasks: single-call requests only, no multi-call task time");
    }
    out
}
