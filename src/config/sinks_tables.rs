//! The `[sinks.<name>]` tables: each parsed by its type's factory, with its modes, and
//! checked for resources two sinks would share.

use std::any::Any;
use std::fmt;
use std::path::PathBuf;

use dyn_clone::DynClone;
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::mode::Mode;

use super::Report;

/// A sink's own settings, as its type parsed them from its table. The config knows no sink
/// type: the daemon hands it the [`SinkTypes`] it has, so sinks sit above the config and
/// the config needs none of them.
pub trait SinkSettings: DynClone + fmt::Debug + Send + Sync + Any {
    /// The modes the sink is active in when its table has no `modes` key.
    fn default_modes(&self) -> &'static [Mode];

    /// Ports, paths and directories this sink needs for itself.
    fn resources(&self) -> Vec<Resource>;

    /// Whether `other` holds the same settings: a reload keeps such a sink running.
    fn same_as(&self, other: &dyn SinkSettings) -> bool;

    /// Whether a sink that a reload replaces may keep running until its replacement has
    /// started (see `SinkConfig::may_overlap`).
    fn may_overlap(&self) -> bool;
}

dyn_clone::clone_trait_object!(SinkSettings);

/// Parses one sink table (without its `type` and `modes` keys).
pub type ParseSink = fn(ValueDeserializer<'_>) -> Result<Box<dyn SinkSettings>, toml::de::Error>;

/// The sink types a config may name in `type`.
pub trait SinkTypes {
    /// How to parse a table of type `kind`, if there is such a type.
    fn parser(&self, kind: &str) -> Option<ParseSink>;

    /// Every type's name, for error messages.
    fn names(&self) -> Vec<&'static str>;
}

/// Something two sinks cannot share; clashes are config errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// A path answering plain `GET` requests.
    HttpPath(String),
    /// A path answering WebSocket upgrades (a page may answer plain requests there).
    WebSocketPath(String),
    /// A directory the sink writes files into.
    Directory(PathBuf),
}

impl Resource {
    /// The HTTP path, for the two kinds that are one.
    fn path(&self) -> Option<&str> {
        match self {
            Resource::HttpPath(path) | Resource::WebSocketPath(path) => Some(path),
            Resource::Directory(_) => None,
        }
    }

    /// Whether two sinks claiming these would clash.
    fn clashes(&self, other: &Resource) -> bool {
        match (self.path(), other.path()) {
            (Some(a), Some(b)) => a == b,
            _ => self == other,
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::HttpPath(path) | Resource::WebSocketPath(path) => write!(f, "HTTP path {path}"),
            Resource::Directory(dir) => write!(f, "directory {}", dir.display()),
        }
    }
}

/// Paths the daemon answers itself, whatever a sink says: its API, its login, its files.
/// Some of them are open without a login (`/health`, `/login`), so a sink there would be
/// open too.
const DAEMON_PATHS: [&str; 6] = [
    "/health",
    "/login",
    "/logout",
    "/metrics",
    "/settings",
    "/snapshot.jpg",
];
/// Path prefixes the daemon answers itself.
const DAEMON_PREFIXES: [&str; 4] = ["/api/", "/recordings/", "/thumbnails/", "/assets/"];
/// The pages, which a WebSocket path may share (the viewer's original one is `/`) but a
/// plain `GET` endpoint may not.
const PAGES: [&str; 3] = ["/", "/stream", "/recordings"];

/// Why a sink may not have `resource`, if it may not.
fn refused_path(resource: &Resource) -> Option<String> {
    let path = resource.path()?;
    // ASCII: a request's path arrives percent-encoded and is matched as it comes.
    let shaped = path.starts_with('/')
        && path.is_ascii()
        && !path.contains(['?', '#', '%', '\\', ';'])
        && !path.chars().any(|c| c.is_whitespace() || c.is_control())
        && !path.split('/').any(|segment| segment == "." || segment == "..");
    if !shaped {
        return Some(format!(
            "path `{}` must start with / and hold only ASCII, without query, fragment, escapes, spaces or dot segments",
            path.escape_debug()
        ));
    }
    let taken = DAEMON_PATHS.contains(&path)
        || DAEMON_PREFIXES
            .iter()
            .any(|prefix| path.starts_with(prefix) || path == prefix.trim_end_matches('/'))
        || (matches!(resource, Resource::HttpPath(_)) && PAGES.contains(&path));
    taken.then(|| format!("path `{path}` is the daemon's own; choose another"))
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
    pub config: Box<dyn SinkSettings>,
}

/// With no `[sinks]` at all: the set DESIGN.md describes (live view, recorder, thumbnails,
/// retention), each with its defaults.
pub(super) fn default_sinks(types: &dyn SinkTypes) -> Vec<(SinkEntry, std::ops::Range<usize>)> {
    [
        ("live", "websocket"),
        ("mjpeg", "http-mjpeg"),
        ("recorder", "recorder"),
        ("thumbnails", "thumbnailer"),
        ("retention", "retention"),
    ]
    .into_iter()
    .filter_map(|(name, kind)| {
        let factory = types.parser(kind)?;
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

pub(super) fn parse_sinks(
    value: Spanned<DeValue<'_>>,
    types: &dyn SinkTypes,
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
        // Names go into log lines, metric labels and messages as they are.
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            report(
                Some(name_span),
                format!(
                    "sink name `{}`: use letters, digits, `-` and `_`",
                    name.escape_debug()
                ),
            );
            continue;
        }
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
                    types.names().join(", ")
                ),
            );
            continue;
        };
        let (kind_span, kind) = (kind.span(), kind.into_inner());
        let Some(kind) = kind.as_str().map(str::to_owned) else {
            report(Some(kind_span), "`type` must be a string".into());
            continue;
        };
        let Some(factory) = types.parser(&kind) else {
            report(
                Some(kind_span),
                format!(
                    "unknown sink type `{kind}`, expected one of: {}",
                    types.names().join(", ")
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
pub(super) fn check_resources(entries: &[(SinkEntry, std::ops::Range<usize>)], report: &mut Report<'_>) {
    let mut claimed: Vec<(Resource, &str)> = Vec::new();
    for (entry, span) in entries {
        for resource in entry.config.resources() {
            if let Some(why) = refused_path(&resource) {
                report(Some(span.clone()), format!("sink `{}`: {why}", entry.name));
            } else if let Some((_, owner)) = claimed.iter().find(|(r, _)| r.clashes(&resource)) {
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
