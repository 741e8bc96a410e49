//! Password guessing, slowed per client address and per user: each may have a few checks
//! at once, then one a second; and how often each address failed lately. Without it, forty
//! parallel connections made 28 to 60 guesses a second and a real login waited seconds
//! behind them.
//!
//! Each key has a bucket of `burst` checks that refills at `per_second`. The table of
//! buckets is bounded: when it is full, buckets that have refilled (which say nothing any
//! more) are dropped, and if none has, the oldest is.

use crate::sync::lock;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets kept at most.
const MAX_KEYS: usize = 4096;

/// Token buckets by key.
#[derive(Debug)]
pub struct Throttle<K> {
    burst: f64,
    per_second: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl<K: Eq + Hash + Clone> Throttle<K> {
    /// `burst` checks at once, then `per_second`.
    pub fn new(burst: u32, per_second: f64) -> Self {
        Throttle {
            burst: f64::from(burst),
            per_second,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one check for `key`, or says how long until one is free.
    pub fn take(&self, key: &K) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = lock(&self.buckets);
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            self.prune(&mut buckets, now);
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * self.per_second).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_second))
        }
    }

    /// Returns a check taken for `key` (one that turned out not to count).
    pub fn give_back(&self, key: &K) {
        let mut buckets = lock(&self.buckets);
        if let Some(bucket) = buckets.get_mut(key) {
            bucket.tokens = (bucket.tokens + 1.0).min(self.burst);
        }
    }

    fn prune(&self, buckets: &mut HashMap<K, Bucket>, now: Instant) {
        let full_after = Duration::from_secs_f64(self.burst / self.per_second);
        buckets.retain(|_, b| now.duration_since(b.at) < full_after);
        if buckets.len() >= MAX_KEYS
            && let Some(oldest) = buckets.iter().min_by_key(|(_, b)| b.at).map(|(k, _)| k.clone())
        {
            buckets.remove(&oldest);
        }
    }
}

/// Failed checks per key within a window (since the key's last failure): how many logins
/// an address got wrong lately. Bounded like the buckets: when full, entries past the
/// window go, and if none has, the oldest.
#[derive(Debug)]
pub struct Failures<K> {
    window: Duration,
    counts: Mutex<HashMap<K, (u32, Instant)>>,
}

impl<K: Eq + Hash + Clone> Failures<K> {
    /// Remembers failures for `window` after the last one.
    pub fn new(window: Duration) -> Self {
        Failures {
            window,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one more for `key`; returns how many there were before it.
    pub fn add(&self, key: &K) -> u32 {
        let now = Instant::now();
        let mut counts = lock(&self.counts);
        if counts.len() >= MAX_KEYS && !counts.contains_key(key) {
            counts.retain(|_, (_, at)| now.duration_since(*at) < self.window);
            if counts.len() >= MAX_KEYS
                && let Some(oldest) = counts
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| k.clone())
            {
                counts.remove(&oldest);
            }
        }
        let entry = counts.entry(key.clone()).or_insert((0, now));
        if now.duration_since(entry.1) >= self.window {
            entry.0 = 0;
        }
        let before = entry.0;
        *entry = (before.saturating_add(1), now);
        before
    }

    /// Takes back `n` counted for `key` (they turned out not to be failures).
    pub fn take_back(&self, key: &K, n: u32) {
        let mut counts = lock(&self.counts);
        if let Some(entry) = counts.get_mut(key) {
            entry.0 = entry.0.saturating_sub(n);
            if entry.0 == 0 {
                counts.remove(key);
            }
        }
    }

    /// Forgets every failure of `key`; returns how many there were.
    pub fn forget(&self, key: &K) -> u32 {
        let mut counts = lock(&self.counts);
        let now = Instant::now();
        match counts.remove(key) {
            Some((count, at)) if now.duration_since(at) < self.window => count,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_a_second() {
        let throttle = Throttle::new(3, 1.0);
        for _ in 0..3 {
            assert!(throttle.take(&"a").is_ok());
        }
        let wait = throttle.take(&"a").expect_err("the burst is spent");
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(throttle.take(&"b").is_ok(), "another key has its own bucket");
    }

    #[test]
    fn the_table_stays_bounded() {
        let throttle = Throttle::new(1, 1.0);
        for key in 0..(MAX_KEYS * 2) {
            let _ = throttle.take(&key);
        }
        assert!(throttle.buckets.lock().expect("lock").len() <= MAX_KEYS);
    }

    #[test]
    fn failures_are_counted_for_the_window_and_bounded() {
        let failures = Failures::new(Duration::from_millis(50));
        assert_eq!(failures.add(&1), 0);
        assert_eq!(failures.add(&1), 1);
        failures.take_back(&1, 1);
        assert_eq!(failures.add(&1), 1, "one taken back");
        assert_eq!(failures.forget(&1), 2, "forgetting says how many");
        assert_eq!(failures.add(&1), 0, "forgotten");
        failures.add(&1);
        assert_eq!(failures.add(&2), 0, "each key its own count");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(failures.add(&1), 0, "forgotten after the window");
        failures.forget(&1);
        assert_eq!(failures.add(&1), 0, "forgotten");
        let failures = Failures::new(Duration::from_secs(60));
        for key in 0..(MAX_KEYS * 2) {
            failures.add(&key);
        }
        assert!(failures.counts.lock().expect("lock").len() <= MAX_KEYS);
        assert_eq!(failures.add(&(MAX_KEYS * 2 - 1)), 1, "the newest stays");
    }
}
