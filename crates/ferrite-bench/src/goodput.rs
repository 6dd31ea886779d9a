//! Goodput under service-level objectives: the requests that met every per-request SLO
//! (`--slo ttft_ms<=500 --slo tpot_ms<=50`), as a share of all measured requests (failed ones
//! count as missing) and as a rate over the run.

use serde::Serialize;
use serde_json::{json, Value};

use crate::metrics::RequestMetrics;
use crate::{Error, Result};

/// One per-request objective: `metric op value`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Slo {
    /// `ttft_ms`, `ttfo_ms`, `tpot_ms`, `e2e_ms`, `itl_max_ms`, `output_speed_tok_s` or
    /// `prefill_tok_s`.
    pub metric: String,
    /// `<=` or `>=`.
    pub op: String,
    /// Threshold.
    pub value: f64,
}

const METRICS: [&str; 7] = [
    "ttft_ms",
    "ttfo_ms",
    "tpot_ms",
    "e2e_ms",
    "itl_max_ms",
    "output_speed_tok_s",
    "prefill_tok_s",
];

impl Slo {
    /// Parse `metric<=value` or `metric>=value`.
    pub fn parse(s: &str) -> Result<Slo> {
        let (metric, op, value) = ["<=", ">="]
            .iter()
            .find_map(|op| s.split_once(op).map(|(m, v)| (m.trim(), *op, v.trim())))
            .ok_or_else(|| {
                Error::Config(format!(
                    "SLO {s:?}: expected metric<=value or metric>=value"
                ))
            })?;
        if !METRICS.contains(&metric) {
            return Err(Error::Config(format!(
                "SLO {s:?}: unknown metric {metric:?} (expected one of {})",
                METRICS.join(", ")
            )));
        }
        let value: f64 = value
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| Error::Config(format!("SLO {s:?}: {value:?} is not a number")))?;
        Ok(Slo {
            metric: metric.to_string(),
            op: op.to_string(),
            value,
        })
    }

    /// The request's value of this metric, if it has one.
    fn measure(&self, m: &RequestMetrics) -> Option<f64> {
        match self.metric.as_str() {
            "ttft_ms" => Some(m.ttft_ms),
            "ttfo_ms" => m.ttfo_ms,
            "tpot_ms" => m.tpot_ms,
            "e2e_ms" => Some(m.e2e_ms),
            "itl_max_ms" => m.itl_ms.iter().copied().reduce(f64::max),
            "output_speed_tok_s" => m.output_speed_tok_s,
            _ => m.prefill_tok_s,
        }
    }

    /// Whether `m` meets it; a request without the metric (e.g. TPOT of a one-token answer)
    /// does not.
    pub fn met(&self, m: &RequestMetrics) -> bool {
        self.measure(m).is_some_and(|v| {
            if self.op == "<=" {
                v <= self.value
            } else {
                v >= self.value
            }
        })
    }
}

/// Goodput of a run: `metrics` has one entry per measured request (`None` = failed), over
/// `secs` seconds. `null` when no SLO was given.
pub fn goodput(slos: &[Slo], metrics: &[Option<&RequestMetrics>], secs: f64) -> Value {
    if slos.is_empty() {
        return Value::Null;
    }
    let good: Vec<&RequestMetrics> = metrics
        .iter()
        .filter_map(|m| *m)
        .filter(|m| slos.iter().all(|s| s.met(m)))
        .collect();
    let tokens: usize = good.iter().map(|m| m.output_tokens).sum();
    json!({
        "slos": slos,
        "requests_meeting_all": good.len(),
        "share_of_requests": good.len() as f64 / metrics.len().max(1) as f64,
        "requests_per_s": good.len() as f64 / secs,
        "output_tok_s": tokens as f64 / secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slos_parse_and_refuse_clearly() {
        let s = Slo::parse("ttft_ms <= 500").unwrap();
        assert_eq!(
            (s.metric.as_str(), s.op.as_str(), s.value),
            ("ttft_ms", "<=", 500.0)
        );
        assert_eq!(Slo::parse("output_speed_tok_s>=30").unwrap().op, ">=");
        for (bad, want) in [
            ("ttft_ms<500", "expected metric<=value"),
            ("latency<=5", "unknown metric \"latency\""),
            ("ttft_ms<=fast", "is not a number"),
            ("ttft_ms<=inf", "is not a number"),
        ] {
            let e = Slo::parse(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }
}
