//! The HTTP and WebSocket server on one port.
//!
//! Each connection's request head is peeked (not consumed): WebSocket upgrades on a sink's
//! paths go to tungstenite with the untouched stream, everything else to tide through
//! async-h1. Handlers stay thin; the pages are embedded in the binary.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use futures_lite::future;
use serde_json::json;
use smol::net::{TcpListener, TcpStream};
use tide::{Body, Request, Response, StatusCode};
use tracing::{debug, info, warn};

use crate::access::{Guard, UpgradeHeads};
use crate::auth::Auth;
use crate::bus::Bus;
use crate::config::Config;
use crate::metrics::{Exporter, Metrics};
use crate::mode::{Mode, ModeSwitch};
use crate::recordings::Recordings;
use crate::shutdown::{self, Signal};
use crate::sinks::BoxFuture;
use crate::source;

/// A WebSocket connection as handed to a sink.
pub type WsStream = WebSocketStream<crate::turns::TurnTaking>;

/// Serves one upgraded WebSocket connection until it ends.
pub type WsHandler = Arc<dyn Fn(WsStream, SocketAddr) -> BoxFuture<()> + Send + Sync>;

/// Request heads larger than this are not considered for a WebSocket upgrade.
const MAX_PEEK: usize = 8 * 1024;
/// A source that should run but sent nothing for this long makes `/health` answer 503.
const HEALTH_STARVED_MS: u64 = 5_000;

/// What every HTTP handler can see.
#[derive(Clone)]
pub struct AppState {
    /// The configuration the daemon runs with.
    pub config: Arc<Config>,
    /// The frame bus.
    pub bus: Bus,
    /// The source's status.
    pub status: Arc<source::Status>,
    /// The current mode and the switch between modes.
    pub mode: Arc<ModeSwitch>,
    /// The recordings on disk.
    pub recordings: Arc<Recordings>,
    /// Live viewers connected right now.
    pub viewers: Arc<AtomicUsize>,
    /// The daemon's counters.
    pub metrics: Arc<Metrics>,
    /// Renders `/metrics`.
    pub exporter: Arc<Exporter>,
    /// Users and sessions, when `[auth]` is configured.
    pub auth: Option<Arc<Auth>>,
}

/// The routes sinks and the core register before the server starts.
pub struct Routes {
    app: tide::Server<AppState>,
    websockets: HashMap<String, WsHandler>,
    /// WebSocket connections being served, so shutdown can wait for their close frames.
    upgraded: AtomicUsize,
    metrics: Arc<Metrics>,
    /// Checks WebSocket upgrades, which bypass tide's middleware.
    guard: Guard,
    head_timeout: Duration,
}

impl Routes {
    /// The core routes: pages, assets and `/health`.
    pub fn new(state: AppState) -> Routes {
        let cors = state.config.server.cors_origin.clone();
        let metrics = state.metrics.clone();
        let counter = CountRequests {
            known: Arc::new(known_paths(&state.config)),
        };
        let guard = Guard {
            auth: state.auth.clone(),
            cors_origin: state.config.server.cors_origin.clone(),
        };
        let head_timeout = Duration::from_secs(state.config.server.header_timeout_seconds);
        let mut app = tide::with_state(state);
        app.with(counter);
        app.with(guard.clone());
        app.with(tide::utils::After(move |mut res: Response| {
            let cors = cors.clone();
            async move {
                if !cors.is_empty() {
                    res.insert_header("Access-Control-Allow-Origin", cors.as_str());
                }
                Ok(res)
            }
        }));
        crate::web::routes(&mut app);
        app.at("/health").get(health);
        app.at("/api/status").get(status);
        app.at("/metrics").get(metrics_text);
        app.at("/snapshot.jpg").get(snapshot);
        app.at("/settings")
            .get(get_settings)
            .post(post_settings)
            .options(preflight);
        crate::replays::routes(&mut app);
        app.at("/login")
            .get(crate::web::login_page)
            .post(crate::access::login);
        app.at("/logout").post(crate::access::logout);
        Routes {
            app,
            websockets: HashMap::new(),
            upgraded: AtomicUsize::new(0),
            metrics,
            guard,
            head_timeout,
        }
    }

    /// Answers WebSocket upgrades on `path` with `handler`.
    pub fn websocket(&mut self, path: &str, handler: WsHandler) {
        self.websockets.insert(path.to_owned(), handler);
    }

    /// The tide app, for sinks that serve plain HTTP.
    pub fn http(&mut self) -> &mut tide::Server<AppState> {
        &mut self.app
    }
}

async fn health(req: Request<AppState>) -> tide::Result {
    let state = req.state();
    let snap = state.status.snapshot();
    let wanted = state.bus.demand().is_wanted();
    let starved = wanted && snap.starved_ms.is_some_and(|ms| ms > HEALTH_STARVED_MS);
    let body = json!({
        "status": if starved { "stalled" } else { "ok" },
        "uptime": state.status.started_at().elapsed().as_secs(),
        "mode": state.mode.current(),
        "recording": state.recordings.current().map(|c| c.stem),
        "source": {
            "kind": state.config.source.kind_name(),
            "state": snap.state,
            "pid": snap.pid,
            "wanted": wanted,
            "restarts": snap.restarts,
            "frames": snap.frames,
            "last_error": snap.last_error,
        },
        "last_frame_age_ms": snap.last_frame_age_ms,
        "fps": snap.fps,
        "subscribers": state.bus.subscribers(),
        "viewers": state.viewers.load(Ordering::Relaxed),
    });
    let mut res = Response::new(if starved {
        StatusCode::ServiceUnavailable
    } else {
        StatusCode::Ok
    });
    res.set_body(Body::from_json(&body)?);
    res.insert_header("Cache-Control", "no-store");
    Ok(res)
}

/// `GET /api/status`: everything the dashboard shows.
async fn status(req: Request<AppState>) -> tide::Result {
    let state = req.state();
    let snap = state.status.snapshot();
    let recordings = state.recordings.clone();
    let dir = state.config.storage.dir.clone();
    let (segments, disk) =
        smol::unblock(move || (recordings.list(), crate::recordings::disk_space(&dir))).await;
    let current = state.recordings.current();
    let source = &state.config.source;
    let user = crate::access::identity(&req);
    let body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "user": user,
        "uptime": state.status.started_at().elapsed().as_secs(),
        "mode": state.mode.current(),
        "source": {
            "kind": source.kind_name(),
            "state": snap.state,
            "pid": snap.pid,
            "wanted": state.bus.demand().is_wanted(),
            "restarts": snap.restarts,
            "frames": snap.frames,
            "fps": snap.fps,
            "width": source.width,
            "height": source.height,
            "framerate": source.framerate,
            "last_frame_age_ms": snap.last_frame_age_ms,
            "last_error": snap.last_error,
        },
        "viewers": state.viewers.load(Ordering::Relaxed),
        "recording": {
            "active": current.is_some(),
            "segment": current.map(|c| c.stem),
        },
        "disk": {
            "free_bytes": disk.map(|(free, _)| free),
            "total_bytes": disk.map(|(_, total)| total),
            "recordings_bytes": segments.iter().map(|s| s.bytes).sum::<u64>(),
            "segments": segments.len(),
        },
    });
    json_response(StatusCode::Ok, &body)
}

/// `GET /metrics`: Prometheus text format. Rendered off the executor: it reads the disk's
/// free space, which a hung filesystem could make slow.
async fn metrics_text(req: Request<AppState>) -> tide::Result {
    let exporter = req.state().exporter.clone();
    let text = smol::unblock(move || exporter.render()).await;
    let mut res = Response::new(StatusCode::Ok);
    res.set_body(text);
    res.insert_header("Content-Type", crate::metrics::CONTENT_TYPE);
    res.insert_header("Cache-Control", "no-store");
    Ok(res)
}

/// Counts every request tide answers in `croissant_http_requests_total`.
struct CountRequests {
    /// Exact paths that are their own route label.
    known: Arc<Vec<String>>,
}

#[tide::utils::async_trait]
impl tide::Middleware<AppState> for CountRequests {
    async fn handle(&self, req: Request<AppState>, next: tide::Next<'_, AppState>) -> tide::Result {
        let route = route_label(req.url().path(), &self.known);
        let metrics = req.state().metrics.clone();
        let res = next.run(req).await;
        metrics.http_request(route, u16::from(res.status()));
        Ok(res)
    }
}

/// The paths that label themselves: the core's and every sink's.
fn known_paths(config: &Config) -> Vec<String> {
    let mut known: Vec<String> = [
        "/",
        "/stream",
        "/recordings",
        "/health",
        "/api/status",
        "/api/replays",
        "/metrics",
        "/snapshot.jpg",
        "/settings",
        "/login",
        "/logout",
    ]
    .map(String::from)
    .to_vec();
    for entry in &config.sinks {
        for resource in entry.config.resources() {
            if let crate::sinks::Resource::HttpPath(path) = resource {
                known.push(path);
            }
        }
    }
    known
}

/// The route a path belongs to, for metrics: a bounded set of labels whatever clients ask.
fn route_label<'k>(path: &str, known: &'k [String]) -> &'k str {
    if let Some(hit) = known.iter().find(|k| *k == path) {
        return hit;
    }
    for (prefix, label) in [
        ("/recordings/", "/recordings/:name"),
        ("/thumbnails/", "/thumbnails/:name"),
        ("/assets/", "/assets/:file"),
    ] {
        if path.starts_with(prefix) {
            return label;
        }
    }
    "other"
}

/// `GET /snapshot.jpg`: the newest frame, at most one frame interval old. With the camera
/// off (on-demand, nobody watching) it starts it, answers with its first frame, and lets it
/// stop again after the grace period.
async fn snapshot(req: Request<AppState>) -> tide::Result {
    let state = req.state();
    let interval = Duration::from_secs_f64(1.0 / f64::from(state.config.source.framerate.max(1)));
    let fresh = state
        .bus
        .latest()
        .filter(|f| f.at.elapsed().is_ok_and(|age| age <= interval));
    let frame = match fresh {
        Some(frame) => Some(frame),
        None => {
            let subscription = state.bus.subscribe(crate::bus::Policy::Latest);
            let wait = Duration::from_secs(state.config.server.snapshot_timeout_seconds);
            future::or(async { Some(subscription.recv().await) }, async {
                smol::Timer::after(wait).await;
                None
            })
            .await
        }
    };
    let Some(frame) = frame else {
        let error = format!(
            "no frame from the camera within {} s; see /api/status for its state",
            state.config.server.snapshot_timeout_seconds
        );
        return json_response(StatusCode::ServiceUnavailable, &json!({ "error": error }));
    };
    let mut res = Response::new(StatusCode::Ok);
    res.set_body(Body::from_bytes(frame.jpeg.to_vec()));
    res.insert_header("Content-Type", "image/jpeg");
    res.insert_header("Cache-Control", "no-store");
    Ok(res)
}

async fn get_settings(req: Request<AppState>) -> tide::Result {
    json_response(StatusCode::Ok, &json!({ "mode": req.state().mode.current() }))
}

/// `POST /settings` with `{"mode": "..."}`, answering exactly as the original server did.
async fn post_settings(mut req: Request<AppState>) -> tide::Result {
    let body = match small_body(&mut req).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return json_response(StatusCode::PayloadTooLarge, &json!({ "error": "Body too large" }));
        }
        Err(BodyError::TooSlow) => {
            let mut res = json_response(StatusCode::RequestTimeout, &json!({ "error": "Body too slow" }))?;
            res.insert_header("Connection", "close");
            return Ok(res);
        }
        Err(BodyError::Broken) => {
            return json_response(StatusCode::BadRequest, &json!({ "error": "Invalid JSON" }));
        }
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return json_response(StatusCode::BadRequest, &json!({ "error": "Invalid JSON" }));
    };
    let Some(mode) = value.get("mode").and_then(|m| m.as_str()).and_then(Mode::parse) else {
        return json_response(StatusCode::BadRequest, &json!({ "error": "Invalid mode" }));
    };
    let switch = req.state().mode.clone();
    if let Err(error) = switch.set(mode).await {
        warn!(%error, "cannot save the mode");
        return json_response(
            StatusCode::InternalServerError,
            &json!({ "error": format!("cannot save the mode: {error}") }),
        );
    }
    json_response(StatusCode::Ok, &json!({ "status": "updated", "mode": mode }))
}

/// Bodies the daemon accepts (a mode switch, a login) are a few bytes.
const MAX_BODY: usize = 4096;

/// Why [`small_body`] gave up.
pub enum BodyError {
    /// More than 4 KB.
    TooLarge,
    /// Not complete within `[server] header_timeout_seconds`.
    TooSlow,
    /// Malformed framing (e.g. bad chunked encoding).
    Broken,
}

/// Reads a request body of at most 4 KB. Such bodies arrive at once, so the
/// head's timeout applies: a client dribbling one cannot hold the connection.
pub async fn small_body(req: &mut Request<AppState>) -> Result<Vec<u8>, BodyError> {
    let limit = Duration::from_secs(req.state().config.server.header_timeout_seconds);
    let mut body = Vec::new();
    let mut reader = futures_lite::AsyncReadExt::take(req.take_body(), MAX_BODY as u64 + 1);
    let read = async { Some(futures_lite::AsyncReadExt::read_to_end(&mut reader, &mut body).await) };
    let timeout = async {
        smol::Timer::after(limit).await;
        None
    };
    match future::or(read, timeout).await {
        None => Err(BodyError::TooSlow),
        // The connection's own read deadline (see `net::ReadDeadline`) may fire first.
        Some(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => Err(BodyError::TooSlow),
        Some(Err(_)) => Err(BodyError::Broken),
        Some(Ok(_)) if body.len() > MAX_BODY => Err(BodyError::TooLarge),
        Some(Ok(_)) => Ok(body),
    }
}

/// CORS preflight for `POST /settings` from another origin (a JSON body is not a "simple"
/// request).
async fn preflight(_req: Request<AppState>) -> tide::Result {
    let mut res = Response::new(StatusCode::NoContent);
    res.insert_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    res.insert_header("Access-Control-Allow-Headers", "Content-Type");
    res.insert_header("Access-Control-Max-Age", "600");
    Ok(res)
}

/// A JSON response with `status`.
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> tide::Result {
    let mut res = Response::new(status);
    res.set_body(Body::from_json(body)?);
    res.insert_header("Cache-Control", "no-store");
    Ok(res)
}

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

/// Accepts connections until `shutdown` fires, then waits (briefly) for WebSocket
/// connections to finish their closing handshake.
pub async fn serve(listener: TcpListener, routes: Routes, shutdown: Signal) {
    let routes = Arc::new(routes);
    loop {
        match shutdown::unless(&shutdown, listener.accept()).await {
            None => break,
            Some(Ok((stream, peer))) => {
                let routes = routes.clone();
                crate::runtime::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    // MJPEG clients stream through tide: bound what a slow one has queued in
                    // the kernel too, so it skips frames instead of lagging seconds behind.
                    let _ = crate::net::limit_unsent(&stream, 64 * 1024);
                    handle(stream, peer, &routes).await;
                })
                .detach();
            }
            Some(Err(error)) => {
                // Typically out of file descriptors: wait instead of spinning.
                warn!(%error, "accept failed");
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
    info!("stopped accepting connections");
    let deadline = Instant::now() + Duration::from_secs(2);
    while routes.upgraded.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        smol::Timer::after(Duration::from_millis(20)).await;
    }
}

/// What the peeked request head asks for.
enum Head {
    /// An upgrade on a sink's endpoint (the path, for metrics, and what access control
    /// needs from the request head).
    WebSocket(WsHandler, String, UpgradeHeads),
    /// A request target with `..` (raw or percent-encoded): answered 400 before anything
    /// else sees it, rather than normalized into some other page.
    Reject,
    Http,
    Closed,
}

async fn handle(stream: TcpStream, peer: SocketAddr, routes: &Routes) {
    let head = future::or(peek_head(&stream, routes), async {
        smol::Timer::after(routes.head_timeout).await;
        Head::Closed
    })
    .await;
    match head {
        Head::Closed => {}
        Head::Reject => {
            routes.metrics.http_request("other", 400);
            refuse(stream, "400 Bad Request", "Invalid path", "").await;
        }
        Head::WebSocket(handler, path, heads) => {
            if let Err((status, error, extra)) = routes.guard.upgrade(&heads).await {
                routes.metrics.http_request(
                    &path,
                    status.split(' ').next().and_then(|c| c.parse().ok()).unwrap_or(0),
                );
                debug!(%peer, %error, "WebSocket upgrade refused");
                refuse(stream, status, error, extra).await;
                return;
            }
            let config = viewer_ws_config();
            let stream = crate::turns::TurnTaking::new(stream);
            match async_tungstenite::accept_async_with_config(stream, Some(config)).await {
                Ok(ws) => {
                    routes.metrics.http_request(&path, 101);
                    routes.upgraded.fetch_add(1, Ordering::SeqCst);
                    handler(ws, peer).await;
                    routes.upgraded.fetch_sub(1, Ordering::SeqCst);
                }
                Err(error) => debug!(%peer, %error, "WebSocket handshake failed"),
            }
        }
        Head::Http => {
            let app = routes.app.clone();
            let stream = crate::net::ReadDeadline::new(stream, routes.head_timeout);
            if let Err(error) = async_h1::accept(stream, |req| {
                let app = app.clone();
                async move { app.respond(req).await }
            })
            .await
            {
                debug!(%peer, %error, "HTTP connection ended with an error");
            }
        }
    }
}

/// Answers a connection with a short JSON error and closes it.
async fn refuse(mut stream: TcpStream, status: &str, error: &str, extra_headers: &str) {
    use futures_lite::AsyncWriteExt;
    let body = json!({ "error": error }).to_string();
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra_headers}Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.close().await;
}

/// Peeks until a whole request head is buffered (or it is clearly not a WebSocket upgrade)
/// and decides who serves the connection.
async fn peek_head(stream: &TcpStream, routes: &Routes) -> Head {
    let mut buf = vec![0u8; MAX_PEEK];
    let started = Instant::now();
    loop {
        let n = match stream.peek(&mut buf).await {
            Ok(0) | Err(_) => return Head::Closed,
            Ok(n) => n,
        };
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..n]) {
            Ok(httparse::Status::Complete(_)) => return route(&req, routes),
            Ok(httparse::Status::Partial) if n < buf.len() => {
                // The head arrived in pieces; peek returns at once while data is pending,
                // so wait a little before looking again.
                let pause = if started.elapsed() < Duration::from_millis(100) {
                    2
                } else {
                    20
                };
                smol::Timer::after(Duration::from_millis(pause)).await;
            }
            // Too large or malformed for us: async-h1 answers it properly.
            _ => return Head::Http,
        }
    }
}

fn route(req: &httparse::Request<'_, '_>, routes: &Routes) -> Head {
    let path = req.path.unwrap_or("").split('?').next().unwrap_or("");
    if has_dot_segments(path) {
        return Head::Reject;
    }
    let upgrade = req.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("upgrade")
            && String::from_utf8_lossy(h.value)
                .trim()
                .eq_ignore_ascii_case("websocket")
    });
    match routes.websockets.get(path) {
        Some(handler) if upgrade && req.method == Some("GET") => {
            let header = |name: &str| {
                req.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .map(str::to_owned)
            };
            let heads = UpgradeHeads {
                cookie: header("cookie"),
                authorization: header("authorization"),
                origin: header("origin"),
                host: header("host"),
            };
            Head::WebSocket(handler.clone(), path.to_owned(), heads)
        }
        _ => Head::Http,
    }
}

/// Whether a raw request path contains a `..` segment, literally or percent-encoded.
fn has_dot_segments(path: &str) -> bool {
    let lower = path
        .to_ascii_lowercase()
        .replace("%2e", ".")
        .replace("%2f", "/")
        .replace("%5c", "/");
    lower.split(['/', '\\']).any(|segment| segment == "..")
}

/// Viewers send a few bytes ("start", "stop"); keep their buffers small so a thousand of
/// them cost little, and refuse anything large.
fn viewer_ws_config() -> WebSocketConfig {
    let mut config = WebSocketConfig::default();
    config.read_buffer_size = 4096;
    config.write_buffer_size = 0;
    config.max_message_size = Some(4096);
    config.max_frame_size = Some(4096);
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_found_in_any_spelling() {
        for bad in [
            "/recordings/../x",
            "/a/%2e%2e/b",
            "/%2E%2e",
            "/x/..%2fstate.ron",
            "/..",
            "/a\\..\\b",
        ] {
            assert!(has_dot_segments(bad), "{bad}");
        }
        for good in [
            "/",
            "/recordings/20261124-134400.mp4",
            "/a..b",
            "/.well-known",
            "/x/.../y",
        ] {
            assert!(!has_dot_segments(good), "{good}");
        }
    }
}
