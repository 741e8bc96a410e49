//! The camera end to end: each kind of source, run only while wanted, restarted with
//! backoff when it dies, stalls or cannot start, and its stderr kept readable.

mod common;

use std::time::{Duration, Instant};

use common::*;
use croissant::splitter::jpeg_size;
use rustix::process::Signal;

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
    let (daemon, mut viewer) = scripted_camera(&format!(
        "[ \"$n\" -ge 6 ] && exec '{FAKECAM}' --fps 15 --width 160 --height 120\n\
         echo 'no cameras available' >&2\nexit 1\n"
    ));
    // Meanwhile /health says why, in the daemon's words only.
    daemon.wait_for("backoff with its reason", Duration::from_secs(20), |d| {
        let health = d.health();
        health["source"]["state"] == "backoff" && health["source"]["reason"] == "the camera program exited"
    });
    assert!(!daemon.get("/health").1.contains("no cameras available"));
    // Failures come after 0, 0.5, 1.5, 3.5, 7.5, 15.5 s (backoff); the seventh start works
    // at about 25.5 s, and counts as back 15 s later.
    daemon.wait_for("the camera's return", Duration::from_secs(70), |d| {
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

/// A daemon whose camera is `script` (shell lines, `{starts}` is a file counting its
/// starts), watched by one viewer.
fn scripted_camera(script_text: &str) -> (Daemon, Viewer) {
    let dir = tempfile::tempdir().expect("dir");
    let starts = dir.path().join("starts");
    let text = format!(
        "n=$(cat '{starts}' 2>/dev/null || echo 0)\necho $((n + 1)) > '{starts}'\n{}",
        script_text.replace("{starts}", &starts.display().to_string()),
        starts = starts.display()
    );
    let camera = script(dir.path(), "camera", &text);
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"
[source]
kind = "command"
command = ["{}"]
stop_grace_ms = 300
[sinks.live]
type = "websocket"
"#,
        camera.display()
    );
    let daemon = Daemon::start_in(dir, &config);
    let mut viewer = daemon.viewer("/");
    viewer.send("start");
    (daemon, viewer)
}

/// The `retry_in_ms` of each "source failed" line so far.
fn retries(daemon: &Daemon) -> Vec<u64> {
    daemon
        .log_text()
        .lines()
        .filter(|l| l.contains("source failed"))
        .filter_map(|l| l.split("retry_in_ms=").nth(1))
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect()
}

#[test]
fn a_camera_that_worked_for_a_while_is_retried_after_the_shortest_wait_again() {
    // Three failed starts (the waits grow: 0.5, 1, 2 s), then 18 s of frames and an exit,
    // then a camera that works.
    let (daemon, mut viewer) = scripted_camera(&format!(
        "[ \"$n\" -lt 3 ] && exit 1\n\
         [ \"$n\" -eq 3 ] && exec '{FAKECAM}' --fps 15 --width 160 --height 120 --frames 270\n\
         exec '{FAKECAM}' --fps 15 --width 160 --height 120\n"
    ));
    daemon.wait_for("four failures", Duration::from_secs(60), |d| {
        retries(d).len() >= 4
    });
    // It worked for 18 s: its failure is not the fourth in a row but a first.
    assert_eq!(
        retries(&daemon),
        vec![500, 1000, 2000, 500],
        "{}",
        daemon.log_text()
    );
    viewer.frame();
}

#[test]
fn what_a_camera_started_is_stopped_with_it() {
    // A wrapper that leaves a process of its own running beside the camera each time; the
    // first camera dies after 2 s, the second runs until nobody watches, and its helper
    // ignores SIGTERM.
    let (daemon, mut viewer) = scripted_camera(&format!(
        "[ \"$n\" -eq 0 ] && {{ sleep 1000 > /dev/null 2>&1 & echo $! >> '{{starts}}.left'; \
         exec '{FAKECAM}' --fps 15 --width 160 --height 120 --frames 30; }}\n\
         ( trap '' TERM; exec sleep 1000 ) > /dev/null 2>&1 &\necho $! >> '{{starts}}.left'\n\
         exec '{FAKECAM}' --fps 15 --width 160 --height 120\n"
    ));
    let left = daemon.dir.path().join("starts.left");
    let pids = || -> Vec<i32> {
        std::fs::read_to_string(&left)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    daemon.wait_for("the camera's second start", Duration::from_secs(20), |_| {
        pids().len() == 2
    });
    viewer.frame();
    let (first, second) = (pids()[0], pids()[1]);
    // The first camera died: what it started went with it.
    daemon.wait_for("the dead camera's helper to go", Duration::from_secs(5), |_| {
        !alive(first)
    });
    assert!(alive(second), "the running camera's helper runs");
    // Nobody watches: the camera stops, and what it started with it (killed after the
    // grace period, as it ignores being asked).
    drop(viewer);
    daemon.wait_for("the camera to stop", Duration::from_secs(10), |d| {
        d.health()["source"]["state"] == "stopped"
    });
    daemon.wait_for(
        "the stopped camera's helper to go",
        Duration::from_secs(5),
        |_| !alive(second),
    );
}

#[test]
fn a_camera_that_exits_is_restarted_at_once_though_what_it_started_holds_its_output() {
    // The helper inherits the camera's stdout and keeps it open after the camera exits; the
    // first one ignores SIGTERM, so it is there for the whole grace period.
    let (daemon, mut viewer) = scripted_camera(&format!(
        "[ \"$n\" -eq 0 ] && {{ ( trap '' TERM; exec sleep 1000 ) &\n\
         '{FAKECAM}' --fps 15 --width 160 --height 120 --frames 15; exit 3; }}\n\
         sleep 1000 &\n\
         exec '{FAKECAM}' --fps 15 --width 160 --height 120\n"
    ));
    viewer.frame();
    let pid = daemon.source_pid().expect("the camera's pid");
    // /health lets go of the exited camera at once, before its helper is gone.
    daemon.wait_for(
        "health to let go of the exited camera",
        Duration::from_secs(10),
        |d| d.source_pid() != Some(pid),
    );
    assert!(
        !daemon.log_text().contains("exited (exit status: 3)"),
        "health still showed the camera while its helper had its grace period"
    );
    // Its exit is the end (stall_seconds, 10 s, is not waited out), with its status.
    daemon.wait_for("the camera's exit to be logged", Duration::from_secs(8), |d| {
        d.log_text().contains("exited (exit status: 3)")
    });
    assert!(
        !daemon.log_text().contains("no frame for"),
        "{}",
        daemon.log_text()
    );
    daemon.wait_for("the camera's second start", Duration::from_secs(10), |d| {
        d.log_text().matches("source started").count() == 2
    });
}

#[test]
fn what_a_camera_started_gets_the_grace_period_to_clean_up() {
    // A helper that needs a second to clean up when asked to stop.
    let (daemon, mut viewer) = scripted_camera(&format!(
        "( trap 'sleep 1; echo cleaned up >> \"{{starts}}.events\"; exit 0' TERM\n\
           while :; do sleep 0.1; done ) > /dev/null 2>&1 &\n\
         exec '{FAKECAM}' --fps 15 --width 160 --height 120\n"
    ));
    viewer.frame();
    drop(viewer);
    let events = daemon.dir.path().join("starts.events");
    daemon.wait_for("the helper to clean up", Duration::from_secs(10), |_| {
        std::fs::read_to_string(&events).is_ok_and(|e| e.contains("cleaned up"))
    });
}

#[test]
fn a_camera_that_closes_its_output_but_lingers_is_asked_to_stop_before_it_is_killed() {
    let (daemon, mut viewer) = scripted_camera(&format!(
        "'{FAKECAM}' --fps 15 --width 160 --height 120 --frames 15\n\
         exec >&-\n\
         trap 'echo asked to stop >&2; exit 0' TERM\n\
         while :; do sleep 0.1; done\n"
    ));
    viewer.frame();
    daemon.wait_for(
        "the lingering camera to be asked to stop",
        Duration::from_secs(15),
        |d| d.log_text().contains("source: asked to stop"),
    );
    assert!(
        !daemon.log_text().contains("did not exit within"),
        "{}",
        daemon.log_text()
    );
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
