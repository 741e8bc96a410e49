//! The camera's output, read on a thread of its own.
//!
//! Read by a task on the executor, every frame cost a wake-up of the reactor's thread, a
//! second thread woken to run the task (futex), the pipe's interest armed again
//! (`epoll_ctl`), the reactor's timer set again (`timerfd_settime`), and reads until one
//! came back empty. Here one thread waits in `poll(2)` on the pipe and reads what it holds
//! with one call: a frame costs about two system calls, and what the thread does with it
//! (cut it, publish it, and write it to the viewers that have room; see [`Bus::attach`])
//! happens right there, with no other thread woken.
//!
//! The pipe is enlarged (`F_SETPIPE_SZ`) so a whole frame fits: a camera then writes a
//! frame in one go and the thread reads it in one.
//!
//! [`Bus::attach`]: crate::bus::Bus::attach

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::event::{EventfdFlags, PollFd, PollFlags};

/// Asked of the kernel for the camera's pipe: room for several large frames. An unprivileged
/// process may go up to `/proc/sys/fs/pipe-max-size` (1 MiB by default); a smaller one
/// is tried if that is refused.
const PIPE_SIZES: [usize; 3] = [1 << 20, 256 << 10, 128 << 10];
/// Read at once: a large frame whole.
const READ_SIZE: usize = 256 * 1024;

/// A thread reading a pipe until its end, or until stopped.
pub struct Reader {
    stop: OwnedFd,
    ended: async_channel::Receiver<io::Result<()>>,
}

impl Reader {
    /// Starts reading `pipe`, handing every chunk read to `chunk` on the reading thread.
    pub fn spawn(pipe: OwnedFd, mut chunk: impl FnMut(&[u8]) + Send + 'static) -> io::Result<Reader> {
        for size in PIPE_SIZES {
            if rustix::pipe::fcntl_setpipe_size(&pipe, size).is_ok() {
                break;
            }
        }
        let stop = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        let stopped = stop.try_clone()?;
        let (tell, ended) = async_channel::bounded(1);
        let span = tracing::Span::current();
        std::thread::Builder::new()
            .name("croissant-camera".into())
            .spawn(move || {
                let _span = span.enter();
                let _ = tell.try_send(read_until_end(&pipe, &stopped, &mut chunk));
            })?;
        Ok(Reader { stop, ended })
    }

    /// Resolves when the pipe has ended (its writer closed it) or failed.
    pub async fn ended(&self) -> io::Result<()> {
        self.ended.recv().await.unwrap_or(Ok(()))
    }

    /// Stops the thread (after the chunk it is handling, if any) and waits for it.
    pub async fn stop(self) {
        self.signal_stop();
        let _ = self.ended.recv().await;
    }

    fn signal_stop(&self) {
        let _ = rustix::io::write(&self.stop, &1u64.to_ne_bytes());
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

/// Waits for the pipe (or the stop signal) and reads what it holds, until its end.
fn read_until_end(pipe: &OwnedFd, stop: &OwnedFd, chunk: &mut impl FnMut(&[u8])) -> io::Result<()> {
    let mut buf = vec![0u8; READ_SIZE];
    loop {
        let mut fds = [PollFd::new(pipe, PollFlags::IN), PollFd::new(stop, PollFlags::IN)];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(error) => return Err(error.into()),
        }
        if !fds[1].revents().is_empty() {
            return Ok(());
        }
        // The pipe may be non-blocking (it came from the async runtime): a read that finds
        // nothing after all just waits again.
        match rustix::io::read(pipe.as_fd(), &mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => chunk(&buf[..n]),
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
            Err(error) => return Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[test]
    fn reads_everything_until_the_writer_closes_the_pipe() {
        let (read, write) = rustix::pipe::pipe().expect("pipe");
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let reader = Reader::spawn(read, move |bytes| {
            sink.lock().expect("lock").extend_from_slice(bytes)
        })
        .expect("spawn");
        let mut writer = std::fs::File::from(write);
        let data: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        writer.write_all(&data).expect("write");
        drop(writer);
        smol::block_on(reader.ended()).expect("clean end");
        assert_eq!(*got.lock().expect("lock"), data);
    }

    #[test]
    fn stops_when_asked_while_the_pipe_stays_open() {
        let (read, _write) = rustix::pipe::pipe().expect("pipe");
        let reader = Reader::spawn(read, |_| {}).expect("spawn");
        smol::block_on(reader.stop());
    }
}
