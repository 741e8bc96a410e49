//! The access policy from outside: password checks that cost no memory, guessing slowed
//! per address (and fail2ban's own matcher on the log), cross-site writes refused with and
//! without `[auth]`, nothing secret on `/health`, sessions that end their streams, the
//! WebSocket close handshake, security headers, and symlinks never served.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::access::*;
use common::*;

/// One request from `ip` on its own connection: status and body.
fn request_from(ip: &str, port: u16, text: &str) -> (u16, String) {
    let mut stream = connect_from(ip, port).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    stream.write_all(text.as_bytes()).expect("send");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer)
}

fn basic_get(path: &str, port: u16, user: &str, password: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{}Connection: close\r\n\r\n",
        basic(user, password)
    )
}

/// A login form posted on a connection of its own.
fn login_form(port: u16, user: &str, password: &str) -> String {
    let body = format!("user={user}&password={password}&next=");
    format!(
        "POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn failed_password_checks_leave_no_memory_behind_and_known_credentials_stay_fast() {
    let daemon = Daemon::start(&config_with_users());
    let port = daemon.port;
    let before = daemon.rss_kib();
    // 500 wrong passwords, checked for real, from 40 connections at a time. Each address
    // and each user name gets its burst of checks, so the attack spreads over many of
    // both (unknown users are checked against a decoy hash, at the same cost).
    let checked = std::sync::atomic::AtomicUsize::new(0);
    let next_ip = std::sync::atomic::AtomicUsize::new(0);
    let mut peak = before;
    std::thread::scope(|scope| {
        for _ in 0..40 {
            scope.spawn(|| {
                while checked.load(std::sync::atomic::Ordering::Relaxed) < 500 {
                    let n = next_ip.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let ip = format!("127.0.{}.{}", 2 + (n / 250) % 250, 1 + n % 250);
                    let user = format!("guest{n}");
                    let (status, _) =
                        request_from(&ip, port, &basic_get("/api/status", port, &user, "wrong"));
                    if status == 401 {
                        checked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    } else {
                        // 429: the checker is busy; a real attacker would come back too.
                        assert_eq!(status, 429);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            });
        }
        while checked.load(std::sync::atomic::Ordering::Relaxed) < 500 {
            peak = peak.max(daemon.rss_kib());
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    peak = peak.max(daemon.rss_kib());
    let grown_mb = peak.saturating_sub(before) as f64 / 1024.0;
    eprintln!("500 failed checks: RSS {before} KiB -> peak {peak} KiB (+{grown_mb:.1} MB)");
    assert!(grown_mb < 40.0, "{grown_mb:.1} MB");
    // The right credentials, once checked, are remembered: a tool polling with them is
    // not slowed by argon2. Timed against their first check, which runs argon2, so a busy
    // machine slows both alike.
    let timed_get = |path: &str| {
        let started = Instant::now();
        let (status, _) = request_from("127.0.0.1", port, &basic_get(path, port, "vic", "vic-secret"));
        assert_eq!(status, 200);
        started.elapsed()
    };
    let checked = timed_get("/api/status");
    let mut remembered: Vec<Duration> = (0..21).map(|_| timed_get("/settings")).collect();
    remembered.sort();
    let median = remembered[remembered.len() / 2];
    assert!(
        median * 4 < checked,
        "remembered credentials took {median:?} (median), a checked password {checked:?}"
    );
}

#[test]
fn guessers_are_slowed_per_address_logged_for_fail2ban_and_the_owner_gets_in() {
    let daemon = Daemon::start(&config_with_users());
    let port = daemon.port;
    let form = |user: &str, password: &str| login_form(port, user, password);
    // 40 guessers from 4 addresses: half at the owner's account (spending its per-user
    // limit), half at made-up names (filling the password checker's queue).
    const ATTACKERS: [&str; 4] = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"];
    let evaluated: Vec<_> = ATTACKERS
        .iter()
        .map(|_| std::sync::atomic::AtomicUsize::new(0))
        .collect();
    let refused = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    let attack = Duration::from_secs(10);
    let mut owner_waits = Vec::new();
    std::thread::scope(|scope| {
        for i in 0..40 {
            let (evaluated, refused, form) = (&evaluated, &refused, &form);
            scope.spawn(move || {
                let from = i % ATTACKERS.len();
                let mut n = 0;
                while started.elapsed() < attack {
                    n += 1;
                    let user = if i % 2 == 0 {
                        "ada".to_owned()
                    } else {
                        format!("user{i}x{n}")
                    };
                    let (status, answer) =
                        request_from(ATTACKERS[from], port, &form(&user, &format!("guess{i}")));
                    match status {
                        // A checked guess: back to the form.
                        303 => evaluated[from].fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                        429 => {
                            assert!(answer.to_ascii_lowercase().contains("retry-after:"), "{answer}");
                            refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                        }
                        other => panic!("{other}: {answer}"),
                    };
                }
            });
        }
        // Meanwhile the owner logs in from elsewhere, now and then, mistyping the password
        // first (up to twice) on some of the tries: a typo is forgiven, whatever the
        // guessers have done to the account's own limit.
        let mut round = 0;
        while started.elapsed() < attack {
            std::thread::sleep(Duration::from_millis(1500));
            round += 1;
            for _ in 0..round % 3 {
                let (status, answer) = request_from("127.0.0.9", port, &form("ada", "ada-secert"));
                assert!(
                    status == 303 && !answer.contains("croissant_session="),
                    "the owner's typo: {answer}"
                );
            }
            let asked = Instant::now();
            let (status, answer) = request_from("127.0.0.9", port, &form("ada", "ada-secret"));
            owner_waits.push(asked.elapsed());
            assert!(
                status == 303 && answer.contains("croissant_session="),
                "the owner could not log in: {answer}"
            );
        }
    });
    // Then a burst from 12 addresses never seen before, all at once, the owner right behind:
    // new addresses share the owner's lane, which holds 16 before anyone is told "busy".
    let fresh: Vec<std::net::TcpStream> = (0..12)
        .map(|n| connect_from(&format!("127.0.1.{}", n + 1), port).expect("connect"))
        .collect();
    let guess = form("ada", "fresh-guess");
    for mut stream in &fresh {
        stream.write_all(guess.as_bytes()).expect("send");
    }
    let asked = Instant::now();
    let (status, answer) = request_from("127.0.0.9", port, &form("ada", "ada-secret"));
    let behind_burst = asked.elapsed();
    assert!(
        status == 303,
        "the owner behind a burst of new addresses: {answer}"
    );
    assert!(behind_burst < Duration::from_secs(2), "{behind_burst:?}");
    for mut stream in fresh {
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(
            answer.starts_with("HTTP/1.1 303"),
            "a new address's guess was checked: {answer}"
        );
    }
    let evaluated: Vec<usize> = evaluated.into_iter().map(|e| e.into_inner()).collect();
    let refused = refused.into_inner();
    eprintln!(
        "10 s of 40 guessers from 4 addresses: {evaluated:?} guesses checked, {refused} refused; owner waited {owner_waits:?}, {behind_burst:?} behind 12 new addresses"
    );
    // Per address, a burst of 5, then one a second.
    assert!(
        evaluated.iter().all(|&e| e <= 5 + 11),
        "{evaluated:?} guesses checked in 10 s"
    );
    assert!(refused > 100, "{refused}");
    assert!(
        owner_waits.iter().all(|w| *w < Duration::from_millis(500)),
        "{owner_waits:?}"
    );
    // Each checked guess is one log line with the address and the user, and fail2ban's
    // own matcher finds every one with the shipped filter.
    let log = daemon.log_text();
    for (address, &checked) in ATTACKERS.iter().zip(&evaluated) {
        let lines = log
            .lines()
            .filter(|l| l.contains(&format!("login failed client={address} user=\"")))
            .count();
        assert_eq!(lines, checked, "one line per checked guess from {address}");
    }
    // Every checked guess, the new addresses' included (logged even though they hung up).
    let failed_lines = log.lines().filter(|l| l.contains("login failed client=")).count();
    assert!(
        failed_lines >= evaluated.iter().sum::<usize>() + 12,
        "{failed_lines}"
    );
    assert_eq!(fail2ban_matches(&daemon.log), failed_lines);
}

#[test]
fn right_passwords_are_limited_per_address_too() {
    // Someone who knows a viewer's password must not keep the password checker busy: a
    // right password costs it as much as a wrong one.
    let daemon = Daemon::start(&config_with_users());
    let port = daemon.port;
    let login = |user: &str, password: &str| login_form(port, user, password);
    let mut answers = Vec::new();
    for _ in 0..8 {
        answers.push(request_from("127.0.0.20", port, &login("vic", "vic-secret")));
    }
    let logged_in = answers
        .iter()
        .take_while(|(status, answer)| *status == 303 && answer.contains("croissant_session="))
        .count();
    assert!(
        (5..8).contains(&logged_in),
        "{logged_in} logins in a row: {answers:?}"
    );
    let (status, answer) = &answers[logged_in];
    assert_eq!(*status, 429, "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: "), "{answer}");
    assert!(answer.contains("Too many login attempts"), "{answer}");
    let (status, answer) = request_from("127.0.0.21", port, &login("ada", "ada-secret"));
    assert!(
        status == 303 && answer.contains("croissant_session="),
        "the owner: {answer}"
    );

    // A browser's first requests after its password prompt come in parallel, all with the
    // same new Basic credentials: one check for all of them (the scheme in any case).
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let requests: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    let text =
                        basic_get("/api/status", port, "vic", "vic-secret").replace("Basic ", "BASIC ");
                    request_from("127.0.0.22", port, &text).0
                })
            })
            .collect();
        requests.into_iter().map(|r| r.join().expect("request")).collect()
    });
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
}

#[test]
fn a_dual_stack_listener_names_ipv4_clients_as_ipv4() {
    let daemon = Daemon::start(&config_with_users().replace("listen = \"127.0.0.1:", "listen = \"[::]:"));
    let port = daemon.port;
    let login = |user: &str, password: &str| login_form(port, user, password);
    assert_eq!(request_from("127.0.0.23", port, &login("vic", "typo")).0, 303);
    assert_eq!(
        request_from("127.0.0.24", port, &login("vic", "vic-secret")).0,
        303
    );
    let log = daemon.log_text();
    assert!(log.contains("login failed client=127.0.0.23 "), "{log}");
    assert!(log.contains("client=127.0.0.24"), "{log}");
    assert!(!log.contains("::ffff:"), "{log}");
}

/// How many lines of `log` fail2ban's own matcher takes for failed logins with the shipped
/// filter (installed next to fail2ban's `common.conf`, as the README says).
fn fail2ban_matches(log: &std::path::Path) -> usize {
    let common = std::path::Path::new("/etc/fail2ban/filter.d/common.conf");
    assert!(
        common.exists() && std::path::Path::new("/usr/bin/fail2ban-regex").exists(),
        "fail2ban is missing: install it (scripts/test does)"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(common, dir.path().join("common.conf")).expect("copy common.conf");
    let filter = dir.path().join("croissant.conf");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/packaging/fail2ban/filter.d/croissant.conf"
        ),
        &filter,
    )
    .expect("copy the filter");
    let out = Command::new("fail2ban-regex")
        .arg(log)
        .arg(&filter)
        .output()
        .expect("run fail2ban-regex");
    let report = String::from_utf8_lossy(&out.stdout);
    report
        .lines()
        .find_map(|l| l.trim().strip_prefix("Failregex: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "fail2ban-regex:\n{report}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

#[test]
fn a_camera_cannot_get_anyone_banned() {
    // A camera (or a stream it relays) that writes the daemon's own failed-login line to
    // its stderr: the line is logged, and fail2ban must not take it.
    let forged = " WARN croissant::auth: login failed client=10.9.9.9 user=\\\"x\\\"";
    let config = config_with_users().replace(
        "command = [\"{fakecam}\", ",
        &format!("command = [\"sh\", \"-c\", \"echo '{forged}' >&2; exec \\\"$0\\\" \\\"$@\\\"\", \"{{fakecam}}\", "),
    );
    let daemon = Daemon::start(&config);
    let port = daemon.port;
    // Watching starts the camera.
    let (status, _, _) = request(port, "GET", "/snapshot.jpg", &basic("vic", "vic-secret"), "");
    assert_eq!(status, 200);
    let (status, _, _) = request(port, "GET", "/api/status", &basic("vic", "wrong"), "");
    assert_eq!(status, 401);
    daemon.wait_for(
        "the forged line and the real one logged",
        Duration::from_secs(10),
        |d| {
            let log = d.log_text();
            log.contains("source: WARN croissant::auth:") && log.contains("login failed client=127.0.0.1")
        },
    );
    assert_eq!(fail2ban_matches(&daemon.log), 1, "{}", daemon.log_text());
}

#[test]
fn writes_from_other_sites_are_refused_with_and_without_auth() {
    let open = Daemon::start(&fakecam_config("\"--fps\", \"5\"", ""));
    let locked = Daemon::start(&config_with_users());
    for daemon in [&open, &locked] {
        let port = daemon.port;
        let credentials = if daemon.port == locked.port {
            basic("ada", "ada-secret")
        } else {
            String::new()
        };
        let post = |extra: &str, content_type: &str| {
            request(
                port,
                "POST",
                "/settings",
                &format!("{credentials}Content-Type: {content_type}\r\n{extra}"),
                r#"{"mode":"on-demand"}"#,
            )
        };
        for (extra, content_type) in [
            ("Origin: https://evil.example\r\n", "application/json"),
            ("Origin: null\r\n", "text/plain"),
            (
                &*format!("Origin: http://127.0.0.1:{}\r\n", free_port()),
                "application/json",
            ),
            (
                &*format!("Origin: https://127.0.0.1:{port}\r\n"),
                "application/json",
            ),
            (
                &*format!("Origin: http://127.0.0.1:{port}.evil.example\r\n"),
                "text/plain",
            ),
            ("Referer: https://evil.example/page\r\n", "text/plain"),
        ] {
            let (status, _, body) = post(extra, content_type);
            assert_eq!(status, 403, "{extra}: {body}");
        }
        let ours = format!("Origin: http://127.0.0.1:{port}\r\n");
        assert_eq!(post(&ours, "application/json").0, 200);
        assert_eq!(
            post(
                &format!("Referer: http://127.0.0.1:{port}/\r\n"),
                "application/json"
            )
            .0,
            200
        );
        assert_eq!(
            post("", "application/json").0,
            200,
            "curl and scripts send no Origin"
        );
        // The preflight does not invite another site to post.
        let (status, headers, _) = request(
            port,
            "OPTIONS",
            "/settings",
            "Origin: https://evil.example\r\nAccess-Control-Request-Method: POST\r\n",
            "",
        );
        assert_eq!(status, 204);
        assert!(
            header(&headers, "access-control-allow-methods").is_none(),
            "{headers:?}"
        );
    }
    // With [auth], a viewer's WebSocket must come from our own page too: scheme and port
    // included.
    let port = locked.port;
    for origin in [
        format!("http://127.0.0.1:{}", free_port()),
        format!("https://127.0.0.1:{port}"),
    ] {
        match ws_with(
            port,
            &[
                (
                    "Authorization",
                    basic("vic", "vic-secret")
                        .trim_end()
                        .trim_start_matches("Authorization: "),
                ),
                ("Origin", &origin),
            ],
        ) {
            Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403, "{origin}"),
            other => panic!("{origin}: {:?}", other.map(|_| ())),
        }
    }
}

#[test]
fn health_shows_no_stderr_and_secrets_are_masked_everywhere() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let camera = script(
        scratch.path(),
        "camera.sh",
        "echo \"[rtsp @ 0x5] 401 Unauthorized: rtsp://camuser:hunter2@10.0.0.5/live?key=abc123 ; token=tok-77\" >&2\nexit 1\n",
    );
    let daemon = Daemon::start(&format!(
        "[server]\nlisten = \"127.0.0.1:{{port}}\"\n[storage]\ndir = \"{{dir}}\"\n\
         [source]\nkind = \"command\"\ncommand = [\"{}\", \"rtsp://camuser:hunter2@10.0.0.5/live\"]\n\
         [sinks.live]\ntype = \"websocket\"\n",
        camera.display()
    ));
    // A viewer wants frames, so the camera is started (and fails).
    let mut viewer = daemon.viewer("/");
    viewer.send("start");
    daemon.wait_for("the camera's failure", Duration::from_secs(10), |d| {
        d.get("/api/status").1.contains("401 Unauthorized")
    });
    let health = daemon.get("/health").1;
    assert!(
        !health.contains("Unauthorized") && !health.contains("rtsp"),
        "{health}"
    );
    let status = daemon.get("/api/status").1;
    assert!(status.contains("rtsp://***@10.0.0.5/live?key=***"), "{status}");
    let metrics = daemon.get("/metrics").1;
    let log = daemon.log_text();
    for secret in ["hunter2", "abc123", "tok-77"] {
        for (what, text) in [
            ("/health", &health),
            ("/api/status", &status),
            ("/metrics", &metrics),
            ("the log", &log),
        ] {
            assert!(!text.contains(secret), "{secret} in {what}");
        }
    }
}

#[test]
fn without_auth_a_rebound_name_gets_nothing() {
    // A page of evil.example whose name now points at the daemon (DNS rebinding) is "of
    // the daemon's own origin" to the browser; the Host it sends gives it away.
    let daemon = Daemon::start(&fakecam_config("\"--fps\", \"5\"", ""));
    let port = daemon.port;
    let as_host = |host: &str, method: &str, path: &str, extra: &str| {
        let text = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        http(port, &text)
    };
    let evil = format!("rebind.evil.example:{port}");
    for (method, path) in [
        ("GET", "/api/status"),
        ("GET", "/"),
        ("GET", "/snapshot.jpg"),
        ("POST", "/settings"),
    ] {
        let origin = format!("Origin: http://{evil}\r\n");
        let (status, headers, body) = as_host(&evil, method, path, &origin);
        assert_eq!(status, 403, "{method} {path}");
        assert!(
            String::from_utf8_lossy(&body).contains("allowed_hosts"),
            "says what to do"
        );
        assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
    }
    // The live view too.
    match ws_with(port, &[("Host", &evil), ("Origin", &format!("http://{evil}"))]) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("{:?}", other.map(|_| ())),
    }
    // A target in absolute form names the host, whatever Host says (RFC 9112 §3.2.2).
    let text = format!(
        "GET http://{evil}/api/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(http(port, &text).0, 403);
    // The upgrade's own 101 carries the security headers too.
    let mut upgrade = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    upgrade
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        upgrade,
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .expect("send");
    let mut head = [0u8; 1024];
    let read = upgrade.read(&mut head).expect("answer");
    let head = String::from_utf8_lossy(&head[..read]).to_ascii_lowercase();
    assert!(
        head.starts_with("http/1.1 101") && head.contains("x-content-type-options: nosniff"),
        "{head}"
    );
    // Monitoring by any name still works, and so do addresses and LAN names.
    assert_eq!(as_host(&evil, "GET", "/health", "").0, 200);
    for host in [
        format!("127.0.0.1:{port}"),
        format!("raspberrypi.local:{port}"),
        "camera".to_owned(),
    ] {
        assert_eq!(as_host(&host, "GET", "/api/status", "").0, 200, "{host}");
    }
    // A name of one's own is configured.
    let named = Daemon::start(
        &fakecam_config("\"--fps\", \"5\"", "")
            .replace("[storage]", "allowed_hosts = [\"Cam.Example.org\"]\n[storage]"),
    );
    let text = "GET /api/status HTTP/1.1\r\nHost: cam.example.org\r\nConnection: close\r\n\r\n";
    assert_eq!(http(named.port, text).0, 200);
}

#[test]
fn a_relays_stream_key_is_never_shown() {
    let daemon = Daemon::start(&fakecam_config("\"--fps\", \"10\"", "").replace(
        "[sinks.live]",
        "[sinks.out]\ntype = \"relay\"\nmodes = [\"on-demand\"]\n\
         url = \"rtmp://bob:hunter22@127.0.0.1:1/live/streamkey42?token=tok-77\"\n[sinks.live]",
    ));
    let mut viewer = daemon.viewer("/");
    viewer.send("start");
    // Nothing listens there: ffmpeg fails, naming the URL.
    daemon.wait_for("the relay's failure", Duration::from_secs(20), |d| {
        d.log_text().contains("relay") && d.get("/api/status").1.contains("Connection refused")
    });
    let status = daemon.get("/api/status").1;
    let (health, metrics, log) = (
        daemon.get("/health").1,
        daemon.get("/metrics").1,
        daemon.log_text(),
    );
    for secret in ["hunter22", "streamkey42", "tok-77"] {
        for (what, text) in [
            ("/health", &health),
            ("/api/status", &status),
            ("/metrics", &metrics),
            ("the log", &log),
        ] {
            assert!(!text.contains(secret), "{secret} in {what}: {text}");
        }
    }
}

#[test]
fn sessions_end_their_streams_and_closes_are_answered() {
    let daemon = Daemon::start(&config_with_users());
    let port = daemon.port;
    let (_, cookie, _) = login(port, "vic", "vic-secret", "");
    let session = cookie
        .expect("a session")
        .split(';')
        .next()
        .expect("cookie")
        .to_owned();
    let origin = format!("http://127.0.0.1:{port}");
    let mut viewer = ws_with(port, &[("Cookie", &session), ("Origin", &origin)]).expect("upgrade");
    viewer.send("start");
    viewer.frame();
    // An MJPEG stream opened with the same session.
    let mut mjpeg = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    mjpeg
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    mjpeg
        .write_all(format!("GET /stream.mjpeg HTTP/1.1\r\nHost: x\r\nCookie: {session}\r\n\r\n").as_bytes())
        .expect("request");
    let mut first = [0u8; 4096];
    assert!(mjpeg.read(&mut first).expect("stream") > 0);
    assert!(String::from_utf8_lossy(&first).starts_with("HTTP/1.1 200"));

    let logged_out = Instant::now();
    let (status, _, _) = request(
        port,
        "POST",
        "/logout",
        &format!("Cookie: {session}\r\nOrigin: {origin}\r\n"),
        "",
    );
    assert_eq!(status, 303);
    // The live view ends within a second, with a close that says why.
    let close = loop {
        match viewer.next() {
            Ok(tungstenite::Message::Close(frame)) => break frame,
            Ok(_) => assert!(
                logged_out.elapsed() < Duration::from_secs(1),
                "frames after logout"
            ),
            Err(error) => panic!("no close after logout: {error}"),
        }
    };
    assert!(
        logged_out.elapsed() < Duration::from_secs(1),
        "{:?}",
        logged_out.elapsed()
    );
    assert_eq!(close.map(|c| u16::from(c.code)), Some(1008));
    // So does the MJPEG stream: its body ends with the closing boundary.
    let mut rest = Vec::new();
    // The body ends (the connection itself may stay open for another request).
    while !rest.ends_with(b"\r\n0\r\n\r\n") {
        match mjpeg.read(&mut first) {
            Ok(0) => break,
            Ok(n) => rest.extend_from_slice(&first[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the MJPEG stream went on after logout")
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(logged_out.elapsed() < Duration::from_secs(2));
    // The closing boundary is the last chunk of data, then the chunked body's end.
    assert!(
        rest.ends_with(b"--croissantframe--\r\n\r\n0\r\n\r\n"),
        "the stream ended properly: {:?}",
        String::from_utf8_lossy(&rest[rest.len().saturating_sub(60)..])
    );

    // A real client's close handshake is answered (Python `websockets`).
    let script = format!(
        "import asyncio, websockets\n\
         async def main():\n\
         \x20   async with websockets.connect('ws://127.0.0.1:{port}/ws', additional_headers={{'Authorization': '{auth}'}}) as ws:\n\
         \x20       await ws.send('start')\n\
         \x20       await ws.recv()\n\
         \x20       await ws.close(1000)\n\
         \x20       print('closed', ws.close_code, ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None)\n\
         \x20   ws = await websockets.connect('ws://127.0.0.1:{port}/', additional_headers={{'Authorization': '{auth}'}})\n\
         \x20   loop = asyncio.get_running_loop(); t = loop.time()\n\
         \x20   try:\n\
         \x20       await ws.recv()\n\
         \x20   except websockets.ConnectionClosed as e:\n\
         \x20       print('idle', round(loop.time() - t, 1), e.rcvd.code if e.rcvd else None)\n\
         asyncio.run(main())\n",
        auth = basic("vic", "vic-secret")
            .trim_end()
            .trim_start_matches("Authorization: ")
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("run python3");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = said.lines();
    assert_eq!(lines.next(), Some("closed 1000 1000"), "{said}");
    let idle: Vec<&str> = lines.next().expect("the idle line").split(' ').collect();
    let waited: f64 = idle[1].parse().expect("seconds");
    assert!(
        idle[0] == "idle" && (9.0..=11.0).contains(&waited) && idle[2] == "1008",
        "{said}"
    );
}

#[test]
fn pages_carry_security_headers_and_symlinks_and_fifos_are_never_served() {
    let daemon = Daemon::start(&config_with_users());
    let port = daemon.port;
    let dir = daemon.dir.path();
    for sub in ["recordings", "thumbnails"] {
        std::fs::create_dir_all(dir.join(sub)).expect("dir");
    }
    std::os::unix::fs::symlink("/etc/passwd", dir.join("recordings/20261124-134400.mp4")).expect("symlink");
    std::os::unix::fs::symlink("/etc/passwd", dir.join("thumbnails/20261124-134400.jpg")).expect("symlink");
    // A FIFO would block whoever opens it until a writer came.
    for fifo in ["recordings/20261124-134500.mp4", "thumbnails/20261124-134500.jpg"] {
        let made = Command::new("mkfifo")
            .arg(dir.join(fifo))
            .status()
            .expect("mkfifo");
        assert!(made.success());
    }
    let viewer = basic("vic", "vic-secret");
    for path in [
        "/recordings/20261124-134400.mp4",
        "/thumbnails/20261124-134400.jpg",
        "/recordings/20261124-134500.mp4",
        "/thumbnails/20261124-134500.jpg",
    ] {
        let asked = Instant::now();
        let (status, _, body) = request(port, "GET", path, &viewer, "");
        assert_eq!(status, 404, "{path}");
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "{path} took {:?}",
            asked.elapsed()
        );
        assert!(!body.contains("root:"), "{path} leaked /etc/passwd");
    }
    let (_, _, list) = request(port, "GET", "/api/replays", &viewer, "");
    assert_eq!(list, "[]", "neither a symlink nor a FIFO is a recording");
    for path in ["/", "/stream", "/recordings", "/login", "/api/status"] {
        let (status, headers, _) = request(port, "GET", path, &viewer, "");
        assert_eq!(status, 200, "{path}");
        let csp = header(&headers, "content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
            "{path}: {csp}"
        );
        assert_eq!(
            header(&headers, "x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(header(&headers, "referrer-policy"), Some("same-origin"), "{path}");
        assert!(
            header(&headers, "cache-control")
                .is_some_and(|c| c.contains("private") || c.contains("no-store")),
            "{path}: behind a login nothing is for shared caches"
        );
    }
}
