//! The child processes the daemon runs: the camera, each recording's ffmpeg, the relay's
//! ffmpeg. All are started the same way (killed if the daemon lets go of them, their
//! stderr read into the log and a tail for the message that reports their death) and
//! stopped the same way: asked, given a grace period, killed, and their last stderr lines
//! collected. What differs is how each is asked: ffmpeg reading a pipe ignores SIGTERM
//! while the pipe stays open, so it is asked by the end of its input; a camera is asked
//! by SIGTERM.
//!
//! Each child leads a process group of its own, and signals go to the whole group: a
//! camera command that is a wrapper script takes what it started with it instead of
//! leaving it behind at every restart, and a Ctrl-C meant for the daemon does not reach
//! an ffmpeg mid-recording before the daemon can end its input.

use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use async_process::{ChildStdin, ChildStdout, Command};
use futures_lite::future;
use smol::{Task, Timer};
use tracing::{Instrument, warn};

use crate::stderr::Tail;

/// How long a child that closed its output gets to exit by itself before SIGTERM.
const EXITING: Duration = Duration::from_millis(500);

/// How long the last stderr lines may take once a child is gone. (The pipe closes with the
/// process unless something it started holds it.)
const STDERR_LINGER: Duration = Duration::from_secs(1);

/// What a child's standard input and output are connected to.
#[derive(Debug, Clone, Copy)]
pub enum Pipes {
    /// The daemon reads its stdout (a camera); its stdin is empty.
    Output,
    /// The daemon writes its stdin (ffmpeg); its stdout is discarded.
    Input,
}

/// How a child is asked to stop before it is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Its input has ended (the caller closed its stdin): it finishes and exits.
    InputEnded,
    /// It closed its output: it is exiting, or else it is asked by SIGTERM after a
    /// moment (so a camera that exits by itself keeps its own exit status in the log).
    OutputEnded,
    /// SIGTERM.
    Terminate,
    /// Nothing: it has exited already or must go at once.
    Kill,
}

/// How a child ended.
#[derive(Debug)]
pub struct Exit {
    /// Its exit status.
    pub status: io::Result<ExitStatus>,
    /// Its last stderr lines, joined with ` | ` (secrets masked).
    pub stderr: String,
}

impl Exit {
    /// The status in words: `exit status: 1`, `signal: 9 (SIGKILL)`.
    pub fn describe(&self) -> String {
        match &self.status {
            Ok(status) => status.to_string(),
            Err(error) => format!("status unknown: {error}"),
        }
    }
}

/// A running child process.
pub struct Child {
    process: async_process::Child,
    pid: u32,
    program: String,
    tail: Tail,
    stderr: Option<Task<()>>,
    /// Whether [`Child::stop`] saw it exit and cleared its group.
    stopped: bool,
}

impl Drop for Child {
    /// `kill_on_drop` kills the child alone; what it started goes too.
    fn drop(&mut self) {
        if !self.stopped {
            self.signal_group(rustix::process::Signal::KILL);
        }
    }
}

impl Child {
    /// Starts `program` with `args`. Each stderr line goes to `log` (in the current span)
    /// and the tail, each of `hidden` replaced by what may be shown instead (see
    /// [`crate::stderr::follow`]). Dropping the child kills it.
    pub fn spawn(
        program: &str,
        args: &[String],
        pipes: Pipes,
        hidden: Vec<(String, String)>,
        log: impl FnMut(&str) + Send + 'static,
    ) -> io::Result<Child> {
        let (stdin, stdout) = match pipes {
            Pipes::Output => (Stdio::null(), Stdio::piped()),
            Pipes::Input => (Stdio::piped(), Stdio::null()),
        };
        let mut group = std::process::Command::new(program);
        std::os::unix::process::CommandExt::process_group(&mut group, 0);
        let mut process = Command::from(group)
            .args(args)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| io::Error::new(error.kind(), format!("cannot run `{program}`: {error}")))?;
        let tail = Tail::default();
        let stderr = process.stderr.take().map(|stderr| {
            let follow = crate::stderr::follow(stderr, tail.clone(), hidden, log);
            crate::runtime::spawn(follow.in_current_span())
        });
        Ok(Child {
            pid: process.id(),
            process,
            program: program.to_owned(),
            tail,
            stderr,
            stopped: false,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its stdin, once ([`Pipes::Input`]).
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.process.stdin.take()
    }

    /// Its stdout, once ([`Pipes::Output`]).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.process.stdout.take()
    }

    /// Resolves when it exits by itself.
    pub async fn exited(&mut self) -> io::Result<ExitStatus> {
        self.process.status().await
    }

    /// Asks it to stop as `ask` says, kills it (and whatever it started) if it has not
    /// exited within `grace`, and collects its last stderr lines.
    pub async fn stop(&mut self, ask: Ask, grace: Duration) -> Exit {
        let grace = match ask {
            Ask::Kill => Duration::ZERO,
            Ask::Terminate => {
                self.signal_group(rustix::process::Signal::TERM);
                grace
            }
            Ask::InputEnded => grace,
            Ask::OutputEnded => match self.exit_within(EXITING.min(grace)).await {
                Some(status) => return self.finish(status).await,
                None => {
                    self.signal_group(rustix::process::Signal::TERM);
                    grace.saturating_sub(EXITING)
                }
            },
        };
        let status = match self.exit_within(grace).await {
            Some(status) => status,
            None => {
                if ask != Ask::Kill {
                    warn!(
                        pid = self.pid,
                        program = %self.program,
                        "did not exit within {} ms of being asked; killing it",
                        grace.as_millis()
                    );
                }
                self.signal_group(rustix::process::Signal::KILL);
                let _ = self.process.kill();
                self.process.status().await
            }
        };
        self.finish(status).await
    }

    /// Its exit status, if it exits within `wait`.
    async fn exit_within(&mut self, wait: Duration) -> Option<io::Result<ExitStatus>> {
        future::or(async { Some(self.process.status().await) }, async {
            Timer::after(wait).await;
            None
        })
        .await
    }

    /// Signals its process group: the child and anything it started that did not move to
    /// a group of its own. (Nothing is left to signal when all of them are gone.)
    fn signal_group(&self, signal: rustix::process::Signal) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process_group(pid, signal);
        }
    }

    /// Once it has exited: kills what it left running in its group, which would otherwise
    /// live on (and may hold its pipes open), and collects its last stderr lines.
    async fn finish(&mut self, status: io::Result<ExitStatus>) -> Exit {
        self.signal_group(rustix::process::Signal::KILL);
        self.stopped = true;
        if let Some(task) = self.stderr.take() {
            future::or(task, async {
                Timer::after(STDERR_LINGER).await;
            })
            .await;
        }
        Exit {
            status,
            stderr: self.tail.joined(),
        }
    }
}
