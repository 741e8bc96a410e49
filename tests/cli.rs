//! The command line: `check`, exit codes, and errors that point at the line.

mod common;

use std::process::Command;

use common::CROISSANT;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(CROISSANT)
        .args(args)
        .output()
        .expect("run croissant");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_config_exits_2_naming_file_line_and_key() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "[source]\nkind = \"test-pattern\"\nframerate = 0\n").expect("write");
    let path = path.to_str().expect("utf-8 path");
    for args in [vec!["check", "--config", path], vec!["--config", path]] {
        let (code, _, stderr) = run(&args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(&format!("{path}:3:")), "{stderr}");
        assert!(stderr.contains("source.framerate"), "{stderr}");
    }
}

#[test]
fn check_accepts_the_example_config() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml");
    let (code, stdout, stderr) = run(&["check", "--config", example]);
    assert_eq!(code, 0, "{stderr}");
    // What the example sets up, as the daemon read it.
    assert!(
        stdout.trim_end().ends_with(
            ": ok (source test-pattern 1280x720@15, sinks: live (websocket), mjpeg (http-mjpeg), \
             recorder (recorder), retention (retention), thumbnails (thumbnailer))"
        ),
        "{stdout}"
    );
}

#[test]
fn missing_config_file_exits_2() {
    let (code, _, stderr) = run(&["check", "--config", "/nonexistent/croissant.toml"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/croissant.toml"), "{stderr}");
}

#[test]
fn version_and_help() {
    let (code, stdout, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")));
    let (code, stdout, _) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("check") && stdout.contains("--config"),
        "{stdout}"
    );
}

#[test]
fn check_accepts_the_packaged_pi_config() {
    // With the users file the package makes at install, here in a temporary directory.
    let dir = tempfile::tempdir().expect("dir");
    let users = dir.path().join("users.toml");
    std::fs::write(
        &users,
        format!(
            "[users.admin]\nrole = \"admin\"\npassword_hash = \"{}\"\n",
            common::hash("pw")
        ),
    )
    .expect("write");
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/config.toml"))
        .expect("the packaged config");
    assert!(
        text.contains("users_file = \"/etc/croissant/users.toml\""),
        "{text}"
    );
    let packaged = dir.path().join("config.toml");
    std::fs::write(
        &packaged,
        text.replace("/etc/croissant/users.toml", &users.display().to_string()),
    )
    .expect("write");
    let packaged = packaged.to_str().expect("utf-8 path");
    let (code, stdout, stderr) = run(&["check", "--config", packaged]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("rpicam"), "{stdout}");
}

#[test]
fn users_can_live_in_a_file_of_their_own_and_its_mistakes_point_at_it() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("config.toml");
    let users = dir.path().join("users.toml");
    let hash = common::hash("s3cret");
    std::fs::write(
        &config,
        format!(
            "[source]\nkind = \"test-pattern\"\n[auth]\nusers_file = \"{}\"\n",
            users.display()
        ),
    )
    .expect("write");
    let config = config.to_str().expect("utf-8 path");
    let users_path = users.to_str().expect("utf-8 path");

    let (code, _, stderr) = run(&["check", "--config", config]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("{config}:4:")) && stderr.contains("cannot read users_file"),
        "a missing file is named at the key: {stderr}"
    );

    std::fs::write(
        &users,
        format!("[users.admin]\nrole = \"admin\"\npassword_hash = \"{hash}\"\n"),
    )
    .expect("write");
    let (code, stdout, stderr) = run(&["check", "--config", config]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("ok"), "{stdout}");

    std::fs::write(
        &users,
        format!(
            "[users.admin]\nrole = \"admin\"\npassword_hash = \"{hash}\"\n[users.bob]\nrole = \"boss\"\n"
        ),
    )
    .expect("write");
    let (code, _, stderr) = run(&["check", "--config", config]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("{users_path}:5:")),
        "the users file's own line: {stderr}"
    );

    std::fs::write(&users, "").expect("write");
    let (code, _, stderr) = run(&["check", "--config", config]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("no users") && stderr.contains(&format!("{config}:3:")),
        "{stderr}"
    );
}

/// `check` on `text` as a config file: its exit code and what it printed.
fn check_text(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).expect("write");
    let (code, stdout, stderr) = run(&["check", "--config", path.to_str().expect("utf-8 path")]);
    (code, format!("{stdout}{stderr}"))
}

#[test]
fn a_sink_may_not_take_the_daemons_own_paths() {
    // /health and /login are open without a login: a stream there would be open too.
    for (kind, path) in [
        ("http-mjpeg", "/health"),
        ("http-mjpeg", "/login"),
        ("http-mjpeg", "/api/status"),
        ("http-mjpeg", "/recordings/x.mp4"),
        ("http-mjpeg", "/"),
        ("websocket", "/metrics"),
    ] {
        let key = if kind == "websocket" { "paths" } else { "path" };
        let value = if kind == "websocket" {
            format!("[\"{path}\"]")
        } else {
            format!("\"{path}\"")
        };
        let (code, out) = check_text(&format!("[sinks.s]\ntype = \"{kind}\"\n{key} = {value}\n"));
        assert_eq!(code, 2, "{kind} on {path}: {out}");
        assert!(
            out.contains("is the daemon's own") && out.contains(":1:"),
            "{out}"
        );
    }
    for bad in ["ws", "/ws?x=1", "/a/../ws", "/a b", "/é", "/a;b"] {
        let (code, out) = check_text(&format!("[sinks.s]\ntype = \"websocket\"\npaths = [\"{bad}\"]\n"));
        assert_eq!(code, 2, "{bad}: {out}");
        assert!(out.contains("must start with /"), "{out}");
    }
    // Names go into log lines as they are: no line breaks, quotes or spaces.
    let (code, out) = check_text("[sinks.\"a\\nlogin failed\"]\ntype = \"websocket\"\npaths = [\"/x\"]\n");
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("use letters, digits") && !out.contains("\nlogin failed"),
        "{out}"
    );
    // The viewer's WebSocket shares the page's path, as the original server's did.
    let (code, out) = check_text("[sinks.live]\ntype = \"websocket\"\npaths = [\"/\", \"/stream\"]\n");
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_refused_relay_url_keeps_its_secrets() {
    for url in [
        "ftp://user:hunter2@127.0.0.1/live/streamkey123",
        "rtmp//media.local/live/streamkey123",
    ] {
        let (code, out) = check_text(&format!("[sinks.relay]\ntype = \"relay\"\nurl = \"{url}\"\n"));
        assert_eq!(code, 2, "{out}");
        assert!(out.contains("is not a push URL"), "{out}");
        assert!(!out.contains("hunter2") && !out.contains("streamkey123"), "{out}");
    }
}

#[test]
fn only_a_regular_nonempty_config_file_is_read() {
    let dir = tempfile::tempdir().expect("dir");
    // A FIFO would block the reader until someone writes to it.
    let fifo = dir.path().join("fifo.toml");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .expect("mkfifo");
    let mut child = Command::new(CROISSANT)
        .args(["check", "--config"])
        .arg(&fifo)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run croissant");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("`check` on a FIFO did not return within 10 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(2));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("read");
    assert!(stderr.contains("not a regular file"), "{stderr}");

    // The packaged config opens with comments: a copy caught after them sets nothing.
    for empty in [
        "",
        "\n  \n",
        "# Croissant configuration\n# Every key is optional\n",
        "\u{feff}\n",
    ] {
        let (code, out) = check_text(empty);
        assert_eq!(code, 2, "{out}");
        assert!(out.contains("the file is empty"), "{out}");
    }
    let (code, out) = check_text(&"# a comment\n".repeat(100_000));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("larger than 1024 KiB"), "{out}");
}
