//! The sinks the daemon runs: built from their tables, enabled and disabled by mode, and
//! moved to a reloaded config's tables without touching the ones that did not change.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use smol::Task;
use tracing::{Instrument, info};

use super::{Endpoints, Registry, Sink, SinkContext};
use crate::config::SinkEntry;
use crate::metrics::SinkStats;
use crate::mode::Mode;
use crate::shutdown::{self, Trigger};

/// The built sinks, which of them are enabled right now, and the paths they answer.
pub struct Sinks {
    types: &'static Registry,
    shared: SinkContext,
    endpoints: Arc<Endpoints>,
    /// The mode last applied: a sink a reload adds starts if it lists it.
    mode: Option<Mode>,
    sinks: Vec<Running>,
}

struct Running {
    /// The table it was built from, kept to tell at a reload whether it changed.
    entry: SinkEntry,
    sink: Arc<dyn Sink>,
    paths: Vec<String>,
    stats: Arc<SinkStats>,
    active: Option<(Trigger, Task<()>)>,
    /// Fires the sink's `retired` signal (dropping it does too).
    retire: Trigger,
}

/// What a reload did to one sink, for its log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Same table: left running untouched.
    Kept,
    /// Same settings, other `modes`: left running, enabled or disabled to match.
    Modes,
    /// Other settings: stopped, built again and started.
    Rebuilt,
    /// No longer in the config: stopped.
    Removed,
    /// New in the config: built and started.
    Added,
}

impl Change {
    /// In the log's words.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Kept => "unchanged, kept running",
            Change::Modes => "modes changed, kept running",
            Change::Rebuilt => "changed, rebuilt",
            Change::Removed => "removed, stopped",
            Change::Added => "added, started",
        }
    }
}

impl Sinks {
    /// Builds every configured sink and mounts its endpoints; none is enabled until
    /// [`Sinks::apply`].
    pub fn build(
        types: &'static Registry,
        entries: &[SinkEntry],
        shared: &SinkContext,
    ) -> Result<Sinks, String> {
        let mut sinks = Sinks {
            types,
            shared: shared.clone(),
            endpoints: Arc::default(),
            mode: None,
            sinks: Vec::new(),
        };
        for entry in entries {
            let mut running = sinks.build_one(entry)?;
            running.paths = sinks.mount(&running);
            sinks.sinks.push(running);
        }
        Ok(sinks)
    }

    fn build_one(&self, entry: &SinkEntry) -> Result<Running, String> {
        let stats = self.shared.metrics.sink(&entry.name, &entry.kind);
        let (retire, retired) = shutdown::signal();
        let ctx = SinkContext {
            name: entry.name.clone(),
            stats: stats.clone(),
            retired,
            ..self.shared.clone()
        };
        let sink = match self.types.build(entry, ctx) {
            Ok(sink) => sink,
            Err(error) => {
                self.shared.metrics.forget_sink(&stats);
                return Err(format!("sink `{}` ({}): {error}", entry.name, entry.kind));
            }
        };
        Ok(Running {
            entry: entry.clone(),
            sink,
            paths: Vec::new(),
            stats,
            active: None,
            retire,
        })
    }

    fn mount(&self, running: &Running) -> Vec<String> {
        running
            .sink
            .clone()
            .endpoints()
            .into_iter()
            .map(|(path, endpoint)| {
                self.endpoints.insert(path.clone(), endpoint);
                path
            })
            .collect()
    }

    /// The paths the sinks answer, for the HTTP layer to look up.
    pub fn endpoints(&self) -> Arc<Endpoints> {
        self.endpoints.clone()
    }

    /// Enables the sinks that `mode` lists and disables the others, waiting for disabled
    /// ones to wind down.
    pub async fn apply(&mut self, mode: Option<Mode>) {
        self.mode = mode;
        for running in &mut self.sinks {
            let want = mode.is_some_and(|m| running.entry.modes.contains(&m));
            match (&running.active, want) {
                (None, true) => running.start(),
                (Some(_), false) => {
                    running.stop().await;
                    info!(sink = %running.entry.name, "sink disabled");
                }
                _ => {}
            }
        }
    }

    /// Moves to `entries`: sinks whose table did not change keep running untouched, changed
    /// ones are built again, removed ones stop, new ones start. Every new sink is built
    /// before anything stops, so a sink that cannot be built leaves all as it was; the
    /// sinks that leave stop once the new ones have started, unless they may not overlap.
    /// `frame_rate` is the camera's new nominal rate.
    pub async fn reload(
        &mut self,
        entries: &[SinkEntry],
        frame_rate: Option<u32>,
    ) -> Result<Vec<(String, Change)>, String> {
        let mut changes = Vec::new();
        let mut built = Vec::new();
        for entry in entries {
            let old = self.sinks.iter().find(|r| r.entry.name == entry.name);
            let change = match old {
                None => Change::Added,
                Some(old) if old.entry.kind != entry.kind || !old.entry.config.same_as(&*entry.config) => {
                    Change::Rebuilt
                }
                Some(old) if old.entry.modes != entry.modes => Change::Modes,
                Some(_) => Change::Kept,
            };
            if matches!(change, Change::Added | Change::Rebuilt) {
                match self.build_one(entry) {
                    Ok(running) => built.push(running),
                    Err(error) => {
                        for running in built {
                            self.shared.metrics.forget_sink(&running.stats);
                        }
                        return Err(error);
                    }
                }
            }
            changes.push((entry.name.clone(), change));
        }
        let removed = self
            .sinks
            .iter()
            .filter(|old| !entries.iter().any(|e| e.name == old.entry.name))
            .map(|old| (old.entry.name.clone(), Change::Removed));
        changes.splice(0..0, removed.collect::<Vec<_>>());

        self.shared.frame_rate.set(frame_rate);
        let mut kept = Vec::new();
        // Sinks leaving once their replacements run (see `SinkConfig::may_overlap`).
        let mut leaving = Vec::new();
        for mut running in std::mem::take(&mut self.sinks) {
            let change = changes
                .iter()
                .find(|(name, _)| *name == running.entry.name)
                .map(|(_, change)| *change);
            match change {
                Some(Change::Kept | Change::Modes) => {
                    if let Some(entry) = entries.iter().find(|e| e.name == running.entry.name) {
                        running.entry.modes = entry.modes.clone();
                    }
                    kept.push(running);
                }
                _ => {
                    for path in &running.paths {
                        self.endpoints.remove(path);
                    }
                    self.shared.metrics.forget_sink(&running.stats);
                    if running.entry.config.may_overlap() {
                        leaving.push(running);
                    } else {
                        running.retire.fire();
                        running.stop().await;
                    }
                }
            }
        }
        for mut running in built {
            running.paths = self.mount(&running);
            kept.push(running);
        }
        // In the config's order, as a fresh start would have them.
        kept.sort_by_key(|r| entries.iter().position(|e| e.name == r.entry.name));
        self.sinks = kept;
        let mode = self.mode;
        self.apply(mode).await;
        for mut running in leaving {
            running.retire.fire();
            running.stop().await;
        }
        Ok(changes)
    }

    /// Names of the sinks enabled right now.
    pub fn enabled(&self) -> Vec<&str> {
        self.sinks
            .iter()
            .filter(|r| r.active.is_some())
            .map(|r| r.entry.name.as_str())
            .collect()
    }
}

impl Running {
    fn start(&mut self) {
        let (trigger, disabled) = shutdown::signal();
        let span = tracing::info_span!("sink", name = %self.entry.name);
        let task = crate::runtime::spawn(self.sink.clone().run(disabled).instrument(span));
        self.stats.enabled.store(true, Ordering::SeqCst);
        self.active = Some((trigger, task));
        info!(sink = %self.entry.name, "sink enabled");
    }

    async fn stop(&mut self) {
        self.stats.enabled.store(false, Ordering::SeqCst);
        if let Some((trigger, task)) = self.active.take() {
            trigger.fire();
            task.await;
        }
    }
}
