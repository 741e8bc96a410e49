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
use std::time::{Duration, Instant};

use async_process::{ChildStdin, ChildStdout, Command};
use futures_lite::future;
use rustix::process::Signal;
use smol::{Task, Timer};
use tracing::{Instrument, warn};

use crate::stderr::Tail;

/// How long a child that closed its output gets to exit by itself before SIGTERM.
const EXITING: Duration = Duration::from_millis(500);

/// How often a stopping child's group is looked at, while what it started is still there.
const LINGER_POLL: Duration = Duration::from_millis(50);

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
            self.signal_group(Signal::KILL);
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

    /// Asks it to stop as `ask` says, kills it if it has not exited within `grace` of being
    /// asked, and collects its last stderr lines. What it started gets the same: asked
    /// (SIGTERM) and, if still there when the grace period is over, killed.
    pub async fn stop(&mut self, ask: Ask, grace: Duration) -> Exit {
        let mut asked = Instant::now();
        let mut terminated = false;
        match ask {
            Ask::Kill | Ask::InputEnded => {}
            Ask::Terminate => {
                self.signal_group(Signal::TERM);
                terminated = true;
            }
            Ask::OutputEnded => {
                if let Some(status) = self.exit_within(EXITING.min(grace)).await {
                    return self.finish(status, false, Instant::now() + grace).await;
                }
                self.signal_group(Signal::TERM);
                terminated = true;
                asked = Instant::now();
            }
        }
        let deadline = if ask == Ask::Kill { asked } else { asked + grace };
        let status = match self
            .exit_within(deadline.saturating_duration_since(Instant::now()))
            .await
        {
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
                self.signal_group(Signal::KILL);
                let _ = self.process.kill();
                self.process.status().await
            }
        };
        self.finish(status, terminated, deadline).await
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
    fn signal_group(&self, signal: Signal) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process_group(pid, signal);
        }
    }

    /// Once it has exited: what it left running in its group (which would otherwise live
    /// on, and may hold its pipes open) is asked to stop, unless it was already, and killed
    /// if still there at `deadline`. Then its last stderr lines are collected.
    async fn finish(&mut self, status: io::Result<ExitStatus>, terminated: bool, deadline: Instant) -> Exit {
        let pid = self.pid;
        // `/proc` is read off the executor: it is a walk over every process.
        let lingers = || smol::unblock(move || group_lingers(pid));
        if lingers().await {
            if !terminated {
                self.signal_group(Signal::TERM);
            }
            while Instant::now() < deadline && lingers().await {
                Timer::after(LINGER_POLL).await;
            }
            self.signal_group(Signal::KILL);
        }
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

/// Whether a process of the group `pgid` leads is still running (not a zombie waiting for
/// whoever inherited it). The kernel says at once when the group is empty; otherwise
/// `/proc` tells the living from the dead.
fn group_lingers(pgid: u32) -> bool {
    let Some(group) = rustix::process::Pid::from_raw(pgid as i32) else {
        return false;
    };
    if rustix::process::test_kill_process_group(group).is_err() {
        return false;
    }
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return true;
    };
    processes.flatten().any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // After the command name in parentheses: state, parent, process group.
        let mut fields = stat
            .rsplit_once(") ")
            .map(|(_, rest)| rest)
            .unwrap_or("")
            .split(' ');
        let state = fields.next();
        let group = fields.nth(1).and_then(|g| g.parse::<u32>().ok());
        group == Some(pgid) && state != Some("Z")
    })
}
