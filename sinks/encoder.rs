//! What the recorder and the relay share about driving ffmpeg: how frames go in (Matroska
//! MJPEG stamped with their arrival times, see `mkv.rs`), the H.264 encoders, and a
//! keyframe every 2 s.

use crate::metrics::SeriesName;
use serde::Deserialize;

/// The H.264 encoders the recorder and the relay know how to drive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    /// Software x264: plays in every browser.
    #[default]
    Libx264,
    /// The Raspberry Pi's hardware encoder.
    H264V4l2m2m,
}

impl Codec {
    /// ffmpeg's encoder options. `bitrate_kbps` caps the rate for streaming; without it
    /// x264 aims at a constant quality, which suits files.
    pub fn args(self, bitrate_kbps: Option<usize>) -> Vec<String> {
        // zerolatency keeps x264 from holding frames back.
        let mut args = match self {
            Codec::Libx264 => "-c:v libx264 -preset veryfast -tune zerolatency -pix_fmt yuv420p",
            Codec::H264V4l2m2m => "-c:v h264_v4l2m2m -pix_fmt yuv420p",
        }
        .split(' ')
        .map(String::from)
        .collect::<Vec<_>>();
        let rate = match (self, bitrate_kbps) {
            (_, Some(kbps)) => format!("-b:v {kbps}k -maxrate {kbps}k -bufsize {}k", kbps * 2),
            (Codec::Libx264, None) => "-crf 23".to_owned(),
            (Codec::H264V4l2m2m, None) => "-b:v 4M".to_owned(),
        };
        args.extend(rate.split(' ').map(String::from));
        args
    }
}

/// ffmpeg's input options: the Matroska stream on stdin, its timestamps kept as they are.
/// The track header says what the input is, so ffmpeg's seconds of probing are skipped
/// (they would delay the output, and widen what a power cut loses from a recording).
pub fn input_args() -> Vec<String> {
    words(
        "-hide_banner -loglevel error -probesize 4096 -analyzeduration 0 \
         -f matroska -i pipe:0 -an -fps_mode passthrough",
    )
}

/// A keyframe every 2 s: a recording's fragments (and what a power cut can lose) stay that
/// short, and a player joining a relayed stream waits at most that long.
pub fn keyframe_args() -> Vec<String> {
    words("-force_key_frames expr:gte(t,n_forced*2)")
}

/// `s` split into ffmpeg arguments at blanks.
pub fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

/// `croissant_ffmpeg_restarts_total`, kept by the sinks that run ffmpeg.
pub const FFMPEG_RESTARTS: SeriesName = (
    "ffmpeg_restarts",
    "Times a sink's ffmpeg was started again after it failed",
);
/// `croissant_ffmpeg_up`, kept by the sinks that run ffmpeg.
pub const FFMPEG_UP: SeriesName = ("ffmpeg_up", "1 while a sink's ffmpeg runs");
