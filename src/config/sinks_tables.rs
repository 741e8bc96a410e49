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
    /// An HTTP path or WebSocket endpoint.
    HttpPath(String),
    /// A directory the sink writes files into.
    Directory(PathBuf),
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::HttpPath(path) => write!(f, "HTTP path {path}"),
            Resource::Directory(dir) => write!(f, "directory {}", dir.display()),
        }
    }
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
