//! What the source is doing, for `/health`, `/api/status` and the metrics: its state, its
//! frame rate over the last seconds, and what the camera last said on stderr.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::SourceConfig;
use crate::sync::lock;

/// Where the source is in its life cycle, as `/health` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Nobody wants frames; no process runs.
    Stopped,
    /// The process was started and no frame has come yet.
    Starting,
    /// Frames are flowing.
    Running,
    /// The process died or stalled; waiting before the next start.
    Backoff,
}

impl State {
    /// Every state, for exporting one series each.
    pub const ALL: [State; 4] = [State::Stopped, State::Starting, State::Running, State::Backoff];

    /// The spelling `/health` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Starting => "starting",
            State::Running => "running",
            State::Backoff => "backoff",
        }
    }
}

/// Shared, always-current view of the source for health checks and the dashboard.
#[derive(Debug)]
pub struct Status {
    inner: Mutex<StatusInner>,
    /// The settings the source runs with; a reload that changes them restarts it.
    config: Mutex<Arc<SourceConfig>>,
    started_at: Instant,
}

#[derive(Debug)]
pub(super) struct StatusInner {
    pub(super) state: State,
    pub(super) pid: Option<u32>,
    pub(super) restarts: u64,
    pub(super) frames: u64,
    pub(super) last_error: Option<String>,
    pub(super) last_reason: Option<&'static str>,
    /// When the source last went from stopped to wanted.
    pub(super) run_since: Option<Instant>,
    /// The first frame of the current run (since the last start).
    pub(super) first_frame: Option<Instant>,
    /// Arrival times of recent frames, for fps and last-frame age.
    pub(super) recent: VecDeque<Instant>,
}

/// A copy of [`Status`] at one instant.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Life-cycle state.
    pub state: State,
    /// The child's process id while one runs.
    pub pid: Option<u32>,
    /// Restarts after failures since the daemon started.
    pub restarts: u64,
    /// Frames delivered since the daemon started.
    pub frames: u64,
    /// Frames per second over the last two seconds.
    pub fps: f64,
    /// Milliseconds since the last frame, if any came.
    pub last_frame_age_ms: Option<u64>,
    /// Why the last run ended badly, with the program's own words.
    pub last_error: Option<String>,
    /// Why the last run ended badly, in the daemon's words only (safe to show anyone).
    pub last_reason: Option<&'static str>,
    /// While the source should be running: milliseconds without a frame, counted from the
    /// last frame or from when it was asked to start, whichever is later.
    pub starved_ms: Option<u64>,
}

impl Default for Status {
    fn default() -> Self {
        let now = Instant::now();
        Status {
            inner: Mutex::new(StatusInner {
                state: State::Stopped,
                pid: None,
                restarts: 0,
                frames: 0,
                last_error: None,
                last_reason: None,
                run_since: None,
                first_frame: None,
                recent: VecDeque::with_capacity(RECENT),
            }),
            config: Mutex::default(),
            started_at: now,
        }
    }
}

const RECENT: usize = 256;
const FPS_WINDOW: Duration = Duration::from_secs(2);

impl Status {
    /// The settings the source runs with.
    pub fn config(&self) -> Arc<SourceConfig> {
        lock(&self.config).clone()
    }

    /// Records the settings a (re)started source runs with.
    pub fn set_config(&self, config: SourceConfig) {
        *lock(&self.config) = Arc::new(config);
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut StatusInner)) {
        let mut inner = lock(&self.inner);
        f(&mut inner);
    }

    pub(super) fn set_state(&self, state: State, pid: Option<u32>) {
        self.update(|s| {
            let now = Instant::now();
            s.state = state;
            s.pid = pid;
            if state == State::Starting {
                s.first_frame = None;
            }
            if state == State::Stopped {
                s.run_since = None;
            } else if s.run_since.is_none() {
                s.run_since = Some(now);
            }
        });
    }

    pub(super) fn frame(&self) {
        let now = Instant::now();
        self.update(|s| {
            s.frames += 1;
            if s.state == State::Starting {
                s.state = State::Running;
                s.first_frame = Some(now);
            }
            if s.recent.len() == RECENT {
                s.recent.pop_front();
            }
            s.recent.push_back(now);
        });
    }

    /// When the last frame came, if any did.
    pub(super) fn last_frame(&self) -> Option<Instant> {
        lock(&self.inner).recent.back().copied()
    }

    /// How long the current (or just ended) run delivered frames: from its first frame
    /// to its last.
    pub(super) fn delivered_for(&self) -> Duration {
        let inner = lock(&self.inner);
        match (inner.first_frame, inner.recent.back()) {
            (Some(first), Some(&last)) => last.saturating_duration_since(first),
            _ => Duration::ZERO,
        }
    }

    /// When the daemon started, for uptime.
    pub fn started_at(&self) -> Instant {
        self.started_at
    }

    /// The current status.
    pub fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let inner = lock(&self.inner);
        let window: Vec<&Instant> = inner
            .recent
            .iter()
            .filter(|t| now.duration_since(**t) <= FPS_WINDOW)
            .collect();
        let fps = match (window.first(), window.last()) {
            (Some(first), Some(last)) if window.len() > 1 && last > first => {
                (window.len() - 1) as f64 / last.duration_since(**first).as_secs_f64()
            }
            _ => 0.0,
        };
        Snapshot {
            state: inner.state,
            pid: inner.pid,
            restarts: inner.restarts,
            frames: inner.frames,
            fps: (fps * 10.0).round() / 10.0,
            last_frame_age_ms: inner
                .recent
                .back()
                .map(|t| now.duration_since(*t).as_millis() as u64),
            last_error: inner.last_error.clone(),
            last_reason: inner.last_reason,
            starved_ms: inner.run_since.map(|since| {
                let quiet = now.duration_since(since);
                let quiet = match inner.recent.back() {
                    Some(last) => quiet.min(now.duration_since(*last)),
                    None => quiet,
                };
                quiet.as_millis() as u64
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fps_comes_from_recent_frames() {
        let status = Status::default();
        assert_eq!(status.snapshot().fps, 0.0);
        status.set_state(State::Starting, Some(1));
        for _ in 0..3 {
            status.frame();
            std::thread::sleep(Duration::from_millis(50));
        }
        let snap = status.snapshot();
        assert_eq!(snap.state, State::Running);
        assert_eq!(snap.frames, 3);
        assert!(snap.fps > 5.0 && snap.fps < 40.0, "{}", snap.fps);
    }
}
