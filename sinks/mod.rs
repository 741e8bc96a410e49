//! Sinks: everything that consumes frames. Each lives in its own file, is built from a
//! named `[sinks.<name>]` table, and declares the modes it is active in.
//!
//! Adding a sink is one new file plus one line in [`registry::TYPES`].

use std::any::Any;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use serde::de::DeserializeOwned;
use smol::Task;
use toml::de::ValueDeserializer;
use tracing::{Instrument, info};

use crate::bus::{Bus, Policy, Subscription};
pub use crate::config::Resource;
use crate::config::{ParseSink, SinkEntry, SinkSettings, SinkTypes};
use crate::metrics::{Metrics, SeriesName, SinkStats};
use crate::mode::Mode;
use crate::recordings::Recordings;
use crate::shutdown::{self, Signal, Trigger};
pub use endpoint::{BoxFuture, Client, Endpoint, Endpoints, GetHandler, Upgraded, WsHandler};

pub mod encoder;
pub mod endpoint;
pub mod mjpeg;
pub mod mkv;
pub mod recorder;
pub mod registry;
pub mod relay;
pub mod retention;
pub mod switch;
pub mod thumbnailer;
pub mod websocket;

#[cfg(test)]
mod conformance;

/// A sink type's settings: parsed from its table by serde, compared at a reload, and the
/// recipe for the running sink. Every such type is a [`SinkSettings`] the config can hold.
pub trait SinkConfig: DeserializeOwned + PartialEq + Clone + fmt::Debug + Send + Sync + 'static {
    /// The modes the sink is active in when its table has no `modes` key.
    fn default_modes(&self) -> &'static [Mode];

    /// Ports, paths and directories this sink needs for itself.
    fn resources(&self) -> Vec<Resource> {
        Vec::new()
    }

    /// Builds the running sink.
    fn build(&self, ctx: SinkContext) -> Result<Arc<dyn Sink>, String>;
}

impl<T: SinkConfig> SinkSettings for T {
    fn default_modes(&self) -> &'static [Mode] {
        SinkConfig::default_modes(self)
    }

    fn resources(&self) -> Vec<Resource> {
        SinkConfig::resources(self)
    }

    fn same_as(&self, other: &dyn SinkSettings) -> bool {
        (other as &dyn Any).downcast_ref::<T>() == Some(self)
    }
}

/// One sink type: its `type` name, how its table parses and how it builds.
pub struct SinkType {
    /// The `type` key that names it.
    pub name: &'static str,
    parse: ParseSink,
    build: BuildSink,
}

/// Builds the running sink from settings its type parsed.
type BuildSink = fn(&dyn SinkSettings, SinkContext) -> Result<Arc<dyn Sink>, String>;

impl SinkType {
    /// The type `T` configures, named `name`.
    pub const fn of<T: SinkConfig>(name: &'static str) -> SinkType {
        SinkType {
            name,
            parse: parse::<T>,
            build: build::<T>,
        }
    }
}

fn parse<T: SinkConfig>(table: ValueDeserializer<'_>) -> Result<Box<dyn SinkSettings>, toml::de::Error> {
    Ok(Box::new(T::deserialize(table)?))
}

fn build<T: SinkConfig>(settings: &dyn SinkSettings, ctx: SinkContext) -> Result<Arc<dyn Sink>, String> {
    match (settings as &dyn Any).downcast_ref::<T>() {
        Some(config) => config.build(ctx),
        None => Err("settings of another sink type".into()),
    }
}

/// The sink types the daemon has ([`registry::TYPES`]).
pub struct Registry(pub &'static [SinkType]);

impl Registry {
    fn get(&self, kind: &str) -> Option<&SinkType> {
        self.0.iter().find(|t| t.name == kind)
    }

    /// Builds the running sink a table describes.
    pub fn build(&self, entry: &SinkEntry, ctx: SinkContext) -> Result<Arc<dyn Sink>, String> {
        let Some(kind) = self.get(&entry.kind) else {
            return Err(format!("no sink type `{}`", entry.kind));
        };
        (kind.build)(&*entry.config, ctx)
    }
}

impl SinkTypes for Registry {
    fn parser(&self, kind: &str) -> Option<ParseSink> {
        self.get(kind).map(|t| t.parse)
    }

    fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|t| t.name).collect()
    }
}

/// What a sink gets from the daemon.
#[derive(Clone)]
pub struct SinkContext {
    /// The table name, for logs.
    pub name: String,
    /// Where frames come from.
    pub bus: Bus,
    /// Fires when the daemon stops.
    pub shutdown: Signal,
    /// Fires when a reload removes or rebuilds this sink: what it serves must end, so its
    /// clients reconnect to the new one.
    pub retired: Signal,
    /// `[storage] dir`.
    pub storage_dir: PathBuf,
    /// The recordings on disk and the segment being written.
    pub recordings: Arc<Recordings>,
    /// Live viewers connected to any sink, for the dashboard.
    pub viewers: Arc<AtomicUsize>,
    /// `[server] max_viewers`: more are turned away.
    pub max_viewers: usize,
    /// `[server] send_timeout_seconds`: a viewer whose socket takes nothing for this long
    /// is let go.
    pub send_timeout: std::time::Duration,
    /// The daemon's counters; [`Sinks::build`] registers each sink there.
    pub metrics: Arc<Metrics>,
    /// This sink's counters (and whether the mode enables it).
    pub stats: Arc<SinkStats>,
    /// The camera's nominal frame rate when the config sets it (recordings carry it); a
    /// reload may change it, and the next segment or encoder start reads it.
    pub frame_rate: FrameRate,
}

impl SinkContext {
    /// What every sink shares; [`Sinks::build`] fills in each sink's name.
    pub fn new(
        bus: Bus,
        shutdown: Signal,
        storage_dir: PathBuf,
        recordings: Arc<Recordings>,
        metrics: Arc<Metrics>,
        max_viewers: usize,
        send_timeout: std::time::Duration,
    ) -> Self {
        SinkContext {
            name: String::new(),
            bus,
            // Until a sink gets its own (see `Sinks::build`).
            retired: shutdown.clone(),
            shutdown,
            storage_dir,
            recordings,
            viewers: Arc::new(AtomicUsize::new(0)),
            max_viewers,
            send_timeout,
            metrics,
            stats: Arc::default(),
            frame_rate: FrameRate::default(),
        }
    }

    /// Whether the current mode enables this sink.
    pub fn is_enabled(&self) -> bool {
        self.stats.enabled.load(Ordering::SeqCst)
    }

    /// Subscribes to the bus, counting what the queue skips in this sink's stats.
    pub fn subscribe(&self, policy: Policy) -> Subscription {
        self.bus
            .subscribe_counted(policy, Some(self.stats.dropped.clone()))
    }

    /// Counts a viewer of this sink (and of the daemon) until the returned guard drops;
    /// `None` when `max_viewers` are already watching.
    pub fn viewer(&self) -> Option<ViewerSlot> {
        let admitted = self
            .viewers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_viewers).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            return None;
        }
        let counted = self.stats.gauge(VIEWERS);
        counted.fetch_add(1, Ordering::Relaxed);
        Some(ViewerSlot {
            counted,
            viewers: self.viewers.clone(),
        })
    }

    /// Declares this sink's viewer count, so it is exported (at zero) before anyone watches.
    pub fn count_viewers(&self) {
        self.stats.gauge(VIEWERS);
    }

    /// What a viewer beyond `max_viewers` is told.
    pub fn too_many_viewers(&self) -> String {
        format!(
            "too many viewers (the limit is {}); try again later",
            self.max_viewers
        )
    }
}

/// The camera's nominal frame rate, shared by every sink and changed by a reload.
#[derive(Debug, Clone, Default)]
pub struct FrameRate(Arc<AtomicU32>);

impl FrameRate {
    /// The rate, when the config sets one.
    pub fn get(&self) -> Option<u32> {
        Some(self.0.load(Ordering::Relaxed)).filter(|rate| *rate > 0)
    }

    /// Sets the rate (`None`: unknown).
    pub fn set(&self, rate: Option<u32>) {
        self.0.store(rate.unwrap_or(0), Ordering::Relaxed);
    }
}

/// `croissant_viewers`, kept by the sinks that have viewers.
const VIEWERS: SeriesName = ("viewers", "Viewers connected right now, by sink and kind");

/// One counted viewer; see [`SinkContext::viewer`].
pub struct ViewerSlot {
    /// This sink's viewers.
    counted: Arc<AtomicU64>,
    viewers: Arc<AtomicUsize>,
}

impl ViewerSlot {
    /// Viewers of all sinks, this one included.
    pub fn total(&self) -> usize {
        self.viewers.load(Ordering::Relaxed)
    }
}

impl Drop for ViewerSlot {
    fn drop(&mut self) {
        self.counted.fetch_sub(1, Ordering::Relaxed);
        self.viewers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A running sink.
pub trait Sink: Send + Sync + 'static {
    /// The paths this sink answers on the HTTP port, and how; the HTTP layer mounts them.
    fn endpoints(self: Arc<Self>) -> Vec<(String, Endpoint)> {
        Vec::new()
    }

    /// The sink's own work while the mode enables it. Called each time it becomes enabled;
    /// must return soon after `disabled` fires (finishing what must be finished, such as a
    /// recording segment).
    fn run(self: Arc<Self>, disabled: Signal) -> BoxFuture<()> {
        Box::pin(async move { disabled.wait().await })
    }
}

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
    /// ones are stopped and built again, removed ones stop, new ones start. Every new sink
    /// is built before anything stops, so a sink that cannot be built leaves all as it was.
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
        for old in &self.sinks {
            if !entries.iter().any(|e| e.name == old.entry.name) {
                changes.push((old.entry.name.clone(), Change::Removed));
            }
        }

        self.shared.frame_rate.set(frame_rate);
        let mut kept = Vec::new();
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
                    running.retire.fire();
                    running.stop().await;
                    self.shared.metrics.forget_sink(&running.stats);
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
