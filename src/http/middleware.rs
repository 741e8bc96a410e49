//! What every request passes through before its route: the request counter, the security
//! headers, and the sinks' `GET` endpoints.

use std::net::SocketAddr;
use std::sync::Arc;

use tide::{Request, Response, StatusCode};

use super::AppState;
use crate::sinks::{Client, Endpoint, Endpoints};

/// Answers the sinks' `GET` endpoints. WebSocket endpoints are answered by the engine
/// before tide sees the request; a plain request there goes on to the routes, as any path
/// without an upgrade.
pub(super) struct SinkEndpoints;

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
        let body_socket = req.ext::<crate::sinks::BodySocket>().cloned();
        Ok(answer(Client {
            peer,
            session,
            body_socket,
        }))
    }
}

/// Headers every response carries: CORS for reads, what browsers may do with our pages
/// (no framing, no sniffing, no referrers to other sites, scripts and connections only to
/// ourselves), and, behind a login, that shared caches must not keep anything.
pub(super) struct SecurityHeaders {
    /// `[server] cors_origin`.
    pub(super) cors: String,
    /// The `Content-Security-Policy` (see [`content_security_policy`]).
    pub(super) csp: String,
    /// `[auth]` is on.
    pub(super) private: bool,
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
pub(super) fn content_security_policy(ws_url: &str) -> String {
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
pub(super) struct CountRequests {
    /// Names each request's route.
    pub(super) labels: RouteLabels,
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
    pub(super) fn new(endpoints: Arc<Endpoints>) -> Self {
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
