//! What a sink answers on the HTTP port, described rather than registered: the sink says
//! "this path, this handler" and the HTTP layer, which sits above the sinks, mounts it. The
//! table is shared and changes at a reload, so a rebuilt sink takes over its paths and a
//! removed one gives them up while the server keeps running.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use event_listener::Event;
use smol::net::TcpStream;

use crate::shutdown::Ending;
use crate::sync::lock;

/// A boxed future, as the object-safe sink methods return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Who is at the other end of a request a sink answers.
#[derive(Debug, Clone)]
pub struct Client {
    /// The client's address.
    pub peer: SocketAddr,
    /// When the login session the client came with ends (logout, expiry): its streams end
    /// with it. `None` without `[auth]` or with Basic credentials.
    pub session: Option<Ending>,
    /// For a plain `GET`: the socket, for a response body the sink writes itself.
    pub body_socket: Option<BodySocket>,
}

/// The socket of a plain `GET` whose response body a sink writes itself (an endless
/// stream, written by the fan-out as frames come). The HTTP layer writes the response head;
/// the body waits for it ([`Handover::head_sent`]) before writing, and anything the body
/// still yields through the HTTP layer (its ending) goes out after.
#[derive(Clone)]
pub struct BodySocket {
    /// The connection.
    pub stream: TcpStream,
    /// The HTTP layer frames the body in chunks (HTTP/1.1), so bytes written past it must be
    /// chunks too; otherwise (HTTP/1.0) the body ends with the connection.
    pub chunked: bool,
    /// Says when the head is out.
    pub handover: Arc<Handover>,
}

impl std::fmt::Debug for BodySocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodySocket")
            .field("chunked", &self.chunked)
            .finish_non_exhaustive()
    }
}

/// When a response head is out, between the HTTP layer and a body that writes itself.
#[derive(Default)]
pub struct Handover {
    state: AtomicU8,
    sent: Event,
}

const IDLE: u8 = 0;
const ASKED: u8 = 1;
const SENT: u8 = 2;

impl Handover {
    /// From the body, when the HTTP layer first asks it for bytes: the head is in the
    /// layer's buffer, if not yet in the kernel's.
    pub fn ask(&self) {
        let _ = self
            .state
            .compare_exchange(IDLE, ASKED, Ordering::AcqRel, Ordering::Acquire);
    }

    /// From the socket, once the HTTP layer has written everything it buffered.
    pub fn flushed(&self) {
        if self
            .state
            .compare_exchange(ASKED, SENT, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.sent.notify(usize::MAX);
        }
    }

    /// From the HTTP layer, before each request of the connection.
    pub fn reset(&self) {
        self.state.store(IDLE, Ordering::Release);
    }

    /// Resolves once the head is in the kernel's hands.
    pub async fn head_sent(&self) {
        loop {
            if self.state.load(Ordering::Acquire) == SENT {
                return;
            }
            let listener = self.sent.listen();
            if self.state.load(Ordering::Acquire) == SENT {
                return;
            }
            listener.await;
        }
    }
}

/// A connection the HTTP layer has switched to the WebSocket protocol (it answered `101`).
pub struct Upgraded {
    /// The connection.
    pub stream: TcpStream,
    /// Bytes the client sent right behind its request; they belong to the WebSocket.
    pub early: Vec<u8>,
}

/// Serves one upgraded WebSocket connection until it ends.
pub type WsHandler = Arc<dyn Fn(Upgraded, Client) -> BoxFuture<()> + Send + Sync>;

/// Answers a `GET` (or `HEAD`).
pub type GetHandler = Arc<dyn Fn(Client) -> tide::Response + Send + Sync>;

/// What a sink answers on one path.
#[derive(Clone)]
pub enum Endpoint {
    /// WebSocket upgrades.
    WebSocket(WsHandler),
    /// Plain `GET` requests.
    Get(GetHandler),
}

/// The paths the running sinks answer, as the HTTP layer looks them up per request.
#[derive(Default)]
pub struct Endpoints {
    by_path: Mutex<HashMap<String, Endpoint>>,
}

impl Endpoints {
    /// What answers `path`, if a sink does.
    pub fn get(&self, path: &str) -> Option<Endpoint> {
        lock(&self.by_path).get(path).cloned()
    }

    pub(super) fn insert(&self, path: String, endpoint: Endpoint) {
        lock(&self.by_path).insert(path, endpoint);
    }

    pub(super) fn remove(&self, path: &str) {
        lock(&self.by_path).remove(path);
    }
}
