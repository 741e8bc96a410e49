//! `GET /metrics` in the Prometheus text format.
//!
//! The frame paths only bump plain atomics ([`SinkStats`], the source's [`Status`]); this
//! module reads them when Prometheus scrapes, through a prometheus-client collector. That
//! keeps the per-frame cost at one relaxed add and puts all naming and formatting here.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use crate::bus::Bus;
use crate::mode::Mode;
use crate::source::{State, Status};
use crate::sync::lock;

/// The `Content-Type` of what [`Exporter::render`] returns.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// What one sink counts as it works: what every sink has, and the series it declares for
/// itself ([`SinkStats::counter`], [`SinkStats::gauge`]).
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Whether the current mode enables the sink.
    pub enabled: AtomicBool,
    /// Frames the sink passed on: to a viewer's socket, to ffmpeg, into a thumbnail.
    pub delivered: AtomicU64,
    /// Frames its queues skipped because the sink (or one of its viewers) was too slow.
    /// Shared with its bus subscriptions, which bump it.
    pub dropped: Arc<AtomicU64>,
    /// Why the sink cannot do its work right now (ffmpeg cannot start, keeps dying, or
    /// cannot reach its server); `None` while it works.
    problem: Mutex<Option<Problem>>,
    /// The sink's own series, in the order it declared them.
    own: Mutex<Vec<Series>>,
}

/// One series a sink declared for itself.
#[derive(Debug, Clone)]
struct Series {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    value: Arc<AtomicU64>,
}

/// A series a kind of sink keeps: its name (exported as `croissant_<name>`, with the
/// `_total` suffix for counters) and its help text.
pub type SeriesName = (&'static str, &'static str);

/// Why a sink cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// In the daemon's own words (shown on the public `/health`).
    pub reason: String,
    /// What the failing program said (its stderr, secrets masked), for the log and the
    /// authenticated `/api/status` only.
    pub detail: String,
}

impl SinkStats {
    /// Declares a counter of this sink's own (or finds the one declared under that name)
    /// and returns the number to bump.
    pub fn counter(&self, (name, help): SeriesName) -> Arc<AtomicU64> {
        self.declare(name, help, MetricType::Counter)
    }

    /// Declares a gauge of this sink's own, as [`SinkStats::counter`] does a counter.
    pub fn gauge(&self, (name, help): SeriesName) -> Arc<AtomicU64> {
        self.declare(name, help, MetricType::Gauge)
    }

    fn declare(&self, name: &'static str, help: &'static str, kind: MetricType) -> Arc<AtomicU64> {
        let mut own = lock(&self.own);
        if let Some(series) = own.iter().find(|s| s.name == name) {
            return series.value.clone();
        }
        let value = Arc::new(AtomicU64::new(0));
        own.push(Series {
            name,
            help,
            kind,
            value: value.clone(),
        });
        value
    }

    fn own(&self) -> Vec<Series> {
        lock(&self.own).clone()
    }

    /// Says why the sink cannot work, or (`None`) that it works again.
    pub fn set_problem(&self, problem: Option<Problem>) {
        *lock(&self.problem) = problem;
    }

    /// Why the sink cannot work right now, if it is enabled and cannot.
    pub fn problem(&self) -> Option<Problem> {
        if !self.enabled.load(Ordering::Relaxed) {
            return None;
        }
        lock(&self.problem).clone()
    }
}

/// Labels of one sink's series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
    r#type: String,
}

/// Labels of the HTTP request counter. Routes are patterns (`/recordings/:name`), never raw
/// paths, so a client cannot grow the series without bound.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    status: u16,
}

/// Labels of refused connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusedLabels {
    reason: &'static str,
}

/// Every sink's stats and the HTTP tallies; one per daemon.
#[derive(Debug, Default)]
pub struct Metrics {
    sinks: Mutex<Vec<(SinkLabels, Arc<SinkStats>)>>,
    http: Family<HttpLabels, Counter>,
    /// Client connections open right now (the connection caps keep it up to date).
    pub connections: Gauge,
    refused: Family<RefusedLabels, Counter>,
    accept_errors: Counter,
}

impl Metrics {
    /// Registers a sink; its stats are exported from now on.
    pub fn sink(&self, name: &str, kind: &str) -> Arc<SinkStats> {
        let stats = Arc::new(SinkStats::default());
        let labels = SinkLabels {
            sink: name.to_owned(),
            r#type: kind.to_owned(),
        };
        lock(&self.sinks).push((labels, stats.clone()));
        stats
    }

    /// Stops exporting a sink's stats (a reload removed or rebuilt it).
    pub fn forget_sink(&self, stats: &Arc<SinkStats>) {
        lock(&self.sinks).retain(|(_, kept)| !Arc::ptr_eq(kept, stats));
    }

    /// Counts one answered request.
    pub fn http_request(&self, route: &str, status: u16) {
        self.http
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                status,
            })
            .inc();
    }

    /// Counts a connection turned away at the door, by the cap it hit.
    pub fn connection_refused(&self, reason: &'static str) {
        self.refused.get_or_create(&RefusedLabels { reason }).inc();
    }

    /// Counts a failed `accept` (out of descriptors or memory).
    pub fn accept_error(&self) {
        self.accept_errors.inc();
    }

    /// The enabled sinks that cannot do their work, by name, with why.
    pub fn problems(&self) -> Vec<(String, Problem)> {
        self.sinks()
            .into_iter()
            .filter_map(|(labels, stats)| stats.problem().map(|problem| (labels.sink, problem)))
            .collect()
    }

    fn sinks(&self) -> Vec<(SinkLabels, Arc<SinkStats>)> {
        lock(&self.sinks).clone()
    }
}

/// What the collector reads at scrape time besides [`Metrics`].
#[derive(Clone)]
pub struct Sources {
    /// The daemon's counters.
    pub metrics: Arc<Metrics>,
    /// The camera's state.
    pub status: Arc<Status>,
    /// Who wants frames.
    pub bus: Bus,
    /// Reads the current mode (the mode switch sits above the metrics).
    pub mode: Arc<dyn Fn() -> Mode + Send + Sync>,
    /// `[storage] dir`, for disk space.
    pub storage_dir: PathBuf,
}

/// The registry `/metrics` renders; built once.
#[derive(Debug)]
pub struct Exporter {
    registry: Registry,
}

impl Exporter {
    /// A registry with everything under the `croissant_` prefix.
    pub fn new(sources: Sources) -> Exporter {
        let mut registry = Registry::with_prefix("croissant");
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status (WebSocket upgrades count as 101)",
            sources.metrics.http.clone(),
        );
        registry.register(
            "http_connections",
            "Client connections open right now",
            sources.metrics.connections.clone(),
        );
        registry.register(
            "http_connections_refused",
            "Connections closed at once because a cap was reached, by cap",
            sources.metrics.refused.clone(),
        );
        registry.register(
            "http_accept_errors",
            "Connections the OS could not accept (out of file descriptors or memory)",
            sources.metrics.accept_errors.clone(),
        );
        registry.register_collector(Box::new(sources));
        Exporter { registry }
    }

    /// The whole exposition, in the Prometheus text format (0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources")
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl Collector for Sources {
    fn encode(&self, mut out: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snap = self.status.snapshot();
        gauge_with(
            &mut out,
            "build_info",
            "Always 1; the version is in the label",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1,
        )?;
        gauge(
            &mut out,
            "uptime_seconds",
            "Seconds since the daemon started",
            self.status.started_at().elapsed().as_secs(),
        )?;
        let current = (self.mode)();
        let mut family = out.encode_descriptor("mode", "1 for the current mode", None, MetricType::Gauge)?;
        for mode in Mode::ALL {
            ConstGauge::new(i64::from(mode == current))
                .encode(family.encode_family(&[("mode", mode.as_str())])?)?;
        }

        counter(
            &mut out,
            "source_frames_read",
            "Frames read from the camera",
            snap.frames,
        )?;
        counter(
            &mut out,
            "source_restarts",
            "Camera process restarts after it died or stalled",
            snap.restarts,
        )?;
        gauge(
            &mut out,
            "source_up",
            "1 while frames flow from the camera",
            u64::from(snap.state == State::Running),
        )?;
        gauge(
            &mut out,
            "source_wanted",
            "1 while anything wants frames (a viewer, or a recording sink in continuous mode)",
            u64::from(self.bus.demand().is_wanted()),
        )?;
        let mut family = out.encode_descriptor(
            "source_state",
            "1 for the camera's current life-cycle state",
            None,
            MetricType::Gauge,
        )?;
        for state in State::ALL {
            ConstGauge::new(i64::from(state == snap.state))
                .encode(family.encode_family(&[("state", state.as_str())])?)?;
        }
        let fps = out.encode_descriptor(
            "source_fps",
            "Frames per second over the last two seconds",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(snap.fps).encode(fps)?;
        if let Some(age) = snap.last_frame_age_ms {
            let metric = out.encode_descriptor(
                "source_last_frame_age_seconds",
                "Seconds since the last frame from the camera",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(age as f64 / 1000.0).encode(metric)?;
        }

        self.encode_sinks(&mut out)?;

        if let Some((free, total)) = crate::recordings::disk_space(&self.storage_dir) {
            gauge(
                &mut out,
                "disk_free_bytes",
                "Bytes available to the daemon on the storage filesystem",
                free,
            )?;
            gauge(
                &mut out,
                "disk_size_bytes",
                "Size of the storage filesystem",
                total,
            )?;
        }
        Ok(())
    }
}

/// A series every sink has, and the stat it reads.
struct CommonSeries {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    pick: fn(&SinkStats) -> u64,
}

const COMMON_SERIES: [CommonSeries; 4] = [
    CommonSeries {
        name: "sink_enabled",
        help: "1 while the current mode enables the sink",
        kind: MetricType::Gauge,
        pick: |s| u64::from(s.enabled.load(Ordering::Relaxed)),
    },
    CommonSeries {
        name: "sink_failing",
        help: "1 while an enabled sink cannot do its work (see /health for why)",
        kind: MetricType::Gauge,
        pick: |s| u64::from(s.problem().is_some()),
    },
    CommonSeries {
        name: "sink_frames_delivered",
        help: "Frames a sink passed on (to each viewer, to ffmpeg, into a thumbnail)",
        kind: MetricType::Counter,
        pick: |s| s.delivered.load(Ordering::Relaxed),
    },
    CommonSeries {
        name: "sink_frames_dropped",
        help: "Frames a sink's queues skipped because it or a viewer was too slow",
        kind: MetricType::Counter,
        pick: |s| s.dropped.load(Ordering::Relaxed),
    },
];

impl Sources {
    fn encode_sinks(&self, out: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sinks = self.metrics.sinks();
        if sinks.is_empty() {
            return Ok(());
        }
        for series in &COMMON_SERIES {
            let mut family = out.encode_descriptor(series.name, series.help, None, series.kind)?;
            for (labels, stats) in &sinks {
                encode_value(family.encode_family(labels)?, series.kind, (series.pick)(stats))?;
            }
        }
        // The sinks' own series, each under its name once, with every sink that has it.
        let own: Vec<(&SinkLabels, Vec<Series>)> = sinks
            .iter()
            .map(|(labels, stats)| (labels, stats.own()))
            .collect();
        let mut names: Vec<(&'static str, &'static str, MetricType)> = Vec::new();
        for (_, series) in &own {
            for s in series {
                if !names.iter().any(|(name, _, _)| *name == s.name) {
                    names.push((s.name, s.help, s.kind));
                }
            }
        }
        for (name, help, kind) in names {
            let mut family = out.encode_descriptor(name, help, None, kind)?;
            for (labels, series) in &own {
                if let Some(s) = series.iter().find(|s| s.name == name) {
                    encode_value(
                        family.encode_family(*labels)?,
                        kind,
                        s.value.load(Ordering::Relaxed),
                    )?;
                }
            }
        }
        Ok(())
    }
}

fn encode_value(
    metric: prometheus_client::encoding::MetricEncoder<'_>,
    kind: MetricType,
    value: u64,
) -> Result<(), std::fmt::Error> {
    match kind {
        MetricType::Counter => ConstCounter::new(value).encode(metric),
        _ => ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(metric),
    }
}

fn counter(out: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
    let metric = out.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

fn gauge(out: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
    let metric = out.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(metric)
}

fn gauge_with(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    labels: &[(&str, &str)],
    value: i64,
) -> Result<(), std::fmt::Error> {
    let mut family = out.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(family.encode_family(&labels)?)
}
