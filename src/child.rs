//! The child processes the daemon runs: the camera, each recording's ffmpeg, the relay's
//! ffmpeg. All are started the same way (killed if the daemon lets go of them, their
//! stderr read into the log and a tail for the message that reports their death) and
//! stopped the same way: asked, given a grace period, killed, and their last stderr lines
//! collected. What differs is how each is asked: ffmpeg reading a pipe ignores SIGTERM
//! while the pipe stays open, so it is asked by the end of its input; a camera is asked
//! by SIGTERM.

use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use async_process::{ChildStdin, ChildStdout, Command};
use futures_lite::future;
use smol::{Task, Timer};
use tracing::{Instrument, warn};

use crate::stderr::Tail;

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
        let mut process = Command::new(program)
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

    /// Asks it to stop as `ask` says, kills it if it has not within `grace`, and collects
    /// its last stderr lines.
    pub async fn stop(&mut self, ask: Ask, grace: Duration) -> Exit {
        if ask == Ask::Terminate
            && let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let grace = if ask == Ask::Kill { Duration::ZERO } else { grace };
        let exited = future::or(async { Some(self.process.status().await) }, async {
            Timer::after(grace).await;
            None
        })
        .await;
        let status = match exited {
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
                let _ = self.process.kill();
                self.process.status().await
            }
        };
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
