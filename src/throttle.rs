//! Password guessing, slowed per client address and per user: each may have a few checks
//! at once, then one a second; and which addresses failed lately. Without it, forty parallel connections made 28 to 60
//! guesses a second and a real login waited seconds behind them.
//!
//! Each key has a bucket of `burst` checks that refills at `per_second`. The table of
//! buckets is bounded: when it is full, buckets that have refilled (which say nothing any
//! more) are dropped, and if none has, the oldest is.

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
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
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
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
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

/// Keys seen within a window: the addresses that failed a login lately. Bounded like the
/// buckets: when full, entries past the window go, and if none has, the oldest.
#[derive(Debug)]
pub struct Recent<K> {
    window: Duration,
    seen: Mutex<HashMap<K, Instant>>,
}

impl<K: Eq + Hash + Clone> Recent<K> {
    /// Remembers keys for `window`.
    pub fn new(window: Duration) -> Self {
        Recent {
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Notes `key` as seen now.
    pub fn mark(&self, key: &K) {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_KEYS && !seen.contains_key(key) {
            seen.retain(|_, at| now.duration_since(*at) < self.window);
            if seen.len() >= MAX_KEYS
                && let Some(oldest) = seen.iter().min_by_key(|(_, at)| **at).map(|(k, _)| k.clone())
            {
                seen.remove(&oldest);
            }
        }
        seen.insert(key.clone(), now);
    }

    /// Forgets `key`.
    pub fn forget(&self, key: &K) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    /// Whether `key` was seen within the window.
    pub fn contains(&self, key: &K) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(key).is_some_and(|at| at.elapsed() < self.window)
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
    fn recent_keys_are_remembered_for_the_window_and_bounded() {
        let recent = Recent::new(Duration::from_millis(50));
        recent.mark(&1);
        assert!(recent.contains(&1));
        assert!(!recent.contains(&2));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!recent.contains(&1), "forgotten after the window");
        let recent = Recent::new(Duration::from_secs(60));
        for key in 0..(MAX_KEYS * 2) {
            recent.mark(&key);
        }
        assert!(recent.seen.lock().expect("lock").len() <= MAX_KEYS);
        assert!(recent.contains(&(MAX_KEYS * 2 - 1)), "the newest stays");
    }
}
