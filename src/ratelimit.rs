//! Keeps noisy log lines (a chatty camera's stderr, a slow viewer's drops, a camera that
//! fails for days) from flooding the journal: at most one line per interval, with the
//! count of those held back.

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

/// How loudly a run of consecutive failures is logged. The first few are logged in full,
/// because they may be a passing fault that someone is watching. After that (a camera
/// unplugged for days) the run goes quiet: one line per `every`, with the count since the
/// last one, so the journal neither floods nor falls silent.
#[derive(Debug)]
pub struct FailureRun {
    loud_for: u32,
    failures: u32,
    summary: RateLimit,
}

impl FailureRun {
    /// Loud for the first `loud_for` failures of a run, then a line per `every`.
    pub fn new(loud_for: u32, every: Duration) -> Self {
        FailureRun {
            loud_for,
            failures: 0,
            summary: RateLimit::new(every),
        }
    }

    /// Counts a failure. `Some(n)` if it may be logged, with `n` failures held back since
    /// the last one logged; `None` if it must be dropped.
    pub fn fail(&mut self) -> Option<u64> {
        self.failures = self.failures.saturating_add(1);
        if self.failures < self.loud_for {
            Some(0)
        } else {
            self.summary.allow()
        }
    }

    /// Whether the run is long enough that each attempt's own lines (its start, its
    /// stderr) should be kept out of the log too.
    pub fn is_quiet(&self) -> bool {
        self.failures >= self.loud_for
    }

    /// Failures in the current run.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Ends the run: what failed worked again.
    pub fn recover(&mut self) {
        self.failures = 0;
        self.summary = RateLimit::new(self.summary.every);
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
    fn a_long_run_of_failures_goes_quiet_and_recovery_makes_it_loud_again() {
        let mut run = FailureRun::new(3, Duration::from_secs(3600));
        assert_eq!((run.fail(), run.is_quiet()), (Some(0), false));
        assert_eq!((run.fail(), run.is_quiet()), (Some(0), false));
        // The third opens the quiet phase with one line, then a line per interval.
        assert_eq!((run.fail(), run.is_quiet()), (Some(0), true));
        assert_eq!(run.fail(), None);
        assert_eq!(run.fail(), None);
        run.summary.last = Some(Instant::now() - Duration::from_secs(7200));
        assert_eq!(run.fail(), Some(2));
        assert_eq!(run.failures(), 6);
        run.recover();
        assert_eq!((run.fail(), run.is_quiet()), (Some(0), false));
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
