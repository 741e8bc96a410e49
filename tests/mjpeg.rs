//! MJPEG over HTTP and snapshots, for the tools people already run.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

fn config(tee: &std::path::Path, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"
snapshot_timeout_seconds = 3
[storage]
dir = "{{dir}}"
[source]
kind = "command"
command = ["{{fakecam}}", "--fps", "15", "--tee", "{}"]
stop_grace_ms = 300
{extra}
[sinks.live]
type = "websocket"
[sinks.mjpeg]
type = "http-mjpeg"
"#,
        tee.display()
    )
}

/// Reads multipart parts from `/stream.mjpeg`, checking every part's headers.
struct Multipart {
    reader: BufReader<TcpStream>,
}

impl Multipart {
    fn open(port: u16) -> Multipart {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream
            .write_all(b"GET /stream.mjpeg HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("request");
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("head line");
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("multipart/x-mixed-replace; boundary=croissantframe"),
            "{head}"
        );
        Multipart { reader }
    }

    /// Reads bytes of the body, undoing chunked transfer encoding if the server used it.
    fn part(&mut self) -> Vec<u8> {
        // The body may be chunked: collect de-chunked bytes until a whole part is in.
        let mut text = Vec::new();
        loop {
            if let Some(part) = parse_part(&text) {
                return part;
            }
            let mut size_line = String::new();
            self.reader.read_line(&mut size_line).expect("chunk size");
            let size = usize::from_str_radix(size_line.trim(), 16).expect("hex chunk size");
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk).expect("chunk");
            text.extend_from_slice(&chunk[..size]);
        }
    }
}

/// One complete part at the start of `body`, checked against its Content-Length.
fn parse_part(body: &[u8]) -> Option<Vec<u8>> {
    let head_end = body.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&body[..head_end]).into_owned();
    assert!(head.starts_with("--croissantframe\r\n"), "part head: {head:?}");
    assert!(head.contains("Content-Type: image/jpeg"), "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("every part has a Content-Length");
    let start = head_end + 4;
    if body.len() < start + len + 2 {
        return None;
    }
    assert_eq!(&body[start + len..start + len + 2], b"\r\n");
    Some(body[start..start + len].to_vec())
}

#[test]
fn mjpeg_parts_are_byte_identical_to_the_websocket_frames() {
    let tee = tempfile::tempdir().expect("tee");
    let daemon = Daemon::start(&config(tee.path(), ""));
    let mut mjpeg = Multipart::open(daemon.port);
    let mut viewer = daemon.viewer("/");
    viewer.send("start");
    let mut mjpeg_seqs = Vec::new();
    for _ in 0..10 {
        let part = mjpeg.part();
        let seq = frame_seq(&part);
        assert_eq!(
            part,
            std::fs::read(tee.path().join(format!("{seq}.jpg"))).expect("written frame")
        );
        mjpeg_seqs.push(seq);
        let ws = viewer.frame();
        assert_eq!(
            ws,
            std::fs::read(tee.path().join(format!("{}.jpg", frame_seq(&ws)))).expect("written frame")
        );
    }
    assert!(mjpeg_seqs.windows(2).all(|w| w[1] > w[0]), "{mjpeg_seqs:?}");
    let status: serde_json::Value = serde_json::from_str(&daemon.get("/api/status").1).expect("status");
    assert_eq!(status["viewers"], 2, "MJPEG clients count as viewers");
}

#[test]
fn ffmpeg_reads_the_mjpeg_stream() {
    let tee = tempfile::tempdir().expect("tee");
    let daemon = Daemon::start(&config(tee.path(), ""));
    let out = std::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-i",
            &format!("http://127.0.0.1:{}/stream.mjpeg", daemon.port),
        ])
        .args(["-frames:v", "5", "-f", "null", "-"])
        .output()
        .expect("ffmpeg");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let probe = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(format!("http://127.0.0.1:{}/stream.mjpeg", daemon.port))
        .output()
        .expect("ffprobe");
    assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "mjpeg,640,480");
}

#[test]
fn snapshot_works_with_the_camera_off_and_on() {
    let tee = tempfile::tempdir().expect("tee");
    let daemon = Daemon::start(&config(tee.path(), ""));
    assert_eq!(daemon.source_pid(), None);
    // Off: the camera starts, the first frame comes back, the camera stops again.
    let (status, headers, body) = http(
        daemon.port,
        "GET /snapshot.jpg HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert!(headers.contains(&("content-type".into(), "image/jpeg".into())));
    assert_eq!(
        body,
        std::fs::read(tee.path().join(format!("{}.jpg", frame_seq(&body)))).expect("a real frame")
    );
    daemon.wait_for(
        "the camera to stop after the snapshot",
        Duration::from_secs(5),
        |d| d.source_pid().is_none(),
    );

    // On: the snapshot is the newest frame, at most one frame old.
    let mut viewer = daemon.viewer("/");
    viewer.send("start");
    viewer.frame();
    let started = Instant::now();
    let (status, _, body) = http(
        daemon.port,
        "GET /snapshot.jpg HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "served from the running camera"
    );
    let latest = frame_seq(&viewer.frame());
    let snap = frame_seq(&body);
    assert!(
        latest <= snap + 2,
        "snapshot {snap} is stale; live is at {latest}"
    );
}

#[test]
fn snapshot_without_a_camera_is_a_clear_503() {
    let config = r#"
[server]
listen = "127.0.0.1:{port}"
snapshot_timeout_seconds = 2
[source]
kind = "command"
command = ["sleep", "60"]
"#;
    let daemon = Daemon::start(config);
    let started = Instant::now();
    let (status, body) = daemon.get("/snapshot.jpg");
    assert_eq!(status, 503);
    assert!(body.contains("no frame from the camera within 2 s"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
