//! Socket helpers for streaming frames to many clients.

use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;

/// Keeps at most about `bytes` of not-yet-sent data queued in the kernel for this socket
/// (`TCP_NOTSENT_LOWAT`): writes wait instead of piling frames into a send buffer that
/// Linux would otherwise grow to megabytes. Without it a slow viewer falls tens of seconds
/// behind live even though our own queue holds one frame; with it, the frame it reads next
/// is at most about one frame older than its read pace.
pub fn limit_unsent(socket: &impl AsRawFd, bytes: u32) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: the descriptor belongs to `socket`, which outlives this call; the option value
    // is a c_int and its exact size is passed. Neither socket2 nor rustix wraps this option.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A connection whose reads fail with `TimedOut` when the peer sends nothing for `limit`
/// while we wait for it. async-h1 has no timeout for request bodies, nor for the unread
/// rest of one it discards after answering; with this, a client that stops sending
/// mid-request (or idles on a kept-alive connection) is let go instead of holding a
/// socket forever. Writes are untouched: a streaming response may take as long as it takes.
pub struct ReadDeadline {
    inner: smol::net::TcpStream,
    limit: std::time::Duration,
    /// Armed while a read is pending.
    timer: Option<smol::Timer>,
}

impl ReadDeadline {
    /// Wraps `inner`.
    pub fn new(inner: smol::net::TcpStream, limit: std::time::Duration) -> Self {
        ReadDeadline {
            inner,
            limit,
            timer: None,
        }
    }
}

impl Clone for ReadDeadline {
    fn clone(&self) -> Self {
        ReadDeadline::new(self.inner.clone(), self.limit)
    }
}

impl futures_lite::AsyncRead for ReadDeadline {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        use std::future::Future;
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.timer = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let limit = this.limit;
                let timer = this.timer.get_or_insert_with(|| smol::Timer::after(limit));
                if std::pin::Pin::new(timer).poll(cx).is_ready() {
                    this.timer = None;
                    return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
                }
                Poll::Pending
            }
        }
    }
}

impl futures_lite::AsyncWrite for ReadDeadline {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsent_limit_applies_to_tcp_sockets() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let stream = std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        limit_unsent(&stream, 16 * 1024).expect("setsockopt");
    }
}
