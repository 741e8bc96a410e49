//! Continuous mode end to end: the mode switch and its persistence, real ffmpeg segments
//! checked with ffprobe, thumbnails, retention, the replays API, and crashes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use croissant::splitter::jpeg_size;
use rustix::process::Signal;

fn config(keep: usize) -> String {
    config_with(keep, 2)
}

fn config_with(keep: usize, segment_seconds: u64) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"
[storage]
dir = "{{dir}}"
[source]
kind = "command"
command = ["{{fakecam}}", "--fps", "10", "--width", "320", "--height", "240"]
stop_grace_ms = 300
[sinks.live]
type = "websocket"
[sinks.recorder]
type = "recorder"
segment_seconds = {segment_seconds}
[sinks.thumbnails]
type = "thumbnailer"
every_seconds = 1
[sinks.retention]
type = "retention"
keep = {keep}
"#
    )
}

fn post_mode(daemon: &Daemon, body: &str) -> (u16, String) {
    let request = format!(
        "POST /settings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, _, body) = http(daemon.port, &request);
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Waits until the segment being written holds a fragment (a playable part).
fn wait_for_a_fragment(daemon: &Daemon, what: &str, within: Duration) {
    daemon.wait_for(what, within, |d| {
        d.replays()
            .iter()
            .any(|s| s["in_progress"] == true && s["duration"].as_f64().is_some_and(|t| t > 0.0))
    });
}

fn finished(daemon: &Daemon) -> Vec<String> {
    daemon
        .replays()
        .iter()
        .filter(|s| s["in_progress"] == false)
        .filter_map(|s| s["filename"].as_str().map(str::to_owned))
        .collect()
}

fn recordings_dir(daemon: &Daemon) -> PathBuf {
    daemon.dir.path().join("recordings")
}

fn ffprobe_duration(path: &Path) -> f64 {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("ffprobe must be installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "ffprobe failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no duration for {}", path.display()))
}

/// Decodes every frame; returns (frames decoded, ffmpeg's error output). The frames keep
/// the file's own timestamps (frames can be milliseconds apart after a camera hiccup, which
/// a constant-rate null output would report as a timestamp clash).
fn decode(path: &Path) -> (u64, String) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args([
            "-fps_mode",
            "passthrough",
            "-enc_time_base",
            "-1",
            "-f",
            "null",
            "-",
        ])
        .output()
        .expect("ffmpeg");
    let errors = String::from_utf8_lossy(&out.stderr).into_owned();
    let count = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("ffprobe");
    let frames = String::from_utf8_lossy(&count.stdout).trim().parse().unwrap_or(0);
    (frames, errors)
}

fn switch(daemon: &Daemon, mode: &str) {
    let (status, body) = post_mode(daemon, &format!(r#"{{"mode":"{mode}"}}"#));
    assert_eq!(status, 200, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(reply, serde_json::json!({ "status": "updated", "mode": mode }));
}

#[test]
fn continuous_mode_records_valid_segments_with_thumbnails_and_retention() {
    let daemon = Daemon::start(&config(3));
    assert_eq!(daemon.get("/settings"), (200, r#"{"mode":"on-demand"}"#.into()));
    switch(&daemon, "continuous");
    assert_eq!(daemon.get("/settings").1, r#"{"mode":"continuous"}"#);

    // Enough segments for retention to have had work to do.
    let started = Instant::now();
    daemon.wait_for("5 segments to have been written", Duration::from_secs(30), |d| {
        d.log_text().matches("segment finished").count() >= 5
    });
    let names = finished(&daemon);
    daemon.wait_for(
        "the newest segment listed first, in progress",
        Duration::from_secs(5),
        |d| d.replays().first().is_some_and(|s| s["in_progress"] == true),
    );
    let recording = daemon.replays();
    let mut listed: Vec<&str> = recording.iter().filter_map(|s| s["filename"].as_str()).collect();
    let mut sorted = listed.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(listed, sorted, "newest first");
    listed.clear();

    // Retention: exactly the newest 3 finished ones remain (plus the one being written).
    daemon.wait_for(
        "retention to leave 3 finished segments",
        Duration::from_secs(10),
        |d| finished(d).len() == 3,
    );
    let names_now = finished(&daemon);
    assert!(names_now.iter().all(|n| names.contains(n) || n > &names[0]));

    // Retention keeps running while we look: check what is still there, at least two.
    let mut checked = 0;
    for name in &names_now {
        let path = recordings_dir(&daemon).join(name);
        let stem = name.trim_end_matches(".mp4");
        let (status, _, body) = http(
            daemon.port,
            &format!("GET /thumbnails/{stem}.jpg HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        let (frames, errors) = decode(&path);
        if !path.exists() {
            continue;
        }
        assert!(errors.is_empty(), "{name} does not decode cleanly: {errors}");
        assert!(frames >= 15, "{name}: only {frames} frames");
        assert_eq!(status, 200, "poster of {stem}");
        assert_eq!(&body[..2], &[0xFF, 0xD8]);
        assert_eq!(
            jpeg_size(&body),
            Some((320, 240)),
            "thumbnails are at most 320 wide"
        );
        checked += 1;
    }
    assert!(checked >= 2, "only {checked} segments could be checked");
    // Thumbnails of deleted segments are gone too.
    let thumbs: Vec<String> = std::fs::read_dir(daemon.dir.path().join("thumbnails"))
        .expect("thumbnails dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    let current = daemon.replays()[0]["filename"]
        .as_str()
        .unwrap_or_default()
        .trim_end_matches(".mp4")
        .to_owned();
    for thumb in &thumbs {
        let stem = &thumb[..15];
        assert!(
            names_now.iter().any(|n| n.starts_with(stem))
                || current.starts_with(stem)
                || thumb.starts_with(&current[..13]),
            "orphan thumbnail {thumb}; segments {names_now:?}"
        );
    }
    assert!(
        thumbs.iter().any(|t| t.contains("-t")),
        "in-segment thumbnails are written: {thumbs:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(40));
}

#[test]
fn segment_durations_match_wall_time() {
    const SECONDS: f64 = 2.0;
    let daemon = Daemon::start(&config_with(10, SECONDS as u64));
    switch(&daemon, "continuous");
    daemon.wait_for("3 finished segments", Duration::from_secs(20), |d| {
        finished(d).len() >= 3
    });
    for name in finished(&daemon) {
        let duration = ffprobe_duration(&recordings_dir(&daemon).join(&name));
        assert!(
            (duration - SECONDS).abs() <= SECONDS * 0.1,
            "{name}: {duration} s, expected {SECONDS} s"
        );
    }
}

#[test]
fn settings_rejects_bad_input_like_the_original() {
    let daemon = Daemon::start(&config(3));
    assert_eq!(
        post_mode(&daemon, r#"{"mode":"sometimes"}"#),
        (400, r#"{"error":"Invalid mode"}"#.into())
    );
    assert_eq!(
        post_mode(&daemon, r#"{"mode":"#),
        (400, r#"{"error":"Invalid JSON"}"#.into())
    );
    assert_eq!(
        post_mode(&daemon, r#"{}"#),
        (400, r#"{"error":"Invalid mode"}"#.into())
    );
    assert_eq!(
        post_mode(&daemon, &format!(r#"{{"mode":"{}"}}"#, "x".repeat(10_000))).0,
        413
    );
    assert_eq!(daemon.get("/settings").1, r#"{"mode":"on-demand"}"#);
}

#[test]
fn the_mode_survives_a_restart_and_sigterm_completes_the_segment() {
    let mut daemon = Daemon::start(&config(10));
    switch(&daemon, "continuous");
    daemon.wait_for("a segment to be in progress", Duration::from_secs(10), |d| {
        d.replays()
            .first()
            .is_some_and(|s| s["in_progress"] == true && s["bytes"].as_u64() > Some(0))
    });
    std::thread::sleep(Duration::from_millis(700));
    daemon.signal(Signal::TERM);
    let status = daemon
        .wait_exit(Duration::from_secs(20))
        .expect("exit after SIGTERM");
    assert!(status.success());
    // Every file, including the one cut by SIGTERM, is complete.
    for entry in std::fs::read_dir(recordings_dir(&daemon)).expect("recordings") {
        let path = entry.expect("entry").path();
        let (frames, errors) = decode(&path);
        assert!(
            errors.is_empty() && frames > 0,
            "{}: {frames} frames, {errors}",
            path.display()
        );
    }
    let state = std::fs::read_to_string(daemon.dir.path().join("state.ron")).expect("state.ron");
    assert!(state.contains("continuous"), "{state}");

    // Same storage, new process: still continuous, and recording again without anyone asking.
    let dir = tempfile::TempDir::new().expect("dir");
    let old = std::mem::replace(&mut daemon.dir, dir);
    drop(daemon);
    let again = Daemon::start_in(old, &config(10));
    assert_eq!(again.get("/settings").1, r#"{"mode":"continuous"}"#);
    again.wait_for(
        "recording to resume after restart",
        Duration::from_secs(10),
        |d| d.health()["recording"].is_string(),
    );
}

#[test]
fn kill_9_loses_nothing_finished_and_the_cut_segment_decodes_up_to_its_last_fragment() {
    // Frames that carry their number in the picture, to see what survived.
    let config = config_with(10, 4).replace(r#""--height", "240"]"#, r#""--height", "240", "--barcode"]"#);
    let mut daemon = Daemon::start(&config);
    switch(&daemon, "continuous");
    let mut viewer = daemon.viewer("/");
    viewer.send("start");
    daemon.wait_for(
        "a finished segment and one with data",
        Duration::from_secs(20),
        |d| {
            let all = d.replays();
            all.iter().any(|s| s["in_progress"] == false)
                && all
                    .first()
                    .is_some_and(|s| s["in_progress"] == true && s["bytes"].as_u64() > Some(2000))
        },
    );
    std::thread::sleep(Duration::from_millis(1200));
    let cut = daemon.replays()[0]["filename"].as_str().expect("name").to_owned();
    // The camera's newest frame right before the cut, as a live viewer sees it.
    let newest = frame_seq(&viewer.frame());
    // A power cut: the daemon and its ffmpeg die at the same instant.
    let children = children_of(daemon.pid());
    daemon.signal(Signal::KILL);
    for child in children {
        let _ =
            rustix::process::kill_process(rustix::process::Pid::from_raw(child).expect("pid"), Signal::KILL);
    }
    let _ = daemon.wait_exit(Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    let mut finished = 0;
    for entry in std::fs::read_dir(recordings_dir(&daemon)).expect("recordings") {
        let path = entry.expect("entry").path();
        let (frames, errors) = decode(&path);
        if path.file_name().is_some_and(|n| n.to_string_lossy() == cut) {
            assert!(frames >= 5, "{cut}: only {frames} frames survived");
        } else {
            finished += 1;
            assert!(
                errors.is_empty() && frames > 0,
                "{}: {frames} frames, {errors}",
                path.display()
            );
        }
    }
    assert!(finished >= 1);

    // Power back: the mode is restored and recording resumes; the cut segment is listed.
    let dir = tempfile::TempDir::new().expect("dir");
    let old = std::mem::replace(&mut daemon.dir, dir);
    drop(daemon);
    let again = Daemon::start_in(old, &config);
    assert_eq!(again.get("/settings").1, r#"{"mode":"continuous"}"#);
    again.wait_for("recording to resume", Duration::from_secs(10), |d| {
        d.health()["recording"].is_string()
    });
    // Listed with its true, shorter length: what the file plays, written into its header
    // too at start-up.
    let path = recordings_dir(&again).join(&cut);
    let listed = again
        .replays()
        .into_iter()
        .find(|s| s["filename"] == cut.as_str() && s["in_progress"] == false)
        .expect("the cut segment is listed");
    let plays = ffprobe_duration(&path);
    let said = listed["duration"].as_f64().expect("a duration");
    assert!((said - plays).abs() <= 0.1, "listed {said} s, plays {plays} s");
    assert!((mvhd_seconds(&path) - plays).abs() <= 0.1);
    // At most the last fragment (2 s, 20 frames) is lost, and what was in the pipe and
    // the encoder at the cut.
    let last = frame_numbers(&path).into_iter().max().expect("frames");
    assert!(
        u64::from(last) + 20 + 5 >= newest,
        "the camera was at frame {newest}, the recording ends at {last}"
    );
}

#[test]
fn a_dying_ffmpeg_is_replaced_by_a_new_segment() {
    let daemon = Daemon::start(&config_with(10, 30));
    switch(&daemon, "continuous");
    daemon.wait_for("a segment with data", Duration::from_secs(10), |d| {
        d.replays()
            .first()
            .is_some_and(|s| s["in_progress"] == true && s["bytes"].as_u64() > Some(2000))
    });
    let first = daemon.replays()[0]["filename"].as_str().expect("name").to_owned();
    let ffmpeg = children_of(daemon.pid())
        .into_iter()
        .find(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "ffmpeg"))
        .expect("the recorder's ffmpeg");
    signal_pid(ffmpeg, Signal::KILL);
    daemon.wait_for("health to say the recorder failed", Duration::from_secs(5), |d| {
        let health = d.health();
        health["status"] == "degraded"
            && health["problems"][0]["reason"]
                .as_str()
                .is_some_and(|e| e.contains("ffmpeg died"))
    });
    daemon.wait_for("a new segment", Duration::from_secs(10), |d| {
        d.replays()
            .first()
            .is_some_and(|s| s["in_progress"] == true && s["filename"] != first.as_str())
    });
    let (frames, _) = decode(&recordings_dir(&daemon).join(&first));
    assert!(frames > 0, "the interrupted segment still decodes");
    assert!(daemon.log_text().contains("ffmpeg died mid-segment"));
    // Health says "ok" again once the new ffmpeg has worked for a while.
    daemon.wait_for("health to recover", Duration::from_secs(15), |d| {
        d.get("/health").0 == 200 && d.health()["status"] == "ok"
    });
}

#[test]
fn a_recorder_slower_than_the_camera_still_stops_when_the_mode_switches() {
    // An encoder that cannot keep up (as libx264 at 720p on a small Pi): it takes 20 KB every
    // 0.1 s, a fifth of what the camera sends, until its input ends. The recorder's queue
    // stays full, so a frame is always ready for it.
    let dir = tempfile::tempdir().expect("dir");
    let encoder = script(
        dir.path(),
        "slow-ffmpeg",
        "while [ \"$(head -c 20000 | wc -c)\" -gt 0 ]; do sleep 0.1; done\n",
    );
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"
[storage]
dir = "{{dir}}"
[source]
kind = "command"
command = ["{{fakecam}}", "--fps", "30", "--width", "640", "--height", "480", "--noise", "6"]
stop_grace_ms = 300
[sinks.recorder]
type = "recorder"
ffmpeg = "{}"
queue_frames = 10
"#,
        encoder.display()
    );
    let daemon = Daemon::start_in(dir, &config);
    switch(&daemon, "continuous");
    daemon.wait_for("the recorder to fall behind", Duration::from_secs(10), |d| {
        d.log_text().contains("ffmpeg is slower than the camera")
    });
    switch(&daemon, "on-demand");
    daemon.wait_for(
        "the recorder to stop and the camera with it",
        Duration::from_secs(10),
        |d| d.health()["recording"].is_null() && d.source_pid().is_none(),
    );
}

fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(children.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
    }
    out
}

#[test]
fn switching_to_continuous_keeps_the_camera_and_the_viewer_sees_no_gap() {
    let daemon = Daemon::start(&config(10));
    let mut viewer = daemon.viewer("/");
    viewer.send("start");
    let mut last = frame_seq(&viewer.frame());
    let pid = daemon.source_pid().expect("camera");
    switch(&daemon, "continuous");
    for _ in 0..20 {
        let seq = frame_seq(&viewer.frame());
        assert_eq!(seq, last + 1, "a gap in the live view across the switch");
        last = seq;
    }
    assert_eq!(
        daemon.source_pid(),
        Some(pid),
        "the camera was restarted by the switch"
    );
    // And back: the segment is finished, the camera keeps running for the viewer.
    switch(&daemon, "on-demand");
    daemon.wait_for("recording to stop", Duration::from_secs(10), |d| {
        d.health()["recording"].is_null()
    });
    assert_eq!(daemon.source_pid(), Some(pid));
    drop(viewer);
    daemon.wait_for(
        "the camera to stop with nobody watching",
        Duration::from_secs(5),
        |d| d.source_pid().is_none(),
    );
}

#[test]
fn range_requests_and_hostile_names() {
    let daemon = Daemon::start(&config(10));
    switch(&daemon, "continuous");
    daemon.wait_for("a finished segment", Duration::from_secs(15), |d| {
        !finished(d).is_empty()
    });
    let name = finished(&daemon)[0].clone();
    let bytes = std::fs::read(recordings_dir(&daemon).join(&name)).expect("segment");
    let len = bytes.len();
    let get = |extra: &str, path: &str| {
        http(
            daemon.port,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n"),
        )
    };
    let header = |headers: &[(String, String)], name: &str| {
        headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    };
    let url = format!("/recordings/{name}");

    let (status, headers, body) = get("", &url);
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "accept-ranges").as_deref(), Some("bytes"));
    assert_eq!(body, bytes);

    let (status, headers, body) = get("Range: bytes=10-99\r\n", &url);
    assert_eq!(status, 206);
    assert_eq!(
        header(&headers, "content-range"),
        Some(format!("bytes 10-99/{len}"))
    );
    assert_eq!(body, &bytes[10..100]);

    let (status, _, body) = get("Range: bytes=-100\r\n", &url);
    assert_eq!((status, body.as_slice()), (206, &bytes[len - 100..]));

    let (status, headers, _) = get(&format!("Range: bytes={len}-\r\n"), &url);
    assert_eq!(status, 416);
    assert_eq!(header(&headers, "content-range"), Some(format!("bytes */{len}")));

    for path in [
        "/recordings/../state.ron",
        "/recordings/%2e%2e%2fstate.ron",
        "/recordings/%2e%2e",
        "/recordings/..%2fstate.ron",
        "/recordings//etc/passwd",
        "/recordings/%2fetc%2fpasswd",
        "/recordings/state.ron",
        "/recordings/20200101-000000.mp4",
        "/thumbnails/../config.toml",
        "/thumbnails/%2e%2e%2fconfig.toml",
        "/thumbnails/20200101-000000.jpg",
    ] {
        let (status, _, body) = get("", path);
        assert!(
            status == 400 || status == 404,
            "{path}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        assert!(
            !String::from_utf8_lossy(&body).contains("mode"),
            "{path} leaked a file"
        );
    }
}

#[test]
fn an_encoder_killed_before_its_first_fragment_leaves_no_unplayable_file() {
    let mut daemon = Daemon::start(&config_with(10, 30));
    switch(&daemon, "continuous");
    // Kill each new segment's ffmpeg well before its first fragment (2 s) is written.
    for round in 0..3 {
        let segment = loop {
            let listed = daemon.replays();
            if let Some(current) = listed.iter().find(|s| s["in_progress"] == true) {
                break current["filename"].as_str().expect("name").to_owned();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let ffmpeg = loop {
            let found = children_of(daemon.pid()).into_iter().find(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "ffmpeg")
            });
            if let Some(pid) = found {
                break pid;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // Once ffmpeg has written its header (ftyp, moov), and before the first fragment.
        let file = recordings_dir(&daemon).join(&segment);
        daemon.wait_for("the segment's header", Duration::from_secs(5), |_| {
            std::fs::metadata(&file).is_ok_and(|m| m.len() > 0)
        });
        let header = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        // Headers alone play nowhere: not served yet. (Only the first segment is sure to
        // be headers alone here: later ones begin with the frames held over from the last,
        // over 2 s of them, and so with a whole fragment.)
        if round == 0 {
            let (status, headers, body) = http(
                daemon.port,
                &format!("GET /recordings/{segment} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            );
            let body = String::from_utf8_lossy(&body);
            assert_eq!(status, 404, "{body}");
            assert!(body.contains("Nothing recorded in this segment yet"), "{body}");
            assert!(
                headers
                    .iter()
                    .any(|(name, value)| name.eq_ignore_ascii_case("retry-after") && value == "2"),
                "{headers:?}"
            );
        }
        signal_pid(ffmpeg, Signal::KILL);
        eprintln!("round {round}: {header} bytes when killed");
        // The next segment's ffmpeg (its file may take the same name, now free again).
        daemon.wait_for("the next segment", Duration::from_secs(15), |d| {
            children_of(d.pid()).into_iter().any(|pid| {
                pid != ffmpeg
                    && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .is_ok_and(|c| c.trim() == "ffmpeg")
            })
        });
        eprintln!("round {round}: killed the ffmpeg of {segment}");
    }
    let every_file_plays = |daemon: &Daemon| {
        for entry in std::fs::read_dir(recordings_dir(daemon)).expect("recordings") {
            let path = entry.expect("entry").path();
            let listed = daemon.replays();
            let in_progress = listed.iter().any(|s| {
                s["in_progress"] == true
                    && path
                        .file_name()
                        .is_some_and(|n| s["filename"] == n.to_string_lossy().as_ref())
            });
            if !in_progress {
                let (frames, errors) = decode(&path);
                assert!(frames > 0, "{} has no frame: {errors}", path.display());
            }
        }
    };
    every_file_plays(&daemon);
    // A file cut off by a killed daemon, and one with no fragment at all, as a power cut
    // leaves them: after a restart the first plays to its last whole fragment, the second
    // is gone.
    let dir = recordings_dir(&daemon);
    daemon.wait_for(
        "a few fragments in the current segment",
        Duration::from_secs(20),
        |d| {
            d.replays()
                .iter()
                .any(|s| s["in_progress"] == true && s["bytes"].as_u64() > Some(40_000))
        },
    );
    let current = daemon
        .replays()
        .into_iter()
        .find(|s| s["in_progress"] == true)
        .expect("the current segment");
    let bytes = std::fs::read(dir.join(current["filename"].as_str().expect("name"))).expect("read");
    std::fs::write(dir.join("20200101-000000.mp4"), &bytes[..800.min(bytes.len())]).expect("write");
    std::fs::write(dir.join("20200101-000500.mp4"), &bytes[..bytes.len() - 700]).expect("write");
    daemon.signal(Signal::TERM);
    daemon.wait_exit(Duration::from_secs(20)).expect("exit");
    let storage = std::mem::replace(&mut daemon.dir, tempfile::TempDir::new().expect("dir"));
    let daemon = Daemon::start_in(storage, &config_with(10, 30));
    assert!(
        !dir.join("20200101-000000.mp4").exists(),
        "the file with no fragment is removed"
    );
    let (frames, errors) = decode(&dir.join("20200101-000500.mp4"));
    assert!(frames > 0 && errors.is_empty(), "the cut file plays: {errors}");
    assert!(daemon.log_text().contains("no complete fragment; removed"));
    every_file_plays(&daemon);
    // (The segment being written says 0 s until its first fragment is in.)
    for listed in daemon.replays() {
        if listed["in_progress"] == false {
            assert!(listed["duration"].as_f64() > Some(0.0), "{listed}");
        }
    }
}

/// The recorder's ffmpeg, once there is one other than those in `not`.
fn recorder_ffmpeg(daemon: &Daemon, not: &[i32]) -> i32 {
    let mut found = None;
    daemon.wait_for("the recorder's ffmpeg", Duration::from_secs(15), |d| {
        found = children_of(d.pid()).into_iter().find(|pid| {
            !not.contains(pid)
                && std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "ffmpeg")
        });
        found.is_some()
    });
    found.unwrap_or_default()
}

/// The camera frame numbers a recording holds, in order: fakecam's `--barcode` frames,
/// decoded by a real ffmpeg and read from their bars.
fn frame_numbers(path: &Path) -> Vec<u16> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-fps_mode", "passthrough", "-vf", "scale=16:1:flags=area"])
        .args(["-pix_fmt", "gray", "-f", "rawvideo", "-"])
        .output()
        .expect("ffmpeg");
    assert!(
        out.status.success(),
        "{} ({:?} bytes): {}",
        path.display(),
        std::fs::metadata(path).map(|m| m.len()),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .chunks(16)
        .map(|bars| croissant::testpattern::read_barcode(bars).expect("16 bars"))
        .collect()
}

/// The file's own timestamps of its frames, in seconds.
fn frame_times(path: &Path) -> Vec<f64> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "packet=pts_time", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Checks that the recordings at `paths` hold every camera frame (fakecam `--barcode`)
/// from the first recorded to the last, once, in order, with no gap in any file's own
/// timestamps, and at least `at_least` of them; returns how many files there are.
/// Within a file, by its own timestamps: `frames` frames and no gap (10 fps: 0.1 s apart).
fn assert_no_gap_within(path: &Path, frames: usize) {
    let times = frame_times(path);
    assert_eq!(times.len(), frames, "{}", path.display());
    for pair in times.windows(2) {
        assert!(pair[1] - pair[0] <= 0.2, "{}: {times:?}", path.display());
    }
}

fn assert_every_frame_once(paths: &[PathBuf], at_least: usize) -> usize {
    let mut files: Vec<(Vec<u16>, PathBuf)> = paths
        .iter()
        .map(|path| (frame_numbers(path), path.clone()))
        .collect();
    for (numbers, path) in &files {
        assert!(!numbers.is_empty(), "{} has no frame", path.display());
        assert_no_gap_within(path, numbers.len());
    }
    // Across files: every camera frame from the first recorded to the last, once, in
    // order (fakecam writes one every 0.1 s, so no frame missing means no gap).
    files.sort_by_key(|(numbers, _)| numbers[0]);
    let all: Vec<u16> = files.iter().flat_map(|(n, _)| n.iter().copied()).collect();
    let missing: Vec<_> = all.windows(2).filter(|w| w[1] != w[0] + 1).collect();
    assert!(
        missing.is_empty(),
        "frames lost or repeated at {missing:?} in {:?}",
        files
            .iter()
            .map(|(n, p)| (p.file_name(), n.first(), n.last()))
            .collect::<Vec<_>>()
    );
    assert!(all.len() >= at_least, "{} frames", all.len());
    files.len()
}

/// Every file in the daemon's `recordings/`.
fn recorded_files(daemon: &Daemon) -> Vec<PathBuf> {
    std::fs::read_dir(recordings_dir(daemon))
        .expect("recordings")
        .map(|e| e.expect("entry").path())
        .collect()
}

/// The highest camera frame number in any recording.
fn last_recorded_frame(daemon: &Daemon) -> u16 {
    recorded_files(daemon)
        .iter()
        .flat_map(|path| frame_numbers(path))
        .max()
        .unwrap_or(0)
}

fn barcode_config(segment_seconds: u64) -> String {
    config_with(100, segment_seconds).replace(r#""--height", "240"]"#, r#""--height", "240", "--barcode"]"#)
}

#[test]
fn an_encoder_that_dies_finishing_its_segment_loses_no_frame() {
    // The first segment's encoder is killed after the daemon closed its input, before it
    // wrote its last fragment; by then the next segment has begun with later frames.
    let dir = tempfile::tempdir().expect("dir");
    let program = dir.path().join("dies-finishing.py");
    std::fs::write(
        &program,
        format!(
            "import os, subprocess, sys\n\
             marker = {marker:?}\n\
             p = subprocess.Popen(['ffmpeg'] + sys.argv[1:], stdin=subprocess.PIPE)\n\
             while True:\n\
             \x20   chunk = os.read(0, 65536)\n\
             \x20   if not chunk:\n\
             \x20       break\n\
             \x20   p.stdin.write(chunk)\n\
             \x20   p.stdin.flush()\n\
             if not os.path.exists(marker):\n\
             \x20   open(marker, 'w').close()\n\
             \x20   p.kill()\n\
             \x20   p.wait()\n\
             \x20   sys.exit(137)\n\
             p.stdin.close()\n\
             sys.exit(p.wait())\n",
            marker = dir.path().join("killed-once").display().to_string()
        ),
    )
    .expect("write the wrapper");
    let wrapper = script(
        dir.path(),
        "dies-finishing",
        &format!("exec python3 {} \"$@\"\n", program.display()),
    );
    let config = barcode_config(5).replace(
        "type = \"recorder\"",
        &format!("type = \"recorder\"\nffmpeg = \"{}\"", wrapper.display()),
    );
    let mut daemon = Daemon::start_in(dir, &config);
    switch(&daemon, "continuous");
    daemon.wait_for("the leftovers' segment", Duration::from_secs(30), |d| {
        d.log_text()
            .contains("the frames a dead ffmpeg left are recorded")
    });
    // One more whole segment after it.
    daemon.wait_for("two more segments", Duration::from_secs(30), |d| {
        finished(d).len() >= 3
    });
    daemon.signal(Signal::TERM);
    daemon.wait_exit(Duration::from_secs(20)).expect("exit");
    let log = daemon.log_text();
    assert!(log.contains("ffmpeg died while finishing its segment"), "{log}");
    assert_every_frame_once(&recorded_files(&daemon), 100);
}

#[test]
fn frames_held_during_a_restart_pause_are_written_at_sigterm() {
    let mut daemon = Daemon::start(&barcode_config(30));
    switch(&daemon, "continuous");
    let mut viewer = daemon.viewer("/");
    viewer.send("start");
    // Kill the encoder 1 s into its segment (before its first fragment: its file holds
    // nothing), then stop the daemon during the pause before the next encoder starts.
    let ffmpeg = recorder_ffmpeg(&daemon, &[]);
    std::thread::sleep(Duration::from_secs(1));
    signal_pid(ffmpeg, Signal::KILL);
    let killed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_micros() as u64;
    // A camera frame taken after the kill.
    let after_kill = loop {
        let jpeg = viewer.frame();
        let taken = comment_field(&jpeg, "us=").expect("fakecam's capture time");
        if taken > killed {
            break frame_seq(&jpeg);
        }
    };
    daemon.signal(Signal::TERM);
    daemon.wait_exit(Duration::from_secs(20)).expect("exit");
    let log = daemon.log_text();
    assert!(log.contains("ffmpeg died"), "{log}");
    assert_every_frame_once(&recorded_files(&daemon), 10);
    let last = last_recorded_frame(&daemon);
    assert!(
        u64::from(last) >= after_kill,
        "the last recorded frame is {last}; frame {after_kill} came after the kill"
    );
}

#[test]
fn with_short_segments_health_recovers_after_an_encoder_dies() {
    // No one ffmpeg lives 5 s here; the recorder still counts as working again.
    let daemon = Daemon::start(&config_with(10, 2));
    switch(&daemon, "continuous");
    let first = recorder_ffmpeg(&daemon, &[]);
    // A segment's ffmpeg that has just started (its segment ends 2 s from now).
    let fresh = recorder_ffmpeg(&daemon, &[first]);
    signal_pid(fresh, Signal::KILL);
    daemon.wait_for("health to say the recorder failed", Duration::from_secs(5), |d| {
        d.health()["status"] == "degraded"
    });
    daemon.wait_for("health to recover", Duration::from_secs(20), |d| {
        d.get("/health").0 == 200 && d.health()["status"] == "ok"
    });
}

#[test]
fn an_encoder_killed_mid_segment_loses_no_frame() {
    // Frames that say their own number, so the recordings show which camera frames they
    // hold; 2 s fragments in 6 s segments.
    let config = barcode_config(6);
    let mut daemon = Daemon::start(&config);
    switch(&daemon, "continuous");
    let mut killed = Vec::new();
    // Three times within a segment's first fragment (its file then holds nothing), twice
    // within its second (the file holds the first).
    let mut finished = Vec::new();
    for into in [0.3, 1.0, 1.9, 2.3, 3.1] {
        loop {
            let ffmpeg = recorder_ffmpeg(&daemon, &[&killed[..], &finished[..]].concat());
            let started = Instant::now();
            // Into the segment this ffmpeg writes (it starts with the segment).
            std::thread::sleep(Duration::from_secs_f64(into).saturating_sub(started.elapsed()));
            let pid = rustix::process::Pid::from_raw(ffmpeg).expect("a pid");
            match rustix::process::kill_process(pid, Signal::KILL) {
                Ok(()) => {
                    killed.push(ffmpeg);
                    break;
                }
                // Its segment ended first (one that starts with frames held over from the
                // last one is due sooner): the next.
                Err(_) => finished.push(ffmpeg),
            }
        }
    }
    // One more encoder, then a clean stop, which finishes its segment; once that segment
    // holds a fragment (a stop a few milliseconds into a segment leaves one of a frame or
    // two, which the file itself gives no length).
    recorder_ffmpeg(&daemon, &killed);
    daemon.wait_for("a fragment in the last segment", Duration::from_secs(20), |d| {
        d.replays()
            .iter()
            .any(|s| s["in_progress"] == true && s["duration"].as_f64() > Some(0.0))
    });
    daemon.signal(Signal::TERM);
    daemon.wait_exit(Duration::from_secs(20)).expect("exit");
    let log = daemon.log_text();
    // (A kill can land just as its segment ends, on an ffmpeg finishing it.)
    assert_eq!(
        log.matches("ffmpeg died mid-segment").count()
            + log.matches("ffmpeg died while finishing its segment").count(),
        5,
        "each kill was seen: {log}"
    );
    let check = |paths: &[PathBuf]| assert_every_frame_once(paths, 50);
    let recorded: Vec<PathBuf> = std::fs::read_dir(recordings_dir(&daemon))
        .expect("recordings")
        .map(|e| e.expect("entry").path())
        .collect();
    // (A segment killed before its first fragment leaves no file: its frames open the next.)
    let files = check(&recorded);
    assert!(files >= 2, "{files} files");
    // After a restart (which records on, continuous mode being kept): the same files, and
    // every file listed with frames.
    let storage = std::mem::replace(&mut daemon.dir, tempfile::TempDir::new().expect("dir"));
    let daemon = Daemon::start_in(storage, &config);
    check(&recorded);
    for listed in daemon.replays() {
        if listed["in_progress"] == false {
            assert!(listed["duration"].as_f64() > Some(0.0), "{listed}");
        }
    }
}

/// `mvhd`'s duration in seconds, read from the file's own boxes.
fn mvhd_seconds(path: &Path) -> f64 {
    let bytes = std::fs::read(path).expect("read");
    let be32 = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let (size, kind) = (be32(at) as usize, &bytes[at + 4..at + 8]);
        if kind == b"moov" {
            let mvhd = at + 8;
            assert_eq!(&bytes[mvhd + 4..mvhd + 8], b"mvhd", "mvhd first in moov");
            assert_eq!(bytes[mvhd + 8], 0, "a version 0 mvhd");
            return f64::from(be32(mvhd + 24)) / f64::from(be32(mvhd + 20));
        }
        assert!(size >= 8, "a box of {size} bytes");
        at += size;
    }
    panic!("no moov in {}", path.display())
}

#[test]
fn finished_segments_carry_their_length_and_frame_rate_for_every_player() {
    let daemon = Daemon::start(
        r#"
[server]
listen = "127.0.0.1:{port}"
[storage]
dir = "{dir}"
[mode]
default = "continuous"
[source]
kind = "test-pattern"
width = 320
height = 240
framerate = 15
[sinks.recorder]
type = "recorder"
segment_seconds = 5
"#,
    );
    daemon.wait_for("two finished segments", Duration::from_secs(30), |d| {
        finished(d).len() >= 2
    });
    for name in finished(&daemon) {
        let path = recordings_dir(&daemon).join(&name);
        // What a decoder makes of it: the last decoded frame's time plus one frame.
        let out = Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0"])
            .args(["-show_entries", "frame=pts_time", "-of", "csv=p=0"])
            .arg(&path)
            .output()
            .expect("ffprobe");
        let last: f64 = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .next_back()
            .expect("decoded frames");
        let decoded = last + 1.0 / 15.0;
        let mvhd = mvhd_seconds(&path);
        assert!(
            (mvhd - decoded).abs() <= 0.1,
            "{name}: mvhd {mvhd} s, decoded {decoded} s"
        );
        // GStreamer (which once took the index's last keyframe for the end).
        let out = Command::new("gst-discoverer-1.0")
            .arg(&path)
            .output()
            .expect("gst-discoverer-1.0 (scripts/test installs gstreamer1.0-plugins-base-apps)");
        let said = String::from_utf8_lossy(&out.stdout);
        let duration = said
            .lines()
            .find_map(|l| l.trim().strip_prefix("Duration: "))
            .unwrap_or_else(|| panic!("{name}: {said}"));
        let parts: Vec<f64> = duration.split(':').filter_map(|p| p.parse().ok()).collect();
        let gst = parts.iter().fold(0.0, |total, p| total * 60.0 + p);
        assert!(
            (gst - decoded).abs() <= 0.1,
            "{name}: GStreamer {duration}, decoded {decoded} s"
        );
        // mediainfo: the camera's rate (it once said 1000 fps), and a level for the size.
        let out = Command::new("mediainfo")
            .arg("--Inform=Video;%FrameRate% %Format_Profile%")
            .arg(&path)
            .output()
            .expect("mediainfo (scripts/test installs it)");
        let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let (rate, profile) = said.split_once(' ').unwrap_or_else(|| panic!("{name}: {said}"));
        assert_eq!(rate, "15.000", "{name}");
        // "High@L1.2"
        let level: f64 = profile
            .split_once("@L")
            .and_then(|(_, level)| level.parse().ok())
            .unwrap_or_else(|| panic!("{name}: profile {profile}"));
        assert!(level <= 2.0, "{name}: level {level} for 320x240 at 15 fps");
    }
}

/// Every camera frame from the first recorded to the last is in some recording, and each
/// file plays without a gap; a frame may be in two files (where one recorder handed over
/// to another).
fn assert_no_frame_missing(paths: &[PathBuf], at_least: usize) {
    let mut all = std::collections::BTreeSet::new();
    for path in paths {
        let numbers = frame_numbers(path);
        assert_no_gap_within(path, numbers.len());
        all.extend(numbers);
    }
    let all: Vec<u16> = all.into_iter().collect();
    let missing: Vec<_> = all.windows(2).filter(|w| w[1] != w[0] + 1).collect();
    assert!(missing.is_empty(), "frames lost at {missing:?}");
    assert!(all.len() >= at_least, "{} frames", all.len());
}

#[test]
fn a_reload_that_rebuilds_the_recorder_loses_no_frame() {
    // An encoder that lingers 2 s after writing its file: the old recorder takes that long
    // to stop, and the new one must be recording meanwhile.
    let dir = tempfile::tempdir().expect("dir");
    let lingering = script(
        dir.path(),
        "lingering-ffmpeg",
        "ffmpeg \"$@\"\nstatus=$?\nsleep 2\nexit $status\n",
    );
    let config = barcode_config(30).replace(
        "type = \"recorder\"\n",
        &format!("type = \"recorder\"\nffmpeg = \"{}\"\n", lingering.display()),
    );
    let mut daemon = Daemon::start_in(dir, &config);
    switch(&daemon, "continuous");
    wait_for_a_fragment(
        &daemon,
        "a fragment in the first segment",
        Duration::from_secs(20),
    );

    daemon.edit_config("segment_seconds = 30", "segment_seconds = 31");
    let log = daemon.reload();
    assert!(log.contains("sink changed, rebuilt sink=recorder"), "{log}");
    daemon.wait_for("the old segment finished", Duration::from_secs(30), |d| {
        !finished(d).is_empty()
    });
    wait_for_a_fragment(&daemon, "a fragment in the new segment", Duration::from_secs(30));
    daemon.signal(Signal::TERM);
    daemon.wait_exit(Duration::from_secs(30)).expect("exit");
    assert_no_frame_missing(&recorded_files(&daemon), 30);
}

/// The camera's size in [`barcode_config`], and a smaller one a reload changes it to.
const SIZE: &str = r#""320", "--height", "240""#;
const SMALLER: &str = r#""160", "--height", "120""#;

/// The picture size of a recording, as ffprobe reads it.
fn picture_size(path: &Path) -> String {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height",
        ])
        .args(["-of", "csv=p=0:s=x"])
        .arg(path)
        .output()
        .expect("ffprobe");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_camera_that_changes_its_picture_size_starts_a_new_segment() {
    let daemon = Daemon::start(&barcode_config(30));
    switch(&daemon, "continuous");
    wait_for_a_fragment(
        &daemon,
        "a fragment in the first segment",
        Duration::from_secs(20),
    );
    // The camera's size changes by a reload of the source alone; the recorder's table stays.
    daemon.edit_config(SIZE, SMALLER);
    let log = daemon.reload();
    assert!(
        log.contains("sink unchanged, kept running sink=recorder"),
        "{log}"
    );
    // The 30 s segment ends early (well within the 30 s it would otherwise last), and the
    // frames of the new size go to a segment of their own size instead of being scaled
    // into the old one.
    daemon.wait_for("the first segment finished early", Duration::from_secs(15), |d| {
        !finished(d).is_empty()
    });
    wait_for_a_fragment(&daemon, "a fragment of the new size", Duration::from_secs(15));
    let sizes: Vec<String> = recorded_files(&daemon).iter().map(|p| picture_size(p)).collect();
    assert!(
        sizes.contains(&"320x240".to_owned()) && sizes.contains(&"160x120".to_owned()),
        "{sizes:?}"
    );
}

#[test]
fn frames_of_two_sizes_held_through_an_encoder_restart_go_to_two_segments() {
    let mut daemon = Daemon::start(&barcode_config(30));
    switch(&daemon, "continuous");
    wait_for_a_fragment(
        &daemon,
        "a fragment in the first segment",
        Duration::from_secs(20),
    );
    // The encoder dies; during its restart pause the camera comes back at another size
    // (its frame numbers start again from 0). The held frames are of both sizes.
    daemon.edit_config(SIZE, SMALLER);
    signal_pid(recorder_ffmpeg(&daemon, &[]), Signal::KILL);
    let log = daemon.reload();
    assert!(log.contains("config reloaded"), "{log}");
    daemon.wait_for("a segment begun after the reload", Duration::from_secs(30), |d| {
        d.log_text().matches("segment started").count() >= 2
    });
    wait_for_a_fragment(&daemon, "a fragment in it", Duration::from_secs(30));
    daemon.signal(Signal::TERM);
    daemon.wait_exit(Duration::from_secs(30)).expect("exit");
    let sizes: Vec<String> = recorded_files(&daemon).iter().map(|p| picture_size(p)).collect();
    assert!(sizes.contains(&"160x120".to_owned()), "{sizes:?}");
    // No file holds frames of the old camera and then of the new one (scaled into its size).
    for file in recorded_files(&daemon) {
        let numbers = frame_numbers(&file);
        assert!(
            numbers.windows(2).all(|w| w[1] > w[0]),
            "{} ({}) holds {numbers:?}",
            file.display(),
            picture_size(&file)
        );
    }
}
