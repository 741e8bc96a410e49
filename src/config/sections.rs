//! The tables of the config other than `[sinks]` and `[auth]`: `[server]`, `[storage]`,
//! `[viewer]`, `[mode]` and `[source]`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::mode::Mode;

use super::validators::{
    count, dimension, frame_bytes, framerate, host_names, listen_address, positive_seconds, seconds,
};

/// `[server]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port to listen on; port 0 is refused (clients need a known port).
    #[serde(deserialize_with = "listen_address")]
    pub listen: SocketAddr,
    /// Value of `Access-Control-Allow-Origin`; empty to send none.
    pub cors_origin: String,
    /// How long `/snapshot.jpg` waits for a camera that has to start first.
    #[serde(deserialize_with = "seconds::<_, 1, 120>")]
    pub snapshot_timeout_seconds: u64,
    /// Viewers (WebSocket and MJPEG together) served at once; more are turned away with a
    /// clear message. Each costs a socket and a little memory.
    #[serde(deserialize_with = "count::<_, 1, 100000>")]
    pub max_viewers: usize,
    /// The whole request head must arrive within this many seconds of the daemon starting
    /// to wait for it (also the longest a kept-alive connection may idle between requests).
    #[serde(deserialize_with = "seconds::<_, 1, 300>")]
    pub header_timeout_seconds: u64,
    /// The whole request body must arrive within this many seconds after its head.
    #[serde(deserialize_with = "seconds::<_, 1, 300>")]
    pub body_timeout_seconds: u64,
    /// A client that takes no bytes of a response for this long is disconnected.
    #[serde(deserialize_with = "seconds::<_, 1, 3600>")]
    pub send_timeout_seconds: u64,
    /// Client connections open at once (pages, downloads, viewers); more are refused at once.
    /// Lowered, if need be, to what the process's file descriptor limit allows.
    #[serde(deserialize_with = "count::<_, 1, 1000000>")]
    pub max_connections: usize,
    /// Client connections one address may hold. Behind a reverse proxy every client has
    /// the proxy's address.
    #[serde(deserialize_with = "count::<_, 1, 1000000>")]
    pub max_connections_per_ip: usize,
    /// Without `[auth]`, the host names (beyond IP addresses, `localhost`, one-word names
    /// and `.local`/`.lan`/`.home.arpa`/`.internal` ones) browsers may reach the daemon by;
    /// `"*"` for any. Keeps a web page using DNS rebinding from acting as the daemon's own.
    #[serde(deserialize_with = "host_names")]
    pub allowed_hosts: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            cors_origin: "*".into(),
            snapshot_timeout_seconds: 10,
            max_viewers: 500,
            header_timeout_seconds: 10,
            body_timeout_seconds: 10,
            send_timeout_seconds: 60,
            max_connections: 1024,
            max_connections_per_ip: 64,
            allowed_hosts: Vec::new(),
        }
    }
}

/// `[storage]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Holds `state.ron`, `recordings/` and `thumbnails/`.
    pub dir: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            dir: PathBuf::from("/var/lib/croissant"),
        }
    }
}

/// `[viewer]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ViewerConfig {
    /// The WebSocket URL the viewer page connects to; empty to derive it from the page's
    /// own address (which also works behind a reverse proxy on a subpath).
    pub ws_url: String,
}

/// `[mode]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModeConfig {
    /// Used when `<storage.dir>/state.ron` does not exist.
    pub default: Mode,
}

impl Default for ModeConfig {
    fn default() -> Self {
        ModeConfig {
            default: Mode::OnDemand,
        }
    }
}

/// The kinds of frame source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// The Raspberry Pi camera through `rpicam-vid`.
    Rpicam,
    /// A video file played in a loop at real time by `ffmpeg`.
    FfmpegFile,
    /// Any program that writes MJPEG to stdout.
    Command,
    /// A pattern drawn in-process; needs nothing installed.
    TestPattern,
}

/// `[source]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawSource")]
pub struct SourceConfig {
    /// Which kind of source.
    pub kind: SourceKind,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Frames per second asked of the camera.
    pub framerate: u32,
    /// The video file, for `ffmpeg-file`.
    pub path: Option<PathBuf>,
    /// The program and its arguments, for `command`.
    pub command: Vec<String>,
    /// Extra arguments appended to `rpicam-vid` (e.g. `["--rotation", "180"]`).
    pub extra_args: Vec<String>,
    /// The program to run instead of `rpicam-vid` or `ffmpeg` (e.g. `libcamera-vid`).
    pub program: Option<String>,
    /// Frames larger than this are dropped with a warning.
    pub max_frame_bytes: usize,
    /// How long the camera keeps running after the last viewer leaves, so a page reload
    /// does not restart it.
    pub stop_grace_ms: u64,
    /// A running source that delivers no frame for this long is restarted.
    pub stall_seconds: u64,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            kind: SourceKind::TestPattern,
            width: 1280,
            height: 720,
            framerate: 15,
            path: None,
            command: Vec::new(),
            extra_args: Vec::new(),
            program: None,
            max_frame_bytes: 8 << 20,
            stop_grace_ms: 2000,
            stall_seconds: 10,
        }
    }
}

impl SourceConfig {
    /// The frame rate the camera is asked for; `None` for a command, whose own arguments
    /// decide it.
    pub fn nominal_framerate(&self) -> Option<u32> {
        (!matches!(self.kind, SourceKind::Command)).then_some(self.framerate)
    }

    /// The `kind` as spelled in the config.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            SourceKind::Rpicam => "rpicam",
            SourceKind::FfmpegFile => "ffmpeg-file",
            SourceKind::Command => "command",
            SourceKind::TestPattern => "test-pattern",
        }
    }
}

/// `[source]` as written, before the checks that involve several keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    #[serde(default = "default_kind")]
    kind: SourceKind,
    #[serde(default = "default_width", deserialize_with = "dimension")]
    width: u32,
    #[serde(default = "default_height", deserialize_with = "dimension")]
    height: u32,
    #[serde(default = "default_framerate", deserialize_with = "framerate")]
    framerate: u32,
    path: Option<PathBuf>,
    command: Option<Vec<String>>,
    #[serde(default)]
    extra_args: Vec<String>,
    program: Option<String>,
    #[serde(default = "default_max_frame_bytes", deserialize_with = "frame_bytes")]
    max_frame_bytes: usize,
    #[serde(default = "default_grace")]
    stop_grace_ms: u64,
    #[serde(default = "default_stall", deserialize_with = "positive_seconds")]
    stall_seconds: u64,
}

pub(super) fn default_kind() -> SourceKind {
    SourceConfig::default().kind
}
pub(super) fn default_width() -> u32 {
    SourceConfig::default().width
}
pub(super) fn default_height() -> u32 {
    SourceConfig::default().height
}
pub(super) fn default_framerate() -> u32 {
    SourceConfig::default().framerate
}
pub(super) fn default_max_frame_bytes() -> usize {
    SourceConfig::default().max_frame_bytes
}
pub(super) fn default_grace() -> u64 {
    SourceConfig::default().stop_grace_ms
}
pub(super) fn default_stall() -> u64 {
    SourceConfig::default().stall_seconds
}

impl TryFrom<RawSource> for SourceConfig {
    type Error = String;

    fn try_from(raw: RawSource) -> Result<Self, String> {
        match raw.kind {
            SourceKind::FfmpegFile if raw.path.is_none() => {
                return Err("kind = \"ffmpeg-file\" needs `path`, the video file to play".into());
            }
            SourceKind::Command if raw.command.as_ref().is_none_or(|c| c.is_empty()) => {
                return Err("kind = \"command\" needs `command`, e.g. command = [\"prog\", \"arg\"]".into());
            }
            _ => {}
        }
        if raw.path.is_some() && raw.kind != SourceKind::FfmpegFile {
            return Err("`path` is only used with kind = \"ffmpeg-file\"".into());
        }
        if raw.command.is_some() && raw.kind != SourceKind::Command {
            return Err("`command` is only used with kind = \"command\"".into());
        }
        Ok(SourceConfig {
            kind: raw.kind,
            width: raw.width,
            height: raw.height,
            framerate: raw.framerate,
            path: raw.path,
            command: raw.command.unwrap_or_default(),
            extra_args: raw.extra_args,
            program: raw.program,
            max_frame_bytes: raw.max_frame_bytes,
            stop_grace_ms: raw.stop_grace_ms,
            stall_seconds: raw.stall_seconds,
        })
    }
}
