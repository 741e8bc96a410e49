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
