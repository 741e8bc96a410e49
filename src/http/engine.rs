//! The protocol engine: hyper speaks HTTP/1.0 and 1.1 on each connection (keep-alive,
//! pipelining, header limits, the head deadline), and this module sits between it and the
//! routes. It refuses what no route should see (`..` in a path, bodies too large or too
//! slow), answers WebSocket upgrades on the sinks' paths, and converts everything else to
//! tide's types and back, so handlers know nothing of sockets.
//!
//! Request bodies are read here, whole, before a handler runs: the daemon only takes small
//! ones (a mode switch, a login), so at most [`MAX_BODY`] bytes within
//! `[server] body_timeout_seconds` in all. A body that breaks either limit is answered and
//! its connection closed; nothing more of it is read.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::handshake::derive_accept_key;
use bytes::{Bytes, BytesMut};
use futures_lite::future;
use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::{Method, Request, Response, StatusCode, Version};
use serde_json::json;
use smol::net::TcpStream;
use smol_hyper::rt::{FuturesIo, SmolTimer};
use tide::http as http_types;
use tracing::{debug, warn};

use super::admission::ConnectionPermit;
use super::body::Outgoing;
use super::socket::Socket;
use super::{AppState, RouteLabels};
use crate::http::access::{Guard, UpgradeHeads};
use crate::metrics::Metrics;
use crate::shutdown::Signal;
use crate::sinks::{BodySocket, Client, Endpoint, Endpoints, Handover, Upgraded, WsHandler};

/// Bodies the daemon accepts (a mode switch, a login) are a few bytes.
pub const MAX_BODY: usize = 4096;
/// The most a request head may take, and the most hyper buffers for one connection's
/// writes before it waits for the socket (hyper's smallest allowed buffer is 8 KB).
const MAX_BUFFER: usize = 16 * 1024;
/// How long open connections get to finish when the daemon stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Unsent bytes the kernel may hold for an HTTP client: an MJPEG client that reads slowly
/// skips frames instead of falling seconds behind.
const UNSENT_LIMIT: u32 = 64 * 1024;

/// What every connection shares: the routes, the limits, the shutdown signal.
pub struct Front {
    /// tide's routes.
    pub app: tide::Server<AppState>,
    /// The sinks' endpoints by path; the WebSocket ones are answered here.
    pub endpoints: Arc<Endpoints>,
    /// Checks WebSocket upgrades, which tide never sees.
    pub guard: Guard,
    /// Counts what the engine answers itself.
    pub metrics: Arc<Metrics>,
    /// Names routes in the metrics.
    pub labels: RouteLabels,
    /// `[server] header_timeout_seconds`.
    pub head_timeout: Duration,
    /// `[server] body_timeout_seconds`.
    pub body_timeout: Duration,
    /// `[server] send_timeout_seconds`.
    pub send_timeout: Duration,
    /// Fires when the daemon stops.
    pub shutdown: Signal,
}

/// Serves one accepted connection until it closes, is upgraded, or the daemon stops.
pub async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    front: Arc<Front>,
    permit: Arc<ConnectionPermit>,
) {
    let _ = stream.set_nodelay(true);
    if let Err(error) = crate::net::limit_unsent(&stream, UNSENT_LIMIT) {
        debug!(%peer, %error, "cannot limit the socket's unsent bytes");
    }
    let handover = Arc::new(Handover::default());
    let connection = (stream.clone(), handover.clone());
    let io = FuturesIo::new(Socket::new(stream, front.send_timeout, handover));
    let shutdown = front.shutdown.clone();
    let head_timeout = front.head_timeout;
    let service = hyper::service::service_fn(move |req| {
        let front = front.clone();
        let permit = permit.clone();
        let connection = connection.clone();
        async move { Ok::<_, Infallible>(front.respond(req, peer, permit, connection).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(SmolTimer::new())
        .header_read_timeout(head_timeout)
        .max_buf_size(MAX_BUFFER)
        .writev(true)
        .keep_alive(true);
    let connection = builder.serve_connection(io, service).with_upgrades();
    futures_lite::pin!(connection);
    let finished = crate::shutdown::unless(&shutdown, connection.as_mut()).await;
    let result = match finished {
        Some(result) => result,
        None => {
            // Idle connections close now; a response being written (an MJPEG stream
            // ends itself on shutdown) gets a moment to finish.
            connection.as_mut().graceful_shutdown();
            let grace = async {
                smol::Timer::after(SHUTDOWN_GRACE).await;
                Ok(())
            };
            future::or(connection, grace).await
        }
    };
    if let Err(error) = result {
        debug!(%peer, %error, "HTTP connection ended with an error");
    }
}

impl Front {
    async fn respond(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        permit: Arc<ConnectionPermit>,
        (stream, handover): (TcpStream, Arc<Handover>),
    ) -> Response<Outgoing> {
        // RFC 9112 §3.2.2: a target in absolute form names the host; the Host header is
        // ignored, so every check below looks at the one the client asked for.
        if let Some(authority) = req.uri().authority().map(|a| a.as_str().to_owned())
            && let Ok(host) = HeaderValue::from_str(&authority)
        {
            req.headers_mut().remove(header::HOST);
            req.headers_mut().insert(header::HOST, host);
        }
        let path = req.uri().path().to_owned();
        let route = self.labels.label(&path);
        if !path.starts_with('/') || has_dot_segments(&path) {
            return self.refuse(&route, StatusCode::BAD_REQUEST, "Invalid path");
        }
        if !host_is_valid(&req) {
            return self.refuse(&route, StatusCode::BAD_REQUEST, "Invalid or missing Host header");
        }
        if wants_websocket(req.headers())
            && let Some(Endpoint::WebSocket(handler)) = self.endpoints.get(&path)
        {
            return self.upgrade(req, &route, handler, peer, permit).await;
        }
        let (parts, body) = req.into_parts();
        let version = parts.version;
        let body = match read_body(body, self.body_timeout).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                return self.refuse(&route, StatusCode::PAYLOAD_TOO_LARGE, "Body too large");
            }
            Err(BodyError::TooSlow) => {
                return self.refuse(&route, StatusCode::REQUEST_TIMEOUT, "Body too slow");
            }
            Err(BodyError::Broken) => {
                return self.refuse(&route, StatusCode::BAD_REQUEST, "Malformed body");
            }
        };
        let mut request = match to_tide(parts, body, peer) {
            Ok(request) => request,
            Err((status, error)) => return self.refuse(&route, status, error),
        };
        // A sink may write the body of its answer itself (an MJPEG stream).
        handover.reset();
        request.ext_mut().insert(BodySocket {
            stream,
            chunked: version != Version::HTTP_10,
            handover,
        });
        match self.app.respond::<_, http_types::Response>(request).await {
            Ok(response) => {
                let mut response = from_tide(response);
                // HTTP/1.0 has no chunks: a body of unknown length (an MJPEG stream) ends
                // with the connection, whatever the client asked. (Marked as an HTTP/1.0
                // response, or hyper would add `keep-alive` to our `close`.)
                if version == Version::HTTP_10 && response.body().size_hint().exact().is_none() {
                    *response.version_mut() = Version::HTTP_10;
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                response
            }
            Err(error) => {
                warn!(%error, "handler failed");
                self.refuse(&route, StatusCode::INTERNAL_SERVER_ERROR, "Internal error")
            }
        }
    }

    /// An answer the engine gives itself: counted, JSON, and the end of the connection (the
    /// request may not have been read to its end).
    fn refuse(&self, route: &str, status: StatusCode, error: &str) -> Response<Outgoing> {
        self.metrics.http_request(route, status.as_u16());
        let mut response = json_error(status, error);
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    }

    /// Answers a WebSocket upgrade: checked like any request, then `101` and the
    /// connection handed to the sink once hyper lets go of it.
    async fn upgrade(
        &self,
        mut req: Request<Incoming>,
        route: &str,
        handler: WsHandler,
        peer: SocketAddr,
        permit: Arc<ConnectionPermit>,
    ) -> Response<Outgoing> {
        let headers = req.headers();
        let text = |name: HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        // RFC 6455 §4.2.1: one key, the base64 of 16 bytes.
        let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
        let key = match (keys.next(), keys.next()) {
            (Some(key), None) if valid_key(key.as_bytes()) => Some(key.as_bytes().to_vec()),
            _ => None,
        };
        let connection_upgrade = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
        let version_13 = headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
        let (Some(key), true, true, true, true) = (
            key,
            connection_upgrade,
            version_13,
            req.method() == Method::GET,
            req.version() == Version::HTTP_11,
        ) else {
            let mut response = self.refuse(route, StatusCode::BAD_REQUEST, "Invalid WebSocket upgrade");
            response
                .headers_mut()
                .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            return response;
        };
        let heads = UpgradeHeads {
            cookie: text(header::COOKIE),
            authorization: text(header::AUTHORIZATION),
            origins: headers
                .get_all(header::ORIGIN)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect(),
            referer: text(header::REFERER),
            host: text(header::HOST),
            forwarded_proto: text(HeaderName::from_static("x-forwarded-proto")),
            client: peer.ip(),
        };
        let session = match self.guard.upgrade(&heads).await {
            Ok(session) => session,
            Err(refusal) => {
                debug!(%peer, error = refusal.error, "WebSocket upgrade refused");
                let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::FORBIDDEN);
                let mut response = self.refuse(route, status, refusal.error);
                for (name, value) in refusal.headers {
                    if let Ok(value) = HeaderValue::from_str(&value) {
                        response.headers_mut().insert(name, value);
                    }
                }
                return response;
            }
        };
        let upgrading = hyper::upgrade::on(&mut req);
        crate::runtime::spawn(async move {
            // The connection stays counted while it is a WebSocket.
            let _permit = permit;
            let upgraded = match upgrading.await {
                Ok(upgraded) => upgraded,
                Err(error) => {
                    debug!(%peer, %error, "WebSocket upgrade did not complete");
                    return;
                }
            };
            let Ok(parts) = upgraded.downcast::<FuturesIo<Socket>>() else {
                // Only ever our own socket type is served; nothing else can come back.
                warn!(%peer, "upgraded connection of an unexpected type");
                return;
            };
            let upgraded = Upgraded {
                stream: parts.io.into_inner().into_stream(),
                // Bytes the client sent right behind its request belong to the WebSocket.
                early: parts.read_buf.to_vec(),
            };
            let client = Client {
                peer,
                session,
                body_socket: None,
            };
            handler(upgraded, client).await;
        })
        .detach();
        self.metrics.http_request(route, 101);
        let mut response = Response::new(Outgoing::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(&key)) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        security_headers(headers);
        response
    }
}

/// RFC 9112 §3.2: an HTTP/1.1 request has exactly one `Host`, and it must be a valid
/// host (and port); HTTP/1.0 may leave it out.
fn host_is_valid(req: &Request<Incoming>) -> bool {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) => req.version() == Version::HTTP_10,
        (Some(host), None) => host
            .as_bytes()
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b)),
        (Some(_), Some(_)) => false,
    }
}

/// Whether a `Sec-WebSocket-Key` is the base64 of 16 bytes.
fn valid_key(key: &[u8]) -> bool {
    use base64ct::Encoding;
    let mut decoded = [0u8; 18];
    base64ct::Base64::decode(key, &mut decoded).is_ok_and(|bytes| bytes.len() == 16)
}

/// Whether a request asks to become a WebSocket.
fn wants_websocket(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|protocol| protocol.trim().eq_ignore_ascii_case("websocket"))
}

/// Why a request body was refused.
enum BodyError {
    /// More than [`MAX_BODY`].
    TooLarge,
    /// Not all there within the body deadline.
    TooSlow,
    /// Malformed framing (bad chunked encoding) or a broken connection.
    Broken,
}

/// Reads a whole request body of at most [`MAX_BODY`] bytes within `deadline`.
async fn read_body(mut body: Incoming, deadline: Duration) -> Result<Bytes, BodyError> {
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    if body.size_hint().lower() > MAX_BODY as u64 {
        return Err(BodyError::TooLarge);
    }
    let read = async {
        let mut collected = BytesMut::new();
        loop {
            let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await;
            match frame {
                None => return Ok(collected.freeze()),
                Some(Err(_)) => return Err(BodyError::Broken),
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        if collected.len() + data.len() > MAX_BODY {
                            return Err(BodyError::TooLarge);
                        }
                        collected.extend_from_slice(data);
                    }
                }
            }
        }
    };
    let late = async {
        smol::Timer::after(deadline).await;
        Err(BodyError::TooSlow)
    };
    future::or(read, late).await
}

/// A request as tide wants it.
fn to_tide(
    parts: hyper::http::request::Parts,
    body: Bytes,
    peer: SocketAddr,
) -> Result<http_types::Request, (StatusCode, &'static str)> {
    // Methods are case-sensitive (RFC 9110 §9.1): `get` is not GET, whatever http-types'
    // lenient parser would make of it.
    let name = parts.method.as_str();
    let method: http_types::Method = name
        .parse()
        .ok()
        .filter(|_| name.bytes().all(|b| b.is_ascii_uppercase()))
        .ok_or((StatusCode::NOT_IMPLEMENTED, "Method not implemented"))?;
    // Only the path and query matter to the routes; the host part is a placeholder (the
    // Host header itself is passed on as sent).
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let url = http_types::Url::parse(&format!("http://croissant{target}"))
        .map_err(|_| (StatusCode::BAD_REQUEST, "Invalid request target"))?;
    let mut request = http_types::Request::new(method, url);
    request.set_version(Some(match parts.version {
        Version::HTTP_10 => http_types::Version::Http1_0,
        _ => http_types::Version::Http1_1,
    }));
    request.set_peer_addr(Some(peer));
    for (name, value) in &parts.headers {
        let name = http_types::headers::HeaderName::from_string(name.as_str().to_owned())
            .map_err(|_| (StatusCode::BAD_REQUEST, "Invalid header name"))?;
        let value = http_types::headers::HeaderValue::from_bytes(ascii_header(value.as_bytes()))
            .map_err(|_| (StatusCode::BAD_REQUEST, "Invalid header value"))?;
        request.append_header(name, value);
    }
    if !body.is_empty() {
        request.set_body(http_types::Body::from_bytes(body.to_vec()));
    }
    Ok(request)
}

/// A header value as http-types can hold it (ASCII only; it panics on anything else):
/// bytes outside ASCII, which HTTP allows but gives no meaning, are percent-encoded.
/// `User-Agent: café` stays readable as `caf%C3%A9`; a `Range` or a cookie we care about is
/// ASCII anyway.
fn ascii_header(value: &[u8]) -> Vec<u8> {
    if value.is_ascii() {
        return value.to_vec();
    }
    let mut out = Vec::with_capacity(value.len() * 3);
    for &byte in value {
        if byte.is_ascii() {
            out.push(byte);
        } else {
            out.extend_from_slice(format!("%{byte:02X}").as_bytes());
        }
    }
    out
}

/// A handler's response as hyper wants it; its body streams through [`Outgoing`].
fn from_tide(mut response: http_types::Response) -> Response<Outgoing> {
    let status = StatusCode::from_u16(response.status().into()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut headers = HeaderMap::new();
    for (name, values) in response.iter() {
        let Ok(name) = HeaderName::from_bytes(name.as_str().as_bytes()) else {
            continue;
        };
        for value in values.iter() {
            if let Ok(value) = HeaderValue::from_str(value.as_str()) {
                headers.append(name.clone(), value);
            }
        }
    }
    let body = response.take_body();
    let mut out = Response::new(Outgoing::new(body));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

/// `{"error": ...}` with `status`.
fn json_error(status: StatusCode, error: &str) -> Response<Outgoing> {
    let mut response = Response::new(Outgoing::text(json!({ "error": error }).to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    security_headers(headers);
    response
}

/// The headers every answer carries (the pages' own, fuller CSP replaces this one).
fn security_headers(headers: &mut hyper::HeaderMap) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
}

/// Whether a raw request path contains a `..` segment, literally or percent-encoded.
/// Such paths are refused rather than normalized into some other page.
fn has_dot_segments(path: &str) -> bool {
    let lower = path
        .to_ascii_lowercase()
        .replace("%2e", ".")
        .replace("%2f", "/")
        .replace("%5c", "/");
    lower.split(['/', '\\']).any(|segment| segment == "..")
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

    #[test]
    fn websocket_keys_must_be_16_bytes_in_base64() {
        assert!(valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        for bad in [
            &b""[..],
            b"abc",
            b"not base64 at all!!!",
            b"dGhlIHNhbXBsZSBub25jZQ",
            b"dGhlIHNhbXBsZQ==",
        ] {
            assert!(!valid_key(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn header_values_beyond_ascii_are_percent_encoded() {
        assert_eq!(ascii_header("café".as_bytes()), b"caf%C3%A9");
        assert_eq!(ascii_header(b"plain"), b"plain");
        assert_eq!(ascii_header(&[0xff, b'a']), b"%FFa");
    }
}
