//! The daemon's operating mode: on demand (the camera runs while someone watches) or
//! continuous (it records all the time). The switch between them lives with the sinks it
//! switches (`sinks/switch.rs`); who wants frames right now is the bus's business.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The daemon's operating mode, spelled as on the wire and in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The camera runs only while someone watches.
    OnDemand,
    /// The camera runs all the time and recording sinks are on.
    Continuous,
}

impl Mode {
    /// Every mode, for listing in errors and docs.
    pub const ALL: [Mode; 2] = [Mode::OnDemand, Mode::Continuous];

    /// The wire and config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::OnDemand => "on-demand",
            Mode::Continuous => "continuous",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_spellings_round_trip() {
        for mode in Mode::ALL {
            assert_eq!(Mode::parse(mode.as_str()), Some(mode));
        }
        assert_eq!(Mode::parse("sometimes"), None);
    }
}
