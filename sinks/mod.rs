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
use toml::de::ValueDeserializer;

use crate::bus::{Bus, Policy, Subscription};
pub use crate::config::Resource;
use crate::config::{ParseSink, SinkEntry, SinkSettings, SinkTypes};
use crate::metrics::{Metrics, SeriesName, SinkStats};
use crate::mode::Mode;
use crate::recordings::Recordings;
use crate::shutdown::Signal;
pub use endpoint::{
    BodySocket, BoxFuture, Client, Endpoint, Endpoints, GetHandler, Handover, Upgraded, WsHandler,
};

pub mod encoder;
pub mod endpoint;
pub mod fanout;
pub mod mjpeg;
pub mod mkv;
pub mod recorder;
pub mod registry;
pub mod relay;
pub mod retention;
pub mod running;
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

    /// Whether, when a reload rebuilds or removes this sink, it may keep running until the
    /// sinks that replace it have started, so nothing is missed in between (a recorder's
    /// next segment starts before the old one's ends). No for a sink holding what only one
    /// may hold at a time, such as a stream on a media server.
    fn may_overlap(&self) -> bool {
        true
    }
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

    fn may_overlap(&self) -> bool {
        SinkConfig::may_overlap(self)
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
    /// The daemon's counters; [`running::Sinks::build`] registers each sink there.
    pub metrics: Arc<Metrics>,
    /// This sink's counters (and whether the mode enables it).
    pub stats: Arc<SinkStats>,
    /// The camera's nominal frame rate when the config sets it (recordings carry it); a
    /// reload may change it, and the next segment or encoder start reads it.
    pub frame_rate: FrameRate,
}

impl SinkContext {
    /// What every sink shares; [`running::Sinks::build`] fills in each sink's name.
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
            // Until a sink gets its own (see `running::Sinks::build`).
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

    /// Has `deliver` called with every frame on the publisher's thread while the guard
    /// lives; it must never block.
    pub fn attach(&self, deliver: crate::bus::Deliver) -> crate::bus::Attached {
        self.bus.attach(deliver)
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
