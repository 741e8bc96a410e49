//! Socket helpers for streaming frames to many clients.

use std::io;
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

/// What the far end of a connection did, as its socket tells without waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// It closed its side (or the connection was reset and that was already read).
    Closed,
    /// The connection was reset.
    Reset,
    /// Nothing says it is gone.
    Open,
}

impl Peer {
    /// Looks at a connection the daemon is letting go of, to say why in the log.
    pub fn of(socket: &impl std::os::fd::AsFd) -> Peer {
        let socket = socket2::SockRef::from(socket);
        if let Ok(Some(error)) = socket.take_error() {
            return Peer::from_error(&error);
        }
        let mut byte = [std::mem::MaybeUninit::uninit()];
        match socket.peek(&mut byte) {
            Ok(0) => Peer::Closed,
            Ok(_) => Peer::Open,
            Err(error) => Peer::from_error(&error),
        }
    }

    fn from_error(error: &io::Error) -> Peer {
        match error.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => Peer::Reset,
            _ => Peer::Open,
        }
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
