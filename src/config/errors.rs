//! Config mistakes as the user sees them: file, line, column and key.

use std::fmt;
use std::path::PathBuf;

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

/// Turns a byte offset into line, column and the dotted key written there.
pub(super) fn locate_error(text: &str, origin: &str, offset: Option<usize>, message: String) -> ConfigError {
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
pub(super) fn key_at(text: &str, index: usize) -> Option<String> {
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
