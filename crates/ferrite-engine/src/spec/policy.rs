//! How many drafts to verify. A draft row is not free: on a CPU the forward pass of m rows costs
//! far more than one row (m = 5 about 2.2 single-row steps with the streaming kernels), and the
//! price differs per machine, model and batch. So the engine measures what a forward pass of m
//! rows costs ([`StepCosts`]), keeps per request an estimate of how likely the next draft token
//! is to be accepted ([`Acceptance`]), and verifies the number of drafts `k` that maximises the
//! expected tokens per second of the step ([`choose_k`]), zero when drafting would not pay.
//! The choice never changes what is emitted (every emitted token is the target's own sample),
//! only how fast.

/// Row counts whose step time is tracked; larger steps are not recorded (long prefill chunks)
/// and are estimated from the prior shape.
const TRACKED_ROWS: usize = 64;
/// Cost of each extra row relative to a single-row step before any multi-row step has been
/// measured (SmolLM2 Q4_1 on 2 Zen 4 cores measured 0.26–0.4, logits rows included).
const PRIOR_ROW_COST: f64 = 0.3;
/// Row counts whose measurements set the per-row slope of the prior: the streaming kernels'
/// range, where cost grows about linearly (more rows switch to repacked panels, whose fixed
/// cost would distort the slope).
const SLOPE_ROWS: std::ops::RangeInclusive<usize> = 2..=8;
/// Most weight a row count's measured mean carries against the prior (in observations).
const MAX_WEIGHT: f64 = 16.0;
/// Per step, every entry's weight decays by this factor (half-life ≈ 350 steps), so a
/// measurement that is no longer repeated (a row count that stopped being chosen, say during
/// a co-tenant's burst) returns to the prior instead of locking the choice in, while plain
/// decoding between speculative stretches does not erase what was learned.
const WEIGHT_DECAY: f64 = 0.998;

fn prior_shape(rows: usize, slope: f64) -> f64 {
    1.0 + slope * (rows.max(1) - 1) as f64
}

/// Measured seconds of a forward pass by its number of rows (tokens), shrunk towards a linear
/// prior: the single-row cost plus a per-row slope, both from the measurements.
#[derive(Debug, Clone)]
pub struct StepCosts {
    mean: [f64; TRACKED_ROWS + 1],
    weight: [f64; TRACKED_ROWS + 1],
}

impl Default for StepCosts {
    fn default() -> Self {
        StepCosts {
            mean: [0.0; TRACKED_ROWS + 1],
            weight: [0.0; TRACKED_ROWS + 1],
        }
    }
}

impl StepCosts {
    /// Record one forward pass of `rows` rows that took `secs`.
    pub fn record(&mut self, rows: usize, secs: f64) {
        for w in &mut self.weight {
            *w *= WEIGHT_DECAY;
        }
        if rows == 0 || rows > TRACKED_ROWS || !secs.is_finite() || secs <= 0.0 {
            return;
        }
        let (m, w) = (&mut self.mean[rows], &mut self.weight[rows]);
        *m = (*m * *w + secs) / (*w + 1.0);
        *w = (*w + 1.0).min(MAX_WEIGHT);
    }

    /// The prior's single-row seconds and per-row slope (relative to one row). The slope is
    /// the weighted mean of what the measured 2–8-row steps imply, [`PRIOR_ROW_COST`] before
    /// any; without a single-row measurement, the best-measured row count sets the scale
    /// (1.0 before any measurement: costs are then in prior units, which only their ratios use).
    fn prior(&self) -> (f64, f64) {
        let mut slope = PRIOR_ROW_COST;
        if self.weight[1] > 0.0 {
            let (mut sum, mut total) = (0.0, 0.0);
            for m in SLOPE_ROWS {
                let w = self.weight[m];
                if w > 0.0 {
                    sum += w * (self.mean[m] / self.mean[1] - 1.0) / (m - 1) as f64;
                    total += w;
                }
            }
            if total > 0.0 {
                // The prior's own weight keeps one noisy step from setting the slope.
                slope = ((sum + PRIOR_ROW_COST) / (total + 1.0)).max(0.0);
            }
            return (self.mean[1], slope);
        }
        let best = (1..=TRACKED_ROWS).max_by(|&a, &b| self.weight[a].total_cmp(&self.weight[b]));
        match best {
            Some(m) if self.weight[m] > 0.0 => (self.mean[m] / prior_shape(m, slope), slope),
            _ => (1.0, slope),
        }
    }

    /// Whether any forward pass has been recorded (recently enough to still count).
    pub fn measured(&self) -> bool {
        self.weight.iter().any(|&w| w > 1e-3)
    }

    /// Estimated seconds of a forward pass of `rows` rows, never below that of fewer rows.
    pub fn cost(&self, rows: usize) -> f64 {
        let (scale, slope) = self.prior();
        let estimate = |m: usize| {
            let prior = scale * prior_shape(m, slope);
            if m > TRACKED_ROWS {
                return prior;
            }
            // The prior counts as one observation.
            (self.mean[m] * self.weight[m] + prior) / (self.weight[m] + 1.0)
        };
        (1..=rows.max(1)).map(estimate).fold(0.0, f64::max)
    }
}

/// Hits and misses with older observations fading.
#[derive(Debug, Clone, Copy)]
struct Odds {
    hit: f64,
    miss: f64,
}

impl Odds {
    fn rate(&self) -> f64 {
        self.hit / (self.hit + self.miss)
    }

    fn add(&mut self, hits: usize, misses: usize) {
        self.hit = self.hit * ACCEPTANCE_DECAY + hits as f64;
        self.miss = self.miss * ACCEPTANCE_DECAY + misses as f64;
    }
}

/// Memory of the acceptance estimate: each observed step's counts weigh this much less.
const ACCEPTANCE_DECAY: f64 = 0.9;

/// Estimated acceptance probabilities of a draft's tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// Of the first draft token.
    pub first: f64,
    /// Of each later one, given the one before was accepted.
    pub rest: f64,
}

/// A request's running acceptance estimate, kept apart for a draft's first token and the
/// ones after it: whether a lookup found the right copy shows at the first token, and once it
/// has, the copy tends to go on.
#[derive(Debug, Clone, Copy)]
pub struct Acceptance {
    first: Odds,
    rest: Odds,
}

impl Default for Acceptance {
    /// Even odds (one pseudo-hit and one pseudo-miss each): enough to try one draft.
    fn default() -> Self {
        let even = Odds {
            hit: 1.0,
            miss: 1.0,
        };
        Acceptance {
            first: even,
            rest: even,
        }
    }
}

impl Acceptance {
    /// The estimated acceptance probabilities.
    pub fn rates(&self) -> Rates {
        Rates {
            first: self.first.rate(),
            rest: self.rest.rate(),
        }
    }

    /// Compare a proposal with the tokens the target actually emitted after it (in order):
    /// the matching prefix counts as accepted, a mismatch within both as one miss (of the
    /// first token, or of a later one). Positions the proposal did not cover, or the step did
    /// not emit, say nothing.
    pub fn observe(&mut self, proposal: &[u32], emitted: &[u32]) {
        let known = proposal.len().min(emitted.len());
        if known == 0 {
            return;
        }
        let hits = proposal
            .iter()
            .zip(emitted)
            .take_while(|(p, e)| p == e)
            .count();
        let missed = usize::from(hits < known);
        if hits == 0 {
            self.first.add(0, 1);
            self.rest.add(0, 0);
        } else {
            self.first.add(1, 0);
            self.rest.add(hits - 1, missed);
        }
    }
}

/// The number of drafts (0..=`max_k`) that maximises expected tokens per second of the step:
/// `other_rows` rows of other requests share it (each yields one token), this request's row
/// plus `k` draft rows yield `1 + a₁ + a₁a₂ + … + a₁⋯a_k` tokens in expectation (`a₁` the
/// first token's acceptance, the others `rates.rest`), and each draft token costs
/// `draft_secs` to propose (0 for n-gram lookup).
pub fn choose_k(
    rates: Rates,
    max_k: usize,
    other_rows: usize,
    costs: &StepCosts,
    draft_secs: f64,
) -> usize {
    let base = other_rows as f64;
    let mut best = (base + 1.0) / costs.cost(other_rows + 1);
    let mut best_k = 0;
    let (mut expected, mut p) = (1.0, 1.0);
    for k in 1..=max_k {
        p *= if k == 1 { rates.first } else { rates.rest };
        expected += p;
        let value = (base + expected) / (costs.cost(other_rows + 1 + k) + k as f64 * draft_secs);
        if value > best {
            (best, best_k) = (value, k);
        }
    }
    best_k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(per_row: &[(usize, f64)], times: usize) -> StepCosts {
        let mut c = StepCosts::default();
        for _ in 0..times {
            for &(m, s) in per_row {
                c.record(m, s);
            }
        }
        c
    }

    #[test]
    fn step_costs_follow_measurements_and_fall_back_to_the_prior() {
        // Nothing measured: the prior shape itself.
        let shape = |m| prior_shape(m, PRIOR_ROW_COST);
        let c = StepCosts::default();
        assert!((c.cost(5) / c.cost(1) - shape(5)).abs() < 1e-12);
        // Only one row measured: other row counts scale the prior from it.
        let c = measured(&[(1, 0.004)], 20);
        assert!((c.cost(1) - 0.004).abs() < 1e-9);
        assert!((c.cost(3) - 0.004 * shape(3)).abs() < 1e-9);
        // Measured rows cost 0.5 each: unmeasured row counts follow that slope, not 0.3.
        let c = measured(&[(1, 0.004), (2, 0.006), (3, 0.008)], 20);
        let r = c.cost(6) / c.cost(1);
        assert!(r > 3.2 && r < 3.5, "{r}");
        // Measured row counts dominate the prior (here rows are nearly free: a memory-bound
        // machine), and a cheaper measurement never makes more rows cheaper than fewer.
        let c = measured(&[(1, 0.004), (2, 0.0041), (3, 0.0039), (5, 0.0045)], 20);
        assert!(c.cost(2) < 0.0043, "{}", c.cost(2));
        assert!(c.cost(3) >= c.cost(2));
        assert!(c.cost(5) < 0.0050, "{}", c.cost(5));
        // An entry no longer measured drifts back to the prior, slowly: a stretch of plain
        // decoding keeps most of what was learned.
        let mut c = measured(&[(1, 0.004), (4, 0.1)], 5);
        let stale = c.cost(4);
        for _ in 0..100 {
            c.record(1, 0.004);
        }
        assert!(c.cost(4) > stale * 0.8, "{} vs {stale}", c.cost(4));
        for _ in 0..5000 {
            c.record(1, 0.004);
        }
        assert!(c.cost(4) < stale / 5.0, "{} vs {stale}", c.cost(4));
        assert!((c.cost(4) / c.cost(1) - shape(4)).abs() < 0.05);
        // Ignored: empty, oversized and non-finite steps.
        let mut c = StepCosts::default();
        c.record(0, 1.0);
        c.record(TRACKED_ROWS + 1, 1.0);
        c.record(2, f64::NAN);
        assert_eq!(c.weight.iter().sum::<f64>(), 0.0);
    }

    #[test]
    fn acceptance_counts_the_matching_prefix_and_one_miss() {
        let mut a = Acceptance::default();
        a.observe(&[1, 2, 3], &[1, 2, 3, 4]); // first hit, 2 later hits, no miss seen
        let close = |x: f64, y: f64| (x - y).abs() < 1e-12;
        assert!(close(a.first.hit, 1.9) && close(a.first.miss, 0.9));
        assert!(close(a.rest.hit, 2.9) && close(a.rest.miss, 0.9));
        a.observe(&[5, 6], &[5, 7]); // first hit, then a miss
        assert!(close(a.first.hit, 1.9 * 0.9 + 1.0) && close(a.first.miss, 0.81));
        assert!(close(a.rest.hit, 2.9 * 0.9) && close(a.rest.miss, 0.81 + 1.0));
        a.observe(&[8, 9], &[7]); // first miss: says nothing about later tokens
        assert!(close(a.first.miss, 0.81 * 0.9 + 1.0) && close(a.rest.miss, 1.81 * 0.9));
        let before = a.rates();
        a.observe(&[], &[1]);
        a.observe(&[1], &[]);
        assert_eq!(a.rates(), before, "nothing known, nothing learned");
        // Only misses drive the first rate towards zero; the later one keeps its ratio.
        for _ in 0..50 {
            a.observe(&[9], &[8]);
        }
        assert!(a.rates().first < 0.01);
        assert!((a.rates().rest - before.rest).abs() < 1e-9);
    }

    #[test]
    fn k_grows_with_acceptance_and_shrinks_with_row_cost() {
        let flat_rate = |a: f64| Rates { first: a, rest: a };
        // The CPU shape: each extra row 0.3 of a step.
        let cpu = StepCosts::default();
        // Below 0.3 a draft row costs more than it returns.
        assert_eq!(choose_k(flat_rate(0.25), 4, 0, &cpu, 0.0), 0);
        assert_eq!(choose_k(flat_rate(0.0), 4, 0, &cpu, 0.0), 0);
        let ks: Vec<usize> = [0.35, 0.6, 0.8, 0.95, 1.0]
            .iter()
            .map(|&a| choose_k(flat_rate(a), 8, 0, &cpu, 0.0))
            .collect();
        assert!(ks[0] >= 1 && ks.windows(2).all(|w| w[0] <= w[1]), "{ks:?}");
        assert_eq!(ks[4], 8, "certain drafts: as many as allowed");
        assert_eq!(
            choose_k(flat_rate(1.0), 3, 0, &cpu, 0.0),
            3,
            "never above max_k"
        );
        // A sure first token and unlikely later ones: one draft.
        let sure_first = Rates {
            first: 1.0,
            rest: 0.1,
        };
        assert_eq!(choose_k(sure_first, 8, 0, &cpu, 0.0), 1);
        // An unlikely first token whose copy then goes on: worth more than one draft, or none.
        let long_shot = Rates {
            first: 0.5,
            rest: 1.0,
        };
        assert!(choose_k(long_shot, 8, 0, &cpu, 0.0) > 1);
        // Rows that cost (nearly) nothing, a memory-bound device: high acceptance is worth all
        // of k, where the CPU shape stops earlier.
        let flat = measured(&(1..=9).map(|m| (m, 0.004)).collect::<Vec<_>>(), 30);
        assert_eq!(choose_k(flat_rate(0.9), 8, 0, &flat, 0.0), 8);
        assert!(choose_k(flat_rate(0.9), 8, 0, &cpu, 0.0) < 8);
        // An expensive drafter (a draft token costing as much as a step) needs high acceptance.
        assert_eq!(choose_k(flat_rate(0.6), 4, 0, &flat, 0.004), 0);
        assert!(choose_k(flat_rate(0.99), 4, 0, &flat, 0.002) > 0);
        // Sharing the step with other rows: the same acceptance buys fewer drafts, since the
        // extra rows slow the others' tokens too.
        assert!(
            choose_k(flat_rate(0.8), 8, 6, &cpu, 0.0) < choose_k(flat_rate(0.8), 8, 0, &cpu, 0.0)
        );
    }
}
