//! The HTTP and WebSocket front door on one port.
//!
//! Layers, from the socket up: [`server`] accepts connections within the caps
//! [`admission`] keeps; [`engine`] runs hyper on each (HTTP/1.0 and 1.1, deadlines, body
//! limits), answers WebSocket upgrades on the sinks' paths, and hands every other request
//! to tide; the routes and handlers below know nothing of sockets. [`body`] streams
//! responses with bounded memory and [`socket`] drops clients that stop reading.

pub mod access;
pub mod admission;
pub mod body;
pub mod engine;
mod replays;
pub mod server;
pub mod socket;
mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_lite::future;
use serde_json::json;
use tide::{Body, Request, Response, StatusCode};
use tracing::warn;

use crate::auth::Auth;
use crate::bus::Bus;
use crate::config::Config;
use crate::http::access::Guard;
use crate::metrics::{Exporter, Metrics};
use crate::mode::Mode;
use crate::recordings::Recordings;
use crate::shutdown::Signal;
use crate::sinks::switch::ModeSwitch;
use crate::sinks::{Client, Endpoint, Endpoints};
use crate::source;

pub use server::{bind, serve};

/// A source that should run but sent nothing for this long makes `/health` answer 503
/// (so does an enabled sink that cannot do its work: `degraded`).
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
    /// The connection caps, which also count the files downloads hold open.
    pub admission: Arc<admission::Admission>,
    /// The paths the sinks answer (a reload changes them).
    pub endpoints: Arc<Endpoints>,
}

/// The core's routes, and the sinks' endpoints mounted on them.
pub struct Routes {
    app: tide::Server<AppState>,
    endpoints: Arc<Endpoints>,
    metrics: Arc<Metrics>,
    /// Checks WebSocket upgrades, which bypass tide's middleware.
    guard: Guard,
    config: Arc<Config>,
}

impl Routes {
    /// The core routes (pages, assets, `/health`, the API), then whatever the sinks answer.
    pub fn new(state: AppState) -> Routes {
        let cors = state.config.server.cors_origin.clone();
        let metrics = state.metrics.clone();
        let config = state.config.clone();
        let endpoints = state.endpoints.clone();
        let counter = CountRequests {
            labels: RouteLabels::new(endpoints.clone()),
        };
        let guard = Guard {
            auth: state.auth.clone(),
            cors_origin: state.config.server.cors_origin.clone(),
            allowed_hosts: state.config.server.allowed_hosts.clone(),
        };
        let headers = SecurityHeaders {
            cors,
            csp: content_security_policy(&state.config.viewer.ws_url),
            private: state.auth.is_some(),
        };
        let mut app = tide::with_state(state);
        app.with(counter);
        // Before the guard, so its refusals and redirects carry the headers too.
        app.with(headers);
        app.with(guard.clone());
        // Behind the guard like any route; looked up per request, since a reload may change
        // the sinks' paths.
        app.with(SinkEndpoints);
        crate::http::web::routes(&mut app);
        app.at("/health").get(health);
        app.at("/api/status").get(status);
        app.at("/metrics").get(metrics_text);
        app.at("/snapshot.jpg").get(snapshot);
        app.at("/settings")
            .get(get_settings)
            .post(post_settings)
            .options(preflight);
        crate::http::replays::routes(&mut app);
        app.at("/login")
            .get(crate::http::web::login_page)
            .post(crate::http::access::login);
        app.at("/logout").post(crate::http::access::logout);
        Routes {
            app,
            endpoints,
            metrics,
            guard,
            config,
        }
    }

    /// Everything mounted, as the engine serves it.
    pub fn into_front(self, shutdown: Signal) -> engine::Front {
        let server = &self.config.server;
        engine::Front {
            app: self.app,
            labels: RouteLabels::new(self.endpoints.clone()),
            endpoints: self.endpoints,
            guard: self.guard,
            metrics: self.metrics,
            head_timeout: Duration::from_secs(server.header_timeout_seconds),
            body_timeout: Duration::from_secs(server.body_timeout_seconds),
            send_timeout: Duration::from_secs(server.send_timeout_seconds),
            shutdown,
        }
    }
}

/// Answers the sinks' `GET` endpoints. WebSocket endpoints are answered by the engine
/// before tide sees the request; a plain request there goes on to the routes, as any path
/// without an upgrade.
struct SinkEndpoints;

#[tide::utils::async_trait]
impl tide::Middleware<AppState> for SinkEndpoints {
    async fn handle(&self, req: Request<AppState>, next: tide::Next<'_, AppState>) -> tide::Result {
        let Some(Endpoint::Get(answer)) = req.state().endpoints.get(req.url().path()) else {
            return Ok(next.run(req).await);
        };
        if !matches!(req.method(), tide::http::Method::Get | tide::http::Method::Head) {
            return Ok(Response::new(StatusCode::MethodNotAllowed));
        }
        let peer = req
            .peer_addr()
            .and_then(|peer| peer.parse().ok())
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        // The login session the client came with, if any: its stream ends with it.
        let session = req.ext::<crate::shutdown::Ending>().cloned();
        Ok(answer(Client { peer, session }))
    }
}

async fn health(req: Request<AppState>) -> tide::Result {
    let state = req.state();
    let snap = state.status.snapshot();
    let wanted = state.bus.demand().is_wanted();
    let starved = wanted && snap.starved_ms.is_some_and(|ms| ms > HEALTH_STARVED_MS);
    // Public: state and counters in the daemon's own words, never what a program printed.
    let problems: Vec<_> = state
        .metrics
        .problems()
        .into_iter()
        .map(|(sink, problem)| json!({ "sink": sink, "reason": problem.reason }))
        .collect();
    let health = match (starved, problems.is_empty()) {
        (true, _) => "stalled",
        (false, false) => "degraded",
        (false, true) => "ok",
    };
    let body = json!({
        "status": health,
        "problems": problems,
        "uptime": state.status.started_at().elapsed().as_secs(),
        "mode": state.mode.current(),
        "recording": state.recordings.current().map(|c| c.stem),
        "source": {
            "kind": state.status.config().kind_name(),
            "state": snap.state,
            "pid": snap.pid,
            "wanted": wanted,
            "restarts": snap.restarts,
            "frames": snap.frames,
            // While it waits to retry: why, in the daemon's words (the program's own
            // output may hold addresses or credentials; /api/status shows it).
            "reason": (snap.state == crate::source::State::Backoff).then_some(snap.last_reason).flatten(),
        },
        "last_frame_age_ms": snap.last_frame_age_ms,
        "fps": snap.fps,
        "subscribers": state.bus.subscribers(),
        "viewers": state.viewers.load(Ordering::Relaxed),
    });
    let mut res = Response::new(if health == "ok" {
        StatusCode::Ok
    } else {
        StatusCode::ServiceUnavailable
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
    let source = state.status.config();
    let sized_by_config = !matches!(source.kind, crate::config::SourceKind::Command);
    let user = crate::http::access::identity(&req);
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
            // A command's own arguments decide its picture; the config's size is not it.
            "width": sized_by_config.then_some(source.width),
            "height": sized_by_config.then_some(source.height),
            "framerate": source.nominal_framerate(),
            "last_frame_age_ms": snap.last_frame_age_ms,
            "last_error": snap.last_error,
            "last_reason": snap.last_reason,
        },
        "viewers": state.viewers.load(Ordering::Relaxed),
        "problems": state
            .metrics
            .problems()
            .into_iter()
            .map(|(sink, problem)| json!({ "sink": sink, "reason": problem.reason, "detail": problem.detail }))
            .collect::<Vec<_>>(),
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

/// Headers every response carries: CORS for reads, what browsers may do with our pages
/// (no framing, no sniffing, no referrers to other sites, scripts and connections only to
/// ourselves), and, behind a login, that shared caches must not keep anything.
struct SecurityHeaders {
    /// `[server] cors_origin`.
    cors: String,
    csp: String,
    /// `[auth]` is on.
    private: bool,
}

#[tide::utils::async_trait]
impl tide::Middleware<AppState> for SecurityHeaders {
    async fn handle(&self, req: Request<AppState>, next: tide::Next<'_, AppState>) -> tide::Result {
        let mut res = next.run(req).await;
        if !self.cors.is_empty() {
            res.insert_header("Access-Control-Allow-Origin", self.cors.as_str());
        }
        res.insert_header("Content-Security-Policy", self.csp.as_str());
        res.insert_header("X-Content-Type-Options", "nosniff");
        res.insert_header("X-Frame-Options", "DENY");
        res.insert_header("Referrer-Policy", "same-origin");
        if self.private {
            let cache = res.header("Cache-Control").map(|v| v.as_str().to_owned());
            match cache {
                Some(cache) if cache.contains("no-store") || cache.contains("private") => {}
                Some(cache) => res.insert_header("Cache-Control", format!("private, {cache}")),
                None => res.insert_header("Cache-Control", "private"),
            }
        }
        Ok(res)
    }
}

/// The pages load scripts, styles and images only from the daemon, draw frames from
/// `blob:` URLs, and connect only to the daemon (and to `[viewer] ws_url`'s host, if set).
fn content_security_policy(ws_url: &str) -> String {
    let extra = ws_url
        .split_once("://")
        .map(|(scheme, rest)| format!(" {scheme}://{}", rest.split(['/', '?', '#']).next().unwrap_or("")))
        .unwrap_or_default();
    format!(
        "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; \
         connect-src 'self'{extra}; script-src 'self'; style-src 'self'; object-src 'none'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// Counts every request tide answers in `croissant_http_requests_total`.
struct CountRequests {
    /// Exact paths that are their own route label.
    labels: RouteLabels,
}

#[tide::utils::async_trait]
impl tide::Middleware<AppState> for CountRequests {
    async fn handle(&self, req: Request<AppState>, next: tide::Next<'_, AppState>) -> tide::Result {
        let route = self.labels.label(req.url().path());
        let metrics = req.state().metrics.clone();
        let res = next.run(req).await;
        metrics.http_request(&route, u16::from(res.status()));
        Ok(res)
    }
}

/// The paths that label their own requests in the metrics.
const CORE_PATHS: [&str; 11] = [
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
];

/// The route a path belongs to, for metrics: a bounded set of labels whatever clients ask
/// (the core's paths, the sinks', a few patterns, and `other`).
#[derive(Clone)]
pub struct RouteLabels {
    endpoints: Arc<Endpoints>,
}

impl RouteLabels {
    fn new(endpoints: Arc<Endpoints>) -> Self {
        RouteLabels { endpoints }
    }

    /// The label of a request for `path`.
    pub fn label(&self, path: &str) -> String {
        if CORE_PATHS.contains(&path) || self.endpoints.get(path).is_some() {
            return path.to_owned();
        }
        for (prefix, label) in [
            ("/recordings/", "/recordings/:name"),
            ("/thumbnails/", "/thumbnails/:name"),
            ("/assets/", "/assets/:file"),
        ] {
            if path.starts_with(prefix) {
                return label.to_owned();
            }
        }
        "other".to_owned()
    }
}

/// `GET /snapshot.jpg`: the newest frame, at most one frame interval old. With the camera
/// off (on-demand, nobody watching) it starts it, answers with its first frame, and lets it
/// stop again after the grace period.
async fn snapshot(req: Request<AppState>) -> tide::Result {
    let state = req.state();
    let interval = Duration::from_secs_f64(1.0 / f64::from(state.status.config().framerate.max(1)));
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
    res.set_body(body::SharedBody::new(frame.jpeg).into_body());
    res.insert_header("Content-Type", "image/jpeg");
    res.insert_header("Cache-Control", "no-store");
    Ok(res)
}

async fn get_settings(req: Request<AppState>) -> tide::Result {
    json_response(StatusCode::Ok, &json!({ "mode": req.state().mode.current() }))
}

/// `POST /settings` with `{"mode": "..."}`, answering exactly as the original server did.
async fn post_settings(mut req: Request<AppState>) -> tide::Result {
    let body = small_body(&mut req).await;
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

/// A request body: the engine has already read it whole (at most
/// [`engine::MAX_BODY`] bytes, within the body deadline), so this does not wait.
pub async fn small_body(req: &mut Request<AppState>) -> Vec<u8> {
    req.body_bytes().await.unwrap_or_default()
}

/// CORS preflight for `POST /settings` from another origin (a JSON body is not a "simple"
/// request).
/// Only the configured `cors_origin` (a single origin) may post from its pages; `*`
/// opens reads, never writes, so the browser is told nothing that would let it post.
async fn preflight(req: Request<AppState>) -> tide::Result {
    let mut res = Response::new(StatusCode::NoContent);
    let cors = &req.state().config.server.cors_origin;
    if !cors.is_empty() && cors != "*" {
        res.insert_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        res.insert_header("Access-Control-Allow-Headers", "Content-Type");
        res.insert_header("Access-Control-Max-Age", "600");
    }
    Ok(res)
}

/// A JSON response with `status`.
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> tide::Result {
    let mut res = Response::new(status);
    res.set_body(Body::from_json(body)?);
    res.insert_header("Cache-Control", "no-store");
    Ok(res)
}
