//! Stop strings over streamed text. Text that might be the start of a stop string is held back
//! until it is known not to be one, so a client never sees part of a stop sequence; the stop
//! string itself is never emitted (OpenAI semantics).

/// Result of feeding text to a [`StopMatcher`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopStep {
    /// Text that is safe to emit now (possibly empty).
    Emit(String),
    /// A stop string was found: emit this text, then finish.
    Stopped {
        /// Text before the stop string.
        emit: String,
        /// Which stop string matched.
        stop: String,
    },
}

/// Incremental stop-string matcher.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> StopMatcher {
        StopMatcher {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    /// Feed newly decoded text.
    pub fn push(&mut self, text: &str) -> StopStep {
        self.pending.push_str(text);
        if self.stops.is_empty() {
            return StopStep::Emit(std::mem::take(&mut self.pending));
        }
        let hit = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()).map(|i| (i, s)))
            .min_by_key(|(i, _)| *i);
        if let Some((i, s)) = hit {
            let stop = s.clone();
            let emit = self.pending[..i].to_string();
            self.pending.clear();
            return StopStep::Stopped { emit, stop };
        }
        // Hold back the longest suffix that is a proper prefix of some stop string.
        let mut hold = 0;
        for s in &self.stops {
            for (k, _) in s.char_indices().skip(1) {
                if k > hold && self.pending.ends_with(&s[..k]) {
                    hold = k;
                }
            }
        }
        let cut = self.pending.len() - hold;
        let emit = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        StopStep::Emit(emit)
    }

    /// Text still held back (at the end of generation it is emitted).
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], chunks: &[&str]) -> (String, Option<String>) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = String::new();
        for c in chunks {
            match m.push(c) {
                StopStep::Emit(t) => out.push_str(&t),
                StopStep::Stopped { emit, stop } => {
                    out.push_str(&emit);
                    return (out, Some(stop));
                }
            }
        }
        out.push_str(&m.flush());
        (out, None)
    }

    #[test]
    fn stop_split_across_chunks_is_never_emitted() {
        assert_eq!(
            run(&["END"], &["abc E", "N", "D more"]),
            ("abc ".into(), Some("END".into()))
        );
        assert_eq!(
            run(&["END"], &["abc E", "N", "x"]),
            ("abc ENx".into(), None)
        );
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), None));
    }

    #[test]
    fn earliest_stop_wins_and_unicode_is_safe() {
        assert_eq!(
            run(&["lo", "hel"], &["xhello"]),
            ("x".into(), Some("hel".into()))
        );
        assert_eq!(
            run(&["é!"], &["caf", "é", "é!"]),
            ("café".into(), Some("é!".into()))
        );
    }
}
