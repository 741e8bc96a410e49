use super::*;
use crate::mode::Mode;
use crate::sinks::registry::TYPES;

fn errors(text: &str) -> Vec<ConfigError> {
    match Config::parse(text, "test.toml", &TYPES) {
        Ok(_) => panic!("config should be rejected:\n{text}"),
        Err(errors) => errors,
    }
}

fn one_error(text: &str) -> ConfigError {
    let mut errors = errors(text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    errors.remove(0)
}

#[test]
fn empty_config_is_the_test_pattern_with_a_live_sink() {
    let config = Config::parse("", "x", &TYPES).expect("valid");
    assert_eq!(config.source.kind, SourceKind::TestPattern);
    assert_eq!(config.server.listen.port(), 8080);
    assert_eq!(config.mode.default, Mode::OnDemand);
    let kinds: Vec<&str> = config.sinks.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(
        kinds,
        vec!["websocket", "http-mjpeg", "recorder", "thumbnailer", "retention"]
    );
    assert_eq!(config.sinks[0].modes, Mode::ALL.to_vec());
    assert_eq!(config.sinks[2].modes, vec![Mode::Continuous]);
}

#[test]
fn the_design_example_parses() {
    let text = r#"
[server]
listen = "127.0.0.1:9000"
cors_origin = "https://example.org"

[storage]
dir = "/tmp/croissant"

[mode]
default = "continuous"

[source]
kind = "rpicam"
width = 640
height = 480
framerate = 30
extra_args = ["--rotation", "180"]

[sinks.live]
type = "websocket"
modes = ["on-demand", "continuous"]
"#;
    let config = Config::parse(text, "x", &TYPES).expect("valid");
    assert_eq!(config.server.listen, "127.0.0.1:9000".parse().expect("addr"));
    assert_eq!(config.mode.default, Mode::Continuous);
    assert_eq!(
        (config.source.width, config.source.height, config.source.framerate),
        (640, 480, 30)
    );
    assert_eq!(config.sinks[0].modes, vec![Mode::OnDemand, Mode::Continuous]);
}

#[test]
fn unknown_key_names_line_and_key() {
    let e = one_error("[server]\nlisten = \"0.0.0.0:8080\"\nlisten_port = 3\n");
    assert_eq!((e.line, e.key.as_deref()), (3, Some("server.listen_port")));
    assert!(e.message.contains("unknown field `listen_port`"), "{}", e.message);
    assert!(
        e.to_string()
            .starts_with("test.toml:3:1: key `server.listen_port`"),
        "{e}"
    );
}

#[test]
fn unknown_table_is_an_error() {
    let e = one_error("[camera]\nkind = \"rpicam\"\n");
    assert!(e.message.contains("unknown field `camera`"), "{}", e.message);
}

#[test]
fn wrong_type_names_line_and_key() {
    let e = one_error("[source]\nkind = \"test-pattern\"\n\nwidth = \"wide\"\n");
    assert_eq!((e.line, e.key.as_deref()), (4, Some("source.width")));
}

#[test]
fn port_zero_is_refused() {
    let e = one_error("[server]\nlisten = \"0.0.0.0:0\"\n");
    assert_eq!((e.line, e.key.as_deref()), (2, Some("server.listen")));
    assert!(e.message.contains("port"), "{}", e.message);
}

#[test]
fn framerate_zero_is_refused() {
    let e = one_error("[source]\nframerate = 0\n");
    assert_eq!((e.line, e.key.as_deref()), (2, Some("source.framerate")));
}

#[test]
fn unknown_mode_name_is_refused() {
    let e = one_error("[mode]\ndefault = \"sometimes\"\n");
    assert_eq!((e.line, e.key.as_deref()), (2, Some("mode.default")));
    assert!(e.message.contains("on-demand"), "{}", e.message);
}

#[test]
fn unknown_sink_type_lists_the_known_ones() {
    let e = one_error("[sinks.live]\ntype = \"websockets\"\n");
    assert_eq!((e.line, e.key.as_deref()), (2, Some("sinks.live.type")));
    assert!(e.message.contains("websocket"), "{}", e.message);
}

#[test]
fn unknown_mode_in_a_sink_is_refused() {
    let e = one_error("[sinks.live]\ntype = \"websocket\"\nmodes = [\"on-demand\", \"always\"]\n");
    assert_eq!((e.line, e.key.as_deref()), (3, Some("sinks.live.modes")));
}

#[test]
fn unknown_key_in_a_sink_is_refused() {
    let e = one_error("[sinks.live]\ntype = \"websocket\"\nport = 4\n");
    assert_eq!((e.line, e.key.as_deref()), (3, Some("sinks.live.port")));
}

#[test]
fn sink_without_type_is_refused() {
    let e = one_error("[sinks.live]\nmodes = [\"on-demand\"]\n");
    assert_eq!(e.line, 1);
    assert!(e.message.contains("needs a `type`"), "{}", e.message);
}

#[test]
fn two_sinks_on_the_same_path_clash() {
    let errors = errors("[sinks.a]\ntype = \"websocket\"\n[sinks.b]\ntype = \"websocket\"\n");
    let e = &errors[0];
    assert_eq!(e.line, 3);
    assert!(e.message.contains("already claimed by sink `a`"), "{}", e.message);
}

#[test]
fn source_kinds_need_their_keys() {
    let e = one_error("[source]\nkind = \"ffmpeg-file\"\n");
    assert!(e.message.contains("needs `path`"), "{}", e.message);
    let e = one_error("[source]\nkind = \"command\"\ncommand = []\n");
    assert!(e.message.contains("needs `command`"), "{}", e.message);
    let e = one_error("[source]\nkind = \"rpicam\"\npath = \"a.mp4\"\n");
    assert!(e.message.contains("only used with"), "{}", e.message);
}

#[test]
fn several_mistakes_are_reported_together() {
    let errors = errors(
        "[source]\nframerate = 0\n[sinks.x]\ntype = \"nope\"\n[sinks.y]\ntype = \"websocket\"\nfoo = 1\n",
    );
    assert_eq!(errors.len(), 3, "{errors:?}");
}

#[test]
fn syntax_errors_are_located() {
    let e = one_error("[server\nlisten = 1\n");
    assert_eq!(e.line, 1);
}

#[test]
fn builtin_defaults_need_no_root() {
    let config = Config::builtin(&TYPES);
    assert!(config.storage.dir.is_relative());
}
