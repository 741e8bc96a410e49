//! One-shot signals: the daemon's shutdown, and a sink's deactivation.
//!
//! A [`Trigger`] fires once; every clone of its [`Signal`] sees it, including ones cloned
//! after it fired. Built on a closed channel, which is exactly a broadcast of "it happened".

use async_channel::{Receiver, Sender};

/// The firing end.
#[derive(Debug, Clone)]
pub struct Trigger(Sender<()>);

/// The waiting end; cheap to clone into every task.
#[derive(Debug, Clone)]
pub struct Signal(Receiver<()>);

/// A new, unfired signal.
pub fn signal() -> (Trigger, Signal) {
    let (tx, rx) = async_channel::bounded(1);
    (Trigger(tx), Signal(rx))
}

impl Trigger {
    /// Fires the signal; firing twice is harmless.
    pub fn fire(&self) {
        self.0.close();
    }
}

impl Signal {
    /// Resolves once the signal has fired (at once if it already has).
    pub async fn wait(&self) {
        // Nothing is ever sent, so this only returns when the channel closes.
        let _ = self.0.recv().await;
    }

    /// Whether the signal has fired.
    pub fn fired(&self) -> bool {
        self.0.is_closed()
    }
}

/// Something that ends on a signal or at a deadline, whichever comes first: a login
/// session, which ends at logout or when it expires, and the streams opened with it.
#[derive(Debug, Clone)]
pub struct Ending {
    signal: Signal,
    at: std::time::Instant,
}

impl Ending {
    /// Ends when `signal` fires or at `at`.
    pub fn new(signal: Signal, at: std::time::Instant) -> Self {
        Ending { signal, at }
    }

    /// Resolves once it has ended.
    pub async fn wait(&self) {
        futures_lite::future::or(self.signal.wait(), async {
            smol::Timer::at(self.at).await;
        })
        .await
    }

    /// Whether it has ended.
    pub fn ended(&self) -> bool {
        self.signal.fired() || std::time::Instant::now() >= self.at
    }
}

/// Races `work` against the signal: `None` if the signal has fired. The signal is looked at
/// first, so work that is always ready (a full frame queue behind a slow encoder, a flood
/// of connections) cannot keep it from being seen.
pub async fn unless<T>(signal: &Signal, work: impl std::future::Future<Output = T>) -> Option<T> {
    futures_lite::future::or(
        async {
            signal.wait().await;
            None
        },
        async { Some(work.await) },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fired_signal_wakes_all_clones() {
        let (trigger, signal) = signal();
        let other = signal.clone();
        assert!(!signal.fired());
        trigger.fire();
        smol::block_on(other.wait());
        assert!(signal.fired());
        assert_eq!(
            smol::block_on(unless(&signal, std::future::pending::<()>())),
            None
        );
    }

    #[test]
    fn an_ending_comes_with_its_signal_or_its_deadline() {
        let (_keep, quiet) = signal();
        let soon = Ending::new(
            quiet,
            std::time::Instant::now() + std::time::Duration::from_millis(50),
        );
        assert!(!soon.ended());
        smol::block_on(soon.wait());
        assert!(soon.ended(), "the deadline (a session's expiry) ends it");
        let (trigger, fired) = signal();
        let later = Ending::new(
            fired,
            std::time::Instant::now() + std::time::Duration::from_secs(3600),
        );
        trigger.fire();
        smol::block_on(later.wait());
        assert!(later.ended(), "the signal (a logout) ends it");
    }

    #[test]
    fn a_fired_signal_wins_over_work_that_is_ready() {
        let (trigger, signal) = signal();
        assert_eq!(smol::block_on(unless(&signal, async { 7 })), Some(7));
        trigger.fire();
        assert_eq!(smol::block_on(unless(&signal, async { 7 })), None);
    }
}
