//! A viewer's socket as the fan-out writes it: whoever starts a message holds the socket's
//! turn until the whole of it is in the kernel, so bytes of one message never land inside
//! another's (tungstenite's pongs and closes on a WebSocket).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;

use smol::Async;
use smol::lock::{Mutex, MutexGuardArc};

/// Held by whoever is writing a message to a socket.
pub type Turn = Arc<Mutex<()>>;

/// The socket as the fan-out sees it: it takes the turn for a whole message, writes it with
/// whatever system call suits, and gives the turn back.
pub struct FrameWriter {
    socket: Arc<Async<std::net::TcpStream>>,
    turn: Turn,
}

impl FrameWriter {
    /// A writer that takes turns on `socket` with another one holding the same `turn`.
    pub fn sharing(socket: Arc<Async<std::net::TcpStream>>, turn: Turn) -> FrameWriter {
        FrameWriter { socket, turn }
    }

    /// The only writer of `socket` while frames go out (an HTTP response body).
    pub fn alone(socket: smol::net::TcpStream) -> FrameWriter {
        FrameWriter::sharing(Arc::from(socket), Turn::default())
    }

    /// The turn, if no one holds it.
    pub fn try_turn(&self) -> Option<MutexGuardArc<()>> {
        self.turn.try_lock_arc()
    }

    /// The turn, once the other writer has finished what it is writing.
    pub async fn turn(&self) -> MutexGuardArc<()> {
        self.turn.lock_arc().await
    }

    /// The socket, to write while holding the turn.
    pub fn socket(&self) -> &Async<std::net::TcpStream> {
        &self.socket
    }
}

impl AsFd for FrameWriter {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl AsRawFd for FrameWriter {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}
