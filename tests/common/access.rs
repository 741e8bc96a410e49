//! Helpers for the access-control tests: a config with users, requests with credentials,
//! the login form, WebSocket upgrades with extra headers.
#![allow(dead_code)]

use std::net::TcpStream;
use std::time::Duration;

use super::{Viewer, hash, http};

pub fn config_with_users() -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"
[storage]
dir = "{{dir}}"
[source]
kind = "command"
command = ["{{fakecam}}", "--fps", "15", "--width", "320", "--height", "240"]
stop_grace_ms = 300
[auth.users.ada]
role = "admin"
password_hash = "{}"
[auth.users.vic]
role = "viewer"
password_hash = "{}"
[sinks.live]
type = "websocket"
[sinks.mjpeg]
type = "http-mjpeg"
"#,
        hash("ada-secret"),
        hash("vic-secret")
    )
}

/// One request on its own connection; `headers` are extra lines, each ending in `\r\n`.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let text = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, headers, body) = http(port, &text);
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// `Authorization: Basic` for `user:password`.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Authorization: Basic {encoded}\r\n")
}

/// Logs in through the form; the session cookie (`name=value`).
pub fn login(port: u16, user: &str, password: &str, next: &str) -> (u16, Option<String>, String) {
    let body = format!("user={user}&password={password}&next={next}");
    let (status, headers, _) = request(
        port,
        "POST",
        "/login",
        &format!("Content-Type: application/x-www-form-urlencoded\r\nOrigin: http://127.0.0.1:{port}\r\n"),
        &body,
    );
    let cookie = header(&headers, "set-cookie").map(str::to_owned);
    let location = header(&headers, "location").unwrap_or_default().to_owned();
    (status, cookie, location)
}

pub fn ws_with(port: u16, extra: &[(&str, &str)]) -> Result<Viewer, tungstenite::Error> {
    use tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://127.0.0.1:{port}/")
        .into_client_request()
        .expect("request");
    for (name, value) in extra {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            value.parse().expect("value"),
        );
    }
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let (ws, _) = tungstenite::client(request, stream).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => e,
        tungstenite::HandshakeError::Interrupted(_) => tungstenite::Error::ConnectionClosed,
    })?;
    Ok(Viewer { ws })
}
