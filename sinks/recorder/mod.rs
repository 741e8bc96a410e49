//! The recorder: pipes frames into an `ffmpeg` child that writes fragmented MP4 segments.
//!
//! The daemon, not ffmpeg, decides segment boundaries: when a frame arrives past the
//! segment's length, the next ffmpeg is started and gets that frame, then the previous one's
//! stdin is closed, so no frame falls between two segments and the daemon always knows
//! which file is being written. Frames reach ffmpeg in a minimal Matroska stream stamped
//! with their arrival times (see `mkv.rs`), so a camera delivering 14.2 fps instead of 15
//! still gives true durations. Fragmented MP4 means a power cut loses at most the last
//! fragment.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use async_process::{Child, ChildStdin, Command, Stdio};
use futures_lite::{AsyncWriteExt, future};
use serde::Deserialize;
use tracing::{Instrument, debug, info, warn};

use super::{BoxFuture, Resource, Sink, SinkConfig, SinkContext};
use crate::bus::Policy;
use crate::metrics::{Problem, SinkStats};
use crate::mode::Mode;
use crate::recordings::{Current, Recordings};
use crate::shutdown::Signal;
use crate::source::Backoff;
use crate::stderr::Tail;

use super::mkv;

/// `type = "recorder"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Length of each MP4 segment.
    #[serde(
        default = "default_segment_seconds",
        deserialize_with = "crate::config::seconds::<_, 2, 86400>"
    )]
    pub segment_seconds: u64,
    /// Video encoder.
    #[serde(default)]
    pub codec: Codec,
    /// Frames buffered for ffmpeg before new ones are dropped (and counted).
    #[serde(
        default = "default_queue_frames",
        deserialize_with = "crate::config::count::<_, 1, 10000>"
    )]
    pub queue_frames: usize,
    /// The ffmpeg program.
    #[serde(default = "default_ffmpeg")]
    pub ffmpeg: String,
    /// Extra output options for ffmpeg (e.g. `["-crf", "28"]`).
    #[serde(default)]
    pub extra_args: Vec<String>,
}

/// The H.264 encoders the recorder knows how to drive.
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

fn default_segment_seconds() -> u64 {
    300
}
fn default_queue_frames() -> usize {
    90
}
fn default_ffmpeg() -> String {
    "ffmpeg".into()
}

impl SinkConfig for Config {
    fn default_modes(&self) -> &'static [Mode] {
        &[Mode::Continuous]
    }

    fn resources(&self) -> Vec<Resource> {
        vec![Resource::Directory("recordings".into())]
    }

    fn build(&self, ctx: SinkContext) -> Result<Arc<dyn Sink>, String> {
        Ok(Arc::new(Recorder {
            config: self.clone(),
            ctx,
        }))
    }
}

/// The running recorder sink.
pub struct Recorder {
    config: Config,
    ctx: SinkContext,
}

impl Sink for Recorder {
    fn run(self: Arc<Self>, disabled: Signal) -> BoxFuture<()> {
        Box::pin(async move { self.record(disabled).await })
    }
}

impl Recorder {
    async fn record(&self, disabled: Signal) {
        let recordings = self.ctx.recordings.clone();
        if let Err(error) = std::fs::create_dir_all(recordings.recordings_dir()) {
            warn!(dir = %recordings.recordings_dir().display(), %error, "cannot create the recordings directory");
        }
        let frames = self.ctx.subscribe(Policy::Fifo(self.config.queue_frames));
        let length = Duration::from_secs(self.config.segment_seconds);
        let stats = self.ctx.stats.clone();
        let mut segment: Option<Segment> = None;
        let mut retry_at = Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        let mut reported_drops = 0;
        // Whether the recorder is known to be failing (see `stats.problem`).
        let mut failing = false;
        loop {
            let frame = crate::shutdown::unless(&disabled, frames.recv()).await;
            let Some(frame) = frame else { break };

            let expired = segment
                .as_ref()
                .is_some_and(|s| frame.at.duration_since(s.started).unwrap_or_default() >= length);
            if expired && let Some(old) = segment.take() {
                recordings.set_current(None);
                // The next segment starts below with this frame; this one finishes meanwhile.
                let recordings = recordings.clone();
                let stats = stats.clone();
                crate::runtime::spawn(async move {
                    let (stem, length) = (old.stem.clone(), old.length());
                    old.finish(&stats).await;
                    recordings.finished(&stem, length);
                })
                .detach();
            }
            if segment.is_none() {
                if Instant::now() < retry_at {
                    continue;
                }
                match Segment::start(&self.config, &recordings, frame.at) {
                    Ok(started) => {
                        recordings.set_current(Some(Current {
                            stem: started.stem.clone(),
                            started: started.started,
                        }));
                        segment = Some(started);
                        stats.up.store(true, Ordering::Relaxed);
                    }
                    Err(error) => {
                        let pause = backoff.next_delay();
                        warn!(%error, retry_in_ms = pause.as_millis() as u64, "cannot start ffmpeg for a segment");
                        stats.set_problem(Some(Problem {
                            reason: format!("cannot start ffmpeg: {error}"),
                            detail: String::new(),
                        }));
                        failing = true;
                        retry_at = Instant::now() + pause;
                        continue;
                    }
                }
            }
            let Some(current) = segment.as_mut() else { continue };
            if let Err(error) = current.write(&frame.jpeg, frame.at).await {
                let Some(dead) = segment.take() else { continue };
                let lived = dead.opened.elapsed();
                let (stem, length) = (dead.stem.clone(), dead.length());
                let tail = dead.finish(&stats).await;
                stats.up.store(false, Ordering::Relaxed);
                stats.restarts.fetch_add(1, Ordering::Relaxed);
                recordings.set_current(None);
                recordings.finished(&stem, length);
                if lived > Duration::from_secs(30) {
                    backoff.reset();
                }
                let pause = backoff.next_delay();
                warn!(segment = %stem, %error, stderr = %tail, retry_in_ms = pause.as_millis() as u64, "ffmpeg died mid-segment; starting a new one");
                stats.set_problem(Some(Problem {
                    reason: format!("ffmpeg died mid-segment ({error})"),
                    detail: tail.clone(),
                }));
                failing = true;
                retry_at = Instant::now() + pause;
                continue;
            }
            stats.delivered.fetch_add(1, Ordering::Relaxed);
            if failing && current.opened.elapsed() >= HEALTHY_AFTER {
                stats.set_problem(None);
                failing = false;
            }
            let dropped = frames.dropped();
            if dropped > reported_drops {
                warn!(dropped, "ffmpeg is slower than the camera; frames were dropped");
                reported_drops = dropped;
            }
        }
        if let Some(last) = segment.take() {
            info!(segment = %last.stem, "finishing the segment");
            let (stem, length) = (last.stem.clone(), last.length());
            recordings.set_current(None);
            last.finish(&stats).await;
            recordings.finished(&stem, length);
        }
        stats.up.store(false, Ordering::Relaxed);
        stats.set_problem(None);
        recordings.set_current(None);
    }
}

/// An ffmpeg that has taken frames this long after a failure counts as working again; one
/// that keeps dying sooner (a full disk, a broken encoder) keeps the recorder reported as
/// failing instead of flapping between the two.
const HEALTHY_AFTER: Duration = Duration::from_secs(5);

/// Why the recorder is failing when ffmpeg took frames and left nothing playable.
const CANNOT_WRITE: &str = "a segment could not be written (is the disk full?)";

/// One ffmpeg child writing one MP4 file.
struct Segment {
    stem: String,
    path: PathBuf,
    started: SystemTime,
    opened: Instant,
    child: Child,
    stdin: Option<ChildStdin>,
    muxer: mkv::Muxer,
    /// Arrival times of the last frame written and how many were written.
    last_at: SystemTime,
    frames: u64,
    stderr_tail: Tail,
    stderr_task: Option<smol::Task<()>>,
}

impl Segment {
    fn start(config: &Config, recordings: &Recordings, at: SystemTime) -> std::io::Result<Segment> {
        // The daemon makes the file (never through a symlink: a name already taken, even
        // by a dangling one, is skipped), then ffmpeg overwrites it. Writing to the
        // daemon's descriptor instead would hide a full disk: ffmpeg ignores the error of
        // its last write there, and exits as if all went well.
        let (stem, file) = recordings.create_segment(at)?;
        drop(file);
        let path = recordings.recordings_dir().join(format!("{stem}.mp4"));
        let spawned = Command::new(&config.ffmpeg)
            .args(ffmpeg_args(config, &path))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("cannot run `{}`: {e}", config.ffmpeg),
                ));
            }
        };
        let stdin = child.stdin.take();
        let stderr_tail = Tail::default();
        let stderr_task = child.stderr.take().map(|stderr| {
            let span = tracing::debug_span!("ffmpeg", segment = %stem);
            let follow =
                crate::stderr::follow(stderr, stderr_tail.clone(), Vec::new(), |line| debug!("{line}"));
            crate::runtime::spawn(follow.instrument(span))
        });
        info!(segment = %stem, pid = child.id(), "segment started");
        Ok(Segment {
            stem,
            path,
            started: at,
            opened: Instant::now(),
            child,
            stdin,
            muxer: mkv::Muxer::new(),
            last_at: at,
            frames: 0,
            stderr_tail,
            stderr_task,
        })
    }

    async fn write(&mut self, jpeg: &[u8], at: SystemTime) -> std::io::Result<()> {
        let bytes = self.muxer.frame(jpeg, at);
        self.last_at = at;
        self.frames += 1;
        match self.stdin.as_mut() {
            Some(stdin) => stdin.write_all(&bytes).await,
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }

    /// The recorded length: first to last frame, plus one average frame interval for the
    /// last frame's own duration.
    fn length(&self) -> Option<Duration> {
        let span = self.last_at.duration_since(self.started).ok()?;
        match self.frames {
            0 => None,
            1 => Some(span),
            n => Some(span + span / (n as u32 - 1)),
        }
    }

    /// Closes ffmpeg's stdin so it writes the last fragment and exits; signals it only if it
    /// hangs. (ffmpeg reading a pipe ignores SIGTERM while the pipe stays open.) Counts the
    /// segment in `stats`; returns the tail of ffmpeg's stderr.
    async fn finish(mut self, stats: &SinkStats) -> String {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.close().await;
        }
        let pid = self.child.id();
        let waited = future::or(async { Some(self.child.status().await) }, async {
            smol::Timer::after(Duration::from_secs(15)).await;
            None
        })
        .await;
        let status = match waited {
            Some(status) => status,
            None => {
                warn!(segment = %self.stem, pid, "ffmpeg did not finish within 15 s; killing it");
                let _ = self.child.kill();
                self.child.status().await
            }
        };
        if let Some(task) = self.stderr_task.take() {
            future::or(task, async {
                smol::Timer::after(Duration::from_secs(1)).await;
            })
            .await;
        }
        let tail = self.stderr_tail.joined();
        // A file no player can open (ffmpeg died before its first fragment, or could not
        // write at all) would only be a broken entry in the gallery; a cut-off last write
        // is cut away, so what is listed plays to its end.
        let path = self.path.clone();
        let settled = smol::unblock(move || crate::mp4::settle(&path)).await;
        match settled {
            Ok(crate::mp4::Settled::Removed) => {
                warn!(segment = %self.stem, stderr = %tail, "segment holds no complete fragment; removed");
                // Frames went in and nothing playable came out: ffmpeg could not write
                // (a full disk makes it fail only at its last write, and exit as if fine).
                if self.frames > 0 && self.opened.elapsed() >= Duration::from_secs(1) {
                    stats.set_problem(Some(Problem {
                        reason: CANNOT_WRITE.into(),
                        detail: tail.clone(),
                    }));
                    stats.restarts.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(kept) => {
                if let crate::mp4::Settled::Truncated { from, to } = kept {
                    warn!(segment = %self.stem, from, to, "cut-off last fragment removed");
                }
                // A segment that plays means writing works again.
                if stats.problem().is_some_and(|p| p.reason == CANNOT_WRITE) {
                    stats.set_problem(None);
                }
            }
            Err(error) => warn!(segment = %self.stem, %error, "cannot check the segment"),
        }
        let bytes = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        if bytes > 0 {
            stats.segments.fetch_add(1, Ordering::Relaxed);
            stats.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        match status {
            Ok(status) if status.success() => info!(segment = %self.stem, bytes, "segment finished"),
            Ok(status) => warn!(segment = %self.stem, %status, stderr = %tail, "ffmpeg exited with an error"),
            Err(error) => warn!(segment = %self.stem, %error, "cannot get ffmpeg's exit status"),
        }
        tail
    }
}

/// The ffmpeg command line for one segment, written to `path` (which exists, empty).
fn ffmpeg_args(config: &Config, path: &std::path::Path) -> Vec<String> {
    let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    // The input carries each frame's arrival time; keep those timestamps as they are. The
    // track header says what the input is, so skip ffmpeg's seconds of probing, which
    // would delay the file (and widen what a power cut loses).
    let mut args = words(
        "-hide_banner -loglevel error -probesize 4096 -analyzeduration 0 \
         -f matroska -i pipe:0 -an -fps_mode passthrough",
    );
    args.extend(config.codec.args(None));
    // A keyframe every 2 s, so fragments (and what a power cut can lose) stay short.
    args.extend(words("-force_key_frames expr:gte(t,n_forced*2)"));
    args.extend(config.extra_args.iter().cloned());
    // Each fragment goes to disk as soon as it is complete.
    args.extend(words(
        "-flush_packets 1 -movflags +frag_keyframe+empty_moov+default_base_moof -f mp4",
    ));
    args.push("-y".into());
    args.push(format!("file:{}", path.display()));
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ffmpeg_writes_fragmented_mp4_from_wallclock_stamps() {
        let config: Config = toml::from_str("").expect("defaults");
        assert_eq!((config.segment_seconds, config.codec), (300, Codec::Libx264));
        let args = ffmpeg_args(&config, std::path::Path::new("/r/x.mp4")).join(" ");
        assert!(args.contains("-f matroska -i pipe:0"));
        assert!(args.contains("+frag_keyframe+empty_moov+default_base_moof"));
        assert!(args.ends_with("-f mp4 -y file:/r/x.mp4"));
        let pi: Config = toml::from_str("codec = \"h264_v4l2m2m\"").expect("pi codec");
        assert!(
            ffmpeg_args(&pi, std::path::Path::new("x"))
                .join(" ")
                .contains("h264_v4l2m2m")
        );
    }

    #[test]
    fn unknown_codec_is_refused() {
        assert!(toml::from_str::<Config>("codec = \"h265\"").is_err());
    }
}
