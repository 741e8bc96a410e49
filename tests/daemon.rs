//! The daemon as a whole: its pages and `/health`, its status, its persisted state, and
//! how it stops.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rustix::process::Signal;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

#[test]
fn sigterm_while_the_camera_is_failing_exits_at_once() {
    let config = r#"
[server]
listen = "127.0.0.1:{port}"
[mode]
default = "continuous"
[source]
kind = "command"
command = ["/nonexistent/camera"]
"#;
    // The bug this guards against (a camera in backoff restarted without pause once
    // shutdown began, so the daemon never exited) depended on which thread ran what;
    // a few rounds catch it almost surely.
    for _ in 0..3 {
        let mut daemon = Daemon::start(config);
        daemon.wait_for("a failed start", Duration::from_secs(5), |d| {
            d.health()["source"]["restarts"].as_u64() >= Some(2)
        });
        let asked = Instant::now();
        daemon.signal(Signal::TERM);
        let status = daemon.wait_exit(Duration::from_secs(10));
        assert!(
            status.is_some_and(|s| s.success()),
            "exit: {status:?}\n{}",
            daemon.log_text()
        );
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "took {:?}",
            asked.elapsed()
        );
        let attempts = daemon.log_text().matches("cannot start").count();
        assert!(
            attempts < 10,
            "{attempts} starts: the camera was retried without backoff"
        );
    }
}

#[test]
fn sigterm_closes_viewers_with_going_away_and_exits_zero() {
    let mut daemon = Daemon::start(&fakecam_config(r#""--fps", "20""#, ""));
    let mut viewer = daemon.viewer("/");
    viewer.send("start");
    viewer.frame();
    let camera = daemon.source_pid().expect("camera running");
    let sent = Instant::now();
    daemon.signal(Signal::TERM);
    let close = loop {
        match viewer.next() {
            Ok(Message::Close(frame)) => break frame,
            Ok(_) => continue,
            Err(error) => panic!("connection ended without a close frame: {error}"),
        }
    };
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
    let status = daemon
        .wait_exit(Duration::from_secs(8))
        .expect("exited after SIGTERM");
    assert!(status.success(), "exit status {status}:\n{}", daemon.log_text());
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "took {:?}",
        sent.elapsed()
    );
    assert!(!alive(camera), "the camera outlived the daemon");
}

#[test]
fn pages_and_health_are_served() {
    let daemon = Daemon::start(&fakecam_config(r#""--fps", "5""#, ""));
    let (status, body) = daemon.get("/stream");
    assert_eq!(status, 200);
    assert!(body.contains("START STREAM"));
    let (status, body) = daemon.get("/");
    assert_eq!(status, 200);
    assert!(body.contains("href=\"stream\""));
    assert_eq!(daemon.get("/assets/stream.js").0, 200);
    assert_eq!(daemon.get("/nope").0, 404);
    let health = daemon.health();
    assert_eq!(health["status"], "ok");
    assert!(health["uptime"].is_u64());
    let (_, headers, _) = http(
        daemon.port,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(headers.contains(&("access-control-allow-origin".into(), "*".into())));
}

#[test]
fn the_viewer_url_can_be_overridden_and_status_describes_the_daemon() {
    let config = fakecam_config(r#""--fps", "5""#, "").replace(
        "[sinks.live]",
        "[viewer]\nws_url = \"wss://cam.example/live/ws\"\n\n[sinks.live]",
    );
    let daemon = Daemon::start(&config);
    let (_, page) = daemon.get("/stream");
    assert!(page.contains(r#"content="wss://cam.example/live/ws""#), "{page}");
    let (status, body) = daemon.get("/api/status");
    assert_eq!(status, 200);
    let status: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(status["mode"], "on-demand");
    assert_eq!(status["viewers"], 0);
    assert_eq!(status["source"]["state"], "stopped");
    assert_eq!(status["recording"]["active"], false);
    assert!(status["disk"]["free_bytes"].as_u64() > Some(0));
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    let mut viewer = daemon.viewer("/");
    viewer.send("start");
    viewer.frame();
    let status: serde_json::Value = serde_json::from_str(&daemon.get("/api/status").1).expect("JSON");
    assert_eq!(status["viewers"], 1);
    // A command's own arguments decide its picture: no made-up size.
    assert!(status["source"]["width"].is_null(), "{status}");
}

#[test]
fn a_corrupt_state_file_falls_back_to_the_default_and_is_kept() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("state.ron"), "(mode: sideways").expect("write");
    let config = r#"
[server]
listen = "127.0.0.1:{port}"
[storage]
dir = "{dir}"
[mode]
default = "continuous"
[sinks.live]
type = "websocket"
"#;
    let daemon = Daemon::start_in(dir, config);
    assert_eq!(daemon.get("/settings").1, r#"{"mode":"continuous"}"#);
    assert!(
        daemon.log_text().contains("saved state is corrupt"),
        "{}",
        daemon.log_text()
    );
    let kept =
        std::fs::read_to_string(daemon.dir.path().join("state.ron.corrupt")).expect("kept for inspection");
    assert_eq!(kept, "(mode: sideways");
}
