//! Runtime state that survives restarts and power cuts: the current mode, as RON in
//! `<storage.dir>/state.ron`.
//!
//! Written atomically (temp file, fsync, rename, fsync of the directory), so a power cut
//! leaves either the old or the new state, never half of one. A corrupt file is kept
//! aside for inspection and the configured default is used.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::mode::Mode;

/// What is persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// The mode to run in.
    pub mode: Mode,
}

/// The saved-state file (`state.ron`) of a storage directory.
#[derive(Debug, Clone)]
pub struct SavedFile {
    path: PathBuf,
}

impl SavedFile {
    /// `<dir>/state.ron`.
    pub fn in_dir(dir: &Path) -> Self {
        SavedFile {
            path: dir.join("state.ron"),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved state; `default` when there is none. A file that cannot be parsed is renamed
    /// to `state.ron.corrupt` (kept for inspection) and `default` is used.
    pub fn load_or(&self, default: Saved) -> Saved {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                info!(path = %self.path.display(), mode = %default.mode, "no saved state; using the configured mode");
                return default;
            }
            Err(error) => {
                warn!(path = %self.path.display(), %error, "cannot read saved state; using the configured mode");
                return default;
            }
        };
        match ron::from_str::<Saved>(&text) {
            Ok(state) => {
                info!(path = %self.path.display(), mode = %state.mode, "restored saved mode");
                state
            }
            Err(error) => {
                let aside = self.path.with_extension("ron.corrupt");
                let kept = std::fs::rename(&self.path, &aside).is_ok();
                warn!(
                    path = %self.path.display(),
                    %error,
                    kept_as = %if kept { aside.display().to_string() } else { "(could not rename)".into() },
                    mode = %default.mode,
                    "saved state is corrupt; using the configured mode"
                );
                default
            }
        }
    }

    /// Saves `state` atomically.
    pub fn save(&self, state: Saved) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let text = ron::ser::to_string_pretty(&state, ron::ser::PrettyConfig::default())
            .map_err(std::io::Error::other)?;
        let tmp = self.path.with_extension("ron.tmp");
        {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        // Make the rename itself durable.
        std::fs::File::open(dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_restores() {
        let dir = tempfile::tempdir().expect("dir");
        let file = SavedFile::in_dir(dir.path());
        let default = Saved { mode: Mode::OnDemand };
        assert_eq!(file.load_or(default), default);
        file.save(Saved {
            mode: Mode::Continuous,
        })
        .expect("save");
        assert_eq!(file.load_or(default).mode, Mode::Continuous);
        assert!(!dir.path().join("state.ron.tmp").exists());
    }

    #[test]
    fn corrupt_state_is_kept_aside_and_the_default_used() {
        let dir = tempfile::tempdir().expect("dir");
        let file = SavedFile::in_dir(dir.path());
        std::fs::write(file.path(), "(mode: sideways").expect("write");
        let default = Saved {
            mode: Mode::Continuous,
        };
        assert_eq!(file.load_or(default), default);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("state.ron.corrupt")).expect("kept"),
            "(mode: sideways"
        );
    }
}
