//! One WebSocket connection, two writers: the fan-out writes frames straight to the socket
//! (`sinks/fanout`: one `writev` or `sendfile`, no copy of its own), while tungstenite,
//! reading the viewer's messages in another task, answers pings and closes on its own.
//! Bytes of one message must never land inside another, so the two take turns: whoever
//! starts a message holds the turn until the whole of it is in the kernel.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use smol::lock::{Mutex, MutexGuardArc};
use smol::net::TcpStream;

use crate::sinks::fanout::{FrameWriter, Turn};
type Waiting = Pin<Box<dyn Future<Output = MutexGuardArc<()>> + Send>>;

/// The socket as tungstenite sees it: its writes wait for the frame writer's turn to end,
/// and hold the turn until tungstenite's buffered bytes are all written.
pub struct TurnTaking {
    socket: TcpStream,
    turn: Turn,
    held: Option<MutexGuardArc<()>>,
    waiting: Option<Waiting>,
}

impl TurnTaking {
    /// Wraps a freshly accepted connection.
    pub fn new(socket: TcpStream) -> Self {
        TurnTaking {
            socket,
            turn: Arc::new(Mutex::new(())),
            held: None,
            waiting: None,
        }
    }

    /// The other writer of this connection.
    pub fn frame_writer(&self) -> FrameWriter {
        FrameWriter::sharing(Arc::from(self.socket.clone()), self.turn.clone())
    }

    fn poll_turn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.held.is_some() {
            return Poll::Ready(());
        }
        let turn = self.turn.clone();
        let waiting = self.waiting.get_or_insert_with(|| Box::pin(turn.lock_arc()));
        match waiting.as_mut().poll(cx) {
            Poll::Ready(guard) => {
                self.waiting = None;
                self.held = Some(guard);
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for TurnTaking {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.socket).poll_read(cx, buf)
    }
}

impl AsyncWrite for TurnTaking {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.poll_turn(cx).is_pending() {
            return Poll::Pending;
        }
        let result = Pin::new(&mut this.socket).poll_write(cx, buf);
        // tungstenite hands over all it has buffered each time: once a write takes all of
        // it, no message of its own is half written and the turn can pass.
        if let Poll::Ready(Ok(written)) = result
            && written == buf.len()
        {
            this.held = None;
        }
        if let Poll::Ready(Err(_)) = result {
            this.held = None;
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.held = None;
        Pin::new(&mut this.socket).poll_close(cx)
    }
}
