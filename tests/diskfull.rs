//! A full disk, on a real small filesystem (a tmpfs mounted for the test; the test runs as
//! root, as `scripts/test` does in CI). Recording fails and is retried, retention frees
//! space when it may, and live view never stops.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A tmpfs of `size` mounted on a fresh directory, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot mount a {size} tmpfs for the full-disk test; it needs root (scripts/test runs as root in CI)"
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

fn config(storage: &Path, retention: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"
[storage]
dir = "{}"
[mode]
default = "continuous"
[source]
kind = "command"
command = ["{{fakecam}}", "--fps", "15", "--width", "640", "--height", "480", "--noise", "60"]
stop_grace_ms = 300
[sinks.live]
type = "websocket"
[sinks.recorder]
type = "recorder"
segment_seconds = 2
extra_args = ["-crf", "10"]
[sinks.thumbnails]
type = "thumbnailer"
every_seconds = 1
{retention}
"#,
        storage.display()
    )
}

fn finished_segments(storage: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(storage.join("recordings"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "mp4"));
    files.sort();
    files
}

/// Watches live for `seconds`, returning how many frames arrived.
fn watch(viewer: &mut Viewer, seconds: u64) -> u64 {
    let start = Instant::now();
    let mut frames = 0;
    while start.elapsed() < Duration::from_secs(seconds) {
        viewer.frame();
        frames += 1;
    }
    frames
}

#[test]
fn a_full_disk_pauses_recording_and_live_view_goes_on() {
    let disk = SmallDisk::mount("3m");
    let daemon = Daemon::start(&config(disk.path(), ""));
    let mut viewer = daemon.viewer("/");
    viewer.send("start");

    // Recording fills the disk within seconds; live view keeps its full rate throughout.
    let frames = watch(&mut viewer, 12);
    assert!(frames >= 150, "live view slowed: {frames} frames in 12 s");
    daemon.wait_for("ffmpeg to hit the full disk", Duration::from_secs(20), |d| {
        d.log_text().contains("No space left on device") || d.log_text().contains("ffmpeg died")
    });
    let frames = watch(&mut viewer, 4);
    assert!(
        frames >= 50,
        "live view slowed once the disk was full: {frames} frames in 4 s"
    );
    // Health says recording fails, and why, while live view goes on.
    daemon.wait_for("health to report the recorder", Duration::from_secs(10), |d| {
        let health = d.health();
        health["status"] == "degraded"
            && health["problems"][0]["sink"] == "recorder"
            && d.get("/health").0 == 503
    });
    let metrics = daemon.get("/metrics").1;
    assert!(
        metrics.contains("croissant_sink_failing{sink=\"recorder\",type=\"recorder\"} 1"),
        "{metrics}"
    );
    // The daemon keeps trying (with backoff) rather than giving up or spinning.
    let restarts = |d: &Daemon| {
        d.get("/metrics")
            .1
            .lines()
            .find_map(|l| {
                l.strip_prefix("croissant_ffmpeg_restarts_total{sink=\"recorder\",type=\"recorder\"} ")
            })
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    daemon.wait_for("the recorder to retry", Duration::from_secs(15), |d| {
        restarts(d) >= 1
    });
    // 0.5, 1, 2, 4, 8, 10 s apart: a handful in the ~20 s since the disk filled, not dozens.
    assert!(
        restarts(&daemon) <= 8,
        "retries must back off: {}",
        restarts(&daemon)
    );
    let empty: Vec<_> = finished_segments(disk.path())
        .into_iter()
        .filter(|p| std::fs::metadata(p).map_or(true, |m| m.len() == 0))
        .collect();
    assert!(
        empty.is_empty(),
        "failed attempts leave no empty files: {empty:?}"
    );
    // Switching the mode still answers (with a clear error if the state cannot be saved).
    let json = r#"{"mode":"on-demand"}"#;
    let request = format!(
        "POST /settings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    );
    let (status, _, body) = http(daemon.port, &request);
    let body = String::from_utf8_lossy(&body);
    assert!(
        status == 200 || (status == 500 && body.contains("cannot save")),
        "{status} {body}"
    );
    assert!(common::alive(daemon.pid()));
}

#[test]
fn retention_frees_space_on_a_small_disk_and_recording_goes_on() {
    let disk = SmallDisk::mount("6m");
    let daemon = Daemon::start(&config(
        disk.path(),
        "[sinks.retention]\ntype = \"retention\"\nkeep = 1000\nmin_free_bytes = 3000000",
    ));
    let mut viewer = daemon.viewer("/");
    viewer.send("start");
    let frames = watch(&mut viewer, 20);
    assert!(frames >= 250, "live view slowed: {frames} frames in 20 s");
    daemon.wait_for("retention to delete segments", Duration::from_secs(20), |d| {
        d.log_text().contains("deleted")
    });
    // Recording continues: new segments keep finishing while old ones go.
    let before = finished_segments(disk.path());
    std::thread::sleep(Duration::from_secs(6));
    let after = finished_segments(disk.path());
    let newest = |files: &[PathBuf]| files.last().cloned();
    assert_ne!(
        newest(&before),
        newest(&after),
        "no new segment in 6 s: {after:?}"
    );
    assert!(after.len() < 20, "retention kept too much: {}", after.len());
    assert!(common::alive(daemon.pid()));
}
