//! Sinks: everything that consumes frames. Each lives in its own file, is built from a
//! named `[sinks.<name>]` table, and declares the modes it is active in.
//!
//! Adding a sink is one new file plus one line in [`FACTORIES`].

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dyn_clone::DynClone;
use serde::de::DeserializeOwned;
use smol::Task;
use toml::de::ValueDeserializer;
use tracing::{Instrument, info};

use crate::bus::{Bus, Policy, Subscription};
use crate::config::SinkEntry;
use crate::http::Routes;
use crate::metrics::{Metrics, SinkStats};
use crate::mode::Mode;
use crate::recordings::Recordings;
use crate::shutdown::{self, Signal, Trigger};

pub mod encoder;
pub mod fanout;
pub mod mjpeg;
pub mod mkv;
pub mod recorder;
pub mod relay;
pub mod retention;
pub mod switch;
pub mod thumbnailer;
pub mod websocket;

#[cfg(test)]
mod conformance;

/// A boxed future, as the object-safe sink methods return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Parses one sink table (without its `type` and `modes` keys) into its config.
pub type Factory = fn(ValueDeserializer<'_>) -> Result<Box<dyn SinkConfig>, toml::de::Error>;

/// Every sink implementation, keyed by its `type`.
pub const FACTORIES: &[(&str, Factory)] = &[
    ("websocket", parse::<websocket::Config>),
    ("http-mjpeg", parse::<mjpeg::Config>),
    ("recorder", parse::<recorder::Config>),
    ("thumbnailer", parse::<thumbnailer::Config>),
    ("retention", parse::<retention::Config>),
    ("relay", parse::<relay::Config>),
];

fn parse<T: SinkConfig + DeserializeOwned + 'static>(
    table: ValueDeserializer<'_>,
) -> Result<Box<dyn SinkConfig>, toml::de::Error> {
    Ok(Box::new(T::deserialize(table)?))
}

/// The factory for a `type`, if it exists.
pub fn factory(kind: &str) -> Option<Factory> {
    FACTORIES.iter().find(|(name, _)| *name == kind).map(|(_, f)| *f)
}

/// The known `type` names, for error messages.
pub fn known_types() -> Vec<&'static str> {
    FACTORIES.iter().map(|(name, _)| *name).collect()
}

/// Something two sinks cannot share; clashes are config errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// An HTTP path or WebSocket endpoint.
    HttpPath(String),
    /// A directory the sink writes files into.
    Directory(PathBuf),
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::HttpPath(path) => write!(f, "HTTP path {path}"),
            Resource::Directory(dir) => write!(f, "directory {}", dir.display()),
        }
    }
}

/// A sink's settings, as parsed from its table. Cloneable as a trait object so a whole
/// [`Config`](crate::config::Config) can be cloned.
pub trait SinkConfig: DynClone + fmt::Debug + Send + Sync {
    /// The modes the sink is active in when its table has no `modes` key.
    fn default_modes(&self) -> &'static [Mode];

    /// Ports, paths and directories this sink needs for itself.
    fn resources(&self) -> Vec<Resource> {
        Vec::new()
    }

    /// Builds the running sink.
    fn build(&self, ctx: SinkContext) -> Result<Arc<dyn Sink>, String>;
}

dyn_clone::clone_trait_object!(SinkConfig);

/// What a sink gets from the daemon.
#[derive(Clone)]
pub struct SinkContext {
    /// The table name, for logs.
    pub name: String,
    /// Where frames come from.
    pub bus: Bus,
    /// Fires when the daemon stops.
    pub shutdown: Signal,
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
    /// The camera's nominal frame rate, when the config sets it (recordings carry it).
    pub frame_rate: Option<u32>,
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
            shutdown,
            storage_dir,
            recordings,
            viewers: Arc::new(AtomicUsize::new(0)),
            max_viewers,
            send_timeout,
            metrics,
            stats: Arc::default(),
            frame_rate: None,
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
        self.stats.viewers.fetch_add(1, Ordering::Relaxed);
        Some(ViewerSlot {
            stats: self.stats.clone(),
            viewers: self.viewers.clone(),
        })
    }

    /// What a viewer beyond `max_viewers` is told.
    pub fn too_many_viewers(&self) -> String {
        format!(
            "too many viewers (the limit is {}); try again later",
            self.max_viewers
        )
    }
}

/// One counted viewer; see [`SinkContext::viewer`].
pub struct ViewerSlot {
    stats: Arc<SinkStats>,
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
        self.stats.viewers.fetch_sub(1, Ordering::Relaxed);
        self.viewers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A running sink.
pub trait Sink: Send + Sync + 'static {
    /// Registers the HTTP routes and WebSocket endpoints this sink answers.
    fn routes(self: Arc<Self>, _routes: &mut Routes) {}

    /// The sink's own work while the mode enables it. Called each time it becomes enabled;
    /// must return soon after `disabled` fires (finishing what must be finished, such as a
    /// recording segment).
    fn run(self: Arc<Self>, disabled: Signal) -> BoxFuture<()> {
        Box::pin(async move { disabled.wait().await })
    }
}

/// The built sinks, and which of them are enabled right now.
pub struct Sinks {
    sinks: Vec<Running>,
}

struct Running {
    name: String,
    modes: Vec<Mode>,
    sink: Arc<dyn Sink>,
    stats: Arc<SinkStats>,
    active: Option<(Trigger, Task<()>)>,
}

impl Sinks {
    /// Builds every configured sink; none is enabled until [`Sinks::apply`].
    pub fn build(entries: &[SinkEntry], shared: &SinkContext) -> Result<Sinks, String> {
        let mut sinks = Vec::new();
        for entry in entries {
            let stats = shared.metrics.sink(&entry.name, &entry.kind);
            let ctx = SinkContext {
                name: entry.name.clone(),
                stats: stats.clone(),
                ..shared.clone()
            };
            let sink = entry
                .config
                .build(ctx)
                .map_err(|error| format!("sink `{}` ({}): {error}", entry.name, entry.kind))?;
            sinks.push(Running {
                name: entry.name.clone(),
                modes: entry.modes.clone(),
                sink,
                stats,
                active: None,
            });
        }
        Ok(Sinks { sinks })
    }

    /// Lets every sink register its routes.
    pub fn routes(&self, routes: &mut Routes) {
        for running in &self.sinks {
            running.sink.clone().routes(routes);
        }
    }

    /// Enables the sinks that `mode` lists and disables the others, waiting for disabled
    /// ones to wind down.
    pub async fn apply(&mut self, mode: Option<Mode>) {
        for running in &mut self.sinks {
            let want = mode.is_some_and(|m| running.modes.contains(&m));
            match (&running.active, want) {
                (None, true) => {
                    let (trigger, disabled) = shutdown::signal();
                    let span = tracing::info_span!("sink", name = %running.name);
                    let task = crate::runtime::spawn(running.sink.clone().run(disabled).instrument(span));
                    running.stats.enabled.store(true, Ordering::SeqCst);
                    running.active = Some((trigger, task));
                    info!(sink = %running.name, "sink enabled");
                }
                (Some(_), false) => {
                    running.stats.enabled.store(false, Ordering::SeqCst);
                    if let Some((trigger, task)) = running.active.take() {
                        trigger.fire();
                        task.await;
                    }
                    info!(sink = %running.name, "sink disabled");
                }
                _ => {}
            }
        }
    }

    /// Names of the sinks enabled right now.
    pub fn enabled(&self) -> Vec<&str> {
        self.sinks
            .iter()
            .filter(|r| r.active.is_some())
            .map(|r| r.name.as_str())
            .collect()
    }
}
