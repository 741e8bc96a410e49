//! Test support: start the real `croissant` binary on a temp config and a free port, and
//! talk to it over real sockets.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tungstenite::{Message, WebSocket};

pub mod access;
pub mod cdp;
pub mod nginx;
pub mod throttle;

pub const CROISSANT: &str = env!("CARGO_BIN_EXE_croissant");
pub const FAKECAM: &str = env!("CARGO_BIN_EXE_fakecam");

/// Another process bound the port first: the daemon's log, and its directory back.
struct PortTaken {
    dir: tempfile::TempDir,
    log: String,
}

/// Waits for the daemon's own word that it listens on `port`: a connection that succeeds
/// may have reached another test's daemon on the same port.
fn wait_listening(child: &mut Child, log: &std::path::Path, port: u16) -> Result<(), String> {
    let listening = format!(":{port} (viewer at");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Ok(Some(status)) = child.try_wait() {
            if text.contains("Address already in use") {
                return Err(text);
            }
            panic!("croissant exited early with {status}:\n{text}");
        }
        if text.contains(&listening) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!(
        "croissant did not listen on {port} within 20 s:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// A running daemon; killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
}

/// A port nobody listens on right now (another test may take it before the daemon does;
/// [`Daemon::start`] then tries another).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

impl Daemon {
    /// Starts the daemon with `config` (`{port}`, `{dir}` and `{fakecam}` are filled in) and
    /// waits until `/health` answers.
    pub fn start(config: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, config)
    }

    pub fn start_in(dir: tempfile::TempDir, config: &str) -> Daemon {
        Self::on_a_free_port(dir, config, None)
    }

    /// Starts on a given port, e.g. to restart a daemon where clients expect it.
    pub fn start_on(dir: tempfile::TempDir, config: &str, port: u16) -> Daemon {
        match Self::launch(dir, config, port, None) {
            Ok(daemon) => daemon,
            Err(taken) => panic!("port {port} is taken:\n{}", taken.log),
        }
    }

    /// Tests run in parallel, each with its own daemon: a port found free may be taken by
    /// another daemon before this one binds it, so a lost race tries another port.
    fn on_a_free_port(dir: tempfile::TempDir, config: &str, fd_limit: Option<u64>) -> Daemon {
        let mut dir = dir;
        for _ in 0..5 {
            match Self::launch(dir, config, free_port(), fd_limit) {
                Ok(daemon) => return daemon,
                Err(taken) => dir = taken.dir,
            }
        }
        panic!("five free ports were taken before croissant could bind them");
    }

    /// Starts under `ulimit -n fd_limit` (soft and hard), as on a box with systemd's
    /// defaults and no `LimitNOFILE=`.
    pub fn start_with_fd_limit(config: &str, fd_limit: u64) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::on_a_free_port(dir, config, Some(fd_limit))
    }

    fn launch(
        dir: tempfile::TempDir,
        config: &str,
        port: u16,
        fd_limit: Option<u64>,
    ) -> Result<Daemon, PortTaken> {
        let text = config
            .replace("{port}", &port.to_string())
            .replace("{dir}", &dir.path().display().to_string())
            .replace("{fakecam}", FAKECAM);
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, text).expect("write config");
        let log = dir.path().join(format!(
            "daemon-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let mut command = match fd_limit {
            None => Command::new(CROISSANT),
            Some(limit) => {
                // `exec` keeps the pid: the shell becomes the daemon.
                let mut shell = Command::new("sh");
                shell
                    .arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(CROISSANT);
                shell
            }
        };
        let mut child = command
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn croissant");
        match wait_listening(&mut child, &log, port) {
            Ok(()) => Ok(Daemon {
                child,
                port,
                dir,
                log,
            }),
            Err(log) => Err(PortTaken { dir, log }),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// `GET path`, returning status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        let (status, _, body) = http(
            self.port,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// `/health` as JSON.
    /// Rewrites the daemon's config file (`{port}`, `{dir}` and `{fakecam}` filled in as at
    /// start).
    pub fn rewrite_config(&self, text: &str) {
        let text = text
            .replace("{port}", &self.port.to_string())
            .replace("{dir}", &self.dir.path().display().to_string())
            .replace("{fakecam}", FAKECAM);
        std::fs::write(self.dir.path().join("config.toml"), text).expect("rewrite the config");
    }

    /// Replaces `from` with `to` in the daemon's config file.
    pub fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(self.dir.path().join("config.toml")).expect("read the config");
        assert!(text.contains(from), "no `{from}` in the config:\n{text}");
        self.rewrite_config(&text.replace(from, to));
    }

    /// Sends SIGHUP and waits for the reload to end, refused or done; returns the log lines
    /// it wrote.
    pub fn reload(&self) -> String {
        let before = self.log_text().len();
        self.signal(rustix::process::Signal::HUP);
        self.wait_for("the reload to end", Duration::from_secs(30), |d| {
            let new = &d.log_text()[before..];
            new.contains("config reloaded") || new.contains("config reload refused")
        });
        self.log_text()[before..].to_owned()
    }

    /// `GET /api/replays`: the recordings, newest first.
    pub fn replays(&self) -> Vec<serde_json::Value> {
        let (status, body) = self.get("/api/replays");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body)
            .expect("JSON")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn health(&self) -> serde_json::Value {
        let (_, body) = self.get("/health");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("health is not JSON ({e}): {body}"))
    }

    /// The source process id, if one runs.
    pub fn source_pid(&self) -> Option<i32> {
        self.health()["source"]["pid"].as_i64().map(|p| p as i32)
    }

    /// Polls `check` until it holds or `timeout` passes.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut check: impl FnMut(&Daemon) -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if check(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "timed out waiting for {what}; health: {}\nlog:\n{}",
            self.get("/health").1,
            self.log_text()
        );
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        signal_pid(self.pid(), signal);
    }

    /// Waits for the daemon to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Resident memory of the daemon in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    pub fn viewer(&self, path: &str) -> Viewer {
        Viewer::connect(self.port, path)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal_pid(pid: i32, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid).expect("a positive pid");
    rustix::process::kill_process(pid, signal).expect("send signal");
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(") ")
            .next()
            .is_some_and(|rest| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

pub fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc status")
}

/// Sends a raw request and reads the whole response (the server closes it).
pub fn http(port: u16, request: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("send request");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| {
        panic!("no response head in {:?}", String::from_utf8_lossy(&raw));
    });
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect::<Vec<_>>();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    (status, headers, body)
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&body[..line_end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&body[line_end + 2..line_end + 2 + size]);
        body = &body[line_end + 2 + size + 2..];
    }
    out
}

/// A real WebSocket client.
pub struct Viewer {
    pub ws: WebSocket<TcpStream>,
}

impl Viewer {
    pub fn connect(port: u16, path: &str) -> Viewer {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let (ws, _) =
            tungstenite::client(format!("ws://127.0.0.1:{port}{path}"), stream).expect("WebSocket handshake");
        Viewer { ws }
    }

    pub fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("send text");
    }

    /// The next binary message (a frame), skipping control frames.
    pub fn frame(&mut self) -> Vec<u8> {
        loop {
            match self.ws.read().expect("read a frame") {
                Message::Binary(data) => return data.to_vec(),
                Message::Close(frame) => panic!("closed while waiting for a frame: {frame:?}"),
                _ => {}
            }
        }
    }

    /// The next message of any kind, or the error.
    pub fn next(&mut self) -> Result<Message, tungstenite::Error> {
        self.ws.read()
    }
}

/// The `seq=` number a fakecam frame carries in its COM segment.
pub fn frame_seq(jpeg: &[u8]) -> u64 {
    comment_field(jpeg, "seq=").unwrap_or_else(|| panic!("frame without seq comment ({} bytes)", jpeg.len()))
}

pub fn comment_field(jpeg: &[u8], key: &str) -> Option<u64> {
    if jpeg.len() < 6 || jpeg[2..4] != [0xFF, 0xFE] {
        return None;
    }
    let len = u16::from_be_bytes([jpeg[4], jpeg[5]]) as usize;
    let text = String::from_utf8_lossy(jpeg.get(6..4 + len)?).into_owned();
    text.split(' ')
        .find_map(|f| f.strip_prefix(key))
        .and_then(|v| v.parse().ok())
}

/// Writes a shell script (a stand-in camera or encoder) into `dir`, executable.
pub fn script(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{text}")).expect("write the script");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("make the script executable");
    path
}

pub fn fakecam_config(extra_args: &str, source_extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"

[storage]
dir = "{{dir}}"

[source]
kind = "command"
command = ["{{fakecam}}", {extra_args}]
stop_grace_ms = 300
{source_extra}

[sinks.live]
type = "websocket"
"#
    )
}

/// `croissant hash-password`, fed on stdin as the docs say.
pub fn hash(password: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(CROISSANT)
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run hash-password");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write password");
    let out = child.wait_with_output().expect("hash-password output");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hash = String::from_utf8(out.stdout).expect("utf-8").trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    hash
}

/// A connection to the daemon from `ip` (any 127.x.y.z address is this machine).
pub fn connect_from(ip: &str, port: u16) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    let local: std::net::SocketAddr = format!("{ip}:0").parse().expect("address");
    socket.bind(&local.into())?;
    let server: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    socket.connect(&server.into())?;
    Ok(socket.into())
}
