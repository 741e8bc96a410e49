//! `/metrics`: valid Prometheus text whose counters follow what the daemon does.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:{port}"
[storage]
dir = "{dir}"
[mode]
default = "continuous"
[source]
kind = "command"
command = ["{fakecam}", "--fps", "10", "--width", "320", "--height", "240"]
stop_grace_ms = 300
[sinks.live]
type = "websocket"
[sinks.mjpeg]
type = "http-mjpeg"
[sinks.recorder]
type = "recorder"
segment_seconds = 2
"#;

/// One scrape, parsed by an independent parser: series name plus sorted labels → value.
struct Scrape {
    samples: HashMap<String, f64>,
    types: HashMap<String, String>,
}

impl Scrape {
    fn take(daemon: &Daemon) -> Scrape {
        let (status, headers, body) = http(
            daemon.port,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(status, 200);
        let content_type = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let text = String::from_utf8(body).expect("metrics are UTF-8");
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let parsed = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text format");
        let mut samples = HashMap::new();
        for sample in &parsed.samples {
            let value = match sample.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                ref other => panic!("unexpected sample kind for {}: {other:?}", sample.metric),
            };
            let mut labels: Vec<String> = sample.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let key = format!("{}{{{}}}", sample.metric, labels.join(","));
            assert!(
                samples.insert(key.clone(), value).is_none(),
                "duplicate series {key}"
            );
        }
        let types = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
            .collect();
        Scrape { samples, types }
    }

    /// The value of one series; `labels` as `k=v`, sorted.
    fn get(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no series {series}; have {:?}", self.samples.keys()))
    }
}

#[test]
fn metrics_parse_and_follow_frames_viewers_recordings_and_requests() {
    let daemon = Daemon::start(CONFIG);
    let before = Scrape::take(&daemon);
    for (name, kind) in [
        ("croissant_source_frames_read_total", "counter"),
        ("croissant_sink_frames_delivered_total", "counter"),
        ("croissant_sink_frames_dropped_total", "counter"),
        ("croissant_viewers", "gauge"),
        ("croissant_source_restarts_total", "counter"),
        ("croissant_source_state", "gauge"),
        ("croissant_recorder_segments_total", "counter"),
        ("croissant_recorder_bytes_total", "counter"),
        ("croissant_disk_free_bytes", "gauge"),
    ] {
        assert_eq!(before.types.get(name).map(String::as_str), Some(kind), "{name}");
    }
    assert_eq!(before.get("croissant_mode{mode=continuous}"), 1.0);
    assert!(before.get("croissant_disk_free_bytes{}") > 0.0);
    assert_eq!(before.get("croissant_viewers{sink=live,type=websocket}"), 0.0);

    let mut viewer = daemon.viewer("/");
    viewer.send("start");
    for _ in 0..20 {
        viewer.frame();
    }
    // Segments are 2 s long: wait until the recorder finished at least one.
    daemon.wait_for("a finished segment", Duration::from_secs(20), |d| {
        Scrape::take(d).get("croissant_recorder_segments_total{sink=recorder,type=recorder}") >= 1.0
    });
    let after = Scrape::take(&daemon);

    let read = after.get("croissant_source_frames_read_total{}");
    assert!(
        read >= before.get("croissant_source_frames_read_total{}") + 20.0,
        "{read}"
    );
    assert!(after.get("croissant_sink_frames_delivered_total{sink=live,type=websocket}") >= 20.0);
    assert!(after.get("croissant_sink_frames_delivered_total{sink=recorder,type=recorder}") >= 20.0);
    assert_eq!(after.get("croissant_viewers{sink=live,type=websocket}"), 1.0);
    assert_eq!(after.get("croissant_source_state{state=running}"), 1.0);
    assert_eq!(after.get("croissant_source_up{}"), 1.0);
    assert_eq!(after.get("croissant_ffmpeg_up{sink=recorder,type=recorder}"), 1.0);
    assert!(after.get("croissant_recorder_bytes_total{sink=recorder,type=recorder}") > 1000.0);
    let age = after.get("croissant_source_last_frame_age_seconds{}");
    assert!((0.0..2.0).contains(&age), "{age}");
    assert_eq!(
        after
            .types
            .get("croissant_http_requests_total")
            .map(String::as_str),
        Some("counter")
    );
    // The WebSocket upgrade and the scrapes themselves are counted, by route pattern.
    assert_eq!(
        after.get("croissant_http_requests_total{route=/,status=101}"),
        1.0
    );
    assert!(after.get("croissant_http_requests_total{route=/metrics,status=200}") >= 2.0);

    // Hostile paths do not create series of their own.
    for path in ["/recordings/20200101-000000.mp4", "/x1", "/x2", "/assets/zz"] {
        daemon.get(path);
    }
    let last = Scrape::take(&daemon);
    assert_eq!(
        last.get("croissant_http_requests_total{route=/recordings/:name,status=404}"),
        1.0
    );
    assert_eq!(
        last.get("croissant_http_requests_total{route=other,status=404}"),
        2.0
    );
    assert!(!last.samples.keys().any(|k| k.contains("/x1")));

    drop(viewer);
    daemon.wait_for("the viewer to be gone", Duration::from_secs(5), |d| {
        Scrape::take(d).get("croissant_viewers{sink=live,type=websocket}") == 0.0
    });
}
