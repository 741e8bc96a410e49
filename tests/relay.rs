//! The relay sink against a real media server: Debian's nginx with its RTMP module, on
//! loopback (`scripts/test` installs both).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::nginx::Nginx;
use common::*;

/// What ffprobe sees at `url`: codec, width and height of the first video stream. ffprobe
/// is killed if it hangs (an RTMP play with no publisher waits forever).
fn probe(url: &str) -> Option<(String, u64, u64)> {
    let mut child = Command::new("ffprobe")
        // The RTMP client announces audio that never comes; a tiny probe size makes ffprobe
        // report the video stream instead of waiting for it.
        .args(["-v", "error", "-probesize", "32", "-analyzeduration", "1000000"])
        .args([
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,width,height",
        ])
        .args(["-of", "json", url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run ffprobe");
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        match child.try_wait().expect("ffprobe status") {
            Some(_) => break,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take()?, &mut out).ok()?;
    let json: serde_json::Value = serde_json::from_str(&out).ok()?;
    let stream = json.get("streams")?.get(0)?;
    Some((
        stream.get("codec_name")?.as_str()?.to_owned(),
        stream.get("width")?.as_u64()?,
        stream.get("height")?.as_u64()?,
    ))
}

/// Probes until the stream is there, or fails the test after `within`.
fn wait_for_stream(url: &str, within: Duration, nginx: &Nginx, daemon: &Daemon) -> (String, u64, u64) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = probe(url) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no stream at {url} within {within:?}\nnginx: {}\ndaemon: {}",
            nginx.log(),
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn metric(daemon: &Daemon, series: &str) -> f64 {
    let (_, text) = daemon.get("/metrics");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

#[test]
fn relay_pushes_h264_of_the_configured_size_and_resumes_after_the_server_restarts() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let rtmp_port = free_port();
    let mut nginx = Nginx::rtmp(scratch.path(), rtmp_port);
    let url = format!("rtmp://127.0.0.1:{rtmp_port}/live/cam");
    let daemon = Daemon::start(&format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"
[storage]
dir = "{{dir}}"
[mode]
default = "continuous"
[source]
kind = "command"
command = ["{{fakecam}}", "--fps", "15", "--width", "320", "--height", "240"]
[sinks.live]
type = "websocket"
[sinks.relay]
type = "relay"
url = "{url}"
size = "256x144"
bitrate_kbps = 500
"#
    ));

    let (codec, width, height) = wait_for_stream(&url, Duration::from_secs(30), &nginx, &daemon);
    assert_eq!((codec.as_str(), width, height), ("h264", 256, 144));
    assert_eq!(
        metric(&daemon, "croissant_ffmpeg_up{sink=\"relay\",type=\"relay\"}"),
        1.0
    );

    let mut viewer = daemon.viewer("/");
    viewer.send("start");
    viewer.frame();

    // The server dies: ffmpeg fails and is restarted with backoff; live view goes on.
    nginx.kill();
    let before = frame_seq(&viewer.frame());
    let outage = Instant::now();
    let mut last = before;
    while outage.elapsed() < Duration::from_secs(3) {
        last = frame_seq(&viewer.frame());
    }
    assert!(
        last - before >= 35,
        "live view slowed during the outage: {} frames in 3 s",
        last - before
    );
    daemon.wait_for("the relay to notice", Duration::from_secs(10), |d| {
        metric(
            d,
            "croissant_ffmpeg_restarts_total{sink=\"relay\",type=\"relay\"}",
        ) >= 1.0
    });

    daemon.wait_for("health to say the relay fails", Duration::from_secs(10), |d| {
        let health = d.health();
        health["status"] == "degraded" && health["problems"][0]["sink"] == "relay"
    });
    assert!(
        !daemon.get("/health").1.contains("/live/cam"),
        "the stream key stays out of /health too"
    );

    // The server is back on the same port: the relay resumes within seconds.
    let back = Instant::now();
    let nginx = Nginx::rtmp(scratch.path(), rtmp_port);
    let (codec, width, height) = wait_for_stream(&url, Duration::from_secs(20), &nginx, &daemon);
    assert_eq!((codec.as_str(), width, height), ("h264", 256, 144));
    eprintln!("relay resumed {:?} after the server came back", back.elapsed());
    daemon.wait_for("health to recover", Duration::from_secs(15), |d| {
        d.health()["status"] == "ok"
    });
    assert!(daemon.log_text().contains("relay failed"));
    assert!(
        !daemon.log_text().contains("/live/cam"),
        "the stream name is a key for cloud ingests; logs must not show it"
    );
}

#[test]
fn a_server_that_stops_reading_does_not_hold_up_a_mode_switch() {
    // A "media server" that takes the connection and never reads from it: the relay's
    // ffmpeg, then the relay's writes to it, block until `write_timeout_seconds`.
    let server = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = server.local_addr().expect("addr").port();
    let held = std::thread::spawn(move || {
        let (socket, _) = server.accept().expect("accept");
        // Kept open, never read, until the test ends.
        std::thread::sleep(Duration::from_secs(120));
        drop(socket);
    });
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"
[storage]
dir = "{{dir}}"
[mode]
default = "continuous"
[source]
kind = "command"
command = ["{{fakecam}}", "--fps", "15", "--width", "640", "--height", "480", "--noise", "20"]
[sinks.relay]
type = "relay"
url = "rtmp://127.0.0.1:{port}/live/key"
bitrate_kbps = 4000
write_timeout_seconds = 120
"#
    );
    let daemon = Daemon::start(&config);
    // Stuck: no frame delivered to ffmpeg for 2 s while the camera runs.
    let mut last = (-1.0, Instant::now());
    daemon.wait_for("the relay's writes to block", Duration::from_secs(60), |d| {
        let delivered = metric(
            d,
            r#"croissant_sink_frames_delivered_total{sink="relay",type="relay"}"#,
        );
        if delivered != last.0 {
            last = (delivered, Instant::now());
        }
        delivered > 0.0 && last.1.elapsed() > Duration::from_secs(2)
    });
    let body = r#"{"mode":"on-demand"}"#;
    let request = format!(
        "POST /settings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let asked = Instant::now();
    let (status, _, body) = http(daemon.port, &request);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    // Well within the 120 s write timeout: the relay let go of its stuck write.
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "the mode switch took {:?}:\n{}",
        asked.elapsed(),
        daemon.log_text()
    );
    drop(daemon);
    drop(held);
}
