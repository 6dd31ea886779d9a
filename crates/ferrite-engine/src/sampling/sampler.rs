//! Turning logits into a token.
//!
//! Order (as vLLM): penalties → (greedy: arg-max) → temperature → top-k → top-p → min-p →
//! sample from the renormalised distribution with the request's RNG. Candidates are narrowed
//! with partial selection, so a 262k vocabulary is not fully sorted for every token.

use std::collections::HashMap;

use super::params::SamplingParams;
use super::rng::SamplerRng;
use crate::Result;

/// Token counts of a sequence, kept incrementally for the penalties.
#[derive(Debug, Clone, Default)]
pub struct TokenHistory {
    /// Tokens of the prompt (repetition penalty only).
    prompt: HashMap<u32, u32>,
    /// Generated tokens and their counts.
    output: HashMap<u32, u32>,
}

impl TokenHistory {
    /// History for a prompt.
    pub fn new(prompt: &[u32]) -> TokenHistory {
        let mut h = TokenHistory::default();
        for &t in prompt {
            *h.prompt.entry(t).or_default() += 1;
        }
        h
    }

    /// Record a generated token.
    pub fn push(&mut self, t: u32) {
        *self.output.entry(t).or_default() += 1;
    }
}

/// A token and the log-probability the sampling distribution gave it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampled {
    /// Token id.
    pub token: u32,
    /// log p of the token under the final (processed) distribution; 0 for greedy.
    pub logprob: f32,
}

/// A seeded sampler for one sequence.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: SamplerRng,
    cand: Vec<(f32, u32)>,
}

impl Sampler {
    /// Validate `params` and seed the RNG.
    pub fn new(params: SamplingParams) -> Result<Sampler> {
        params.validate()?;
        let rng = match params.seed {
            Some(s) => SamplerRng::new(s),
            None => SamplerRng::from_entropy(),
        };
        Ok(Sampler {
            params,
            rng,
            cand: Vec::new(),
        })
    }

    /// The parameters.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Pick the next token from `logits` (modified in place by the penalties).
    pub fn sample(&mut self, logits: &mut [f32], history: &TokenHistory) -> Sampled {
        let p = &self.params;
        apply_penalties(logits, history, p);
        if p.is_greedy() {
            return Sampled {
                token: argmax(logits),
                logprob: 0.0,
            };
        }
        let inv_t = 1.0 / p.temperature;
        // Candidates: every token with a finite logit (a grammar masks the rest to −∞).
        self.cand.clear();
        self.cand.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, l)| l.is_finite())
                .map(|(i, &l)| (l * inv_t, i as u32)),
        );
        if self.cand.is_empty() {
            return Sampled {
                token: argmax(logits),
                logprob: 0.0,
            };
        }
        // Sorted by logit descending and narrowed by top-k, when a cut needs the order; a
        // draw from the whole distribution does not (sorting 262k candidates per token cost
        // as much as Gemma 3's forward pass).
        let k = if p.top_k == 0 {
            self.cand.len()
        } else {
            p.top_k.min(self.cand.len())
        };
        if k < self.cand.len() || p.top_p < 1.0 || p.min_p > 0.0 {
            top_sorted(&mut self.cand, k, p.top_p);
        }
        // Softmax over the candidates.
        let max = self
            .cand
            .iter()
            .map(|c| c.0)
            .fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f64;
        for c in self.cand.iter_mut() {
            c.0 = (c.0 - max).exp();
            sum += f64::from(c.0);
        }
        // Top-p: keep the smallest prefix whose mass reaches top_p (at least one token).
        if p.top_p < 1.0 {
            let mut acc = 0f64;
            let mut keep = self.cand.len();
            for (i, c) in self.cand.iter().enumerate() {
                acc += f64::from(c.0) / sum;
                if acc >= f64::from(p.top_p) {
                    keep = i + 1;
                    break;
                }
            }
            self.cand.truncate(keep);
        }
        // Min-p relative to the most likely token (probabilities are exp(l - max), so p0 = 1).
        if p.min_p > 0.0 {
            let cut = p.min_p;
            let keep = self.cand.iter().take_while(|c| c.0 >= cut).count().max(1);
            self.cand.truncate(keep);
        }
        let total: f64 = self.cand.iter().map(|c| f64::from(c.0)).sum();
        let mut r = self.rng.uniform() * total;
        let mut chosen = self.cand[self.cand.len() - 1];
        for c in &self.cand {
            r -= f64::from(c.0);
            if r < 0.0 {
                chosen = *c;
                break;
            }
        }
        Sampled {
            token: chosen.1,
            logprob: (f64::from(chosen.0) / total).ln() as f32,
        }
    }
}

fn apply_penalties(logits: &mut [f32], h: &TokenHistory, p: &SamplingParams) {
    if p.repetition_penalty != 1.0 {
        let rp = p.repetition_penalty;
        // Every token seen in the prompt or the output, once.
        let seen = h
            .prompt
            .keys()
            .chain(h.output.keys().filter(|t| !h.prompt.contains_key(t)));
        for &t in seen {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = if *l > 0.0 { *l / rp } else { *l * rp };
            }
        }
    }
    if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
        for (&t, &n) in &h.output {
            if let Some(l) = logits.get_mut(t as usize) {
                *l -= p.presence_penalty + p.frequency_penalty * n as f32;
            }
        }
    }
}

/// Index of the largest logit (the first on ties, as llama.cpp's greedy sampler).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut bv = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > bv {
            bv = v;
            best = i;
        }
    }
    best as u32
}

/// Keep the `k` largest candidates sorted descending. When nucleus sampling will cut further and
/// `k` is the whole vocabulary, sort only a prefix large enough to hold the nucleus.
fn top_sorted(c: &mut Vec<(f32, u32)>, k: usize, top_p: f32) {
    let desc = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    let mut k = k;
    if top_p < 1.0 && k > 1024 {
        // Try a 1024-candidate prefix first: enough unless the distribution is very flat.
        let mut probe = c.clone();
        probe.select_nth_unstable_by(1023, desc);
        probe.truncate(1024);
        let max = probe.iter().map(|x| x.0).fold(f32::NEG_INFINITY, f32::max);
        let total: f64 = c.iter().map(|x| f64::from((x.0 - max).exp())).sum();
        let head: f64 = probe.iter().map(|x| f64::from((x.0 - max).exp())).sum();
        if head / total >= f64::from(top_p) {
            *c = probe;
            k = 1024;
        }
    }
    if k < c.len() {
        c.select_nth_unstable_by(k - 1, desc);
        c.truncate(k);
    }
    c.sort_unstable_by(desc);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(p: SamplingParams) -> Sampler {
        Sampler::new(p).unwrap()
    }

    #[test]
    fn a_draw_from_the_whole_distribution_follows_softmax_and_skips_masked_tokens() {
        // No top-k/top-p/min-p: the unsorted path. Masked (−∞) tokens are never drawn.
        let logits = [1.0f32, f32::NEG_INFINITY, 0.0, 2.5, f32::NEG_INFINITY, -1.0];
        let z: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
        let mut s = sampler(SamplingParams {
            seed: Some(9),
            ..Default::default()
        });
        let n = 40_000;
        let mut counts = [0usize; 6];
        for _ in 0..n {
            counts[s
                .sample(&mut logits.clone(), &TokenHistory::default())
                .token as usize] += 1;
        }
        for (t, &c) in counts.iter().enumerate() {
            let p = f64::from(logits[t]).exp() / z;
            // Five standard deviations of a binomial count.
            let sd = (n as f64 * p * (1.0 - p)).sqrt();
            assert!(
                (c as f64 - n as f64 * p).abs() <= 5.0 * sd + 1e-9,
                "token {t}: {c} draws, p {p}"
            );
        }
        assert_eq!(counts[1] + counts[4], 0);
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = sampler(SamplingParams::greedy());
        let mut l = vec![1.0, 3.0, 3.0, 2.0];
        assert_eq!(s.sample(&mut l, &TokenHistory::default()).token, 1);
    }

    #[test]
    fn same_seed_same_tokens() {
        let p = SamplingParams {
            seed: Some(42),
            ..Default::default()
        };
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32 / 20.0).collect();
        let run = || {
            let mut s = sampler(p.clone());
            (0..50)
                .map(|_| {
                    s.sample(&mut logits.clone(), &TokenHistory::default())
                        .token
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
        let mut other = sampler(SamplingParams {
            seed: Some(43),
            ..p.clone()
        });
        let b: Vec<u32> = (0..50)
            .map(|_| {
                other
                    .sample(&mut logits.clone(), &TokenHistory::default())
                    .token
            })
            .collect();
        assert_ne!(run(), b);
    }

    #[test]
    fn top_k_one_is_greedy_and_top_k_limits_support() {
        let logits: Vec<f32> = vec![0.0, 5.0, 4.9, 4.8, -1.0];
        let mut s = sampler(SamplingParams {
            top_k: 2,
            seed: Some(1),
            ..Default::default()
        });
        for _ in 0..200 {
            let t = s
                .sample(&mut logits.clone(), &TokenHistory::default())
                .token;
            assert!(t == 1 || t == 2, "{t}");
        }
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // p ≈ [0.64, 0.24, 0.09, 0.03]: top_p 0.7 keeps the first two.
        let logits = vec![2.0f32, 1.0, 0.0, -1.0];
        let mut s = sampler(SamplingParams {
            top_p: 0.7,
            seed: Some(3),
            ..Default::default()
        });
        let mut seen = [0; 4];
        for _ in 0..2000 {
            seen[s
                .sample(&mut logits.clone(), &TokenHistory::default())
                .token as usize] += 1;
        }
        assert!(
            seen[0] > 0 && seen[1] > 0 && seen[2] == 0 && seen[3] == 0,
            "{seen:?}"
        );
    }

    #[test]
    fn top_p_on_a_large_vocabulary_uses_the_probe_correctly() {
        let mut logits = vec![0f32; 262_144];
        logits[10] = 20.0;
        logits[11] = 19.0;
        let mut s = sampler(SamplingParams {
            top_p: 0.5,
            seed: Some(5),
            ..Default::default()
        });
        for _ in 0..20 {
            assert_eq!(
                s.sample(&mut logits.clone(), &TokenHistory::default())
                    .token,
                10
            );
        }
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        let logits = vec![0.0f32, -0.1, -5.0];
        let mut s = sampler(SamplingParams {
            min_p: 0.5,
            seed: Some(9),
            ..Default::default()
        });
        for _ in 0..500 {
            assert_ne!(
                s.sample(&mut logits.clone(), &TokenHistory::default())
                    .token,
                2
            );
        }
    }

    #[test]
    fn sampling_frequencies_follow_the_distribution() {
        let logits = vec![(0.5f32).ln(), (0.3f32).ln(), (0.2f32).ln()];
        let mut s = sampler(SamplingParams {
            seed: Some(11),
            ..Default::default()
        });
        let mut n = [0f64; 3];
        let trials = 20000;
        for _ in 0..trials {
            n[s.sample(&mut logits.clone(), &TokenHistory::default())
                .token as usize] += 1.0;
        }
        // Chi-square with 2 degrees of freedom; 13.8 is the 0.1% critical value.
        let expect = [0.5, 0.3, 0.2];
        let chi: f64 = (0..3)
            .map(|i| (n[i] - expect[i] * trials as f64).powi(2) / (expect[i] * trials as f64))
            .sum();
        assert!(chi < 13.8, "chi-square {chi}, counts {n:?}");
    }

    #[test]
    fn penalties_follow_their_definitions() {
        let mut h = TokenHistory::new(&[0]);
        h.push(1);
        h.push(1);
        h.push(0);
        let p = SamplingParams {
            repetition_penalty: 2.0,
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            ..SamplingParams::greedy()
        };
        let mut l = vec![4.0f32, -4.0, 4.0];
        apply_penalties(&mut l, &h, &p);
        // token 0: prompt+output once: 4/2 - 0.5 - 0.25; token 1: output twice: -4*2 - 0.5 - 0.5.
        assert_eq!(l, vec![2.0 - 0.75, -8.0 - 1.0, 4.0]);
    }

    #[test]
    fn invalid_values_name_the_field() {
        for (p, field) in [
            (
                SamplingParams {
                    top_p: 1.5,
                    ..Default::default()
                },
                "`top_p` must be > 0 and ≤ 1, got 1.5",
            ),
            (
                SamplingParams {
                    temperature: -1.0,
                    ..Default::default()
                },
                "`temperature`",
            ),
            (
                SamplingParams {
                    min_p: 2.0,
                    ..Default::default()
                },
                "`min_p`",
            ),
            (
                SamplingParams {
                    repetition_penalty: 0.0,
                    ..Default::default()
                },
                "`repetition_penalty`",
            ),
            (
                SamplingParams {
                    presence_penalty: 3.0,
                    ..Default::default()
                },
                "`presence_penalty`",
            ),
            (
                SamplingParams {
                    frequency_penalty: f32::NAN,
                    ..Default::default()
                },
                "`frequency_penalty`",
            ),
        ] {
            let err = Sampler::new(p).unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
    }
}
