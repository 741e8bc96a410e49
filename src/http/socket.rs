//! A client's socket as the HTTP engine uses it: writes that make no progress for
//! `[server] send_timeout_seconds` fail, so a client that stops reading a response (a
//! download, an MJPEG stream) gives its connection back instead of holding it forever.
//! Reading needs no such guard: the engine's own deadlines cover request heads and bodies.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use std::sync::Arc;

use futures_lite::{AsyncRead, AsyncWrite};
use smol::net::TcpStream;

use crate::sinks::Handover;

/// An accepted connection.
pub struct Socket {
    stream: TcpStream,
    send_timeout: Duration,
    /// Armed while a write waits for room in the kernel's buffer.
    stalled: Option<smol::Timer>,
    /// Told when hyper has written all it buffered, for a response body written past hyper.
    handover: Arc<Handover>,
}

impl Socket {
    /// Wraps an accepted connection.
    pub fn new(stream: TcpStream, send_timeout: Duration, handover: Arc<Handover>) -> Socket {
        Socket {
            stream,
            send_timeout,
            stalled: None,
            handover,
        }
    }

    /// The connection itself, for a WebSocket that takes it over.
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    /// Turns a write's outcome into a timeout when it has waited too long.
    fn watch<T>(&mut self, cx: &mut Context<'_>, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => {
                let limit = self.send_timeout;
                let timer = self.stalled.get_or_insert_with(|| smol::Timer::after(limit));
                if Pin::new(timer).poll(cx).is_ready() {
                    self.stalled = None;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client read nothing for the send timeout",
                    )));
                }
                Poll::Pending
            }
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.watch(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.watch(cx, result)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.stream).poll_flush(cx);
        // hyper flushes its connection only once its buffer is written out.
        if let Poll::Ready(Ok(())) = result {
            self.handover.flushed();
        }
        self.watch(cx, result)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_close(cx)
    }
}
