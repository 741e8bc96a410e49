//! The front door under every kind of client: HTTP/1.0, pipelining, odd header bytes,
//! bodies that are too large or too slow, heads that never end, clients that stop
//! reading, floods of connections under a small descriptor limit, and shutdown while
//! streams run. Each test talks to the real binary over real sockets.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn config(server: &str) -> String {
    format!(
        "{}\n[sinks.mjpeg]\ntype = \"http-mjpeg\"\n",
        fakecam_config(
            "\"--fps\", \"10\", \"--width\", \"320\", \"--height\", \"240\"",
            ""
        )
        .replace("[storage]", &format!("{server}\n[storage]"))
    )
}

/// Status, headers (names lowercased), body.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// One response read off a connection that may carry more.
fn read_response(stream: &mut TcpStream) -> Option<Answer> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.lines();
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    Some((status, headers, body))
}

/// Reads until the server closes the connection (or `limit` passes): whether it closed.
fn closes_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        stream.set_read_timeout(Some(left)).expect("timeout");
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

fn metric(daemon: &Daemon, series: &str) -> f64 {
    let (_, text) = daemon.get("/metrics");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn no_panic(daemon: &Daemon) {
    let log = daemon.log_text();
    assert!(!log.contains("panicked"), "a panic in the log:\n{log}");
    assert!(alive(daemon.pid()));
}

#[test]
fn http_1_0_is_answered_with_and_without_keep_alive() {
    let daemon = Daemon::start(&config(""));
    // Without keep-alive: one answer, then the server closes.
    let (status, _, body) = http(daemon.port, "GET /health HTTP/1.0\r\n\r\n");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("\"uptime\""));

    // With keep-alive: several requests on one connection, each answered as HTTP/1.0.
    let mut stream = TcpStream::connect(("127.0.0.1", daemon.port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    for path in ["/health", "/settings", "/"] {
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").as_bytes())
            .expect("send");
        let (status, headers, body) = read_response(&mut stream).expect("an answer on the same connection");
        assert_eq!(status, 200, "{path}");
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == "connection" && v.eq_ignore_ascii_case("keep-alive")),
            "{path}: {headers:?}"
        );
        assert!(!body.is_empty(), "{path}");
    }
    // A stream has no length in HTTP/1.0: it ends with the connection, which says so.
    stream
        .write_all(b"GET /stream.mjpeg HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .expect("send");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("the stream's head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.contains("connection: close"), "{head}");
    assert!(
        !head.contains("keep-alive") && !head.contains("transfer-encoding"),
        "{head}"
    );
}

#[test]
fn a_hundred_pipelined_requests_are_all_answered_in_order() {
    let daemon = Daemon::start(&config(""));
    let paths: Vec<&str> = (0..100)
        .map(|i| ["/settings", "/health", "/no-such-page"][i % 3])
        .collect();
    let burst: String = paths
        .iter()
        .map(|p| format!("GET {p} HTTP/1.1\r\nHost: x\r\n\r\n"))
        .collect();
    let mut stream = TcpStream::connect(("127.0.0.1", daemon.port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(burst.as_bytes()).expect("send all at once");
    for (i, path) in paths.iter().enumerate() {
        let (status, _, body) =
            read_response(&mut stream).unwrap_or_else(|| panic!("no answer to request {i} ({path})"));
        let body = String::from_utf8_lossy(&body);
        match *path {
            "/settings" => assert!(status == 200 && body.contains("\"mode\""), "{i}: {status} {body}"),
            "/health" => assert!(
                status == 200 && body.contains("\"uptime\""),
                "{i}: {status} {body}"
            ),
            _ => assert_eq!(status, 404, "{i}: {body}"),
        }
    }
}

#[test]
fn odd_header_values_get_an_answer_and_never_a_panic() {
    let daemon = Daemon::start(&config(""));
    let recordings = daemon.dir.path().join("recordings");
    std::fs::create_dir_all(&recordings).expect("recordings dir");
    std::fs::write(recordings.join("20261124-134400.mp4"), vec![7u8; 10_000]).expect("a recording");
    let cases: Vec<(&str, &[u8])> = vec![
        ("/health", b"User-Agent: caf\xc3\xa9"),
        ("/health", b"Referer: http://pi.local/\xc3\xa9t\xc3\xa9"),
        ("/recordings/20261124-134400.mp4", b"Range: bytes=0-\xc3\xa9"),
        ("/recordings/20261124-134400.mp4", b"Range: bytes=\xff\xfe-10"),
        ("/", b"Cookie: other=caf\xc3\xa9; croissant_session=\xe2\x98\x83"),
        ("/", b"Accept-Language: \x80\x81\x82\xfe\xff"),
        ("/settings", b"X-Anything: \tspaced value with tab\t "),
        ("/stream", b"If-None-Match: \"\xc3\xa9\""),
        ("/snapshot.jpg", b"User-Agent: \xf0\x9f\x98\x80 emoji"),
    ];
    for (path, header) in cases {
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n").into_bytes();
        request.extend_from_slice(header);
        request.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        let mut stream = TcpStream::connect(("127.0.0.1", daemon.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        stream.write_all(&request).expect("send");
        let (status, _, _) = read_response(&mut stream).unwrap_or_else(|| {
            panic!(
                "no answer to {path} with {}:\n{}",
                String::from_utf8_lossy(header),
                daemon.log_text()
            )
        });
        assert!(
            matches!(status, 200 | 206 | 400),
            "{path} with {}: {status}",
            String::from_utf8_lossy(header)
        );
    }
    // A WebSocket upgrade with odd bytes in its Origin is answered too.
    let mut stream = TcpStream::connect(("127.0.0.1", daemon.port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
        .write_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
              Origin: http://caf\xc3\xa9.example\r\n\r\n",
        )
        .expect("send");
    let (status, _, _) = read_response(&mut stream).expect("an answer to the upgrade");
    assert!(matches!(status, 101 | 400 | 403), "{status}");
    no_panic(&daemon);
}

#[test]
fn request_bodies_are_capped_in_size_and_in_total_time() {
    let daemon = Daemon::start(&config("body_timeout_seconds = 2"));

    // Too large, by its declared length: refused before a byte of it is read.
    let mut stream = TcpStream::connect(("127.0.0.1", daemon.port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
        .write_all(b"POST /settings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
        .expect("send the head");
    let (status, headers, body) = read_response(&mut stream).expect("413 without sending the body");
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    assert!(headers.iter().any(|(k, v)| k == "connection" && v == "close"));
    assert!(
        closes_within(&mut stream, Duration::from_secs(2)),
        "closed after the refusal"
    );

    // Too large, found while reading a chunked body: the rest is not drained.
    let mut stream = TcpStream::connect(("127.0.0.1", daemon.port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
        .write_all(b"POST /settings HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .expect("send the head");
    let chunk = format!("1000\r\n{}\r\n", "x".repeat(4096));
    let mut sent = 0;
    // Keep sending as a hostile client would; the daemon answers and stops reading.
    let answer = loop {
        if stream.write_all(chunk.as_bytes()).is_err() {
            break read_response(&mut stream);
        }
        sent += 4096;
        if sent >= 8192 {
            break read_response(&mut stream);
        }
    };
    let (status, _, _) = answer.expect("an answer to the oversized chunked body");
    assert_eq!(status, 413);
    assert!(closes_within(&mut stream, Duration::from_secs(2)));

    // Slow: one byte every 300 ms is never silent for long, but the whole body is late.
    let mut stream = TcpStream::connect(("127.0.0.1", daemon.port)).expect("connect");
    stream
        .write_all(b"POST /settings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
        .expect("send the head");
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while started.elapsed() < Duration::from_secs(8) {
        if stream.write_all(b" ").is_err() {
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
        if answer.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let took = started.elapsed();
    assert!(
        answer.starts_with(b"HTTP/1.1 408"),
        "{:?} after {took:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(4),
        "the body deadline counts all its time: {took:?}"
    );
    assert!(closes_within(&mut stream, Duration::from_secs(2)));
    no_panic(&daemon);
}

#[test]
fn a_request_head_sent_slowly_is_cut_off_however_many_headers_it_has() {
    let daemon = Daemon::start(&config("header_timeout_seconds = 2"));
    let mut stream = TcpStream::connect(("127.0.0.1", daemon.port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(250)))
        .expect("timeout");
    let started = Instant::now();
    // More headers at once than a small parser takes, then the rest at 4 a second: the
    // head would take 10 s, each line well within any silence timeout.
    let many: String = (0..40).map(|i| format!("X-Fast-{i}: y\r\n")).collect();
    stream
        .write_all(format!("GET / HTTP/1.1\r\nHost: x\r\n{many}").as_bytes())
        .expect("start the head");
    let mut closed_after = None;
    let mut buf = [0u8; 1024];
    for i in 0..40 {
        if stream.write_all(format!("X-Slow-{i}: y\r\n").as_bytes()).is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                closed_after = Some(started.elapsed());
                break;
            }
        }
    }
    let closed_after = closed_after.expect("the connection was cut off before the head ended");
    assert!(
        closed_after >= Duration::from_millis(1800) && closed_after < Duration::from_secs(4),
        "{closed_after:?}"
    );
    assert_eq!(daemon.get("/health").0, 200);
}

#[test]
fn request_heads_beyond_16_kb_or_100_headers_get_431() {
    let daemon = Daemon::start(&config(""));
    let ask = |head: String| {
        let (status, headers, _) = http(daemon.port, &head);
        (
            status,
            headers.iter().any(|(k, v)| k == "connection" && v == "close"),
        )
    };
    let big = |n: usize| {
        format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(n)
        )
    };
    let many = |n: usize| {
        let lines: String = (0..n).map(|i| format!("X-{i}: y\r\n")).collect();
        format!("GET / HTTP/1.1\r\nHost: x\r\n{lines}Connection: close\r\n\r\n")
    };
    assert_eq!(ask(big(15_000)).0, 200);
    assert_eq!(ask(big(17_000)), (431, true));
    assert_eq!(ask(many(90)).0, 200);
    assert_eq!(ask(many(120)), (431, true));
}

#[test]
fn connections_beyond_the_caps_are_refused_at_once_and_counted() {
    let daemon = Daemon::start(&config("max_connections = 12\nmax_connections_per_ip = 4"));
    // One address may hold four; the fifth is told why and closed, not queued.
    let held: Vec<TcpStream> = (0..4)
        .map(|_| connect_from("127.0.0.2", daemon.port).expect("connect"))
        .collect();
    let mut fifth = connect_from("127.0.0.2", daemon.port).expect("connect");
    let started = Instant::now();
    let mut answer = String::new();
    fifth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = fifth.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(answer.contains("Too many connections"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // Other addresses still get in until the total is reached.
    let mut others: Vec<TcpStream> = Vec::new();
    for ip in ["127.0.0.3", "127.0.0.4"] {
        for _ in 0..4 {
            others.push(connect_from(ip, daemon.port).expect("connect"));
        }
    }
    // Twelve are open: the next one from a fresh address is refused as well.
    let mut over = connect_from("127.0.0.5", daemon.port).expect("connect");
    over.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut answer = String::new();
    let _ = over.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    // An admitted connection works as usual.
    let mut admitted = others.pop().expect("one of them");
    admitted
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    admitted
        .write_all(b"GET /settings HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    assert_eq!(read_response(&mut admitted).expect("an answer").0, 200);
    drop((held, others, admitted));
    daemon.wait_for("the connections to be released", Duration::from_secs(5), |d| {
        metric(d, "croissant_http_connections ") == 1.0
    });
    assert!(
        metric(
            &daemon,
            "croissant_http_connections_refused_total{reason=\"max_connections_per_ip\"}"
        ) >= 1.0
    );
    assert!(
        metric(
            &daemon,
            "croissant_http_connections_refused_total{reason=\"max_connections\"}"
        ) >= 1.0
    );
}

#[test]
fn a_client_that_stops_reading_is_let_go_after_the_send_timeout() {
    let daemon = Daemon::start(&config("send_timeout_seconds = 2"));
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    // A small receive buffer fills within a few frames.
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let server: SocketAddr = ([127, 0, 0, 1], daemon.port).into();
    socket.connect(&server.into()).expect("connect");
    let mut stream: TcpStream = socket.into();
    stream
        .write_all(b"GET /stream.mjpeg HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request the stream");
    daemon.wait_for("the MJPEG client to count", Duration::from_secs(5), |d| {
        metric(d, "croissant_viewers{sink=\"mjpeg\",type=\"http-mjpeg\"}") == 1.0
    });
    // It never reads: its place is given back within the timeout plus the time to fill
    // the socket's buffers.
    daemon.wait_for("the stalled client to be dropped", Duration::from_secs(15), |d| {
        metric(d, "croissant_viewers{sink=\"mjpeg\",type=\"http-mjpeg\"}") == 0.0
    });
    assert!(
        closes_within(&mut stream, Duration::from_secs(5)),
        "its connection was closed"
    );
    // The log says who left and why.
    daemon.wait_for("the log to say why", Duration::from_secs(5), |d| {
        d.log_text()
            .lines()
            .any(|l| l.contains("MJPEG client left") && l.contains("took nothing for 2 s"))
    });
}

#[test]
fn sigterm_ends_mjpeg_streams_with_a_properly_terminated_body() {
    let mut daemon = Daemon::start(&config(""));
    let mut stream = TcpStream::connect(("127.0.0.1", daemon.port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(b"GET /stream.mjpeg HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request the stream");
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    // Two parts in, then stop the daemon.
    while raw.windows(16).filter(|w| w == b"--croissantframe").count() < 2 {
        let n = stream.read(&mut buf).expect("stream data");
        assert!(n > 0, "the stream ended early");
        raw.extend_from_slice(&buf[..n]);
    }
    daemon.signal(rustix::process::Signal::TERM);
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(error) => panic!("the stream broke instead of ending: {error}"),
        }
    }
    let status = daemon
        .wait_exit(Duration::from_secs(10))
        .expect("the daemon exits");
    assert!(status.success(), "{status}");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(
        raw.ends_with(b"\r\n0\r\n\r\n"),
        "the chunked body has its last chunk"
    );
    // Every part, the last included, is whole: its Content-Length matches what follows.
    let body = dechunk_strict(&raw[split..]);
    let text = body.as_slice();
    let mut parts = 0;
    let mut at = 0;
    while let Some(start) = find(&text[at..], b"--croissantframe\r\n").map(|i| i + at) {
        let head_end = find(&text[start..], b"\r\n\r\n").expect("part head") + start + 4;
        let part_head = String::from_utf8_lossy(&text[start..head_end]).to_ascii_lowercase();
        let length: usize = part_head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse().ok())
            .expect("a part length");
        assert!(head_end + length + 2 <= text.len(), "part {parts} is cut short");
        assert_eq!(
            &text[head_end..head_end + 2],
            b"\xff\xd8",
            "part {parts} is a JPEG"
        );
        at = head_end + length;
        parts += 1;
    }
    assert!(parts >= 2);
    assert_eq!(
        &text[at..],
        b"\r\n--croissantframe--\r\n",
        "after the last whole part: its line break and the closing boundary"
    );
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decodes a chunked body, failing the test on any framing error.
fn dechunk_strict(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = find(body, b"\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(std::str::from_utf8(&body[..line_end]).expect("ascii").trim(), 16)
            .expect("a hex chunk size");
        body = &body[line_end + 2..];
        if size == 0 {
            assert_eq!(body, b"\r\n", "the body ends after its last chunk");
            return out;
        }
        out.extend_from_slice(&body[..size]);
        assert_eq!(&body[size..size + 2], b"\r\n", "a chunk ends with CRLF");
        body = &body[size + 2..];
    }
}

#[test]
fn websocket_bytes_sent_right_behind_the_upgrade_are_not_lost() {
    let daemon = Daemon::start(&config(""));
    let mut stream = TcpStream::connect(("127.0.0.1", daemon.port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // The upgrade and a masked text frame "start" in one write.
    let mut bytes = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .to_vec();
    let mask = [1u8, 2, 3, 4];
    bytes.extend_from_slice(&[0x81, 0x80 | 5]);
    bytes.extend_from_slice(&mask);
    bytes.extend(b"start".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&bytes).expect("send");
    let (status, headers, _) = read_response(&mut stream).expect("the upgrade answer");
    assert_eq!(status, 101);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "sec-websocket-accept" && v == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{headers:?}"
    );
    let mut ws = tungstenite::WebSocket::from_raw_socket(stream, tungstenite::protocol::Role::Client, None);
    match ws.read().expect("a frame") {
        tungstenite::Message::Binary(jpeg) => assert_eq!(&jpeg[..2], b"\xff\xd8"),
        other => panic!("expected a frame, got {other:?}"),
    }
}

#[test]
fn downloads_nobody_reads_hold_little_memory() {
    let daemon = Daemon::start(&config("max_connections = 1000\nmax_connections_per_ip = 1000"));
    let recordings = daemon.dir.path().join("recordings");
    std::fs::create_dir_all(&recordings).expect("recordings dir");
    let name = "20261124-134400.mp4";
    std::fs::write(recordings.join(name), vec![0x5au8; 32 << 20]).expect("a 32 MB recording");
    let request = format!("GET /recordings/{name} HTTP/1.1\r\nHost: x\r\n\r\n");
    // Warm up: one whole download, so the code paths and thread pool exist already.
    let (status, _, body) = http(
        daemon.port,
        &format!("GET /recordings/{name} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!((status, body.len()), (200, 32 << 20));
    let before = daemon.rss_kib();

    let clients: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", daemon.port)).expect("connect");
            stream.write_all(request.as_bytes()).expect("request");
            stream
        })
        .collect();
    daemon.wait_for("all 200 to be served", Duration::from_secs(10), |d| {
        metric(d, "croissant_http_connections ") >= 201.0
    });
    // Until the daemon stops reading the file (every socket is full), track the peak.
    let mut peak = daemon.rss_kib();
    let mut last_read = 0;
    let mut quiet_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    while quiet_since.elapsed() < Duration::from_secs(1) {
        assert!(Instant::now() < deadline, "the daemon kept reading for 30 s");
        std::thread::sleep(Duration::from_millis(50));
        peak = peak.max(daemon.rss_kib());
        let read = read_bytes(daemon.pid());
        if read != last_read {
            last_read = read;
            quiet_since = Instant::now();
        }
    }
    let grown_mb = (peak.saturating_sub(before)) as f64 / 1024.0;
    eprintln!("RSS before {} KiB, peak {} KiB (+{grown_mb:.1} MB)", before, peak);
    assert!(
        grown_mb <= 64.0,
        "200 unread downloads grew RSS by {grown_mb:.1} MB"
    );

    drop(clients);
    daemon.wait_for("the downloads to end", Duration::from_secs(10), |d| {
        metric(d, "croissant_http_connections ") == 1.0
    });
    daemon.wait_for("memory to return", Duration::from_secs(10), |d| {
        d.rss_kib() <= before + 10 * 1024
    });
    no_panic(&daemon);
}

/// Bytes the process has read so far (any file or socket), from `/proc/PID/io`.
fn read_bytes(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_flood_of_slow_bodies_under_1024_fds_stops_neither_health_nor_recording() {
    // The test itself holds a thousand sockets.
    let mut limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    limit.current = limit.maximum;
    let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, limit);

    let daemon = Daemon::start_with_fd_limit(
        &format!(
            "{}\n[mode]\ndefault = \"continuous\"\n[sinks.recorder]\ntype = \"recorder\"\nsegment_seconds = 2\n",
            config("header_timeout_seconds = 4\nbody_timeout_seconds = 4")
        ),
        1024,
    );
    daemon.wait_for("recording to start", Duration::from_secs(20), |d| {
        d.health()["recording"].is_string()
    });
    let recorded = |d: &Daemon| {
        metric(
            d,
            "croissant_sink_frames_delivered_total{sink=\"recorder\",type=\"recorder\"}",
        )
    };
    let read = |d: &Daemon| metric(d, "croissant_source_frames_read_total");
    let segments = |d: &Daemon| {
        metric(
            d,
            "croissant_recorder_segments_total{sink=\"recorder\",type=\"recorder\"}",
        )
    };
    let (read_before, recorded_before, segments_before) =
        (read(&daemon), recorded(&daemon), segments(&daemon));

    // 1000 connections from one address, each sending a POST head and then one byte of
    // its body a second, reconnecting whenever the daemon closes one, for 12 s.
    let port = daemon.port;
    let flood = std::thread::spawn(move || {
        const HEAD: &[u8] =
            b"POST /settings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
        let mut slots: Vec<Option<(TcpStream, Instant)>> = (0..1000).map(|_| None).collect();
        let mut longest_held = Duration::ZERO;
        let mut opened = 0u32;
        let started = Instant::now();
        let mut buf = [0u8; 512];
        let mut last_drip = Instant::now();
        while started.elapsed() < Duration::from_secs(12) {
            let drip = last_drip.elapsed() >= Duration::from_secs(1);
            if drip {
                last_drip = Instant::now();
            }
            for slot in slots.iter_mut() {
                if let Some((stream, since)) = slot {
                    let closed = match stream.read(&mut buf) {
                        Ok(0) => true,
                        Ok(_) => false,
                        Err(e) => e.kind() != ErrorKind::WouldBlock,
                    } || (drip && stream.write_all(b" ").is_err());
                    if closed {
                        longest_held = longest_held.max(since.elapsed());
                        *slot = None;
                    }
                } else if drip && let Ok(mut stream) = connect_from("127.0.0.2", port) {
                    opened += 1;
                    let _ = stream.write_all(HEAD);
                    let _ = stream.set_nonblocking(true);
                    *slot = Some((stream, Instant::now()));
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let still_open: Vec<Duration> = slots.iter().flatten().map(|(_, since)| since.elapsed()).collect();
        (opened, longest_held, still_open)
    });

    // Meanwhile a fresh client from another address asks for /health, four times a second.
    let mut checks = 0;
    let mut slowest = Duration::ZERO;
    while !flood.is_finished() {
        let asked = Instant::now();
        let mut stream = connect_from("127.0.0.1", port).expect("connect for /health");
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("ask");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        let took = asked.elapsed();
        assert!(
            answer.starts_with("HTTP/1.1 200") && took < Duration::from_secs(1),
            "/health during the flood after {checks} checks: {took:?} {answer:?}"
        );
        slowest = slowest.max(took);
        checks += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    let (opened, longest_held, still_open) = flood.join().expect("the flood");
    eprintln!(
        "{opened} flood connections; /health answered {checks} times, slowest {slowest:?}; \
         longest-held flood connection {longest_held:?}"
    );
    assert!(opened >= 1000);
    // Every slow connection was closed within its deadline (4 s for the body, plus the
    // flood's own polling period); those opened in the last seconds are younger than it.
    assert!(longest_held < Duration::from_millis(5500), "{longest_held:?}");
    assert!(
        still_open.iter().all(|age| *age < Duration::from_millis(5500)),
        "{still_open:?}"
    );

    // The recorder took (nearly) every frame: no gap of a second (10 frames) anywhere.
    daemon.wait_for("the recorder to catch up", Duration::from_secs(5), |d| {
        (read(d) - read_before) - (recorded(d) - recorded_before) <= 10.0
    });
    assert!(read(&daemon) - read_before >= 100.0, "the camera ran throughout");
    assert!(
        segments(&daemon) - segments_before >= 4.0,
        "segments kept coming: {}",
        segments(&daemon) - segments_before
    );
    assert_eq!(daemon.health()["status"], "ok");

    // Then from many addresses at once, so that the total cap (what 1024 descriptors
    // allow) is what holds: clients get every place there is, the recorder still gets
    // its descriptors.
    let (read_before, recorded_before, segments_before) =
        (read(&daemon), recorded(&daemon), segments(&daemon));
    let started = Instant::now();
    let mut crowd: Vec<TcpStream> = Vec::new();
    let mut refused = 0;
    while started.elapsed() < Duration::from_secs(8) {
        crowd.retain(|stream| {
            let mut byte = [0u8; 1];
            let _ = stream.set_nonblocking(true);
            matches!((&*stream).read(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock)
        });
        for i in 0..1000 {
            if crowd.len() >= 1000 {
                break;
            }
            let ip = format!("127.0.1.{}", 1 + i % 20);
            match connect_from(&ip, port) {
                Ok(stream) => crowd.push(stream),
                Err(_) => refused += 1,
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(crowd);
    assert_eq!(
        refused, 0,
        "the kernel took every connection; the daemon refused the excess"
    );
    daemon.wait_for(
        "the recorder to catch up after the crowd",
        Duration::from_secs(10),
        |d| (read(d) - read_before) - (recorded(d) - recorded_before) <= 10.0,
    );
    assert!(segments(&daemon) - segments_before >= 3.0, "segments kept coming");
    assert!(
        metric(
            &daemon,
            "croissant_http_connections_refused_total{reason=\"max_connections\"}"
        ) >= 1.0,
        "the total cap was reached"
    );

    let log = daemon.log_text();
    let accept_errors = log.lines().filter(|l| l.contains("accept failed")).count();
    assert!(accept_errors < 20, "{accept_errors} accept-error lines");
    assert!(
        !log.contains("cannot start ffmpeg"),
        "the recorder could not start ffmpeg"
    );
    no_panic(&daemon);
}

#[test]
fn accept_errors_pause_the_loop_and_are_logged_rarely() {
    let daemon = Daemon::start(&config("header_timeout_seconds = 60"));
    assert_eq!(daemon.get("/health").0, 200);
    // Leave the daemon room for three more descriptors than it holds now, as if the
    // system ran out: its own caps (sized at start) no longer protect it.
    let held_now = std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
        .expect("fd list")
        .count();
    let limit = held_now + 3;
    let set = Command::new("prlimit")
        .arg(format!("--pid={}", daemon.pid()))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .expect("run prlimit");
    assert!(set.success());
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(("127.0.0.1", daemon.port)).expect("connect"))
        .collect();
    // These wait in the kernel's backlog: accepting them fails with EMFILE.
    let waiting: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", daemon.port)).expect("connect");
            stream
                .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .expect("request");
            stream
        })
        .collect();
    daemon.wait_for("the accept error to be logged", Duration::from_secs(5), |d| {
        d.log_text().contains("accept failed; pausing")
    });
    // It pauses instead of spinning: little CPU while the condition lasts.
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", daemon.pid())).expect("stat");
        let fields: Vec<u64> = stat
            .rsplit(") ")
            .next()
            .expect("fields")
            .split(' ')
            .skip(11)
            .take(2)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        fields.iter().sum::<u64>()
    };
    let (before, since) = (cpu(), Instant::now());
    while since.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let ticks = cpu() - before;
    assert!(
        ticks <= 30,
        "{ticks} clock ticks of CPU in 3 s of failing accepts"
    );
    let lines = daemon
        .log_text()
        .lines()
        .filter(|l| l.contains("accept failed"))
        .count();
    assert!(lines <= 2, "{lines} accept-error lines in about 3 s");
    // Once descriptors are free again, the waiting clients are served.
    drop(held);
    for mut stream in waiting {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    }
    assert!(metric(&daemon, "croissant_http_accept_errors_total") >= 1.0);
    no_panic(&daemon);
}

/// A raw WebSocket connection after its upgrade, with a small receive buffer.
fn raw_websocket(port: u16) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let server: SocketAddr = ([127, 0, 0, 1], port).into();
    socket.connect(&server.into()).expect("connect");
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .expect("upgrade");
    assert_eq!(read_response(&mut stream).expect("101").0, 101);
    stream
}

/// A masked client frame.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [9u8, 8, 7, 6];
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

#[test]
fn pings_from_a_client_that_never_reads_cost_no_memory() {
    let daemon = Daemon::start(&config(""));
    let mut stream = raw_websocket(daemon.port);
    let before = daemon.rss_kib();
    // A million 125-byte pings, none of whose pongs is ever read.
    let burst = client_frame(0x9, &[b'p'; 125]).repeat(10_000);
    for _ in 0..100 {
        if stream.write_all(&burst).is_err() {
            break;
        }
    }
    // Once the daemon has read them all, its memory tells.
    let mut last = read_bytes(daemon.pid());
    let mut quiet_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    while quiet_since.elapsed() < Duration::from_millis(500) {
        assert!(Instant::now() < deadline, "still reading pings after 30 s");
        std::thread::sleep(Duration::from_millis(50));
        let now = read_bytes(daemon.pid());
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
    }
    let grown_mb = daemon.rss_kib().saturating_sub(before) as f64 / 1024.0;
    assert!(
        grown_mb < 8.0,
        "a million unread pongs grew RSS by {grown_mb:.1} MB"
    );
    no_panic(&daemon);
}

#[test]
fn a_websocket_viewer_that_stops_reading_is_let_go_after_the_send_timeout() {
    let daemon = Daemon::start(&config("send_timeout_seconds = 2"));
    let mut stream = raw_websocket(daemon.port);
    stream.write_all(&client_frame(0x1, b"start")).expect("start");
    daemon.wait_for("the viewer to count", Duration::from_secs(5), |d| {
        metric(d, "croissant_viewers{sink=\"live\",type=\"websocket\"}") == 1.0
    });
    daemon.wait_for("the stalled viewer to be dropped", Duration::from_secs(15), |d| {
        metric(d, "croissant_viewers{sink=\"live\",type=\"websocket\"}") == 0.0
    });
    assert!(closes_within(&mut stream, Duration::from_secs(5)));
    let log = daemon.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("viewer left") && l.contains("took nothing for 2 s")),
        "{log}"
    );
}

#[test]
fn the_log_says_how_each_viewer_went() {
    let daemon = Daemon::start(&config(""));
    let left = |d: &Daemon, what: &str, why: &str| {
        d.log_text()
            .lines()
            .filter(|l| l.contains(what) && l.contains(why))
            .count()
    };
    // A WebSocket viewer whose tab is closed: the connection ends with no close message.
    let mut stream = raw_websocket(daemon.port);
    stream.write_all(&client_frame(0x1, b"start")).expect("start");
    let mut some = [0u8; 1024];
    stream.read_exact(&mut some).expect("frame bytes");
    stream.shutdown(std::net::Shutdown::Write).expect("hang up");
    assert!(closes_within(&mut stream, Duration::from_secs(5)));
    // An MJPEG client that has seen enough and closes.
    let mut mjpeg = TcpStream::connect(("127.0.0.1", daemon.port)).expect("connect");
    mjpeg
        .write_all(b"GET /stream.mjpeg HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request the stream");
    mjpeg.read_exact(&mut some).expect("stream bytes");
    drop(mjpeg);
    daemon.wait_for("both departures in the log", Duration::from_secs(10), |d| {
        left(
            d,
            "viewer left",
            "it ended the connection without a close message",
        ) == 1
            && left(d, "MJPEG client left", "it closed or reset the connection") == 1
    });
    assert_eq!(left(&daemon, "viewer left", "protocol error"), 0);
}

#[test]
fn websocket_protocol_errors_get_their_close_codes() {
    let daemon = Daemon::start(&config(""));
    let close_code = |frame: Vec<u8>| {
        let mut stream = raw_websocket(daemon.port);
        stream.write_all(&frame).expect("send");
        let mut all = Vec::new();
        let _ = stream.read_to_end(&mut all);
        // The server's close frame: 0x88, a length, then the code.
        let at = all.windows(1).position(|w| w[0] == 0x88).expect("a close frame");
        u16::from_be_bytes([all[at + 2], all[at + 3]])
    };
    // An unmasked client frame: a protocol error.
    assert_eq!(close_code(vec![0x81, 5, b's', b't', b'a', b'r', b't']), 1002);
    // Text that is not UTF-8.
    assert_eq!(close_code(client_frame(0x1, &[0xff, 0xfe, 0xfd])), 1007);
    // A message over 4 KB.
    let mut big = vec![0x82, 0x80 | 126];
    big.extend_from_slice(&5000u16.to_be_bytes());
    big.extend_from_slice(&[0, 0, 0, 0]);
    big.extend(std::iter::repeat_n(0u8, 5000));
    assert_eq!(close_code(big), 1009);
    // Keys that are not 16 bytes in base64 are refused before any upgrade.
    for key in ["", "abc", "dGhlIHNhbXBsZQ=="] {
        let (status, _, _) = http(
            daemon.port,
            &format!(
                "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ),
        );
        assert_eq!(status, 400, "key {key:?}");
    }
}

#[test]
fn methods_are_case_sensitive_and_unknown_ones_not_implemented() {
    let daemon = Daemon::start(&config(""));
    for method in ["get", "Get", "FOO"] {
        let (status, _, _) = http(
            daemon.port,
            &format!("{method} /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(status, 501, "{method}");
    }
}
