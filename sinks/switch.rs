//! The mode switch: persists the chosen mode, then enables and disables the sinks to
//! match. It sits with the sinks it switches.

use std::sync::Arc;

use super::Endpoints;
use super::running::{Change, Sinks};
use crate::config::SinkEntry;
use crate::mode::Mode;
use crate::saved::{Saved, SavedFile};
use crate::sync::lock;

/// The current mode, switched at run time: persists the choice, then enables and disables
/// sinks to match. Switches are serialized.
pub struct ModeSwitch {
    current: std::sync::Mutex<Mode>,
    sinks: smol::lock::Mutex<Sinks>,
    state: SavedFile,
}

impl ModeSwitch {
    /// Starts in `mode` with `sinks` (none enabled yet; call [`ModeSwitch::start`]).
    pub fn new(mode: Mode, sinks: Sinks, state: SavedFile) -> Self {
        ModeSwitch {
            current: std::sync::Mutex::new(mode),
            sinks: smol::lock::Mutex::new(sinks),
            state,
        }
    }

    /// The mode in force.
    pub fn current(&self) -> Mode {
        *lock(&self.current)
    }

    /// Enables the sinks of the current mode.
    pub async fn start(&self) {
        let mode = self.current();
        self.sinks.lock().await.apply(Some(mode)).await;
    }

    /// Saves `mode` and switches to it. Fails (and does not switch) when the state cannot be
    /// saved, since a mode that silently reverts at the next reboot is worse than an error.
    pub async fn set(&self, mode: Mode) -> std::io::Result<()> {
        let mut sinks = self.sinks.lock().await;
        self.state.save(Saved { mode })?;
        let previous = std::mem::replace(&mut *lock(&self.current), mode);
        if previous != mode {
            tracing::info!(from = %previous, to = %mode, "mode switched");
        }
        sinks.apply(Some(mode)).await;
        Ok(())
    }

    /// The paths the sinks answer, for the HTTP layer.
    pub async fn endpoints(&self) -> Arc<Endpoints> {
        self.sinks.lock().await.endpoints()
    }

    /// Moves the sinks to a reloaded config's tables (see [`Sinks::reload`]), in the mode in
    /// force; a mode switch waits for it, and it for a switch.
    pub async fn reload(
        &self,
        entries: &[SinkEntry],
        frame_rate: Option<u32>,
    ) -> Result<Vec<(String, Change)>, String> {
        self.sinks.lock().await.reload(entries, frame_rate).await
    }

    /// Disables every sink (finishing recordings) for shutdown.
    pub async fn stop_all(&self) {
        self.sinks.lock().await.apply(None).await;
    }

    /// Names of the sinks enabled right now.
    pub async fn enabled_sinks(&self) -> Vec<String> {
        self.sinks
            .lock()
            .await
            .enabled()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }
}
