//! `SIGHUP` re-reads the config while the daemon runs: unchanged sinks keep running (their
//! viewers stay connected and miss nothing), changed ones are rebuilt, new ones start, a
//! changed source restarts alone, and a broken config is refused with the running one kept.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Daemon, Viewer, frame_seq};
use tungstenite::Message;

/// A camera at 15 fps with numbered frames, recording in continuous mode, and a live sink.
fn config(recorder: &str, more: &str, fakecam_fps: u32) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"

[storage]
dir = "{{dir}}"

[mode]
default = "continuous"

[source]
kind = "command"
command = ["{{fakecam}}", "--width", "320", "--height", "240", "--fps", "{fakecam_fps}"]
framerate = {fakecam_fps}
stop_grace_ms = 300

[sinks.live]
type = "websocket"

[sinks.recorder]
type = "recorder"
{recorder}
{more}"#
    )
}

/// A viewer reading every frame in a thread: the sequence numbers it saw, and whether its
/// connection ended.
struct Watcher {
    seqs: Arc<Mutex<Vec<u64>>>,
    ended: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(port: u16) -> Watcher {
        let mut viewer = Viewer::connect(port, "/");
        viewer.send("start");
        let seqs = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seqs, ended, stop) = (seqs.clone(), ended.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match viewer.next() {
                        Ok(Message::Binary(jpeg)) => seqs.lock().expect("seqs").push(frame_seq(&jpeg)),
                        Ok(_) => {}
                        Err(_) => {
                            ended.store(true, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            })
        };
        Watcher {
            seqs,
            ended,
            stop,
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        self.seqs.lock().expect("seqs").len()
    }

    /// Waits for `n` more frames than it has now.
    fn wait_frames(&self, n: usize) {
        let until = self.count() + n;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.count() < until {
            assert!(
                !self.ended.load(Ordering::Relaxed),
                "the viewer's connection ended"
            );
            assert!(std::time::Instant::now() < deadline, "no {n} frames within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(mut self) -> (Vec<u64>, bool) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let seqs = self.seqs.lock().expect("seqs").clone();
        (seqs, self.ended.load(Ordering::Relaxed))
    }
}

fn thumbnails(daemon: &Daemon) -> usize {
    std::fs::read_dir(daemon.dir.path().join("thumbnails")).map_or(0, |dir| {
        dir.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".jpg"))
            .count()
    })
}

#[test]
fn a_reload_rebuilds_the_recorder_and_adds_a_thumbnailer_while_a_viewer_misses_nothing() {
    let daemon = Daemon::start(&config("segment_seconds = 10", "", 15));
    let watcher = Watcher::start(daemon.port);
    watcher.wait_frames(15);
    daemon.wait_for("a segment being recorded", Duration::from_secs(20), |d| {
        d.health()["recording"].is_string()
    });
    let recorder_pid_before = daemon.health()["source"]["pid"].clone();
    assert_eq!(thumbnails(&daemon), 0, "no thumbnailer yet");

    daemon.rewrite_config(&config(
        "segment_seconds = 2",
        "[sinks.thumbs]\ntype = \"thumbnailer\"\nevery_seconds = 1\n",
        15,
    ));
    let log = daemon.reload();
    assert!(log.contains("config reloaded"), "{log}");
    for (sink, change) in [
        ("live", "sink unchanged, kept running"),
        ("recorder", "sink changed, rebuilt"),
        ("thumbs", "sink added, started"),
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(change) && l.contains(&format!("sink={sink}"))),
            "no `{change}` line for {sink}:\n{log}"
        );
    }
    assert!(log.contains("source unchanged, kept running"), "{log}");
    assert_eq!(
        daemon.health()["source"]["pid"],
        recorder_pid_before,
        "the camera was restarted by a reload that did not change it"
    );

    // The new recorder cuts 2 s segments, and the new thumbnailer writes thumbnails.
    daemon.wait_for("two 2 s segments and a thumbnail", Duration::from_secs(40), |d| {
        let short = d
            .replays()
            .iter()
            .filter(|s| s["in_progress"] == false)
            .filter(|s| s["duration"].as_f64().is_some_and(|t| (1.0..3.5).contains(&t)))
            .count();
        short >= 2 && thumbnails(d) > 0
    });
    watcher.wait_frames(15);
    let (seqs, ended) = watcher.finish();
    assert!(!ended, "the viewer was disconnected by the reload");
    let gaps: Vec<_> = seqs.windows(2).filter(|w| w[1] != w[0] + 1).collect();
    assert!(
        gaps.is_empty(),
        "the viewer missed frames across the reload ({} frames, gaps {gaps:?})",
        seqs.len()
    );
}

#[test]
fn a_broken_config_is_refused_with_its_line_and_everything_keeps_running() {
    let daemon = Daemon::start(&config("segment_seconds = 10", "", 15));
    let watcher = Watcher::start(daemon.port);
    watcher.wait_frames(10);
    let segment = daemon.health()["recording"].clone();
    assert!(segment.is_string(), "{segment}");

    // Line 20 of the file: `segment_seconds = 1`, below the recorder's minimum of 2.
    let broken = config("segment_seconds = 1", "", 15);
    let line = broken
        .lines()
        .position(|l| l == "segment_seconds = 1")
        .expect("the line")
        + 1;
    daemon.rewrite_config(&broken);
    let log = daemon.reload();
    assert!(log.contains("config reload refused"), "{log}");
    assert!(
        log.contains(&format!("config.toml:{line}:")) && log.contains("segment_seconds"),
        "the refusal names neither line {line} nor the key:\n{log}"
    );
    assert!(!log.contains("sink changed"), "{log}");

    // Nothing stopped: the same segment is still being written, the viewer still watches.
    watcher.wait_frames(15);
    assert_eq!(daemon.health()["recording"], segment);
    assert_eq!(daemon.health()["status"], "ok");

    // Mended, the next reload goes through.
    daemon.rewrite_config(&config("segment_seconds = 10", "", 15));
    let log = daemon.reload();
    assert!(log.contains("config reloaded"), "{log}");
    assert!(log.contains("sink unchanged, kept running"), "{log}");
    let (_, ended) = watcher.finish();
    assert!(!ended, "the viewer was disconnected");
}

#[test]
fn a_changed_source_restarts_alone_and_start_only_tables_are_named() {
    let daemon = Daemon::start(&config("segment_seconds = 10", "", 15));
    let watcher = Watcher::start(daemon.port);
    watcher.wait_frames(10);
    let camera = daemon.health()["source"]["pid"].as_i64().expect("a camera pid");
    let segment = daemon.health()["recording"].clone();
    assert!(segment.is_string(), "{segment}");

    // Other camera arguments, and a [server] key that is read at start only.
    let text = config("segment_seconds = 10", "", 10).replace("[storage]", "max_viewers = 7\n\n[storage]");
    daemon.rewrite_config(&text);
    let log = daemon.reload();
    assert!(log.contains("source changed, restarted"), "{log}");
    for sink in ["live", "recorder"] {
        assert!(
            log.lines()
                .any(|l| l.contains("sink unchanged, kept running") && l.contains(&format!("sink={sink}"))),
            "{sink} was touched by a source change:\n{log}"
        );
    }
    assert!(
        log.contains("[server] changed: read at start only"),
        "the start-only table is not named:\n{log}"
    );
    // The old camera was gone before the new one started: a camera device takes one.
    let exited = log
        .find(&format!("pid={camera} status"))
        .expect("the old camera's exit is logged");
    let started = log
        .find("source started")
        .expect("the new camera's start is logged");
    assert!(
        exited < started,
        "the new camera started before the old one exited:\n{log}"
    );
    daemon.wait_for("a new camera process", Duration::from_secs(20), |d| {
        d.health()["source"]["pid"]
            .as_i64()
            .is_some_and(|pid| pid != camera)
    });
    assert!(!common::alive(camera as i32), "the old camera still runs");

    // The viewer of the live sink kept its connection through the restart, and the
    // recorder its segment.
    watcher.wait_frames(10);
    assert_eq!(daemon.health()["recording"], segment);
    let (_, ended) = watcher.finish();
    assert!(!ended, "the viewer was disconnected");
}

#[test]
fn a_removed_sink_lets_its_viewers_go_and_its_path_is_free() {
    let two = format!(
        "{}\n[sinks.side]\ntype = \"websocket\"\npaths = [\"/side\"]\n",
        config("segment_seconds = 10", "", 15)
    );
    let daemon = Daemon::start(&two);
    let mut side = Viewer::connect(daemon.port, "/side");
    side.send("start");
    side.frame();

    daemon.rewrite_config(&config("segment_seconds = 10", "", 15));
    let log = daemon.reload();
    assert!(
        log.lines()
            .any(|l| l.contains("sink removed, stopped") && l.contains("sink=side")),
        "{log}"
    );
    // Its viewer is told to reconnect (1012), and finds nothing there any more.
    let close = loop {
        match side.next() {
            Ok(Message::Close(frame)) => break frame,
            Ok(_) => {}
            Err(error) => panic!("no close before {error}"),
        }
    };
    assert_eq!(
        close.map(|f| u16::from(f.code)),
        Some(1012),
        "a removed sink's viewer is told to reconnect"
    );
    let (status, _) = daemon.get("/side");
    assert_eq!(status, 404);
    let (_, metrics) = daemon.get("/metrics");
    assert!(
        !metrics.contains(r#"sink="side""#)
            && metrics.contains(r#"croissant_viewers{sink="live",type="websocket"}"#),
        "a removed sink's series are still exported, or the kept one's are not:\n{metrics}"
    );
    let upgrade = tungstenite::client(
        format!("ws://127.0.0.1:{}/side", daemon.port),
        std::net::TcpStream::connect(("127.0.0.1", daemon.port)).expect("connect"),
    );
    assert!(upgrade.is_err(), "a removed sink's path still upgrades");
    // The remaining sink still serves.
    let mut live = Viewer::connect(daemon.port, "/");
    live.send("start");
    live.frame();
}

#[test]
fn a_sink_whose_modes_alone_change_is_enabled_or_disabled_to_match() {
    let thumbs =
        |modes: &str| format!("[sinks.thumbs]\ntype = \"thumbnailer\"\nevery_seconds = 1\nmodes = {modes}\n");
    let daemon = Daemon::start(&config("segment_seconds = 10", &thumbs(r#"["continuous"]"#), 15));
    let enabled = |d: &Daemon| {
        let (_, metrics) = d.get("/metrics");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(r#"croissant_sink_enabled{sink="thumbs",type="thumbnailer"} "#))
            .map(str::to_owned)
    };
    daemon.wait_for("the thumbnailer enabled", Duration::from_secs(10), |d| {
        enabled(d).as_deref() == Some("1")
    });

    daemon.rewrite_config(&config("segment_seconds = 10", &thumbs(r#"["on-demand"]"#), 15));
    let log = daemon.reload();
    assert!(
        log.lines()
            .any(|l| l.contains("sink modes changed, kept running") && l.contains("sink=thumbs")),
        "{log}"
    );
    assert!(
        log.contains("sink unchanged, kept running sink=recorder"),
        "{log}"
    );
    assert_eq!(
        enabled(&daemon).as_deref(),
        Some("0"),
        "continuous mode, a sink for on-demand only"
    );

    daemon.rewrite_config(&config(
        "segment_seconds = 10",
        &thumbs(r#"["on-demand", "continuous"]"#),
        15,
    ));
    let log = daemon.reload();
    assert!(log.contains("sink modes changed, kept running"), "{log}");
    assert_eq!(enabled(&daemon).as_deref(), Some("1"));
}
