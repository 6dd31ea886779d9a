//! Arrival times of the open loop: one seeded xorshift generator, gamma-distributed gaps
//! (vLLM's `--burstiness`; shape 1 is Poisson).

/// xorshift64 step: the run's one seeded generator (prompts, arrivals).
pub(crate) fn next_u64(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Uniform in (0, 1).
fn uniform(x: &mut u64) -> f64 {
    ((next_u64(x) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// Gamma(shape, 1) by Marsaglia and Tsang (shape < 1 via the boost `U^(1/shape)`).
fn gamma(x: &mut u64, shape: f64) -> f64 {
    if shape < 1.0 {
        return gamma(x, shape + 1.0) * uniform(x).powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        // Standard normal by Box-Muller.
        let z = (-2.0 * uniform(x).ln()).sqrt() * (std::f64::consts::TAU * uniform(x)).cos();
        let v = (1.0 + c * z).powi(3);
        if v > 0.0 && uniform(x).ln() < 0.5 * z * z + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// Seconds between arrivals at `rate` per second with gamma shape `burstiness` (mean 1/rate).
pub fn interarrival(x: &mut u64, rate: f64, burstiness: f64) -> f64 {
    gamma(x, burstiness) / (burstiness * rate)
}

#[cfg(test)]
mod tests {
    #[test]
    fn interarrival_times_have_the_asked_mean_and_spread() {
        for b in [0.5, 1.0, 4.0] {
            let mut x = 12345u64;
            let n = 40_000;
            let v: Vec<f64> = (0..n)
                .map(|_| super::interarrival(&mut x, 10.0, b))
                .collect();
            let mean = v.iter().sum::<f64>() / n as f64;
            let var = v.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / n as f64;
            // Gamma(b) / (10 b): mean 0.1, squared coefficient of variation 1/b.
            assert!((mean - 0.1).abs() < 0.003, "burstiness {b}: mean {mean}");
            let cv2 = var / (mean * mean);
            assert!(
                (cv2 - 1.0 / b).abs() < 0.06 / b.min(1.0),
                "burstiness {b}: cv² {cv2}"
            );
        }
    }
}
