//! The frame source: a supervised child process writing MJPEG to stdout (or the in-process
//! test pattern), started while anyone wants frames and stopped when nobody does.
//!
//! A child that exits, fails to start or stalls is restarted with capped exponential
//! backoff; viewers stay connected meanwhile and simply see frames again when it is back.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_process::{Child, Command, Stdio};
use futures_lite::{AsyncReadExt, future};
use serde::Serialize;
use smol::Timer;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::bus::Bus;
use crate::config::{SourceConfig, SourceKind};
use crate::ratelimit::{Burst, FailureRun, RateLimit};
use crate::shutdown::Signal;
use crate::splitter::{Discard, Splitter};
use crate::stderr::Tail;
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
    started_at: Instant,
}

#[derive(Debug)]
struct StatusInner {
    state: State,
    pid: Option<u32>,
    restarts: u64,
    frames: u64,
    last_error: Option<String>,
    last_reason: Option<&'static str>,
    /// When the source last went from stopped to wanted.
    run_since: Option<Instant>,
    /// Arrival times of recent frames, for fps and last-frame age.
    recent: VecDeque<Instant>,
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
                recent: VecDeque::with_capacity(RECENT),
            }),
            started_at: now,
        }
    }
}

const RECENT: usize = 256;
const FPS_WINDOW: Duration = Duration::from_secs(2);

impl Status {
    fn update(&self, f: impl FnOnce(&mut StatusInner)) {
        let mut inner = lock(&self.inner);
        f(&mut inner);
    }

    fn set_state(&self, state: State, pid: Option<u32>) {
        self.update(|s| {
            let now = Instant::now();
            s.state = state;
            s.pid = pid;
            if state == State::Stopped {
                s.run_since = None;
            } else if s.run_since.is_none() {
                s.run_since = Some(now);
            }
        });
    }

    fn frame(&self) {
        let now = Instant::now();
        self.update(|s| {
            s.frames += 1;
            if s.state == State::Starting {
                s.state = State::Running;
            }
            if s.recent.len() == RECENT {
                s.recent.pop_front();
            }
            s.recent.push_back(now);
        });
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

/// Runs the source for the daemon's lifetime: waits for demand, runs the process, restarts
/// it on failure, stops it when demand ends, and returns once `shutdown` fires and the
/// process is gone.
pub async fn supervise(config: SourceConfig, bus: Bus, status: Arc<Status>, shutdown: Signal) {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    // Five failures in a row take about 8 s with this backoff; a camera failing longer than
    // that is logged every 10 minutes.
    let mut failing = FailureRun::new(5, Duration::from_secs(600));
    let source = Runner {
        argv: argv(&config),
        config,
        bus,
        status,
        shutdown,
    };
    loop {
        if !source.bus.demand().is_wanted() {
            source.status.set_state(State::Stopped, None);
        }
        // Shutdown first: `or` polls its first future first, and while the daemon shuts
        // down the camera may still be wanted (the recorder finishing). Without this, a
        // camera in backoff would be restarted at once, again and again, and the
        // daemon would never exit.
        let wanted = future::or(
            async {
                source.shutdown.wait().await;
                false
            },
            async {
                source.bus.demand().until_wanted(true).await;
                true
            },
        );
        if !wanted.await {
            return;
        }
        let started = Instant::now();
        let end = match &source.argv {
            Some(argv) => source.run_child(argv, failing.is_quiet()).await,
            None => source.run_pattern().await,
        };
        match end {
            End::Idle => {
                info!("source stopped: nobody wants frames");
                backoff.reset();
                failing.recover();
            }
            End::Shutdown => {
                info!("source stopped for shutdown");
                return;
            }
            End::Failed(reason, error) => {
                if started.elapsed() >= Duration::from_secs(60) {
                    backoff.reset();
                    failing.recover();
                }
                let delay = backoff.next_delay();
                let retry_in_ms = delay.as_millis() as u64;
                if let Some(unlogged) = failing.fail() {
                    let failures = failing.failures();
                    if !failing.is_quiet() {
                        warn!(%error, retry_in_ms, "source failed");
                    } else if unlogged == 0 {
                        warn!(
                            %error,
                            failures,
                            retry_in_ms,
                            "source keeps failing; still retrying, from now on logged every 10 minutes until it works"
                        );
                    } else {
                        warn!(%error, failures, unlogged, retry_in_ms, "source still failing");
                    }
                }
                source.status.update(|s| {
                    s.restarts += 1;
                    s.last_error = Some(error);
                    s.last_reason = Some(reason);
                });
                source.status.set_state(State::Backoff, None);
                let pause = future::or(
                    async {
                        Timer::after(delay).await;
                    },
                    source.shutdown.wait(),
                );
                pause.await;
            }
        }
    }
}

/// Whether an rpicam-vid argument is one of its preview options (`-n`/`--nopreview`,
/// `-p`/`--preview`, `-f`/`--fullscreen`, `--qt-preview`), in any spelling it accepts.
fn names_preview(arg: &str) -> bool {
    let name = arg.split('=').next().unwrap_or(arg);
    matches!(name, "-n" | "-p" | "-f" | "--fullscreen")
        || (name.starts_with("--") && name.contains("preview"))
}

/// The program and arguments for a source kind; `None` for the in-process test pattern.
pub fn argv(config: &SourceConfig) -> Option<Vec<String>> {
    let size = |v: u32| v.to_string();
    match config.kind {
        SourceKind::TestPattern => None,
        SourceKind::Command => Some(config.command.clone()),
        SourceKind::Rpicam => {
            let mut argv: Vec<String> = vec![config.program.clone().unwrap_or_else(|| "rpicam-vid".into())];
            argv.extend(["-t", "0"].map(String::from));
            // A daemon draws nothing: without this, a Pi with a screen attached gets the
            // camera preview over its console. rpicam-vid refuses an option given twice, so
            // extra_args that say anything about the preview decide it alone.
            if !config.extra_args.iter().any(|arg| names_preview(arg)) {
                argv.push("--nopreview".into());
            }
            argv.extend(
                [
                    "--codec",
                    "mjpeg",
                    "--width",
                    &size(config.width),
                    "--height",
                    &size(config.height),
                    "--framerate",
                    &size(config.framerate),
                    "--inline",
                    "-o",
                    "-",
                ]
                .map(String::from),
            );
            argv.extend(config.extra_args.iter().cloned());
            Some(argv)
        }
        SourceKind::FfmpegFile => {
            let path = config
                .path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let filter = format!(
                "scale={}:{},fps={}",
                config.width, config.height, config.framerate
            );
            let mut argv: Vec<String> = vec![config.program.clone().unwrap_or_else(|| "ffmpeg".into())];
            argv.extend(
                [
                    "-hide_banner",
                    "-nostdin",
                    "-loglevel",
                    "error",
                    "-re",
                    "-stream_loop",
                    "-1",
                    "-i",
                    &path,
                    "-an",
                    "-vf",
                    &filter,
                    "-pix_fmt",
                    "yuvj420p",
                    "-c:v",
                    "mjpeg",
                    "-q:v",
                    "5",
                ]
                .map(String::from),
            );
            argv.extend(config.extra_args.iter().cloned());
            argv.extend(["-f", "mjpeg", "-"].map(String::from));
            Some(argv)
        }
    }
}

enum End {
    /// Demand ended and the grace period passed.
    Idle,
    /// The daemon is stopping.
    Shutdown,
    /// The process died, could not start, or stalled: why in the daemon's own words (for
    /// anyone), and the details (for the log and logged-in users).
    Failed(&'static str, String),
}

struct Runner {
    config: SourceConfig,
    argv: Option<Vec<String>>,
    bus: Bus,
    status: Arc<Status>,
    shutdown: Signal,
}

impl Runner {
    /// Runs the camera process once. `quiet`: it has been failing for a while, so its start
    /// and stderr go to the debug log, and only its first frame is announced.
    async fn run_child(&self, argv: &[String], quiet: bool) -> End {
        let Some((program, args)) = argv.split_first() else {
            return End::Failed(
                "the camera command is empty",
                "the source command is empty".into(),
            );
        };
        let spawned = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) => {
                return End::Failed(
                    "the camera program could not be started",
                    format!("cannot start `{program}`: {error}"),
                );
            }
        };
        let pid = child.id();
        self.status.set_state(State::Starting, Some(pid));
        if quiet {
            debug!(pid, program = %program, "source started");
        } else {
            info!(pid, program = %program, "source started");
        }

        let tail = Tail::default();
        let stderr = child.stderr.take().map(|err| {
            let mut limit = Burst::new(20, Duration::from_secs(10));
            crate::runtime::spawn(crate::stderr::follow(
                err,
                tail.clone(),
                Vec::new(),
                move |line| {
                    if quiet {
                        debug!(pid, "source: {line}");
                    } else if let Some(suppressed) = limit.allow() {
                        info!(pid, suppressed, "source: {line}");
                    }
                },
            ))
        });
        let Some(stdout) = child.stdout.take() else {
            return End::Failed(
                "the camera's output could not be read",
                "the source's stdout was not captured".into(),
            );
        };

        let reason = future::or(
            future::or(self.pump(stdout, quiet), self.watch_stall()),
            future::or(self.idle(), async {
                self.shutdown.wait().await;
                Stop::Shutdown
            }),
        )
        .await;

        let exit = stop_child(&mut child, pid, reason != Stop::Eof).await;
        if let Some(task) = stderr {
            // The pipe closes when the process is gone; give the last lines a moment.
            future::or(
                async {
                    task.await;
                },
                async {
                    Timer::after(Duration::from_millis(500)).await;
                },
            )
            .await;
        }
        match reason {
            Stop::Idle => End::Idle,
            Stop::Shutdown => End::Shutdown,
            Stop::Eof | Stop::Stalled => {
                let (why, what) = if reason == Stop::Stalled {
                    (
                        "the camera stopped sending frames",
                        format!("no frame for {} s; restarted it", self.config.stall_seconds),
                    )
                } else {
                    ("the camera program exited", format!("exited ({exit})"))
                };
                let lines = tail.joined();
                if lines.is_empty() {
                    End::Failed(why, format!("`{program}` {what}"))
                } else {
                    End::Failed(why, format!("`{program}` {what}; last stderr: {lines}"))
                }
            }
        }
    }

    /// Reads stdout until EOF, publishing every frame. After a quiet run of failures
    /// (`quiet`), the first frame is logged: the camera is back.
    async fn pump(&self, mut stdout: impl futures_lite::AsyncRead + Unpin, quiet: bool) -> Stop {
        let mut splitter = Splitter::new(self.config.max_frame_bytes);
        let mut buf = vec![0u8; 64 * 1024];
        let mut discards = RateLimit::new(Duration::from_secs(10));
        // After a quiet run of failures, the first frame is the news.
        let mut announce = quiet;
        loop {
            let n = match stdout.read(&mut buf).await {
                Ok(0) => return Stop::Eof,
                Ok(n) => n,
                Err(error) => {
                    warn!(%error, "reading the source's stdout failed");
                    return Stop::Eof;
                }
            };
            splitter.push(&buf[..n], |jpeg| {
                self.bus.publish(jpeg, SystemTime::now());
                self.status.frame();
                if std::mem::take(&mut announce) {
                    info!("source delivers frames again");
                }
            });
            if let Some(why) = splitter.take_discard()
                && let Some(suppressed) = discards.allow()
            {
                {
                    let stats = splitter.stats();
                    match why {
                        Discard::Corrupt => {
                            warn!(corrupt = stats.corrupt, suppressed, "dropped a corrupt frame")
                        }
                        Discard::Oversized => warn!(
                            oversized = stats.oversized,
                            max_frame_bytes = self.config.max_frame_bytes,
                            suppressed,
                            "dropped a frame larger than max_frame_bytes"
                        ),
                    }
                }
            }
        }
    }

    /// Resolves when a running source has delivered nothing for `stall_seconds`.
    async fn watch_stall(&self) -> Stop {
        let limit = Duration::from_secs(self.config.stall_seconds);
        let started = Instant::now();
        loop {
            Timer::after(Duration::from_secs(1)).await;
            let snap = self.status.snapshot();
            let quiet = match snap.last_frame_age_ms {
                Some(age) => Duration::from_millis(age).min(started.elapsed()),
                None => started.elapsed(),
            };
            if quiet >= limit {
                return Stop::Stalled;
            }
        }
    }

    /// Resolves once nobody has wanted frames for the grace period.
    async fn idle(&self) -> Stop {
        let grace = Duration::from_millis(self.config.stop_grace_ms);
        let demand = self.bus.demand();
        loop {
            demand.until_wanted(false).await;
            let expired = future::or(
                async {
                    Timer::after(grace).await;
                    true
                },
                async {
                    demand.until_wanted(true).await;
                    false
                },
            );
            if expired.await {
                return Stop::Idle;
            }
        }
    }

    /// The in-process test pattern, paced at the configured rate.
    async fn run_pattern(&self) -> End {
        self.status.set_state(State::Starting, None);
        info!(
            width = self.config.width,
            height = self.config.height,
            fps = self.config.framerate,
            "test pattern started"
        );
        let interval = Duration::from_secs_f64(1.0 / f64::from(self.config.framerate));
        let (width, height) = (self.config.width, self.config.height);
        let frames = pattern_frames(self.bus.clone(), self.status.clone(), width, height, interval);
        let reason = future::or(future::or(frames, self.idle()), async {
            self.shutdown.wait().await;
            Stop::Shutdown
        })
        .await;
        if reason == Stop::Shutdown {
            End::Shutdown
        } else {
            End::Idle
        }
    }
}

/// Renders and publishes test-pattern frames until cancelled.
async fn pattern_frames(bus: Bus, status: Arc<Status>, width: u32, height: u32, interval: Duration) -> Stop {
    let mut next = Instant::now();
    let mut seq = 0u64;
    loop {
        let at = SystemTime::now();
        let jpeg = smol::unblock(move || crate::testpattern::render(seq, at, width, height, None)).await;
        bus.publish(jpeg.into(), at);
        status.frame();
        seq += 1;
        next += interval;
        let now = Instant::now();
        if next < now {
            // Encoding fell behind (a slow board): skip ahead rather than burst.
            next = now;
        }
        Timer::at(next).await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Eof,
    Stalled,
    Idle,
    Shutdown,
}

/// Stops a child politely (SIGTERM, then SIGKILL after a timeout) and reports how it ended.
async fn stop_child(child: &mut Child, pid: u32, terminate: bool) -> String {
    const GRACE: Duration = Duration::from_secs(3);
    if terminate && let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let exited = future::or(async { Some(child.status().await) }, async {
        Timer::after(GRACE).await;
        None
    })
    .await;
    let status = match exited {
        Some(status) => status,
        None => {
            warn!(pid, "source ignored SIGTERM; killing it");
            let _ = child.kill();
            child.status().await
        }
    };
    match status {
        Ok(status) => {
            debug!(pid, %status, "source exited");
            status.to_string()
        }
        Err(error) => format!("status unknown: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpicam_argv_matches_the_camera_stack() {
        let config = SourceConfig {
            kind: SourceKind::Rpicam,
            width: 640,
            height: 480,
            framerate: 30,
            extra_args: vec!["--rotation".into(), "180".into()],
            ..SourceConfig::default()
        };
        let argv = argv(&config).expect("a child process");
        assert_eq!(
            argv.join(" "),
            "rpicam-vid -t 0 --nopreview --codec mjpeg --width 640 --height 480 --framerate 30 --inline -o - --rotation 180"
        );
    }

    #[test]
    fn rpicam_preview_options_in_extra_args_are_not_doubled() {
        for own in [
            &["-n"][..],
            &["--nopreview=1"],
            &["--preview", "0,0,640,480"],
            &["-f"],
        ] {
            let config = SourceConfig {
                kind: SourceKind::Rpicam,
                extra_args: own.iter().map(|a| a.to_string()).collect(),
                ..SourceConfig::default()
            };
            let argv = argv(&config).expect("a child process");
            assert!(!argv.contains(&"--nopreview".to_owned()), "{argv:?}");
        }
        let rotated = SourceConfig {
            kind: SourceKind::Rpicam,
            extra_args: vec![
                "--rotation".into(),
                "180".into(),
                "--denoise".into(),
                "off".into(),
            ],
            ..SourceConfig::default()
        };
        assert!(
            argv(&rotated)
                .expect("a child process")
                .contains(&"--nopreview".to_owned())
        );
    }

    #[test]
    fn ffmpeg_file_loops_at_real_time_into_mjpeg() {
        let config = SourceConfig {
            kind: SourceKind::FfmpegFile,
            path: Some("maru.mp4".into()),
            ..SourceConfig::default()
        };
        let argv = argv(&config).expect("a child process").join(" ");
        assert!(argv.starts_with("ffmpeg "));
        assert!(argv.contains("-re -stream_loop -1 -i maru.mp4"));
        assert!(argv.ends_with("-f mjpeg -"));
    }

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
