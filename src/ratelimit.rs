//! Keeps noisy log lines (a chatty camera's stderr, a slow viewer's drops) from flooding
//! the journal: at most one line per interval, with the count of those held back.

use std::time::{Duration, Instant};

/// Decides whether a repeated event may be logged now.
#[derive(Debug)]
pub struct RateLimit {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    /// Allows one event per `every`.
    pub fn new(every: Duration) -> Self {
        RateLimit {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` if this event may be logged, with `n` events suppressed since the last one
    /// logged; `None` if it must be dropped.
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < self.every)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Allows a burst of `burst` events per window, then holds back the rest of the window.
#[derive(Debug)]
pub struct Burst {
    window: Duration,
    burst: u32,
    started: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl Burst {
    /// Up to `burst` events per `window`.
    pub fn new(burst: u32, window: Duration) -> Self {
        Burst {
            window,
            burst,
            started: None,
            used: 0,
            suppressed: 0,
        }
    }

    /// Like [`RateLimit::allow`].
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.started.is_none_or(|s| now.duration_since(s) >= self.window) {
            self.started = Some(now);
            self.used = 0;
        }
        if self.used >= self.burst {
            self.suppressed += 1;
            return None;
        }
        self.used += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_interval_counts_the_rest() {
        let mut limit = RateLimit::new(Duration::from_secs(3600));
        assert_eq!(limit.allow(), Some(0));
        assert_eq!(limit.allow(), None);
        assert_eq!(limit.allow(), None);
        limit.last = Some(Instant::now() - Duration::from_secs(7200));
        assert_eq!(limit.allow(), Some(2));
    }

    #[test]
    fn burst_allows_a_few_then_holds_back() {
        let mut burst = Burst::new(2, Duration::from_secs(3600));
        assert_eq!(burst.allow(), Some(0));
        assert_eq!(burst.allow(), Some(0));
        assert_eq!(burst.allow(), None);
        burst.started = Some(Instant::now() - Duration::from_secs(7200));
        assert_eq!(burst.allow(), Some(1));
    }
}
