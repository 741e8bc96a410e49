//! The daemon's configuration: one TOML file, read at start.
//!
//! Every mistake is reported with the file, line, column and key it concerns, and as many
//! mistakes as can be found are reported at once, so `croissant check` is a useful loop.
//! Validation happens while deserializing (range checks, enums, required keys), which is
//! what lets every error carry the span of the value it is about.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use toml::de::DeTable;

mod errors;
mod sections;
mod sinks_tables;
mod validators;

use errors::locate_error;
pub use errors::{ConfigError, LoadError};
pub use sections::{ModeConfig, ServerConfig, SourceConfig, SourceKind, StorageConfig, ViewerConfig};
pub use sinks_tables::{ParseSink, Resource, SinkEntry, SinkSettings, SinkTypes};
use sinks_tables::{check_resources, default_sinks, parse_sinks};
pub use validators::{count, seconds};

/// The largest config file read.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

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

impl Config {
    /// The configuration used with no `--config`: a test pattern, a live viewer, and state in
    /// `./croissant-data` so a first run needs no root and no camera.
    pub fn builtin(types: &dyn SinkTypes) -> Config {
        let mut config = Config::parse("", "built-in defaults", types)
            .unwrap_or_else(|_| unreachable!("the empty config is valid"));
        config.storage.dir = PathBuf::from("croissant-data");
        config
    }

    /// Reads and validates a config file.
    /// Only a regular file of at most [`MAX_FILE_BYTES`] is read: a FIFO would block the
    /// daemon at a reload, `/dev/zero` would fill its memory. A file that sets nothing is
    /// refused too: it is more likely one caught half written (the packaged one opens with
    /// comments) than a wish for every default, which would, among others, switch to the
    /// test pattern and start the default retention.
    pub fn load(path: &Path, types: &dyn SinkTypes) -> Result<Config, LoadError> {
        let unreadable = |error: std::io::Error| LoadError::Read {
            path: path.to_owned(),
            error,
        };
        let meta = std::fs::metadata(path).map_err(unreadable)?;
        if !meta.is_file() {
            return Err(unreadable(std::io::Error::other("not a regular file")));
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(unreadable(std::io::Error::other(format!(
                "larger than {} KiB; is it the right file?",
                MAX_FILE_BYTES / 1024
            ))));
        }
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|file| file.take(MAX_FILE_BYTES).read_to_string(&mut text))
            .map_err(unreadable)?;
        let origin = path.display().to_string();
        // Nothing but blanks and comments (or a byte-order mark) sets nothing either.
        let sets_nothing = text.trim_start_matches('\u{feff}').lines().all(|line| {
            let line = line.trim();
            line.is_empty() || line.starts_with('#')
        });
        if sets_nothing {
            return Err(LoadError::Invalid(vec![locate_error(
                &text,
                &origin,
                Some(0),
                "the file is empty (nothing but blanks and comments); write at least one table \
                 (see config.example.toml)"
                    .into(),
            )]));
        }
        Config::parse(&text, &origin, types).map_err(LoadError::Invalid)
    }

    /// Parses and validates config text; `origin` names it in errors, `types` are the sink
    /// types its `[sinks.*]` tables may name.
    pub fn parse(text: &str, origin: &str, types: &dyn SinkTypes) -> Result<Config, Vec<ConfigError>> {
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
            None => default_sinks(types),
            Some(value) => parse_sinks(value, types, &mut |span, msg| errors.push(locate(span, msg))),
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

#[cfg(test)]
mod tests;
