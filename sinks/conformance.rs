//! What every registered sink must do, checked for each entry of [`TYPES`]: a table with
//! only its `type` (plus the keys it cannot do without, listed below) parses, its resources
//! are sane, it builds with a test context, and it stops promptly when disabled, also
//! after the daemon's shutdown signal. A new sink gets these checks by being registered.

use std::sync::Arc;
use std::time::Duration;

use super::registry::TYPES;
use super::running::Sinks;
use super::{Resource, SinkContext};
use crate::bus::{Bus, Demand};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::recordings::Recordings;

/// Keys a sink cannot do without, by `type`; every other sink must parse from its `type`
/// alone.
const REQUIRED: &[(&str, &str)] = &[("relay", "url = \"rtmp://127.0.0.1:1935/live/test\"")];

/// How long a disabled sink may take to stop.
const STOP_WITHIN: Duration = Duration::from_secs(5);

fn config_for(kind: &str) -> Config {
    let required = REQUIRED
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or("", |(_, keys)| keys);
    let text = format!("[sinks.under_test]\ntype = \"{kind}\"\n{required}\n");
    Config::parse(&text, "conformance.toml", &TYPES)
        .unwrap_or_else(|errors| panic!("`{kind}` from its type alone: {errors:?}"))
}

fn context(dir: &std::path::Path) -> (SinkContext, crate::shutdown::Trigger) {
    let (shutdown, signal) = crate::shutdown::signal();
    let ctx = SinkContext::new(
        Bus::new(Demand::default()),
        signal,
        dir.to_path_buf(),
        Arc::new(Recordings::new(dir)),
        Arc::new(Metrics::default()),
        10,
        Duration::from_secs(1),
    );
    (ctx, shutdown)
}

/// Whether `stop` finished within [`STOP_WITHIN`].
fn promptly(stop: impl std::future::Future<Output = ()>) -> bool {
    crate::runtime::block_on(futures_lite::future::or(
        async {
            stop.await;
            true
        },
        async {
            smol::Timer::after(STOP_WITHIN).await;
            false
        },
    ))
}

#[test]
fn every_registered_sink_parses_builds_and_stops_promptly() {
    assert!(!TYPES.0.is_empty());
    for kind in TYPES.0.iter().map(|t| t.name) {
        let config = config_for(kind);
        let entry = config
            .sinks
            .iter()
            .find(|e| e.name == "under_test")
            .unwrap_or_else(|| panic!("`{kind}`: the table is not among the sinks"));
        assert_eq!(entry.kind, kind);
        assert!(
            !entry.modes.is_empty(),
            "`{kind}` is active in no mode by default"
        );
        for resource in entry.config.resources() {
            match resource {
                Resource::HttpPath(path) | Resource::WebSocketPath(path) => {
                    assert!(path.starts_with('/'), "`{kind}`: {path}")
                }
                Resource::Directory(dir) => {
                    assert!(
                        dir.is_relative(),
                        "`{kind}` writes outside storage: {}",
                        dir.display()
                    )
                }
            }
        }
        for shutdown_first in [false, true] {
            let dir = tempfile::tempdir().expect("dir");
            let (ctx, shutdown) = context(dir.path());
            let mut sinks = Sinks::build(&TYPES, std::slice::from_ref(entry), &ctx)
                .unwrap_or_else(|error| panic!("`{kind}` does not build: {error}"));
            let mode = entry.modes[0];
            crate::runtime::block_on(sinks.apply(Some(mode)));
            assert_eq!(sinks.enabled(), vec!["under_test"], "`{kind}` in {mode}");
            if shutdown_first {
                shutdown.fire();
            }
            assert!(
                promptly(sinks.apply(None)),
                "`{kind}` did not stop within {STOP_WITHIN:?} (shutdown first: {shutdown_first})"
            );
            assert!(sinks.enabled().is_empty());
        }
    }
}
