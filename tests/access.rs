//! Access control and limits against the real daemon: logins, roles, sessions on the
//! WebSocket, Basic for tools, cross-origin refusals, viewer limits, slow request heads.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::access::*;
use common::*;
use tungstenite::protocol::frame::coding::CloseCode;

#[test]
fn logins_roles_sessions_and_basic_guard_every_route() {
    let daemon = Daemon::start(&config_with_users());
    let port = daemon.port;

    // Monitoring stays open; everything else wants a login.
    assert_eq!(daemon.get("/health").0, 200);
    for path in [
        "/api/status",
        "/api/replays",
        "/settings",
        "/metrics",
        "/snapshot.jpg",
        "/stream.mjpeg",
        "/recordings/20200101-000000.mp4",
        "/thumbnails/20200101-000000.jpg",
        "/assets/stream.js",
    ] {
        let (status, headers, _) = request(port, "GET", path, "", "");
        assert_eq!(status, 401, "{path}");
        assert!(
            header(&headers, "www-authenticate").is_some_and(|v| v.starts_with("Basic")),
            "{path}: tools are asked for Basic credentials"
        );
    }
    // Pages send browsers to the login form (relative, so subpaths keep working) ...
    for (path, to) in [
        ("/", "login"),
        ("/stream", "login?next=stream"),
        ("/recordings", "login?next=recordings"),
    ] {
        let (status, headers, _) = request(
            port,
            "GET",
            path,
            "Accept: text/html\r\nSec-Fetch-Mode: navigate\r\n",
            "",
        );
        assert_eq!((status, header(&headers, "location")), (303, Some(to)), "{path}");
    }
    // ... and our own scripts get a 401 without a challenge (no browser password dialog).
    let (status, headers, _) = request(port, "GET", "/api/status", "Sec-Fetch-Mode: cors\r\n", "");
    assert_eq!((status, header(&headers, "www-authenticate")), (401, None));
    assert_eq!(daemon.get("/login").0, 200);
    assert_eq!(daemon.get("/assets/style.css").0, 200);
    // No session, no live view.
    match ws_with(port, &[]) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("an anonymous upgrade must be refused: {:?}", other.map(|_| ())),
    }

    // A wrong password: back to the form, no cookie, and it took a while.
    let started = Instant::now();
    let (status, cookie, location) = login(port, "vic", "wrong", "stream");
    assert_eq!(
        (status, cookie, location.as_str()),
        (303, None, "login?failed=1&next=stream")
    );
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    let (_, cookie, _) = login(port, "mallory", "vic-secret", "");
    assert!(cookie.is_none());

    // The viewer logs in and returns to the page they asked for.
    let (status, cookie, location) = login(port, "vic", "vic-secret", "stream");
    assert_eq!((status, location.as_str()), (303, "./stream"));
    let cookie = cookie.expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let session = cookie.split(';').next().expect("name=value").to_owned();
    let with_session = format!("Cookie: {session}\r\n");
    let (status, _, body) = request(port, "GET", "/api/status", &with_session, "");
    assert_eq!(status, 200, "{body}");
    let status_json: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
    assert_eq!(status_json["user"]["name"], "vic");
    assert_eq!(status_json["user"]["role"], "viewer");
    assert_eq!(request(port, "GET", "/stream", &with_session, "").0, 200);

    // The cookie opens the WebSocket too.
    let mut viewer = ws_with(port, &[("Cookie", &session)]).expect("upgrade with the session");
    viewer.send("start");
    assert!(frame_seq(&viewer.frame()) < u64::MAX);
    drop(viewer);

    // A viewer may not switch modes; an admin may, also with Basic credentials.
    let json = "Content-Type: application/json\r\n";
    let (status, _, body) = request(
        port,
        "POST",
        "/settings",
        &format!("{with_session}{json}"),
        r#"{"mode":"continuous"}"#,
    );
    assert_eq!(status, 403, "{body}");
    let admin = basic("ada", "ada-secret");
    let (status, _, body) = request(
        port,
        "POST",
        "/settings",
        &format!("{admin}{json}"),
        r#"{"mode":"continuous"}"#,
    );
    let reply: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        (status, reply),
        (
            200,
            serde_json::json!({"status": "updated", "mode": "continuous"})
        )
    );
    let (status, _, _) = request(port, "GET", "/settings", &basic("ada", "nope"), "");
    assert_eq!(status, 401);

    // Another site's page cannot post, even with the admin's credentials; our own can.
    let evil = format!("{admin}{json}Origin: http://evil.example\r\n");
    let (status, _, body) = request(port, "POST", "/settings", &evil, r#"{"mode":"on-demand"}"#);
    assert_eq!(status, 403, "{body}");
    let ours = format!("{admin}{json}Origin: http://127.0.0.1:{port}\r\n");
    assert_eq!(
        request(port, "POST", "/settings", &ours, r#"{"mode":"on-demand"}"#).0,
        200
    );
    // Nor open the live view from its page.
    match ws_with(port, &[("Cookie", &session), ("Origin", "http://evil.example")]) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("a cross-site upgrade must be refused: {:?}", other.map(|_| ())),
    }

    // Logging out ends the session.
    let (status, headers, _) = request(port, "POST", "/logout", &with_session, "");
    assert_eq!(status, 303);
    assert!(header(&headers, "set-cookie").is_some_and(|c| c.contains("Max-Age=0")));
    assert_eq!(request(port, "GET", "/api/status", &with_session, "").0, 401);
    assert!(daemon.log_text().contains("login failed"));
    assert!(!daemon.log_text().contains("vic-secret"));
}

#[test]
fn a_plain_password_in_the_config_is_refused_with_its_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        "[auth.users.ada]\nrole = \"admin\"\npassword_hash = \"hunter2\"\n",
    )
    .expect("write");
    let out = Command::new(CROISSANT)
        .arg("--config")
        .arg(&path)
        .arg("check")
        .output()
        .expect("run check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(":3:"), "names the line: {stderr}");
    assert!(
        stderr.contains("croissant hash-password"),
        "says how to fix it: {stderr}"
    );
    assert!(!stderr.contains("hunter2"), "does not echo the secret: {stderr}");
}

#[test]
fn viewers_beyond_the_limit_are_turned_away_clearly() {
    let daemon = Daemon::start(
        &fakecam_config("\"--fps\", \"15\"", "").replace("[storage]", "max_viewers = 2\n[storage]"),
    );
    let mut first = daemon.viewer("/");
    let mut second = daemon.viewer("/");
    first.send("start");
    second.send("start");
    first.frame();
    second.frame();
    let mut third = daemon.viewer("/");
    // A connection is a viewer once it asks for frames.
    third.send("start");
    match third.next() {
        Ok(tungstenite::Message::Close(Some(close))) => {
            assert_eq!(close.code, CloseCode::Again);
            assert!(close.reason.contains("too many viewers"), "{}", close.reason);
        }
        other => panic!("the third viewer should be closed with a reason: {other:?}"),
    }
    // Once someone leaves, the next one gets in.
    drop(first);
    std::thread::sleep(Duration::from_millis(300));
    let mut again = daemon.viewer("/");
    again.send("start");
    again.frame();
    second.frame();
}

#[test]
fn a_stopped_viewer_gives_its_place_back_and_must_start_again_within_a_minute() {
    let daemon = Daemon::start(
        &fakecam_config("\"--fps\", \"15\"", "").replace("[storage]", "max_viewers = 1\n[storage]"),
    );
    let viewers = |d: &Daemon| d.health()["viewers"].as_u64();
    let mut paused = daemon.viewer("/");
    paused.send("start");
    paused.frame();
    paused.send("stop");
    daemon.wait_for("the stopped viewer to leave", Duration::from_secs(10), |d| {
        viewers(d) == Some(0)
    });
    // Its place is free for someone else...
    let mut other = daemon.viewer("/");
    other.send("start");
    other.frame();
    // ...and it has to wait its turn like anyone.
    paused.send("start");
    let close = loop {
        match paused.next() {
            Ok(tungstenite::Message::Close(close)) => break close,
            Ok(_) => continue,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(close.map(|c| c.code), Some(CloseCode::Again));
    // A stopped connection that never starts again is closed after a minute.
    other.send("stop");
    let stopped_at = Instant::now();
    other
        .ws
        .get_mut()
        .set_read_timeout(Some(Duration::from_secs(90)))
        .expect("timeout");
    let close = loop {
        match other.next() {
            Ok(tungstenite::Message::Close(close)) => break close,
            Ok(_) => continue,
            Err(e) => panic!("{e}"),
        }
    };
    let waited = stopped_at.elapsed();
    let close = close.expect("a close frame");
    assert_eq!(close.code, CloseCode::Policy);
    assert!(close.reason.contains("no start"), "{}", close.reason);
    assert!(
        waited >= Duration::from_secs(59) && waited < Duration::from_secs(75),
        "{waited:?}"
    );
}

#[test]
fn slow_request_heads_are_cut_off() {
    let daemon = Daemon::start(&fakecam_config("\"--fps\", \"15\"", "").replace(
        "[storage]",
        "header_timeout_seconds = 1\nbody_timeout_seconds = 1\n[storage]",
    ));
    for partial in ["", "GET / HTTP/1.1\r\nHost: x\r\n"] {
        let mut stream = TcpStream::connect(("127.0.0.1", daemon.port)).expect("connect");
        stream.write_all(partial.as_bytes()).expect("send a partial head");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let started = Instant::now();
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "closed without an answer");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
            "{waited:?}"
        );
    }
    // A body dribbled out slowly is cut off the same way.
    let mut stream = TcpStream::connect(("127.0.0.1", daemon.port)).expect("connect");
    stream
        .write_all(b"POST /settings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"mo")
        .expect("send a partial body");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let started = Instant::now();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // An idle kept-alive connection is let go too.
    let mut stream = TcpStream::connect(("127.0.0.1", daemon.port)).expect("connect");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    stream
        .set_read_timeout(Some(Duration::from_secs(8)))
        .expect("timeout");
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "idle for {:?}",
        started.elapsed()
    );
    // Meanwhile the daemon serves everyone else.
    assert_eq!(daemon.get("/health").0, 200);
}

#[test]
fn listening_beyond_loopback_without_auth_is_warned_about() {
    let daemon =
        Daemon::start(&fakecam_config("\"--fps\", \"15\"", "").replace("127.0.0.1:{port}", "0.0.0.0:{port}"));
    daemon.wait_for("the warning", Duration::from_secs(5), |d| {
        d.log_text().contains("no [auth]")
    });
    let quiet = Daemon::start(&fakecam_config("\"--fps\", \"15\"", ""));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!quiet.log_text().contains("no [auth]"));
}
