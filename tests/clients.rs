//! The real clients people point at a camera, against the real daemon: curl speaking
//! HTTP/1.0, ApacheBench, nginx with a newcomer's `proxy_pass` (HTTP/1.0 to the daemon),
//! VLC, GStreamer and motion. (ffmpeg reads the stream in `tests/mjpeg.rs`, Chromium drives
//! the pages in `tests/browser.rs`.) `scripts/test` installs them all.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::nginx::Nginx;
use common::*;
use croissant::splitter::jpeg_size;

fn start() -> Daemon {
    Daemon::start(&format!(
        "{}\n[sinks.mjpeg]\ntype = \"http-mjpeg\"\n",
        fakecam_config(
            "\"--fps\", \"10\", \"--width\", \"320\", \"--height\", \"240\"",
            ""
        )
    ))
}

/// Fails the test, saying what to install, when a client is missing.
fn require(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{program} is missing: install {package} (scripts/test does)"
    );
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// A child process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The fakecam frames (`seq=` comments) in a byte stream.
fn frames_in(bytes: &[u8]) -> usize {
    bytes.windows(4).filter(|w| w == b"seq=").count()
}

#[test]
fn curl_speaking_http_1_0_gets_health_pages_snapshots_and_the_stream() {
    require("curl", "curl");
    let daemon = start();
    let out = tempfile::tempdir().expect("temp dir");
    for (path, expect) in [
        ("/health", &b"{\"fps\""[..]),
        ("/", b"<!doctype html>"),
        ("/snapshot.jpg", b"\xff\xd8"),
    ] {
        let (file, head) = (out.path().join("body"), out.path().join("head"));
        let result = run(Command::new("curl")
            .args(["--http1.0", "-sS", "--max-time", "10", "-o"])
            .arg(&file)
            .arg("-D")
            .arg(&head)
            .arg(format!("http://127.0.0.1:{}{path}", daemon.port)));
        assert!(
            result.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        let head = std::fs::read_to_string(&head).expect("head");
        assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{path}: {head}");
        let body = std::fs::read(&file).expect("body");
        assert!(
            body.starts_with(expect),
            "{path}: {:?}",
            String::from_utf8_lossy(&body[..body.len().min(60)])
        );
    }
    // The MJPEG stream over HTTP/1.0 has no chunking: it ends when the connection does.
    let file = out.path().join("stream");
    let result = run(Command::new("curl")
        .args(["--http1.0", "-sS", "--max-time", "2", "-o"])
        .arg(&file)
        .arg(format!("http://127.0.0.1:{}/stream.mjpeg", daemon.port)));
    assert_eq!(result.status.code(), Some(28), "curl stops it after 2 s");
    let frames = frames_in(&std::fs::read(&file).expect("stream"));
    assert!(frames >= 5, "{frames} frames in 2 s");
}

#[test]
fn apache_bench_completes_every_request_with_and_without_keep_alive() {
    require("ab", "apache2-utils");
    let daemon = start();
    for keep_alive in [false, true] {
        let mut command = Command::new("ab");
        command.args(["-n", "300", "-c", "20", "-s", "10"]);
        if keep_alive {
            command.arg("-k");
        }
        let result = run(command.arg(format!("http://127.0.0.1:{}/health", daemon.port)));
        let report = String::from_utf8_lossy(&result.stdout);
        assert!(
            result.status.success(),
            "{report}{}",
            String::from_utf8_lossy(&result.stderr)
        );
        let field = |name: &str| -> u64 {
            report
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in:\n{report}"))
        };
        assert_eq!(field("Complete requests:"), 300, "{report}");
        assert_eq!(field("Failed requests:"), 0, "{report}");
        if keep_alive {
            assert_eq!(field("Keep-Alive requests:"), 300, "{report}");
        }
    }
}

#[test]
fn nginx_with_a_plain_proxy_pass_serves_pages_snapshots_and_the_stream() {
    let daemon = start();
    let scratch = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let nginx = Nginx::proxy(scratch.path(), port, daemon.port);
    let get = |path: &str| {
        http(
            port,
            &format!("GET {path} HTTP/1.1\r\nHost: cam.local\r\nConnection: close\r\n\r\n"),
        )
    };
    let (status, _, body) = get("/health");
    assert_eq!(status, 200, "{}\n{}", String::from_utf8_lossy(&body), nginx.log());
    assert!(String::from_utf8_lossy(&body).contains("\"uptime\""));
    let (status, _, body) = get("/");
    assert_eq!(status, 200);
    assert!(body.starts_with(b"<!doctype html>"));
    let (status, headers, body) = get("/snapshot.jpg");
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v == "image/jpeg")
    );
    assert_eq!(jpeg_size(&body), Some((320, 240)));

    // The stream, through nginx's default buffering: parts keep coming.
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to nginx");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(b"GET /stream.mjpeg HTTP/1.1\r\nHost: cam.local\r\n\r\n")
        .expect("request");
    let mut seen = Vec::new();
    let mut buf = [0u8; 65536];
    let started = Instant::now();
    while frames_in(&seen) < 10 {
        let n = stream.read(&mut buf).expect("stream data through nginx");
        assert!(n > 0, "nginx ended the stream: {}", nginx.log());
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(String::from_utf8_lossy(&seen[..200]).contains("multipart/x-mixed-replace"));
}

#[test]
fn vlc_plays_the_mjpeg_stream() {
    require("cvlc", "vlc-bin and vlc-plugin-base");
    let daemon = start();
    // VLC refuses to run as root; CI runs as root, so play it as nobody.
    let out = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(out.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).expect("chmod");
    let file = out.path().join("copy.mjpg");
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "cvlc",
            "-q",
            "-I",
            "dummy",
        ])
        .arg(format!("http://127.0.0.1:{}/stream.mjpeg", daemon.port))
        .arg(format!(
            "--sout=#std{{access=file,mux=mpjpeg,dst={}}}",
            file.display()
        ))
        .env("HOME", out.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _vlc = Running(command.spawn().expect("start vlc"));
    // VLC copies what it plays into the file as it goes; ten frames are enough.
    let deadline = Instant::now() + Duration::from_secs(20);
    let copy = loop {
        let copy = std::fs::read(&file).unwrap_or_default();
        if frames_in(&copy) >= 10 {
            break copy;
        }
        assert!(
            Instant::now() < deadline,
            "VLC received {} frames in 20 s",
            frames_in(&copy)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let first = copy
        .windows(2)
        .position(|w| w == b"\xff\xd8")
        .expect("a JPEG in VLC's copy");
    assert_eq!(jpeg_size(&copy[first..]), Some((320, 240)));
}

#[test]
fn gstreamer_decodes_the_mjpeg_stream() {
    require(
        "gst-launch-1.0",
        "gstreamer1.0-tools and gstreamer1.0-plugins-good",
    );
    let daemon = start();
    let out = tempfile::tempdir().expect("temp dir");
    let pattern = out.path().join("frame-%03d.jpg");
    // Demux the parts, decode each JPEG, and keep ten of them as files.
    let result = run(Command::new("timeout")
        .args(["20", "gst-launch-1.0", "-q", "souphttpsrc"])
        .arg(format!("location=http://127.0.0.1:{}/stream.mjpeg", daemon.port))
        .args(["!", "multipartdemux", "!", "image/jpeg", "!", "tee", "name=t"])
        .args(["t.", "!", "queue", "!", "jpegdec", "!", "fakesink"])
        .args([
            "t.",
            "!",
            "queue",
            "!",
            "identity",
            "eos-after=10",
            "!",
            "multifilesink",
        ])
        .arg(format!("location={}", pattern.display())));
    assert!(
        result.status.success(),
        "gst-launch failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    let files: Vec<_> = std::fs::read_dir(out.path()).expect("frames").flatten().collect();
    assert!(files.len() >= 9, "{} frames", files.len());
    let frame = std::fs::read(files[0].path()).expect("a frame");
    assert_eq!(jpeg_size(&frame), Some((320, 240)));
    assert_eq!(frames_in(&frame), 1, "one whole fakecam frame per file");
}

#[test]
fn motion_takes_snapshots_from_the_stream() {
    require("motion", "motion");
    let daemon = start();
    let out = tempfile::tempdir().expect("temp dir");
    let dir = out.path().display();
    let conf = out.path().join("motion.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off\nsetup_mode off\nlog_file {dir}/motion.log\npid_file {dir}/motion.pid\n\
             netcam_url http://127.0.0.1:{port}/stream.mjpeg\ntarget_dir {dir}\n\
             snapshot_interval 1\nsnapshot_filename snap-%Y%m%d%H%M%S\n\
             picture_output off\nmovie_output off\nwebcontrol_port 0\nstream_port 0\n",
            port = daemon.port
        ),
    )
    .expect("motion.conf");
    let _motion = Running(
        Command::new("motion")
            .arg("-n")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start motion"),
    );
    let snapshots = |dir: &Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("snap-"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while snapshots(out.path()).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "motion took no snapshots:\n{}",
            std::fs::read_to_string(out.path().join("motion.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // motion decodes the stream's frames and writes its own JPEGs (at its own size).
    let snapshot = std::fs::read(&snapshots(out.path())[0]).expect("a snapshot");
    assert!(snapshot.starts_with(b"\xff\xd8") && jpeg_size(&snapshot).is_some());
    let log = std::fs::read_to_string(out.path().join("motion.log")).unwrap_or_default();
    assert!(!log.contains("ERR"), "{log}");
}
