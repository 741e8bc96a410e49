//! The listening socket and its accept loop: every connection is admitted (or refused at
//! once) by [`Admission`] before it costs more than its descriptor, and accept errors
//! (out of descriptors, out of memory) pause the loop instead of spinning it.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use super::admission::{Admission, Refusal};
use super::engine::{self, Front};
use crate::ratelimit::RateLimit;
use crate::shutdown::{self, Signal};

/// How often a repeated accept error or refusal is logged.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// The longest pause after an accept error.
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Binds the listening socket with a backlog large enough for a thousand viewers arriving
/// at once (std's and smol's default of 128 stalls them for seconds).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    let std_listener: std::net::TcpListener = socket.into();
    TcpListener::try_from(std_listener)
}

/// Accepts connections until `shutdown` fires, then gives open ones a moment to finish
/// (WebSocket viewers their closing handshake, MJPEG clients the end of their stream).
pub async fn serve(listener: TcpListener, front: Arc<Front>, admission: Arc<Admission>, shutdown: Signal) {
    let janitor = crate::runtime::spawn(trim_after_bursts(admission.clone(), shutdown.clone()));
    let mut accept_errors = RateLimit::new(LOG_EVERY);
    let mut refusals = RateLimit::new(LOG_EVERY);
    let mut pause = Duration::from_millis(10);
    loop {
        match shutdown::unless(&shutdown, listener.accept()).await {
            None => break,
            Some(Ok((stream, peer))) => {
                pause = Duration::from_millis(10);
                match admission.admit(peer.ip()) {
                    Ok(permit) => {
                        crate::runtime::spawn(engine::serve_connection(stream, peer, front.clone(), permit))
                            .detach();
                    }
                    Err(refusal) => {
                        front.metrics.connection_refused(refusal.as_str());
                        if let Some(suppressed) = refusals.allow() {
                            let (why, limit) = match refusal {
                                Refusal::Full => ("too many connections", admission.max_connections()),
                                Refusal::PerAddress => (
                                    "too many connections from one address",
                                    admission.max_per_address(),
                                ),
                            };
                            warn!(%peer, limit, suppressed, "connection refused: {why}");
                        }
                        turn_away(stream);
                    }
                }
            }
            Some(Err(error)) if transient(&error) => debug!(%error, "accept failed"),
            Some(Err(error)) => {
                // Out of descriptors or memory: the listener stays readable, so waiting is
                // the only way not to spin. The pause grows while the condition lasts.
                front.metrics.accept_error();
                if let Some(suppressed) = accept_errors.allow() {
                    warn!(%error, suppressed, pause_ms = pause.as_millis() as u64, "accept failed; pausing");
                }
                smol::Timer::after(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    }
    info!("stopped accepting connections");
    janitor.await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while admission.connections() > 0 && Instant::now() < deadline {
        smol::Timer::after(Duration::from_millis(20)).await;
    }
}

/// Gives memory freed by a burst of connections back to the system. The allocator keeps
/// what it frees for reuse and returns only the top of each heap: after 200 downloads that
/// nobody read were closed, 6 to 10 MB of their buffers stayed resident, in holes between
/// allocations that outlived them.
async fn trim_after_bursts(admission: Arc<Admission>, shutdown: Signal) {
    while shutdown::unless(&shutdown, smol::Timer::after(Duration::from_secs(2)))
        .await
        .is_some()
    {
        if let Some(peak) = admission.take_burst() {
            debug!(
                peak,
                open = admission.connections(),
                "returning memory after a burst of connections"
            );
            smol::unblock(release_freed_memory).await;
        }
    }
}

/// Returns the allocator's free pages to the system (glibc's `malloc_trim`).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only walks glibc's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Errors about one connection that went away before it was accepted, not about the
/// listener.
fn transient(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EPERM | libc::ECONNRESET)
    )
}

/// Tells a refused client why in one non-blocking write (a fresh socket's buffer always
/// has room for it) and closes the connection. Nothing of its request is read.
fn turn_away(stream: TcpStream) {
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
X-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\n\
Content-Length: 33\r\nRetry-After: 10\r\nConnection: close\r\n\r\n{\"error\":\"Too many connections\"}\n";
    let socket: Arc<smol::Async<std::net::TcpStream>> = stream.into();
    let mut raw: &std::net::TcpStream = socket.get_ref();
    let _ = raw.write(BUSY);
    // Closing with the request unread would reset the connection, and a client reading
    // late could lose the answer with it: take in what already came, then close.
    let _ = std::io::Read::read(&mut raw, &mut [0u8; 4096]);
    let _ = raw.shutdown(std::net::Shutdown::Write);
}
