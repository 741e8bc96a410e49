//! The command lines of the camera kinds: `rpicam-vid`, ffmpeg playing a file, or the
//! configured command.

use crate::config::{SourceConfig, SourceKind};

/// Whether an rpicam-vid argument is one of its preview options (`-n`/`--nopreview`,
/// `-p`/`--preview`, `-f`/`--fullscreen`, `--qt-preview`), in any spelling it accepts.
fn names_preview(arg: &str) -> bool {
    let name = arg.split('=').next().unwrap_or(arg);
    matches!(name, "-n" | "-p" | "-f" | "--fullscreen")
        || (name.starts_with("--") && name.contains("preview"))
}

/// The program and arguments for a source kind; `None` for the in-process test pattern.
pub fn argv(config: &SourceConfig) -> Option<Vec<String>> {
    let size = |v: u32| v.to_string();
    match config.kind {
        SourceKind::TestPattern => None,
        SourceKind::Command => Some(config.command.clone()),
        SourceKind::Rpicam => {
            let mut argv: Vec<String> = vec![config.program.clone().unwrap_or_else(|| "rpicam-vid".into())];
            argv.extend(["-t", "0"].map(String::from));
            // A daemon draws nothing: without this, a Pi with a screen attached gets the
            // camera preview over its console. rpicam-vid refuses an option given twice, so
            // extra_args that say anything about the preview decide it alone.
            if !config.extra_args.iter().any(|arg| names_preview(arg)) {
                argv.push("--nopreview".into());
            }
            argv.extend(
                [
                    "--codec",
                    "mjpeg",
                    "--width",
                    &size(config.width),
                    "--height",
                    &size(config.height),
                    "--framerate",
                    &size(config.framerate),
                    "--inline",
                    "-o",
                    "-",
                ]
                .map(String::from),
            );
            argv.extend(config.extra_args.iter().cloned());
            Some(argv)
        }
        SourceKind::FfmpegFile => {
            let path = config
                .path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let filter = format!(
                "scale={}:{},fps={}",
                config.width, config.height, config.framerate
            );
            let mut argv: Vec<String> = vec![config.program.clone().unwrap_or_else(|| "ffmpeg".into())];
            argv.extend(
                [
                    "-hide_banner",
                    "-nostdin",
                    "-loglevel",
                    "error",
                    "-re",
                    "-stream_loop",
                    "-1",
                    "-i",
                    &path,
                    "-an",
                    "-vf",
                    &filter,
                    "-pix_fmt",
                    "yuvj420p",
                    "-c:v",
                    "mjpeg",
                    "-q:v",
                    "5",
                ]
                .map(String::from),
            );
            argv.extend(config.extra_args.iter().cloned());
            argv.extend(["-f", "mjpeg", "-"].map(String::from));
            Some(argv)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpicam_argv_matches_the_camera_stack() {
        let config = SourceConfig {
            kind: SourceKind::Rpicam,
            width: 640,
            height: 480,
            framerate: 30,
            extra_args: vec!["--rotation".into(), "180".into()],
            ..SourceConfig::default()
        };
        let argv = argv(&config).expect("a child process");
        assert_eq!(
            argv.join(" "),
            "rpicam-vid -t 0 --nopreview --codec mjpeg --width 640 --height 480 --framerate 30 --inline -o - --rotation 180"
        );
    }

    #[test]
    fn rpicam_preview_options_in_extra_args_are_not_doubled() {
        for own in [
            &["-n"][..],
            &["--nopreview=1"],
            &["--preview", "0,0,640,480"],
            &["-f"],
        ] {
            let config = SourceConfig {
                kind: SourceKind::Rpicam,
                extra_args: own.iter().map(|a| a.to_string()).collect(),
                ..SourceConfig::default()
            };
            let argv = argv(&config).expect("a child process");
            assert!(!argv.contains(&"--nopreview".to_owned()), "{argv:?}");
        }
        let rotated = SourceConfig {
            kind: SourceKind::Rpicam,
            extra_args: vec![
                "--rotation".into(),
                "180".into(),
                "--denoise".into(),
                "off".into(),
            ],
            ..SourceConfig::default()
        };
        assert!(
            argv(&rotated)
                .expect("a child process")
                .contains(&"--nopreview".to_owned())
        );
    }

    #[test]
    fn ffmpeg_file_loops_at_real_time_into_mjpeg() {
        let config = SourceConfig {
            kind: SourceKind::FfmpegFile,
            path: Some("maru.mp4".into()),
            ..SourceConfig::default()
        };
        let argv = argv(&config).expect("a child process").join(" ");
        assert!(argv.starts_with("ffmpeg "));
        assert!(argv.contains("-re -stream_loop -1 -i maru.mp4"));
        assert!(argv.ends_with("-f mjpeg -"));
    }
}
