//! The frame source: a supervised child process writing MJPEG to stdout (or the in-process
//! test pattern), started while anyone wants frames and stopped when nobody does.
//!
//! A child that exits, fails to start or stalls is restarted with capped exponential
//! backoff; viewers stay connected meanwhile and simply see frames again when it is back.
//!
//! [`status`] says what it is doing; [`command`] builds the camera's command line;
//! [`reader`] reads its pipe on a thread of its own; this module supervises it.

mod command;
mod reader;
mod status;

pub use command::argv;
pub use status::{Snapshot, State, Status};

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_lite::future;
use smol::Timer;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::bus::Bus;
use crate::child::{Ask, Child, Pipes};
use crate::config::SourceConfig;
use crate::ratelimit::{Burst, FailureRun, RateLimit};
use crate::shutdown::Signal;
use crate::splitter::{Discard, Splitter};

/// How long a camera gets to exit once asked (SIGTERM) before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// A camera that delivered frames for this long before it failed was working: its next
/// failure is retried after the shortest wait, like a first. (Longer than the
/// longest wait, so a camera that keeps failing soon after it starts still waits longer
/// each time.)
const WORKED_FOR: Duration = Duration::from_secs(15);

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
                info!("source stopped (the daemon stops, or a reload replaces it)");
                return;
            }
            End::Failed(reason, error) => {
                if source.status.delivered_for() >= WORKED_FOR {
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
    /// and stderr go to the debug log, and its return is announced once it has delivered
    /// frames for [`WORKED_FOR`].
    async fn run_child(&self, argv: &[String], quiet: bool) -> End {
        let Some((program, args)) = argv.split_first() else {
            return End::Failed(
                "the camera command is empty",
                "the source command is empty".into(),
            );
        };
        let mut limit = Burst::new(20, Duration::from_secs(10));
        let log_line = move |line: &str| {
            if quiet {
                debug!("source: {line}");
            } else if let Some(suppressed) = limit.allow() {
                info!(suppressed, "source: {line}");
            }
        };
        let mut child = match Child::spawn(program, args, Pipes::Output, Vec::new(), log_line) {
            Ok(child) => child,
            Err(error) => return End::Failed("the camera program could not be started", error.to_string()),
        };
        let pid = child.pid();
        self.status.set_state(State::Starting, Some(pid));
        if quiet {
            debug!(pid, program = %program, "source started");
        } else {
            info!(pid, program = %program, "source started");
        }
        let pipe = child
            .take_stdout()
            .ok_or_else(|| std::io::Error::other("the source's stdout was not captured"))
            .and_then(|stdout| std::os::fd::AsFd::as_fd(&stdout).try_clone_to_owned());
        let mut frames = Frames::new(self.bus.clone(), self.status.clone(), &self.config, quiet);
        let reader = match pipe.and_then(|pipe| reader::Reader::spawn(pipe, move |chunk| frames.push(chunk)))
        {
            Ok(reader) => reader,
            Err(error) => {
                return End::Failed("the camera's output could not be read", error.to_string());
            }
        };
        let output_ended = async {
            if let Err(error) = reader.ended().await {
                warn!(%error, "reading the source's stdout failed");
            }
            Stop::Eof
        };

        // A wrapper script may exit while something it started still holds its output open:
        // that is the camera's end too, not a stall to wait out.
        let exited = async {
            let _ = child.exited().await;
            Stop::Exited
        };

        let reason = future::or(
            future::or(output_ended, future::or(exited, self.watch_stall())),
            future::or(self.idle(), async {
                self.shutdown.wait().await;
                Stop::Shutdown
            }),
        )
        .await;
        reader.stop().await;
        if reason == Stop::Exited {
            // It is gone, though what it started may take the grace period to follow.
            self.status.set_state(State::Backoff, None);
        }

        // At the end of its output it has exited, or is about to.
        let ask = if matches!(reason, Stop::Eof | Stop::Exited) {
            Ask::OutputEnded
        } else {
            Ask::Terminate
        };
        let exit = child.stop(ask, STOP_GRACE).await;
        debug!(pid, status = %exit.describe(), "source exited");
        match reason {
            Stop::Idle => End::Idle,
            Stop::Shutdown => End::Shutdown,
            Stop::Eof | Stop::Exited | Stop::Stalled => {
                let (why, what) = if reason == Stop::Stalled {
                    (
                        "the camera stopped sending frames",
                        format!("no frame for {} s; restarted it", self.config.stall_seconds),
                    )
                } else {
                    (
                        "the camera program exited",
                        format!("exited ({})", exit.describe()),
                    )
                };
                if exit.stderr.is_empty() {
                    End::Failed(why, format!("`{program}` {what}"))
                } else {
                    End::Failed(why, format!("`{program}` {what}; last stderr: {}", exit.stderr))
                }
            }
        }
    }

    /// Resolves when a running source has delivered nothing for `stall_seconds`. Wakes
    /// only when that could have happened (`stall_seconds` after the last frame it knew
    /// of), not on a tick: a wake-up costs the other threads more than a frame does.
    async fn watch_stall(&self) -> Stop {
        let limit = Duration::from_secs(self.config.stall_seconds);
        let started = Instant::now();
        loop {
            let last = self
                .status
                .last_frame()
                .filter(|at| *at > started)
                .unwrap_or(started);
            let quiet = last.elapsed();
            if quiet >= limit {
                return Stop::Stalled;
            }
            Timer::after(limit - quiet).await;
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

/// The camera's output cut into frames and published, on the reading thread.
struct Frames {
    splitter: Splitter,
    bus: Bus,
    status: Arc<Status>,
    max_frame_bytes: usize,
    discards: RateLimit,
    /// After a quiet run of failures, frames for [`WORKED_FOR`] are the news: the camera
    /// is back.
    announce: bool,
}

impl Frames {
    fn new(bus: Bus, status: Arc<Status>, config: &SourceConfig, quiet: bool) -> Frames {
        Frames {
            splitter: Splitter::new(config.max_frame_bytes),
            bus,
            status,
            max_frame_bytes: config.max_frame_bytes,
            discards: RateLimit::new(Duration::from_secs(10)),
            announce: quiet,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        let (bus, status, announce) = (&self.bus, &self.status, &mut self.announce);
        self.splitter.push(chunk, |jpeg| {
            bus.publish(jpeg, SystemTime::now());
            status.frame();
            // Only once it has worked as long as it takes to count as working again: a
            // camera that keeps failing soon after its first frames is not back.
            if *announce && status.delivered_for() >= WORKED_FOR {
                *announce = false;
                info!(for_seconds = WORKED_FOR.as_secs(), "source delivers frames again");
            }
        });
        if let Some(why) = self.splitter.take_discard()
            && let Some(suppressed) = self.discards.allow()
        {
            let stats = self.splitter.stats();
            match why {
                Discard::Corrupt => warn!(corrupt = stats.corrupt, suppressed, "dropped a corrupt frame"),
                Discard::Oversized => warn!(
                    oversized = stats.oversized,
                    max_frame_bytes = self.max_frame_bytes,
                    suppressed,
                    "dropped a frame larger than max_frame_bytes"
                ),
            }
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
    /// The camera process exited, though its output may still be open.
    Exited,
    Stalled,
    Idle,
    Shutdown,
}
