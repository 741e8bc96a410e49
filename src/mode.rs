//! Who wants frames right now, and in which mode the daemon runs.
//!
//! One rule drives the source: it runs while anyone wants frames. A viewer wants them while
//! subscribed, a recording sink while enabled. [`Demand`] counts those wishes; the source
//! supervisor waits on it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::sync::lock;
use event_listener::Event;
use serde::{Deserialize, Serialize};

/// The daemon's operating mode, spelled as on the wire and in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The camera runs only while someone watches.
    OnDemand,
    /// The camera runs all the time and recording sinks are on.
    Continuous,
}

impl Mode {
    /// Every mode, for listing in errors and docs.
    pub const ALL: [Mode; 2] = [Mode::OnDemand, Mode::Continuous];

    /// The wire and config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::OnDemand => "on-demand",
            Mode::Continuous => "continuous",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A count of outstanding wishes for frames. Clones share the count.
#[derive(Clone, Default)]
pub struct Demand {
    inner: Arc<DemandInner>,
}

#[derive(Default)]
struct DemandInner {
    count: AtomicUsize,
    changed: Event,
}

/// One wish for frames; withdrawn when dropped.
pub struct Want {
    demand: Demand,
}

impl Demand {
    /// Registers a wish for frames that lasts as long as the returned guard.
    pub fn want(&self) -> Want {
        self.inner.count.fetch_add(1, Ordering::SeqCst);
        self.inner.changed.notify(usize::MAX);
        Want { demand: self.clone() }
    }

    /// How many wishes are outstanding.
    pub fn count(&self) -> usize {
        self.inner.count.load(Ordering::SeqCst)
    }

    /// Whether anyone wants frames.
    pub fn is_wanted(&self) -> bool {
        self.count() > 0
    }

    /// Waits until `wanted` matches whether anyone wants frames.
    pub async fn until_wanted(&self, wanted: bool) {
        loop {
            if self.is_wanted() == wanted {
                return;
            }
            let listener = self.inner.changed.listen();
            if self.is_wanted() == wanted {
                return;
            }
            listener.await;
        }
    }
}

impl Drop for Want {
    fn drop(&mut self) {
        self.demand.inner.count.fetch_sub(1, Ordering::SeqCst);
        self.demand.inner.changed.notify(usize::MAX);
    }
}

/// The current mode, switched at run time: persists the choice, then enables and disables
/// sinks to match. Switches are serialized.
pub struct ModeSwitch {
    current: std::sync::Mutex<Mode>,
    sinks: smol::lock::Mutex<crate::sinks::Sinks>,
    state: crate::state::StateFile,
}

impl ModeSwitch {
    /// Starts in `mode` with `sinks` (none enabled yet; call [`ModeSwitch::start`]).
    pub fn new(mode: Mode, sinks: crate::sinks::Sinks, state: crate::state::StateFile) -> Self {
        ModeSwitch {
            current: std::sync::Mutex::new(mode),
            sinks: smol::lock::Mutex::new(sinks),
            state,
        }
    }

    /// The mode in force.
    pub fn current(&self) -> Mode {
        *lock(&self.current)
    }

    /// Enables the sinks of the current mode.
    pub async fn start(&self) {
        let mode = self.current();
        self.sinks.lock().await.apply(Some(mode)).await;
    }

    /// Saves `mode` and switches to it. Fails (and does not switch) when the state cannot be
    /// saved, since a mode that silently reverts at the next reboot is worse than an error.
    pub async fn set(&self, mode: Mode) -> std::io::Result<()> {
        let mut sinks = self.sinks.lock().await;
        self.state.save(crate::state::State { mode })?;
        let previous = std::mem::replace(&mut *lock(&self.current), mode);
        if previous != mode {
            tracing::info!(from = %previous, to = %mode, "mode switched");
        }
        sinks.apply(Some(mode)).await;
        Ok(())
    }

    /// Lets every sink register its HTTP routes.
    pub async fn sinks_routes(&self, routes: &mut crate::http::Routes) {
        self.sinks.lock().await.routes(routes);
    }

    /// Disables every sink (finishing recordings) for shutdown.
    pub async fn stop_all(&self) {
        self.sinks.lock().await.apply(None).await;
    }

    /// Names of the sinks enabled right now.
    pub async fn enabled_sinks(&self) -> Vec<String> {
        self.sinks
            .lock()
            .await
            .enabled()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_spellings_round_trip() {
        for mode in Mode::ALL {
            assert_eq!(Mode::parse(mode.as_str()), Some(mode));
        }
        assert_eq!(Mode::parse("sometimes"), None);
    }

    #[test]
    fn until_wanted_wakes_on_change() {
        let demand = Demand::default();
        let d = demand.clone();
        let (woke, woken) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            smol::block_on(d.until_wanted(true));
            let _ = woke.send(());
        });
        // (Most likely parked by now, so the wake-up itself is what is tested.)
        std::thread::sleep(std::time::Duration::from_millis(20));
        let want = demand.want();
        let within = std::time::Duration::from_secs(5);
        assert!(woken.recv_timeout(within).is_ok(), "a want woke nobody");
        drop(want);
        let released = smol::block_on(futures_lite::future::or(
            async {
                demand.until_wanted(false).await;
                true
            },
            async {
                smol::Timer::after(within).await;
                false
            },
        ));
        assert!(released, "dropping the want woke nobody");
    }
}
