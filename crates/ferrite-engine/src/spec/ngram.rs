//! Prompt-lookup (n-gram) drafting, as vLLM's `NgramProposer`: find the longest suffix of the
//! sequence, between `min_n` and `max_n` tokens long, that occurred earlier; propose the (up to)
//! `k` tokens that followed its earliest occurrence. Costs O(L · max_n) per call with no state,
//! and suits copy-heavy text (code edits, quotes, tool output echoed back). How many of the
//! proposed tokens are verified is the engine's choice (`super::policy`).

/// n-gram drafter settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NgramConfig {
    /// Most draft tokens per step.
    pub k: usize,
    /// Shortest suffix to match.
    pub min_n: usize,
    /// Longest suffix to match.
    pub max_n: usize,
    /// Verify only as many of the (up to `k`) drafts as pay for their forward rows, judged by
    /// measured step costs and the request's acceptance so far ([`super::policy`]); `false`
    /// verifies every draft proposed (vLLM's behaviour).
    pub adaptive: bool,
}

impl Default for NgramConfig {
    fn default() -> Self {
        NgramConfig {
            k: 4,
            min_n: 2,
            max_n: 4,
            adaptive: true,
        }
    }
}

impl NgramConfig {
    /// Check the ranges; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.k == 0 || self.k > 32 {
            return Err(format!("k must be between 1 and 32, got {}", self.k));
        }
        if self.min_n == 0 || self.min_n > self.max_n {
            return Err(format!(
                "need 1 ≤ min_n ≤ max_n, got min_n {} max_n {}",
                self.min_n, self.max_n
            ));
        }
        Ok(())
    }
}

/// Up to `limit` (≤ k) tokens that followed the earliest earlier occurrence of the longest
/// matching suffix of `tokens`.
pub fn propose(tokens: &[u32], cfg: &NgramConfig, limit: usize) -> Vec<u32> {
    let k = cfg.k.min(limit);
    let len = tokens.len();
    if k == 0 || len < cfg.min_n + 1 {
        return Vec::new();
    }
    // Longest n first: the first n with any earlier occurrence wins, at its earliest position.
    for n in (cfg.min_n..=cfg.max_n.min(len - 1)).rev() {
        let suffix = &tokens[len - n..];
        // Occurrences must end before the suffix itself starts being the suffix (start < len-n).
        if let Some(start) = (0..len - n).find(|&s| &tokens[s..s + n] == suffix) {
            let from = start + n;
            let end = (from + k).min(len);
            return tokens[from..end].to_vec();
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vllm_docstring_example_and_edge_cases() {
        let cfg = NgramConfig {
            k: 4,
            min_n: 2,
            max_n: 3,
            adaptive: false,
        };
        // [1,2,3,4,2,3]: suffix [2,3] (n=2; [4,2,3] has no earlier match) at 1 → [4,2,3].
        assert_eq!(propose(&[1, 2, 3, 4, 2, 3], &cfg, 100), vec![4, 2, 3]);
        // No match → nothing.
        assert!(propose(&[1, 2, 3, 4, 5, 6], &cfg, 100).is_empty());
        // k clipped by the limit (max_model_len / max_tokens).
        assert_eq!(propose(&[1, 2, 3, 4, 2, 3], &cfg, 2), vec![4, 2]);
        assert!(propose(&[1, 2, 3, 4, 2, 3], &cfg, 0).is_empty());
        // The longest suffix wins over a shorter, earlier one.
        let t = [7, 8, 1, 9, 7, 8, 2, 5, 9, 7, 8];
        // n=3 [9,7,8] occurs at 3 → follows [2,5,9,...].
        assert_eq!(propose(&t, &cfg, 100), vec![2, 5, 9, 7]);
        // Earliest occurrence among equal lengths.
        let t = [5, 6, 1, 5, 6, 2, 5, 6];
        let c2 = NgramConfig {
            k: 1,
            min_n: 2,
            max_n: 2,
            adaptive: false,
        };
        assert_eq!(propose(&t, &c2, 100), vec![1]);
        // Too short to match.
        assert!(propose(&[1, 2], &cfg, 100).is_empty());
    }
}
