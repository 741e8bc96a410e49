//! The core daemon end to end: the real binary, a real camera process (fakecam or ffmpeg),
//! real WebSocket clients.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use croissant::splitter::jpeg_size;
use rustix::process::Signal;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

/// Args for fakecam's 1280x720 frames of about 100 KB at 30 fps: a few fill a socket.
const HD_CAMERA: &str = r#""--fps", "30", "--width", "1280", "--height", "720", "--noise", "11""#;

fn start_with_hd_camera() -> Daemon {
    Daemon::start(&fakecam_config(HD_CAMERA, ""))
}

#[test]
fn two_viewers_get_the_same_frames_byte_identical_to_the_source() {
    let tee = tempfile::tempdir().expect("tee dir");
    let args = format!(r#""--fps", "20", "--nasty", "--tee", "{}""#, tee.path().display());
    let daemon = Daemon::start(&fakecam_config(&args, ""));
    let mut a = daemon.viewer("/");
    let mut b = daemon.viewer("/ws");
    a.send("start");
    b.send("start");
    let mut seqs = [BTreeSet::new(), BTreeSet::new()];
    for _ in 0..30 {
        for (viewer, seen) in [&mut a, &mut b].into_iter().zip(seqs.iter_mut()) {
            let frame = viewer.frame();
            let seq = frame_seq(&frame);
            let written =
                std::fs::read(tee.path().join(format!("{seq}.jpg"))).expect("the source wrote this frame");
            assert!(frame == written, "frame {seq} differs from what the source wrote");
            seen.insert(seq);
        }
    }
    let common: Vec<_> = seqs[0].intersection(&seqs[1]).collect();
    assert!(
        common.len() >= 20,
        "viewers should see mostly the same frames: {seqs:?}"
    );
    // The nasty stream has garbage and Exif thumbnails: nothing may have been cut wrongly.
    assert!(
        !daemon.log_text().contains("dropped a corrupt frame"),
        "{}",
        daemon.log_text()
    );
}

#[test]
fn a_crowd_gets_frames_byte_identical_to_the_source_even_its_slow_members() {
    // Enough viewers that the fan-out stages frames once and sends them from there (as it
    // does beyond a few viewers per core), some of them slow, so frames go out in pieces.
    let tee = tempfile::tempdir().expect("tee dir");
    let args = format!(r#"{HD_CAMERA}, "--tee", "{}""#, tee.path().display());
    let daemon = Daemon::start(&fakecam_config(&args, ""));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut crowd: Vec<Viewer> = (0..20 * cores).map(|_| daemon.viewer("/")).collect();
    for viewer in &mut crowd {
        viewer.send("start");
    }
    let check = |jpeg: &[u8]| {
        let seq = frame_seq(jpeg);
        let written =
            std::fs::read(tee.path().join(format!("{seq}.jpg"))).expect("the source wrote this frame");
        assert!(jpeg == written, "frame {seq} differs from what the source wrote");
        seq
    };
    let mut last = vec![None; crowd.len()];
    for round in 0..12 {
        for (i, viewer) in crowd.iter_mut().enumerate() {
            // Every fourth viewer reads only every third round, and falls behind.
            if i % 4 == 3 && round % 3 != 0 {
                continue;
            }
            let seq = check(&viewer.frame());
            assert!(last[i] < Some(seq), "viewer {i}: frame {seq} after {:?}", last[i]);
            last[i] = Some(seq);
        }
    }
}

#[test]
fn a_viewer_that_never_reads_does_not_slow_others_or_grow_memory() {
    let daemon = Daemon::start(&fakecam_config(
        r#""--fps", "30", "--width", "1280", "--height", "720""#,
        "",
    ));
    // The stalled viewer: subscribes, then never reads a byte.
    let mut stalled = daemon.viewer("/");
    stalled.send("start");
    let mut fast = daemon.viewer("/");
    fast.send("start");
    // Warm up: let the stalled socket's buffers fill.
    let warm_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < warm_until {
        fast.frame();
    }
    let rss_before = daemon.rss_kib();
    let started = Instant::now();
    let first = frame_seq(&fast.frame());
    let mut last = first;
    let mut received = 1u64;
    while started.elapsed() < Duration::from_secs(4) {
        last = frame_seq(&fast.frame());
        received += 1;
    }
    let span = last - first + 1;
    let rss_after = daemon.rss_kib();
    assert!(
        received * 100 >= span * 95,
        "the fast viewer missed frames: got {received} of {span}"
    );
    assert!(
        span >= 90,
        "the source should have delivered ~120 frames in 4 s, got {span}"
    );
    assert!(
        rss_after < rss_before + 4096,
        "memory grew from {rss_before} KiB to {rss_after} KiB with a stalled viewer"
    );
    drop(stalled);
}

#[test]
fn the_source_runs_only_while_someone_watches() {
    let daemon = Daemon::start(&fakecam_config(r#""--fps", "15""#, ""));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(daemon.source_pid(), None, "no viewer yet, so no camera");
    assert_eq!(daemon.health()["source"]["state"], "stopped");

    // A viewer that connects but does not send start does not start the camera.
    let mut viewer = daemon.viewer("/");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(daemon.source_pid(), None);

    // start → camera; stop → gone after the grace period.
    viewer.send("start");
    viewer.frame();
    let pid = daemon.source_pid().expect("a camera process while watching");
    assert!(alive(pid));
    viewer.send("stop");
    daemon.wait_for("the camera to stop after `stop`", Duration::from_secs(5), |d| {
        d.source_pid().is_none()
    });
    assert!(!alive(pid), "camera process {pid} outlived its viewers");

    // A page reload within the grace period keeps the same camera.
    viewer.send("start");
    viewer.frame();
    let pid = daemon.source_pid().expect("camera restarted");
    drop(viewer);
    let mut again = daemon.viewer("/");
    again.send("start");
    again.frame();
    assert_eq!(
        daemon.source_pid(),
        Some(pid),
        "a quick reconnect must not restart the camera"
    );

    // A dropped connection (no close handshake) counts as leaving.
    let raw = again.ws.get_ref().try_clone().expect("clone socket");
    raw.shutdown(std::net::Shutdown::Both).expect("shutdown");
    drop(again);
    daemon.wait_for(
        "the camera to stop after a dropped connection",
        Duration::from_secs(5),
        |d| d.source_pid().is_none(),
    );
    assert!(!alive(pid));
}

#[test]
fn a_killed_source_restarts_and_viewers_resume_on_the_same_connection() {
    let daemon = Daemon::start(&fakecam_config(r#""--fps", "20""#, ""));
    let mut viewer = daemon.viewer("/");
    viewer.send("start");
    viewer.frame();
    let pid = daemon.source_pid().expect("camera running");
    signal_pid(pid, Signal::KILL);
    // Frames from before the kill may still be queued; wait for frames from the new process.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut new_pid = None;
    while Instant::now() < deadline {
        viewer.frame();
        if let Some(p) = daemon.source_pid().filter(|p| *p != pid) {
            new_pid = Some(p);
            break;
        }
    }
    let new_pid = new_pid.unwrap_or_else(|| panic!("no new camera process:\n{}", daemon.log_text()));
    for _ in 0..5 {
        viewer.frame();
    }
    assert!(alive(new_pid));
    assert!(daemon.health()["source"]["restarts"].as_u64() >= Some(1));
    assert!(daemon.log_text().contains("source failed"), "the death is logged");
}

#[test]
fn a_source_that_cannot_start_backs_off_and_health_says_so() {
    let config = r#"
[server]
listen = "127.0.0.1:{port}"
[source]
kind = "command"
command = ["/nonexistent/camera"]
[sinks.live]
type = "websocket"
"#;
    let daemon = Daemon::start(config);
    let mut viewer = daemon.viewer("/");
    viewer.send("start");
    daemon.wait_for("a failed start to be reported", Duration::from_secs(5), |d| {
        let status: serde_json::Value = serde_json::from_str(&d.get("/api/status").1).expect("status JSON");
        status["source"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("/nonexistent/camera"))
    });
    // Backoff, not a busy loop: 0.5 + 1 + 2 s gives at most a handful of attempts in 4 s.
    std::thread::sleep(Duration::from_secs(4));
    let restarts = daemon.health()["source"]["restarts"].as_u64().unwrap_or(0);
    assert!((2..=5).contains(&restarts), "restarts: {restarts}");
    daemon.wait_for("health to turn 503", Duration::from_secs(6), |d| {
        d.get("/health").0 == 503
    });
    daemon.wait_for("health to say why", Duration::from_secs(6), |d| {
        d.health()["source"]["reason"] == "the camera program could not be started"
    });
    drop(viewer);
}

#[test]
fn a_camera_failing_for_long_goes_quiet_in_the_log_and_its_return_is_logged() {
    // A camera that fails its first six starts (a line on stderr, then exit), then works.
    let dir = tempfile::tempdir().expect("dir");
    let starts = dir.path().join("starts");
    let camera = script(
        dir.path(),
        "flaky-camera",
        &format!(
            "n=$(cat '{starts}' 2>/dev/null || echo 0)\necho $((n + 1)) > '{starts}'\n\
             [ \"$n\" -ge 6 ] && exec '{FAKECAM}' --fps 15 --width 160 --height 120\n\
             echo 'no cameras available' >&2\nexit 1\n",
            starts = starts.display()
        ),
    );
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"
[source]
kind = "command"
command = ["{}"]
[sinks.live]
type = "websocket"
"#,
        camera.display()
    );
    let daemon = Daemon::start_in(dir, &config);
    let mut viewer = daemon.viewer("/");
    viewer.send("start");
    // Meanwhile /health says why, in the daemon's words only.
    daemon.wait_for("backoff with its reason", Duration::from_secs(20), |d| {
        let health = d.health();
        health["source"]["state"] == "backoff" && health["source"]["reason"] == "the camera program exited"
    });
    assert!(!daemon.get("/health").1.contains("no cameras available"));
    // Failures come after 0, 0.5, 1.5, 3.5, 7.5, 15.5 s (backoff); the seventh start works
    // at about 25.5 s.
    daemon.wait_for("the camera's return", Duration::from_secs(40), |d| {
        d.log_text().contains("source delivers frames again")
    });
    let frame = viewer.frame();
    assert_eq!(jpeg_size(&frame), Some((160, 120)));
    let log = daemon.log_text();
    let lines = |level: &str, text: &str| {
        log.lines()
            .filter(|l| l.contains(level) && l.contains(text))
            .count()
    };
    assert_eq!(lines(" WARN ", "source failed"), 4, "{log}");
    assert_eq!(lines(" WARN ", "source keeps failing"), 1, "{log}");
    // Each attempt's own lines are in the log while the run is young, then only at debug.
    assert_eq!(lines(" INFO ", "source: no cameras available"), 5, "{log}");
    assert_eq!(lines(" DEBUG ", "source: no cameras available"), 1, "{log}");
    assert_eq!(lines(" INFO ", "source started"), 5, "{log}");
    assert_eq!(lines(" INFO ", "source delivers frames again"), 1, "{log}");
}

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
fn the_test_pattern_moves() {
    let config = r#"
[server]
listen = "127.0.0.1:{port}"
[source]
kind = "test-pattern"
width = 320
height = 240
framerate = 10
"#;
    let daemon = Daemon::start(config);
    let mut viewer = daemon.viewer("/ws");
    viewer.send("start");
    let a = viewer.frame();
    let b = viewer.frame();
    assert_eq!(&a[..2], &[0xFF, 0xD8]);
    assert_eq!(jpeg_size(&a), Some((320, 240)));
    assert_ne!(a, b, "consecutive frames differ");
}

#[test]
fn ffmpeg_file_source_plays_a_video_in_a_loop() {
    let dir = tempfile::tempdir().expect("dir");
    let video = dir.path().join("clip.mp4");
    let made = std::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=10",
            "-t",
            "1",
        ])
        .args(["-pix_fmt", "yuv420p"])
        .arg(&video)
        .status()
        .expect("ffmpeg must be installed (scripts/test installs it)");
    assert!(made.success());
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"
[source]
kind = "ffmpeg-file"
path = "{}"
width = 160
height = 120
framerate = 10
"#,
        video.display()
    );
    let daemon = Daemon::start_in(dir, &config);
    let mut viewer = daemon.viewer("/");
    viewer.send("start");
    // One second of video at 10 fps: 25 frames means it looped.
    for _ in 0..25 {
        let frame = viewer.frame();
        assert_eq!(jpeg_size(&frame), Some((160, 120)));
    }
}

#[test]
fn the_rpicam_source_runs_rpicam_vid_with_the_configured_size_and_extra_args() {
    // No camera here: a stand-in `rpicam-vid` notes its arguments, then hands over to
    // fakecam making the configured 320x240.
    let dir = tempfile::tempdir().expect("dir");
    let noted = dir.path().join("argv");
    let stand_in = script(
        dir.path(),
        "rpicam-vid",
        &format!(
            "printf '%s\\n' \"$@\" > '{}'\nexec '{FAKECAM}' --width 320 --height 240 --fps 15\n",
            noted.display()
        ),
    );
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"
[source]
kind = "rpicam"
program = "{}"
width = 320
height = 240
framerate = 15
extra_args = ["--rotation", "180"]
"#,
        stand_in.display()
    );
    let daemon = Daemon::start_in(dir, &config);
    let mut viewer = daemon.viewer("/");
    viewer.send("start");
    for _ in 0..5 {
        assert_eq!(jpeg_size(&viewer.frame()), Some((320, 240)));
    }
    let argv = std::fs::read_to_string(&noted).expect("the stand-in ran");
    assert_eq!(
        argv.lines().collect::<Vec<_>>(),
        [
            "-t",
            "0",
            "--nopreview",
            "--codec",
            "mjpeg",
            "--width",
            "320",
            "--height",
            "240",
            "--framerate",
            "15",
            "--inline",
            "-o",
            "-",
            "--rotation",
            "180"
        ]
    );
}

#[test]
fn unknown_messages_are_ignored_and_oversized_ones_close_the_socket() {
    let daemon = Daemon::start(&fakecam_config(r#""--fps", "20""#, ""));
    let mut viewer = daemon.viewer("/");
    viewer.send("hello");
    viewer.ws.send(Message::binary(vec![1, 2, 3])).expect("send");
    viewer.send("start");
    viewer.frame();
    viewer
        .ws
        .send(Message::binary(vec![0u8; 100_000]))
        .expect("send a big message");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match viewer.next() {
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => assert!(Instant::now() < deadline, "the socket stayed open"),
        }
    }
    // The daemon is fine afterwards.
    assert_eq!(daemon.get("/health").0, 200);
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
fn a_stalled_camera_is_reported_and_restarted() {
    // Three frames, then silence with the process still alive: a hung camera.
    let config = r#"
[server]
listen = "127.0.0.1:{port}"
[source]
kind = "command"
command = ["sh", "-c", "{fakecam} --fps 10 --frames 3; exec sleep 600"]
stall_seconds = 7
"#;
    let daemon = Daemon::start(config);
    let mut viewer = daemon.viewer("/");
    viewer.send("start");
    viewer.frame();
    let pid = daemon.source_pid().expect("camera running");
    daemon.wait_for("/health to report the stall", Duration::from_secs(8), |d| {
        let (status, body) = d.get("/health");
        status == 503 && body.contains(r#""status":"stalled""#)
    });
    assert_eq!(
        daemon.source_pid(),
        Some(pid),
        "not restarted before stall_seconds"
    );
    daemon.wait_for(
        "the stalled camera to be restarted",
        Duration::from_secs(10),
        |d| d.source_pid().is_some_and(|p| p != pid),
    );
    assert!(!alive(pid), "the hung process was killed");
    assert!(
        daemon.log_text().contains("no frame for 7 s"),
        "the stall is logged"
    );
    viewer.frame();
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

#[test]
fn a_viewer_that_stopped_reading_can_still_stop() {
    let daemon = start_with_hd_camera();
    let mut viewer = daemon.viewer("/");
    viewer.send("start");
    viewer.frame();
    // Read nothing more: the daemon's write to this viewer blocks on a full socket.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(daemon.health()["subscribers"], 1);
    viewer.send("stop");
    daemon.wait_for("the stop to release the camera", Duration::from_secs(5), |d| {
        d.health()["subscribers"] == 0 && d.source_pid().is_none()
    });
}

#[test]
fn pings_from_a_viewer_behind_on_reading_never_split_a_frame() {
    // Client libraries (Python's websockets, for one) ping every few seconds. The answer must
    // go between frames even when the daemon is in the middle of a frame the viewer has not
    // made room for yet.
    let daemon = start_with_hd_camera();
    let mut viewer = daemon.viewer("/");
    viewer.send("start");
    viewer.frame();
    for round in 0..3 {
        // Fall behind until the socket is full and a frame is half written, then ping.
        std::thread::sleep(Duration::from_millis(700));
        for i in 0..5u8 {
            viewer
                .ws
                .send(Message::Ping(vec![round, i].into()))
                .expect("send ping");
        }
        std::thread::sleep(Duration::from_millis(300));
        let (mut frames, mut pongs) = (0, 0);
        while frames < 40 && pongs < 5 || frames < 5 {
            match viewer.next() {
                Ok(Message::Binary(jpeg)) => {
                    let whole = jpeg.starts_with(&[0xFF, 0xD8]) && jpeg.ends_with(&[0xFF, 0xD9]);
                    assert!(whole, "round {round}: a frame arrived cut or spliced");
                    assert_eq!(jpeg_size(&jpeg), Some((1280, 720)));
                    frames += 1;
                }
                Ok(Message::Pong(payload)) => {
                    assert_eq!(
                        payload.as_ref(),
                        [round, pongs as u8],
                        "pongs answer the pings in order"
                    );
                    pongs += 1;
                }
                other => panic!("round {round}: the stream broke: {other:?}"),
            }
        }
        assert_eq!(pongs, 5, "every ping is answered");
    }
}

#[test]
fn a_viewer_behind_on_reading_that_closes_gets_the_close_after_whole_frames() {
    // A client that closes while the daemon is half-way through a frame must get the rest of
    // that frame and then the answering close (RFC 6455 §5.5.1); a close written inside the
    // frame is read as frame bytes, and the client reports 1006 after its close timeout.
    // Whatever the viewer sends after its close (a ping, a message, the end of its side of
    // the connection) must not keep the answer from going out.
    let daemon = start_with_hd_camera();
    for round in 0..4 {
        let mut viewer = daemon.viewer("/");
        viewer.send("start");
        viewer.frame();
        // Fall behind until the socket is full and a frame is half written, then close.
        std::thread::sleep(Duration::from_millis(700));
        viewer.ws.close(None).expect("send close");
        viewer.ws.flush().expect("flush");
        let socket = viewer.ws.get_mut();
        match round {
            // A masked ping, then a masked "start", written past the client library (which
            // sends nothing after its close).
            1 => socket.write_all(&[0x89, 0x80, 1, 2, 3, 4]).expect("ping"),
            2 => socket
                .write_all(&[0x81, 0x85, 0, 0, 0, 0, b's', b't', b'a', b'r', b't'])
                .expect("text"),
            3 => socket.shutdown(std::net::Shutdown::Write).expect("shut down"),
            _ => {}
        }
        let mut frames = 0;
        let answer = loop {
            match viewer.next() {
                Ok(Message::Binary(jpeg)) => {
                    let whole = jpeg.starts_with(&[0xFF, 0xD8]) && jpeg.ends_with(&[0xFF, 0xD9]);
                    assert!(whole, "round {round}: a frame arrived cut");
                    frames += 1;
                }
                Ok(Message::Close(answer)) => break answer,
                other => panic!("round {round}: no close after {frames} frames: {other:?}"),
            }
        };
        assert!(
            frames > 0,
            "round {round}: the socket was full when the close went out"
        );
        assert!(answer.is_none(), "round {round}: an answering close: {answer:?}");
        assert!(
            matches!(viewer.next(), Err(tungstenite::Error::ConnectionClosed)),
            "round {round}: the close handshake completed"
        );
    }
}

/// A client that reads 8 KB every 20 ms through a 4 KB receive buffer, as a viewer on a
/// slow link does; once told what, it also sends those bytes every fifth read, past its
/// WebSocket library (which sends nothing after its close).
struct SlowReader {
    socket: std::net::TcpStream,
    reads: u32,
    keep_sending: Option<Vec<u8>>,
}

impl std::io::Read for SlowReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        std::thread::sleep(Duration::from_millis(20));
        self.reads += 1;
        if let Some(bytes) = &self.keep_sending
            && self.reads.is_multiple_of(5)
        {
            let _ = self.socket.write_all(bytes);
        }
        let n = buf.len().min(8192);
        std::io::Read::read(&mut self.socket, &mut buf[..n])
    }
}

impl Write for SlowReader {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.socket.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.socket.flush()
    }
}

#[test]
fn a_slow_viewer_that_sends_more_after_its_close_still_gets_the_close() {
    // Hanging up with bytes from the viewer unread makes the kernel reset the connection,
    // and the viewer's kernel then drops what the viewer had not read yet: the end of the
    // last frame and the close. (Big frames, about 300 KB.)
    let daemon = Daemon::start(&fakecam_config(
        r#""--fps", "15", "--width", "1280", "--height", "720", "--noise", "40""#,
        "",
    ));
    let ping = vec![0x89u8, 0x80, 1, 2, 3, 4];
    let text = vec![0x81u8, 0x85, 0, 0, 0, 0, b's', b't', b'a', b'r', b't'];
    for after in [ping, text] {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
        socket.set_recv_buffer_size(4096).expect("receive buffer");
        let address: std::net::SocketAddr = format!("127.0.0.1:{}", daemon.port).parse().expect("address");
        socket.connect(&address.into()).expect("connect");
        let socket: std::net::TcpStream = socket.into();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let slow = SlowReader {
            socket,
            reads: 0,
            keep_sending: None,
        };
        let (mut ws, _) =
            tungstenite::client(format!("ws://127.0.0.1:{}/", daemon.port), slow).expect("handshake");
        ws.send(Message::text("start")).expect("start");
        while !matches!(ws.read().expect("a frame"), Message::Binary(_)) {}
        // Behind, with a frame half written; then the close, and more while reading on.
        std::thread::sleep(Duration::from_millis(1300));
        ws.close(None).expect("close");
        ws.flush().expect("flush");
        ws.get_mut().keep_sending = Some(after);
        let mut frames = 0;
        loop {
            match ws.read() {
                Ok(Message::Binary(jpeg)) => {
                    assert!(jpeg.ends_with(&[0xFF, 0xD9]), "a frame arrived cut");
                    frames += 1;
                }
                Ok(Message::Close(_)) => break,
                other => panic!("no close after {frames} frames: {other:?}"),
            }
        }
    }
}

#[test]
fn a_slow_viewer_gets_whole_frames_in_order_and_never_falls_far_behind() {
    let daemon = start_with_hd_camera();
    let mut slow = daemon.viewer("/");
    // A small receive buffer, as on a slow link (on loopback Linux would otherwise let it
    // grow to megabytes and queue frames there, beyond the daemon's reach).
    let size: libc::c_int = 16 * 1024;
    // SAFETY: a valid socket and an option value of the size given.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(slow.ws.get_ref()),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUF");
    slow.send("start");
    let mut seqs = Vec::new();
    let mut oldest_ms = 0;
    for _ in 0..15 {
        // Read one frame every 200 ms: about one in six of the camera's.
        std::thread::sleep(Duration::from_millis(200));
        let jpeg = slow.frame();
        assert_eq!(jpeg_size(&jpeg), Some((1280, 720)), "a whole frame");
        assert!(jpeg.ends_with(&[0xFF, 0xD9]), "a whole frame");
        let written_us = comment_field(&jpeg, "us=").expect("fakecam's write time");
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_micros() as u64;
        oldest_ms = oldest_ms.max(now_us.saturating_sub(written_us) / 1000);
        seqs.push(frame_seq(&jpeg));
    }
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "frames out of order: {seqs:?}"
    );
    // Queued frames would come one after the other; skipping keeps up with the camera.
    let span = seqs[seqs.len() - 1] - seqs[0];
    assert!(
        span >= 3 * seqs.len() as u64,
        "the slow viewer should skip frames, not queue them: {seqs:?}"
    );
    // What it reads is at most about one frame older than its read pace (200 ms), never
    // seconds old (here about 215 ms; the bound leaves room for a busy machine).
    assert!(oldest_ms < 600, "a frame was {oldest_ms} ms old when read");
}

#[test]
fn a_camera_writing_bytes_that_are_not_text_keeps_running() {
    // Latin-1 and a megabyte without a newline on stderr, then more lines, then frames: the
    // daemon reads all of it (it once stopped at the first bad byte, and the camera died
    // of SIGPIPE at its next message, over and over).
    let dir = tempfile::tempdir().expect("dir");
    let camera = script(
        dir.path(),
        "camera.sh",
        &format!(
            "printf 'caf\\351 latin-1\\n' >&2\nhead -c 1048576 /dev/zero | tr '\\0' B >&2\nprintf '\\nstill here\\n' >&2\nexec {} --fps 10 --width 160 --height 120\n",
            common::FAKECAM
        ),
    );
    let daemon = Daemon::start(&format!(
        "[server]\nlisten = \"127.0.0.1:{{port}}\"\n[storage]\ndir = \"{{dir}}\"\n\
         [source]\nkind = \"command\"\ncommand = [\"{}\"]\n[sinks.live]\ntype = \"websocket\"\n",
        camera.display()
    ));
    let mut viewer = daemon.viewer("/");
    viewer.send("start");
    viewer.frame();
    let log = daemon.log_text();
    assert!(log.contains("source: caf\u{fffd} latin-1"), "{log}");
    assert!(log.contains("source: still here"), "{log}");
    assert!(
        log.contains("[cut]") && log.len() < 200_000,
        "the long line is cut"
    );
    assert_eq!(daemon.health()["source"]["restarts"], 0);
}
