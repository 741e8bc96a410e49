//! The daemon's configuration: one TOML file, read at start.
//!
//! Every mistake is reported with the file, line, column and key it concerns, and as many
//! mistakes as can be found are reported at once, so `croissant check` is a useful loop.
//! Validation happens while deserializing (range checks, enums, required keys), which is
//! what lets every error carry the span of the value it is about.

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer};
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::mode::Mode;
use crate::sinks::{self, SinkConfig};

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from (`built-in defaults` when no file was given); used in messages.
    pub origin: String,
    /// The HTTP/WebSocket server.
    pub server: ServerConfig,
    /// Where state and recordings live.
    pub storage: StorageConfig,
    /// The mode used when no persisted state exists.
    pub mode: ModeConfig,
    /// Where frames come from.
    pub source: SourceConfig,
    /// The web viewer.
    pub viewer: ViewerConfig,
    /// Who may watch and who may switch modes; `None` (no `[auth]`) lets everyone in.
    pub auth: Option<crate::auth::AuthConfig>,
    /// The sinks, in name order.
    pub sinks: Vec<SinkEntry>,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
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

/// Host names as a browser sends them in `Host` (no scheme, port or path), lowercased.
fn host_names<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let names = Vec::<String>::deserialize(deserializer)?;
    names
        .into_iter()
        .map(|name| {
            let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
            let valid = name == "*"
                || (!name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
            if valid {
                Ok(name)
            } else {
                Err(serde::de::Error::custom(format!(
                    "`{name}` is not a host name (write just the name, e.g. \"cam.example.com\", or \"*\" for any)"
                )))
            }
        })
        .collect()
}

/// `[storage]`
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ViewerConfig {
    /// The WebSocket URL the viewer page connects to; empty to derive it from the page's
    /// own address (which also works behind a reverse proxy on a subpath).
    pub ws_url: String,
}

/// `[mode]`
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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
struct RawSource {
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

fn default_kind() -> SourceKind {
    SourceConfig::default().kind
}
fn default_width() -> u32 {
    SourceConfig::default().width
}
fn default_height() -> u32 {
    SourceConfig::default().height
}
fn default_framerate() -> u32 {
    SourceConfig::default().framerate
}
fn default_max_frame_bytes() -> usize {
    SourceConfig::default().max_frame_bytes
}
fn default_grace() -> u64 {
    SourceConfig::default().stop_grace_ms
}
fn default_stall() -> u64 {
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

fn listen_address<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    let addr: SocketAddr = text.parse().map_err(|_| {
        de::Error::invalid_value(
            de::Unexpected::Str(&text),
            &"an address and port like \"0.0.0.0:8080\"",
        )
    })?;
    if addr.port() == 0 {
        return Err(de::Error::invalid_value(
            de::Unexpected::Str(&text),
            &"a port from 1 to 65535",
        ));
    }
    Ok(addr)
}

fn in_range<'de, D: Deserializer<'de>>(d: D, lo: u64, hi: u64, what: &str) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(de::Error::invalid_value(
            de::Unexpected::Unsigned(v),
            &format!("{what} from {lo} to {hi}").as_str(),
        ))
    }
}

/// For sink configs: a whole number of seconds within `LO..=HI`, checked while parsing so
/// the error points at the value.
pub fn seconds<'de, D: Deserializer<'de>, const LO: u64, const HI: u64>(d: D) -> Result<u64, D::Error> {
    in_range(d, LO, HI, "seconds")
}

/// For sink configs: a count within `LO..=HI`, checked while parsing.
pub fn count<'de, D: Deserializer<'de>, const LO: u64, const HI: u64>(d: D) -> Result<usize, D::Error> {
    in_range(d, LO, HI, "a number").map(|v| v as usize)
}

fn dimension<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    in_range(d, 16, 8192, "a size in pixels").map(|v| v as u32)
}

fn framerate<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = in_range(d, 1, 240, "frames per second")?;
    Ok(NonZeroU32::new(v as u32).map_or(1, NonZeroU32::get))
}

fn frame_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    in_range(d, 1024, 256 << 20, "a size in bytes").map(|v| v as usize)
}

fn positive_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    in_range(d, 1, 86_400, "seconds")
}

/// One `[sinks.<name>]` table.
#[derive(Debug, Clone)]
pub struct SinkEntry {
    /// The table's name, used in logs and errors.
    pub name: String,
    /// The `type` key: which implementation.
    pub kind: String,
    /// The modes in which the sink is active.
    pub modes: Vec<Mode>,
    /// The implementation's own settings.
    pub config: Box<dyn SinkConfig>,
}

/// The top-level tables other than `[sinks]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct CoreConfig {
    server: ServerConfig,
    storage: StorageConfig,
    mode: ModeConfig,
    source: SourceConfig,
    viewer: ViewerConfig,
    auth: Option<crate::auth::AuthConfig>,
}

/// A mistake in the configuration, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `built-in defaults`).
    pub origin: String,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
    /// Dotted key path, e.g. `source.framerate`, when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {error}")]
    Read {
        /// The file asked for.
        path: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// The file was read but is wrong; every mistake found is listed.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigError>),
}

impl Config {
    /// The configuration used with no `--config`: a test pattern, a live viewer, and state in
    /// `./croissant-data` so a first run needs no root and no camera.
    pub fn builtin() -> Config {
        let mut config = Config::parse("", "built-in defaults")
            .unwrap_or_else(|_| unreachable!("the empty config is valid"));
        config.storage.dir = PathBuf::from("croissant-data");
        config
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|error| LoadError::Read {
            path: path.to_owned(),
            error,
        })?;
        Config::parse(&text, &path.display().to_string()).map_err(LoadError::Invalid)
    }

    /// Parses and validates config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, Vec<ConfigError>> {
        let locate = |span: Option<std::ops::Range<usize>>, message: String| {
            locate_error(text, origin, span.map(|s| s.start), message)
        };
        let root = DeTable::parse(text).map_err(|e| vec![locate(e.span(), e.message().to_owned())])?;
        let root_span = root.span();
        let mut table = root.into_inner();
        let sinks_value = table.remove("sinks");

        let mut errors = Vec::new();
        let mut core = CoreConfig::deserialize(toml::de::Deserializer::from(Spanned::new(root_span, table)))
            .map_err(|e| errors.push(locate(e.span(), e.message().to_owned())))
            .unwrap_or_default();
        if let Some(auth) = core.auth.as_mut() {
            let auth_at = text.find("[auth").map(|at| at..at);
            add_users_file(auth, &mut errors, &mut |span, msg| {
                locate(span.or(auth_at.clone()), msg)
            });
        }

        let sinks = match sinks_value {
            None => default_sinks(),
            Some(value) => parse_sinks(value, &mut |span, msg| errors.push(locate(span, msg))),
        };
        check_resources(&sinks, &mut |span, msg| errors.push(locate(span, msg)));

        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Config {
            origin: origin.to_owned(),
            server: core.server,
            storage: core.storage,
            mode: core.mode,
            source: core.source,
            viewer: core.viewer,
            auth: core.auth,
            sinks: sinks.into_iter().map(|(entry, _)| entry).collect(),
        })
    }
}

type Report<'a> = dyn FnMut(Option<std::ops::Range<usize>>, String) + 'a;

/// Reads `[auth] users_file` into `auth`'s users. Mistakes in that file are reported with
/// its own name and lines; one that cannot be read, at the key in the config (`locate`).
fn add_users_file(
    auth: &mut crate::auth::AuthConfig,
    errors: &mut Vec<ConfigError>,
    locate: &mut dyn FnMut(Option<std::ops::Range<usize>>, String) -> ConfigError,
) {
    let found_before = errors.len();
    if let Some(file) = &auth.users_file {
        let path = file.get_ref();
        match std::fs::read_to_string(path) {
            Err(error) => errors.push(locate(
                Some(file.span()),
                format!("cannot read users_file `{}`: {error}", path.display()),
            )),
            Ok(text) => {
                let origin = path.display().to_string();
                match toml::from_str::<crate::auth::UsersFile>(&text) {
                    Err(e) => errors.push(locate_error(
                        &text,
                        &origin,
                        e.span().map(|s| s.start),
                        e.message().to_owned(),
                    )),
                    Ok(more) => {
                        for (name, user) in more.users {
                            match auth.users.entry(name) {
                                std::collections::btree_map::Entry::Occupied(taken) => {
                                    errors.push(locate_error(
                                        &text,
                                        &origin,
                                        text.find(&format!("[users.{}]", taken.key())),
                                        format!(
                                            "user `{}` is also in [auth.users] of the config",
                                            taken.key()
                                        ),
                                    ))
                                }
                                std::collections::btree_map::Entry::Vacant(free) => {
                                    free.insert(user);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    if auth.users.is_empty() && errors.len() == found_before {
        errors.push(locate(None, crate::auth::NO_USERS.to_owned()));
    }
}

/// With no `[sinks]` at all: the set DESIGN.md describes (live view, recorder, thumbnails,
/// retention), each with its defaults.
fn default_sinks() -> Vec<(SinkEntry, std::ops::Range<usize>)> {
    [
        ("live", "websocket"),
        ("mjpeg", "http-mjpeg"),
        ("recorder", "recorder"),
        ("thumbnails", "thumbnailer"),
        ("retention", "retention"),
    ]
    .into_iter()
    .filter_map(|(name, kind)| {
        let factory = sinks::factory(kind)?;
        let empty = DeValue::Table(DeTable::default());
        let config = factory(ValueDeserializer::from(Spanned::new(0..0, empty))).ok()?;
        let modes = config.default_modes().to_vec();
        Some((
            SinkEntry {
                name: name.into(),
                kind: kind.into(),
                modes,
                config,
            },
            0..0,
        ))
    })
    .collect()
}

fn parse_sinks(
    value: Spanned<DeValue<'_>>,
    report: &mut Report<'_>,
) -> Vec<(SinkEntry, std::ops::Range<usize>)> {
    let span = value.span();
    let DeValue::Table(tables) = value.into_inner() else {
        report(
            Some(span),
            "`sinks` must hold named tables like [sinks.live]".into(),
        );
        return Vec::new();
    };
    let mut entries = Vec::new();
    for (name, value) in tables {
        let name_span = name.span();
        let name = name.into_inner().into_owned();
        let span = value.span();
        let DeValue::Table(mut table) = value.into_inner() else {
            report(
                Some(name_span),
                format!("sink `{name}` must be a table: [sinks.{name}]"),
            );
            continue;
        };
        let Some(kind) = table.remove("type") else {
            report(
                Some(name_span),
                format!(
                    "sink `{name}` needs a `type`, one of: {}",
                    sinks::known_types().join(", ")
                ),
            );
            continue;
        };
        let (kind_span, kind) = (kind.span(), kind.into_inner());
        let Some(kind) = kind.as_str().map(str::to_owned) else {
            report(Some(kind_span), "`type` must be a string".into());
            continue;
        };
        let Some(factory) = sinks::factory(&kind) else {
            report(
                Some(kind_span),
                format!(
                    "unknown sink type `{kind}`, expected one of: {}",
                    sinks::known_types().join(", ")
                ),
            );
            continue;
        };
        let modes = table.remove("modes").map(|modes| {
            Vec::<Mode>::deserialize(ValueDeserializer::from(modes))
                .map_err(|e| report(e.span(), e.message().to_owned()))
        });
        let config = match factory(ValueDeserializer::from(Spanned::new(
            span.clone(),
            DeValue::Table(table),
        ))) {
            Ok(config) => config,
            Err(e) => {
                report(e.span().or(Some(span)), e.message().to_owned());
                continue;
            }
        };
        let modes = match modes {
            None => config.default_modes().to_vec(),
            Some(Ok(modes)) => modes,
            Some(Err(())) => continue,
        };
        entries.push((
            SinkEntry {
                name,
                kind,
                modes,
                config,
            },
            name_span,
        ));
    }
    entries
}

/// Two sinks that claim the same port, path or directory would fight at run time; catch it
/// now.
fn check_resources(entries: &[(SinkEntry, std::ops::Range<usize>)], report: &mut Report<'_>) {
    let mut claimed: Vec<(sinks::Resource, &str)> = Vec::new();
    for (entry, span) in entries {
        for resource in entry.config.resources() {
            if let Some((_, owner)) = claimed.iter().find(|(r, _)| *r == resource) {
                report(
                    Some(span.clone()),
                    format!(
                        "sink `{}` claims {resource}, already claimed by sink `{owner}`",
                        entry.name
                    ),
                );
            } else {
                claimed.push((resource, &entry.name));
            }
        }
    }
}

/// Turns a byte offset into line, column and the dotted key written there.
fn locate_error(text: &str, origin: &str, offset: Option<usize>, message: String) -> ConfigError {
    let Some(offset) = offset.filter(|&o| o <= text.len()) else {
        return ConfigError {
            origin: origin.to_owned(),
            line: 0,
            column: 0,
            key: None,
            message,
        };
    };
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..offset].chars().count() + 1;
    ConfigError {
        origin: origin.to_owned(),
        line,
        column,
        key: key_at(text, line - 1),
        message,
    }
}

/// The dotted key on line `index` (0-based): the table header in force plus the key
/// assigned on that line, or on the nearest line above for multi-line values.
fn key_at(text: &str, index: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut key = None;
    let mut header = None;
    for (i, raw) in lines.iter().enumerate().take(index + 1).rev() {
        let line = raw.trim();
        if let Some(inner) = line.strip_prefix('[') {
            let name = inner
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim();
            header = Some(name.replace(['"', '\''], ""));
            break;
        }
        if key.is_none() && !line.starts_with('#') {
            if let Some((k, _)) = line.split_once('=') {
                key = Some(k.trim().replace(['"', '\''], ""));
            } else if i == index && line.is_empty() {
                return None;
            }
        }
    }
    match (header, key) {
        (Some(h), Some(k)) if !h.is_empty() => Some(format!("{h}.{k}")),
        (_, Some(k)) => Some(k),
        (Some(h), None) => Some(h),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests;
