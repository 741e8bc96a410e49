//! Hostile input on every route: traversal, malformed and oversized heads, smuggling,
//! bad bodies, JSON bombs, WebSocket abuse. Each gets a 4xx or a close, never a panic,
//! and the daemon keeps serving.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// Sends raw bytes and returns whatever comes back before the server closes (or 5 s pass).
fn raw(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    // The server may close before all of it is sent; that is an answer too.
    let _ = stream.write_all(bytes);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

/// The status code of a raw response, or 0 if the connection closed without one.
fn status_of(response: &[u8]) -> u16 {
    String::from_utf8_lossy(response)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn still_serving(daemon: &Daemon) {
    assert_eq!(daemon.get("/health").0, 200, "the daemon stopped answering");
    assert!(alive(daemon.pid()));
}

fn start() -> Daemon {
    Daemon::start(&format!(
        "{}\n[sinks.mjpeg]\ntype = \"http-mjpeg\"\n",
        fakecam_config("\"--fps\", \"10\"", "")
    ))
}

#[test]
fn traversal_is_refused_on_every_file_route() {
    let daemon = start();
    std::fs::write(daemon.dir.path().join("secret.txt"), "TOP-SECRET").expect("secret");
    for route in ["/recordings/", "/thumbnails/", "/assets/", "/"] {
        for attack in [
            "../secret.txt",
            "..%2fsecret.txt",
            "%2e%2e/secret.txt",
            "%2e%2e%2fsecret.txt",
            "%252e%252e%252fsecret.txt",
            "..\\secret.txt",
            "..%5csecret.txt",
            "%2fetc%2fpasswd",
            "/etc/passwd",
            "secret.txt%00.mp4",
            "....//secret.txt",
        ] {
            let path = format!("{route}{attack}");
            let response = raw(
                daemon.port,
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            );
            let status = status_of(&response);
            let text = String::from_utf8_lossy(&response);
            assert!((400..500).contains(&status), "{path}: {status}");
            assert!(
                !text.contains("TOP-SECRET") && !text.contains("root:"),
                "{path} leaked a file"
            );
        }
    }
    still_serving(&daemon);
}

#[test]
fn malformed_and_oversized_request_heads_get_4xx_or_a_close() {
    let daemon = start();
    let huge_header = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let many_headers = format!(
        "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..500).map(|i| format!("X-{i}: y\r\n")).collect::<String>()
    );
    let long_path = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100_000));
    let attacks: Vec<Vec<u8>> = vec![
        huge_header.into_bytes(),
        many_headers.into_bytes(),
        long_path.into_bytes(),
        b"GARBAGE\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n".to_vec(),
        b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0xFF; 10_000],
        // Smuggling: both framings, conflicting lengths, nonsense lengths.
        b"POST /settings HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /secret HTTP/1.1\r\n\r\n".to_vec(),
        b"POST /settings HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd".to_vec(),
        b"POST /settings HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
        b"POST /settings HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_vec(),
        b"POST /settings HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFF\r\n".to_vec(),
        // A WebSocket upgrade with a broken key and version.
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 99\r\n\r\n".to_vec(),
    ];
    for attack in &attacks {
        let response = raw(daemon.port, attack);
        let status = status_of(&response);
        assert!(
            status == 0 || (400..500).contains(&status) || status == 505,
            "{:?} → {status}: {}",
            String::from_utf8_lossy(&attack[..attack.len().min(80)]),
            String::from_utf8_lossy(&response[..response.len().min(200)])
        );
        still_serving(&daemon);
    }
    assert_eq!(
        daemon.get("/settings").1,
        r#"{"mode":"on-demand"}"#,
        "no attack changed the mode"
    );
}

#[test]
fn bad_bodies_and_json_bombs_on_settings_and_login() {
    let daemon = start();
    let post = |path: &str, content_type: &str, body: &[u8]| {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        let response = raw(daemon.port, &request);
        (
            status_of(&response),
            String::from_utf8_lossy(&response).into_owned(),
        )
    };
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = format!("{}1{}", "{\"mode\":".repeat(5_000), "}".repeat(5_000));
    let big = format!(r#"{{"mode":"continuous","pad":"{}"}}"#, "x".repeat(5_000));
    for (body, expect) in [
        (nested.as_bytes(), 413),
        (deep_object.as_bytes(), 413),
        (big.as_bytes(), 413),
        (b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]".as_slice(), 400),
        (b"", 400),
        (b"\xff\xfe\xfd", 400),
        (br#"{"mode":1e999999}"#, 400),
        (br#"{"mode":["continuous"]}"#, 400),
        (br#"{"mode":"CONTINUOUS"}"#, 400),
        (br#"{"mode":"continuous\u0000"}"#, 400),
        (br#"{"mode":null}"#, 400),
        (br#""continuous""#, 400),
    ] {
        let (status, text) = post("/settings", "application/json", body);
        assert_eq!(status, expect, "{}: {text}", String::from_utf8_lossy(&body[..body.len().min(60)]));
        still_serving(&daemon);
    }
    assert_eq!(daemon.get("/settings").1, r#"{"mode":"on-demand"}"#);

    // The login form without [auth] just goes home; its body limit holds anyway.
    let (status, _) = post(
        "/login",
        "application/x-www-form-urlencoded",
        b"user=a&password=b",
    );
    assert_eq!(status, 303);
    // Refused by its declared length, before a byte of it is read.
    let (status, _) = post("/logout", "text/plain", &vec![b'x'; 100_000]);
    assert_eq!(status, 413);
    still_serving(&daemon);
}

#[test]
fn range_and_query_abuse_on_recordings_and_pages() {
    let daemon = start();
    for (path, extra) in [
        (
            "/recordings/20200101-000000.mp4",
            "Range: bytes=0-0,1-1,2-2,3-3\r\n",
        ),
        (
            "/recordings/20200101-000000.mp4",
            "Range: bytes=99999999999999999999999-\r\n",
        ),
        ("/recordings/20200101-000000.mp4", "Range: chars=0-10\r\n"),
        ("/api/replays?limit=-1&limit=99999999999999", ""),
        ("/stream?next=%0d%0aSet-Cookie:%20x=1", ""),
        ("/login?next=%0d%0aLocation:%20http://evil", ""),
        ("/snapshot.jpg?%%%%", ""),
    ] {
        let response = raw(
            daemon.port,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n").as_bytes(),
        );
        let status = status_of(&response);
        let head = String::from_utf8_lossy(&response);
        let head = head.split("\r\n\r\n").next().unwrap_or_default();
        assert!(status != 0 && status < 500, "{path}: {status}");
        assert!(
            !head.contains("x=1") && !head.contains("evil"),
            "{path}: header injection: {head}"
        );
        still_serving(&daemon);
    }
}

#[test]
fn websocket_abuse_closes_only_that_connection() {
    let daemon = start();
    let mut watcher = daemon.viewer("/");
    watcher.send("start");
    watcher.frame();

    // A binary frame that claims an enormous length: closed, nothing allocated.
    let mut liar = daemon.viewer("/");
    let stream = liar.ws.get_mut();
    // FIN+binary, masked, 64-bit length 2^62, then a mask key and a few bytes.
    let _ = stream.write_all(&[0x82, 0xFF, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9]);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    // It sent no `start`, so the first thing it gets is the close: 1009, too big.
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(
        answer.len() >= 4 && answer[0] == 0x88 && answer[2..4] == 1009u16.to_be_bytes(),
        "the lying viewer gets a close saying why: {answer:?}"
    );

    // Unmasked client frames are a protocol error: closed with 1002.
    let mut rude = daemon.viewer("/");
    let _ = rude
        .ws
        .get_mut()
        .write_all(&[0x81, 0x05, b's', b't', b'a', b'r', b't']);
    match rude.next() {
        Ok(tungstenite::Message::Close(Some(frame))) => {
            assert_eq!(u16::from(frame.code), 1002, "{frame:?}")
        }
        other => panic!("the rude viewer should get a close: {other:?}"),
    }

    // A flood of pings is legal, and harmless: answered, and the viewer still watches.
    let mut pinger = daemon.viewer("/");
    for n in 0..2000u16 {
        pinger
            .ws
            .send(tungstenite::Message::Ping(n.to_be_bytes().to_vec().into()))
            .expect("ping");
    }
    pinger.send("start");
    let mut last_pong = None;
    loop {
        match pinger.next().expect("the pinger is still served") {
            tungstenite::Message::Pong(payload) => last_pong = Some(payload.to_vec()),
            tungstenite::Message::Binary(_) => break,
            other => panic!("{other:?}"),
        }
    }
    // (Pongs not yet sent when a newer ping comes are replaced by its answer, as RFC 6455
    // allows; the newest is always answered.)
    assert_eq!(last_pong, Some(1999u16.to_be_bytes().to_vec()));

    // The honest viewer never noticed.
    for _ in 0..10 {
        watcher.frame();
    }
    still_serving(&daemon);
}
