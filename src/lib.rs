//! Croissant: a camera streaming daemon for the Raspberry Pi.
//!
//! # Layout
//!
//! Imports run one way, from the bottom up (`scripts/deps` prints the graph and fails on a
//! cycle). Follow one frame from the camera to a browser:
//!
//! - Bottom: [`config`], the TOML file, validated with file, line and key in every error
//!   (it parses `[sinks.*]` tables with the sink types it is handed, and knows none of
//!   them); [`mode`], on-demand or continuous; [`shutdown`], one-shot signals;
//!   [`runtime`], the executor; [`sync`], [`ratelimit`], [`backoff`], [`secrets`].
//! - Frames: [`source`] runs the camera (or ffmpeg, any command, or the built-in
//!   [`testpattern`]) as a supervised [`child`] while anyone wants frames, and reads its
//!   pipe on a thread of its own; [`splitter`] cuts its stdout into whole JPEGs; [`bus`]
//!   shares each frame (one allocation) with a bounded queue per consumer, or calls a
//!   consumer that never waits right on the reading thread, and counts the demand that
//!   runs the source.
//! - Sinks (`sinks/`), one file or folder each, listed in `sinks/registry.rs`:
//!   `sinks/fanout/` writes each live frame to many sockets with one `writev` or
//!   `sendfile` per viewer (the first viewers from the camera's own thread), taking turns
//!   with the socket's other writer; `sinks/websocket/` serves live viewers over
//!   WebSocket through it (plain or flow-controlled), `sinks/mjpeg.rs` MJPEG over HTTP;
//!   `sinks/recorder/`, `sinks/thumbnailer.rs` and `sinks/retention.rs` make continuous
//!   mode's MP4 segments, thumbnails and clean-up over the files [`recordings`] names;
//!   `sinks/relay.rs` pushes H.264 to a media server. Recorder and relay feed ffmpeg
//!   through `sinks/mkv.rs` with the options of `sinks/encoder.rs`. Sinks describe the
//!   paths they answer (`sinks/endpoint.rs`) and declare their own [`metrics`] series;
//!   `sinks/switch.rs` enables them by mode and persists it ([`saved`]).
//! - Top: [`http`], one port for the pages, `/health`, `/api/status`, `/settings`,
//!   `/snapshot.jpg`, `/metrics`, the replays API and the sinks' endpoints, every request
//!   checked by its guard against [`auth`]'s users and sessions; and this file, which
//!   wires it all together, stops it in order, and reloads the config on SIGHUP.
#![warn(missing_docs)]

pub mod auth;
pub mod backoff;
pub mod bus;
pub mod child;
pub mod config;
pub mod http;
pub mod metrics;
pub mod mode;
pub mod mp4;
pub mod net;
pub mod passwords;
pub mod ratelimit;
pub mod recordings;
pub mod runtime;
pub mod saved;
pub mod secrets;
pub mod shutdown;
#[path = "../sinks/mod.rs"]
pub mod sinks;
pub mod source;
pub mod splitter;
pub mod stderr;
pub mod sync;
pub mod testpattern;
pub mod throttle;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::StreamExt;
use tracing::{error, info, warn};

use crate::bus::Bus;
use crate::bus::Demand;
use crate::config::Config;

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The configured `[server] listen`.
        addr: std::net::SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// A sink could not be built from its config.
    #[error("{0}")]
    Sink(String),
    /// `[auth]` could not be set up.
    #[error("{0}")]
    Auth(String),
}

/// Runs the daemon until SIGINT or SIGTERM, then shuts down cleanly. SIGHUP re-reads the
/// config from `path` (see [`reload`]).
pub fn run(config: Config, path: Option<PathBuf>) -> Result<(), Error> {
    runtime::block_on(daemon(config, path))
}

async fn daemon(config: Config, path: Option<PathBuf>) -> Result<(), Error> {
    let config = Arc::new(config);
    let (stop, shutdown) = shutdown::signal();
    let reloads = watch_signals(stop)?;

    let bus = Bus::new(Demand::default());
    let status = Arc::new(source::Status::default());
    let addr = config.server.listen;
    let listener = http::bind(addr).map_err(|source| Error::Listen { addr, source })?;
    let fd_limit = http::admission::raise_fd_limit();

    let recordings = Arc::new(recordings::Recordings::new(&config.storage.dir));
    for repaired in recordings.repair() {
        tracing::warn!("recording left by an earlier run: {repaired}");
    }
    let metrics = Arc::new(metrics::Metrics::default());
    let admission = Arc::new(http::admission::Admission::new(
        &config.server,
        fd_limit,
        metrics.connections.clone(),
    ));
    let shared = sinks::SinkContext::new(
        bus.clone(),
        shutdown.clone(),
        config.storage.dir.clone(),
        recordings.clone(),
        metrics.clone(),
        config.server.max_viewers,
        Duration::from_secs(config.server.send_timeout_seconds),
    );
    shared.frame_rate.set(config.source.nominal_framerate());
    let viewers = shared.viewers.clone();
    let sinks =
        sinks::running::Sinks::build(&sinks::registry::TYPES, &config.sinks, &shared).map_err(Error::Sink)?;
    let state_file = saved::SavedFile::in_dir(&config.storage.dir);
    let mode = state_file
        .load_or(saved::Saved {
            mode: config.mode.default,
        })
        .mode;
    let modes = Arc::new(sinks::switch::ModeSwitch::new(mode, sinks, state_file));
    let exporter = Arc::new(metrics::Exporter::new(metrics::Sources {
        metrics: metrics.clone(),
        status: status.clone(),
        bus: bus.clone(),
        mode: {
            let modes = modes.clone();
            Arc::new(move || modes.current())
        },
        storage_dir: config.storage.dir.clone(),
    }));
    let routes = http::Routes::new(http::AppState {
        config: config.clone(),
        bus: bus.clone(),
        status: status.clone(),
        mode: modes.clone(),
        recordings,
        viewers,
        metrics,
        exporter,
        auth: match config.auth.clone() {
            Some(users) => Some(Arc::new(auth::Auth::new(users).map_err(Error::Auth)?)),
            None => None,
        },
        admission: admission.clone(),
        endpoints: modes.endpoints().await,
    });
    modes.start().await;

    let mut source = Source::start(config.source.clone(), &bus, &status, &shutdown);
    let front = Arc::new(routes.into_front(shutdown.clone()));
    let server = runtime::spawn(http::serve(listener, front, admission.clone(), shutdown.clone()));
    info!(
        config = %config.origin,
        source = config.source.kind_name(),
        mode = %modes.current(),
        sinks = ?modes.enabled_sinks().await,
        "croissant {} listening on http://{addr} (viewer at /stream)",
        env!("CARGO_PKG_VERSION"),
    );

    if admission.max_connections() < config.server.max_connections {
        warn!(
            fd_limit,
            max_connections = admission.max_connections(),
            "the file descriptor limit allows fewer connections than [server] max_connections; \
             raise it (LimitNOFILE= in the systemd unit, ulimit -n in a shell)"
        );
    }
    info!(
        max_connections = admission.max_connections(),
        per_address = admission.max_per_address(),
        fd_limit,
        "connection limits"
    );

    if config.auth.is_none() && !addr.ip().is_loopback() {
        warn!(
            "no [auth] in the config: anyone who can reach {addr} can watch, download recordings \
             and switch modes; add users (see `croissant hash-password`) or listen on 127.0.0.1"
        );
    }

    let mut running = (*config).clone();
    while let Some(()) = shutdown::unless(&shutdown, reloads.recv())
        .await
        .and_then(Result::ok)
    {
        match &path {
            Some(path) => reload(path, &mut running, &modes, &mut source, &bus, &status, &shutdown).await,
            None => warn!("SIGHUP: no config file to re-read (started without --config)"),
        }
    }
    // From now on a SIGHUP is answered with a line saying it is ignored.
    drop(reloads);
    server.await;
    let sinks_done = async {
        modes.stop_all().await;
        true
    };
    let timeout = async {
        smol::Timer::after(Duration::from_secs(30)).await;
        false
    };
    if !futures_lite::future::or(sinks_done, timeout).await {
        warn!("sinks did not stop within 30 s");
    }
    source.task.await;
    info!("stopped");
    Ok(())
}

/// The source's supervisor, and what stops it: the daemon's shutdown or a reload that
/// changes the source.
struct Source {
    task: smol::Task<()>,
    stop: shutdown::Trigger,
}

impl Source {
    fn start(
        config: config::SourceConfig,
        bus: &Bus,
        status: &Arc<source::Status>,
        shutdown: &shutdown::Signal,
    ) -> Source {
        status.set_config(config.clone());
        let (stop, reloaded) = shutdown::signal();
        let (stopping, stops) = shutdown::signal();
        let daemon_stops = shutdown.clone();
        runtime::spawn(async move {
            futures_lite::future::or(daemon_stops.wait(), reloaded.wait()).await;
            stopping.fire();
        })
        .detach();
        let task = runtime::spawn(source::supervise(config, bus.clone(), status.clone(), stops));
        Source { task, stop }
    }
}

/// Re-reads the config and applies what can change while the daemon runs: sinks whose
/// table did not change keep running untouched, changed ones are rebuilt, removed ones stop,
/// new ones start, and a changed `[source]` restarts only the source. A config with an
/// error is refused whole and the running one stays. The other tables (`[server]`,
/// `[storage]`, `[viewer]`, `[auth]`, `[mode]`) are read at start: a change there is named
/// in the log and waits for a restart.
async fn reload(
    path: &std::path::Path,
    running: &mut Config,
    modes: &sinks::switch::ModeSwitch,
    source: &mut Source,
    bus: &Bus,
    status: &Arc<source::Status>,
    shutdown: &shutdown::Signal,
) {
    info!(config = %path.display(), "SIGHUP: reloading the config");
    // Read off the executor's threads: a config on a slow or stuck filesystem must not
    // hold up the viewers.
    let file = path.to_owned();
    let new = match smol::unblock(move || Config::load(&file, &sinks::registry::TYPES)).await {
        Ok(new) => new,
        Err(error) => {
            for line in error.to_string().lines() {
                error!("{line}");
            }
            error!("config reload refused: the running config stays");
            return;
        }
    };
    let changes = match modes.reload(&new.sinks, new.source.nominal_framerate()).await {
        Ok(changes) => changes,
        Err(error) => {
            error!("{error}");
            error!("config reload refused: the running config stays");
            return;
        }
    };
    if new.source != running.source {
        // The old camera lets go of the device before the new one opens it.
        source.stop.fire();
        (&mut source.task).await;
        *source = Source::start(new.source.clone(), bus, status, shutdown);
        if bus.demand().is_wanted() {
            info!(source = new.source.kind_name(), "source changed, restarted");
        } else {
            info!(
                source = new.source.kind_name(),
                "source changed; nobody wants frames now, it starts with the new settings when someone does"
            );
        }
    } else {
        info!("source unchanged, kept running");
    }
    for (sink, change) in changes {
        info!(%sink, "sink {}", change.as_str());
    }
    let later: Vec<&str> = [
        ("[server]", new.server != running.server),
        ("[storage]", new.storage != running.storage),
        ("[viewer]", new.viewer != running.viewer),
        ("[auth]", new.auth != running.auth),
        ("[mode]", new.mode != running.mode),
    ]
    .into_iter()
    .filter_map(|(table, changed)| changed.then_some(table))
    .collect();
    if !later.is_empty() {
        warn!(
            "{} changed: read at start only, so the old values stay until the daemon restarts \
             (systemctl restart croissant)",
            later.join(", ")
        );
    }
    running.source = new.source;
    running.sinks = new.sinks;
    info!("config reloaded");
}

/// The first SIGINT/SIGTERM starts a clean shutdown; a second one exits at once. SIGHUP
/// asks for a reload on the returned channel (several at once make one).
fn watch_signals(stop: shutdown::Trigger) -> Result<async_channel::Receiver<()>, Error> {
    use async_signal::{Signal, Signals};
    let mut signals = Signals::new([Signal::Term, Signal::Int, Signal::Hup]).map_err(Error::Signals)?;
    let (reload, reloads) = async_channel::bounded(1);
    runtime::spawn(async move {
        let mut seen = 0;
        while let Some(signal) = signals.next().await {
            if matches!(signal, Ok(Signal::Hup)) {
                if let Err(async_channel::TrySendError::Closed(())) = reload.try_send(()) {
                    info!("SIGHUP ignored: the daemon is stopping");
                }
                continue;
            }
            seen += 1;
            if seen == 1 {
                info!(signal = ?signal.ok(), "shutting down");
                stop.fire();
            } else {
                error!("second signal: exiting now");
                std::process::exit(1);
            }
        }
    })
    .detach();
    Ok(reloads)
}
