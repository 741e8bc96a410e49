//! What a sink answers on the HTTP port, described rather than registered: the sink says
//! "this path, this handler" and the HTTP layer, which sits above the sinks, mounts it. The
//! table is shared and changes at a reload, so a rebuilt sink takes over its paths and a
//! removed one gives them up while the server keeps running.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

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
