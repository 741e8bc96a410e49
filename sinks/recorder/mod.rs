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
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_process::ChildStdin;
use futures_lite::AsyncWriteExt;
use serde::Deserialize;
use tracing::{debug, info, warn};

use super::{BoxFuture, Resource, Sink, SinkConfig, SinkContext};
use crate::backoff::Backoff;
use crate::bus::{Frame, Policy, Subscription};
use crate::child::{Ask, Child, Pipes};
use crate::metrics::{Problem, SeriesName, SinkStats};
use crate::mode::Mode;
use crate::ratelimit::RateLimit;
use crate::recordings::{Current, Recordings};
use crate::shutdown::Signal;
use crate::splitter::jpeg_size;

use super::encoder::{Codec, FFMPEG_RESTARTS, FFMPEG_UP, input_args, keyframe_args, words};
use super::mkv;

/// `type = "recorder"`
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
        // Exported from the start, at zero.
        ctx.stats.counter(SEGMENTS);
        ctx.stats.counter(BYTES);
        ctx.stats.counter(FFMPEG_RESTARTS);
        ctx.stats.gauge(FFMPEG_UP);
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
        // Subscribed now, not when the task first runs: a recorder replacing another at a
        // reload has every frame from before the old one stops.
        let frames = self.ctx.subscribe(Policy::Fifo(self.config.queue_frames));
        Box::pin(async move { self.record(frames, disabled).await })
    }
}

impl Recorder {
    /// Lets `old` finish in a task of its own while the next segment starts, kept in
    /// `finishing` so the recorder awaits it before it stops.
    fn finish_meanwhile(&self, old: Segment, finishing: &mut Vec<smol::Task<()>>) {
        let recordings = self.ctx.recordings.clone();
        recordings.end_current(&old.stem);
        let stats = self.ctx.stats.clone();
        let config = self.config.clone();
        let frame_rate = self.ctx.frame_rate.get();
        finishing.retain(|task| !task.is_finished());
        finishing.push(crate::runtime::spawn(async move {
            let stem = old.stem.clone();
            let finished = old.finish(&stats).await;
            recordings.finished(&stem, finished.length);
            // The next segment has begun with later frames, so what this ffmpeg died
            // without writing cannot open it: it gets a segment of its own.
            if !finished.unwritten.is_empty() {
                warn!(segment = %stem, frames = finished.unwritten.len(), "ffmpeg died while finishing its segment; its last frames go to a segment of their own");
                record_leftovers(&config, &recordings, frame_rate, &stats, finished.unwritten).await;
            }
        }));
    }

    async fn record(&self, frames: Subscription, disabled: Signal) {
        let recordings = self.ctx.recordings.clone();
        if let Err(error) = std::fs::create_dir_all(recordings.recordings_dir()) {
            warn!(dir = %recordings.recordings_dir().display(), %error, "cannot create the recordings directory");
        }
        let length = Duration::from_secs(self.config.segment_seconds);
        let stats = self.ctx.stats.clone();
        let mut segment: Option<Segment> = None;
        // Frames for the next encoder, oldest first: what a dead one had not written, and
        // what came while waiting to start another.
        let mut waiting = Held::default();
        let mut retry_at = Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        let mut reported_drops = 0;
        // Whether the recorder is known to be failing (see `stats.problem`).
        let mut failing = false;
        // Segments finishing (and the segments of frames a dying one left): awaited before
        // the recorder stops, so a shutdown right after a segment's end loses nothing.
        let mut finishing: Vec<smol::Task<()>> = Vec::new();
        // Since when encoders have worked without a failure (across segments: with short
        // segments no one ffmpeg lives long enough to tell).
        let mut working_since: Option<Instant> = None;
        loop {
            let frame = crate::shutdown::unless(&disabled, frames.recv()).await;
            let Some(frame) = frame else { break };

            let expired = segment
                .as_ref()
                .is_some_and(|s| frame.at.duration_since(s.started).unwrap_or_default() >= length);
            if expired && let Some(old) = segment.take() {
                self.finish_meanwhile(old, &mut finishing);
            }
            waiting.push(frame);
            if segment.is_none() {
                if Instant::now() < retry_at {
                    continue;
                }
                let Some(first) = waiting.first_at() else { continue };
                match Segment::start(&self.config, &recordings, first, self.ctx.frame_rate.get()) {
                    Ok(started) => {
                        recordings.set_current(Some(Current {
                            stem: started.stem.clone(),
                            started: started.started,
                        }));
                        segment = Some(started);
                        working_since.get_or_insert_with(Instant::now);
                        stats.gauge(FFMPEG_UP).store(1, Ordering::Relaxed);
                    }
                    Err(error) => {
                        let pause = backoff.next_delay();
                        warn!(%error, retry_in_ms = pause.as_millis() as u64, "cannot start ffmpeg for a segment");
                        stats.set_problem(Some(Problem {
                            reason: format!("cannot start ffmpeg: {error}"),
                            detail: String::new(),
                        }));
                        failing = true;
                        working_since = None;
                        retry_at = Instant::now() + pause;
                        continue;
                    }
                }
            }
            let Some(current) = segment.as_mut() else { continue };
            let written = current.write_all(&mut waiting, &stats.delivered).await;
            if let Ok(Written::UpToNewSize) = written {
                // An encoder would scale frames of another size to its first one's, squeezing
                // them: a new picture size (the camera reconfigured, also while ffmpeg
                // restarted) ends the segment; the frames from there start the next one.
                info!("the picture size changed; a new segment starts");
                if let Some(old) = segment.take() {
                    self.finish_meanwhile(old, &mut finishing);
                }
                continue;
            }
            if let Err(error) = written {
                let Some(dead) = segment.take() else { continue };
                let worked = working_since.take().map(|since| since.elapsed());
                let stem = dead.stem.clone();
                let finished = dead.finish(&stats).await;
                stats.gauge(FFMPEG_UP).store(0, Ordering::Relaxed);
                stats.counter(FFMPEG_RESTARTS).fetch_add(1, Ordering::Relaxed);
                recordings.end_current(&stem);
                recordings.finished(&stem, finished.length);
                if worked.is_some_and(|worked| worked > Duration::from_secs(30)) {
                    backoff.reset();
                }
                let pause = backoff.next_delay();
                // Nothing already in memory is lost: what the file does not hold is written
                // again, first, by the next encoder.
                let again = finished.unwritten.len();
                waiting.put_back(finished.unwritten);
                warn!(segment = %stem, %error, stderr = %finished.tail, retry_in_ms = pause.as_millis() as u64, frames_to_next_segment = again, "ffmpeg died mid-segment; the frames its file does not hold go to the next segment");
                stats.set_problem(Some(Problem {
                    reason: format!("ffmpeg died mid-segment ({error})"),
                    detail: finished.tail,
                }));
                failing = true;
                retry_at = Instant::now() + pause;
                continue;
            }
            if failing && working_since.is_some_and(|since| since.elapsed() >= HEALTHY_AFTER) {
                stats.set_problem(None);
                failing = false;
            }
            let dropped = frames.dropped();
            if dropped > reported_drops {
                warn!(dropped, "ffmpeg is slower than the camera; frames were dropped");
                reported_drops = dropped;
            }
        }
        // Frames in memory are written before the recorder stops: those of the segment
        // being written, and any its ffmpeg died without writing or that wait for a new
        // one (the camera stops or the mode switches during a restart's pause).
        let mut leftovers = Vec::new();
        if let Some(last) = segment.take() {
            info!(segment = %last.stem, "finishing the segment");
            let stem = last.stem.clone();
            recordings.end_current(&stem);
            let finished = last.finish(&stats).await;
            recordings.finished(&stem, finished.length);
            leftovers = finished.unwritten;
        }
        leftovers.extend(std::mem::take(&mut waiting.frames));
        if !leftovers.is_empty() {
            info!(
                frames = leftovers.len(),
                "writing the frames no ffmpeg has written yet"
            );
            record_leftovers(
                &self.config,
                &recordings,
                self.ctx.frame_rate.get(),
                &stats,
                leftovers,
            )
            .await;
        }
        for task in finishing {
            task.await;
        }
        stats.gauge(FFMPEG_UP).store(0, Ordering::Relaxed);
        stats.set_problem(None);
    }
}

/// Writes frames a dead ffmpeg left, and no later ones, into a segment of their own (named
/// by the first one's time, so it lists between the segments around it).
async fn record_leftovers(
    config: &Config,
    recordings: &Recordings,
    frame_rate: Option<u32>,
    stats: &SinkStats,
    frames: Vec<Frame>,
) {
    let Some(first) = frames.first().map(|f| f.at) else {
        return;
    };
    let count = frames.len();
    let mut segment = match Segment::start(config, recordings, first, frame_rate) {
        Ok(segment) => segment,
        Err(error) => {
            warn!(%error, lost = count, "cannot start ffmpeg for the frames a dead one left; they are lost");
            return;
        }
    };
    let mut held = Held::default();
    held.put_back(frames);
    let written = segment.write_all(&mut held, &stats.delivered).await;
    let stem = segment.stem.clone();
    let finished = segment.finish(stats).await;
    recordings.finished(&stem, finished.length);
    let lost = finished.unwritten.len() + held.frames.len();
    if written.is_err() || lost > 0 {
        warn!(segment = %stem, lost, stderr = %finished.tail, "ffmpeg died writing the frames a dead one left; they are lost");
    } else {
        info!(segment = %stem, frames = count, "the frames a dead ffmpeg left are recorded");
    }
}

/// `croissant_recorder_segments_total`
const SEGMENTS: SeriesName = ("recorder_segments", "Recording segments finished");
/// `croissant_recorder_bytes_total`
const BYTES: SeriesName = ("recorder_bytes", "Bytes of recordings written");
/// How long ffmpeg gets to write its last fragment once its input ends.
const FINISH_WITHIN: Duration = Duration::from_secs(15);

/// An ffmpeg that has taken frames this long after a failure counts as working again; one
/// that keeps dying sooner (a full disk, a broken encoder) keeps the recorder reported as
/// failing instead of flapping between the two.
const HEALTHY_AFTER: Duration = Duration::from_secs(5);

/// Why the recorder is failing when ffmpeg took frames and left nothing playable.
const CANNOT_WRITE: &str = "a segment could not be written (is the disk full?)";

/// Frames held for an encoder that is not running (it died, and the next one waits out its
/// backoff): at most this many bytes; beyond it the oldest go, and the log says so.
const WAITING_BYTES: usize = 32 << 20;

/// Frames written to an encoder and not yet known to be in its file are kept (for the next
/// encoder, should this one die) at most this long: a fragment is 2 s, so a healthy encoder
/// confirms them well within it. And at most this many bytes.
const UNCONFIRMED_FOR: Duration = Duration::from_secs(6);
const UNCONFIRMED_BYTES: usize = 32 << 20;

/// How often the recorder looks at how far the file has got (a walk over the new boxes).
const CONFIRM_EVERY: Duration = Duration::from_secs(1);

/// Frames in order, with their total size, held in memory for an encoder.
struct Held {
    frames: std::collections::VecDeque<Frame>,
    bytes: usize,
    /// Frames let go because no encoder took them in time, and when that was last logged.
    lost: u64,
    lost_logged: RateLimit,
}

impl Default for Held {
    fn default() -> Self {
        Held {
            frames: Default::default(),
            bytes: 0,
            lost: 0,
            lost_logged: RateLimit::new(Duration::from_secs(30)),
        }
    }
}

impl Held {
    fn push(&mut self, frame: Frame) {
        self.bytes += frame.jpeg.len();
        self.frames.push_back(frame);
        while self.bytes > WAITING_BYTES && self.frames.len() > 1 {
            self.pop();
            self.lost += 1;
            if self.lost_logged.allow().is_some() {
                warn!(lost = self.lost, "no encoder for too long; frames lost");
            }
        }
    }

    fn pop(&mut self) -> Option<Frame> {
        let frame = self.frames.pop_front()?;
        self.bytes -= frame.jpeg.len();
        Some(frame)
    }

    /// Puts frames back in front of those held, in their order.
    fn put_back(&mut self, frames: Vec<Frame>) {
        for frame in frames.into_iter().rev() {
            self.bytes += frame.jpeg.len();
            self.frames.push_front(frame);
        }
    }

    fn first_at(&self) -> Option<SystemTime> {
        self.frames.front().map(|f| f.at)
    }
}

/// What a segment's end left: for the log and the list, and the frames its file does not
/// hold (empty unless its ffmpeg died).
struct Finished {
    tail: String,
    /// The play time of what the file holds, if it holds anything.
    length: Option<Duration>,
    unwritten: Vec<Frame>,
}

/// How far [`Segment::write_all`] got.
#[derive(Debug, PartialEq, Eq)]
enum Written {
    /// Every held frame went to ffmpeg.
    All,
    /// It stopped at a frame of another picture size, which is held still.
    UpToNewSize,
}

/// One ffmpeg child writing one MP4 file.
struct Segment {
    stem: String,
    path: PathBuf,
    started: SystemTime,
    /// The picture size of its first frame.
    size: Option<(u16, u16)>,
    opened: Instant,
    child: Child,
    stdin: Option<ChildStdin>,
    muxer: mkv::Muxer,
    /// Frames written to ffmpeg that the file is not yet known to hold, with their
    /// timestamps in it (milliseconds since the first frame).
    unconfirmed: std::collections::VecDeque<(u64, Frame)>,
    unconfirmed_bytes: usize,
    /// Frames let go from `unconfirmed` before the file was known to hold them.
    unconfirmed_lost: u64,
    /// How far the file is known to have got.
    walk: crate::mp4::Walk,
    checked: Instant,
    frames: u64,
}

impl Segment {
    fn start(
        config: &Config,
        recordings: &Recordings,
        at: SystemTime,
        frame_rate: Option<u32>,
    ) -> std::io::Result<Segment> {
        // The daemon makes the file (never through a symlink: a name already taken, even
        // by a dangling one, is skipped), then ffmpeg overwrites it. Writing to the
        // daemon's descriptor instead would hide a full disk: ffmpeg ignores the error of
        // its last write there, and exits as if all went well.
        let (stem, file) = recordings.create_segment(at)?;
        drop(file);
        let path = recordings.recordings_dir().join(format!("{stem}.mp4"));
        let span = tracing::debug_span!("ffmpeg", segment = %stem);
        let spawned = span.in_scope(|| {
            Child::spawn(
                &config.ffmpeg,
                &ffmpeg_args(config, &path),
                Pipes::Input,
                Vec::new(),
                |line| debug!("{line}"),
            )
        });
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) => {
                let _ = std::fs::remove_file(&path);
                recordings.finished(&stem, None);
                return Err(error);
            }
        };
        let stdin = child.take_stdin();
        info!(segment = %stem, pid = child.pid(), "segment started");
        Ok(Segment {
            stem,
            path,
            started: at,
            size: None,
            opened: Instant::now(),
            child,
            stdin,
            muxer: mkv::Muxer::new(frame_rate),
            unconfirmed: std::collections::VecDeque::new(),
            unconfirmed_bytes: 0,
            unconfirmed_lost: 0,
            walk: crate::mp4::Walk::default(),
            checked: Instant::now(),
            frames: 0,
        })
    }

    /// Writes the held frames to ffmpeg, oldest first. A frame that went in is kept until
    /// the file is known to hold it (see [`Segment::finish`]).
    async fn write_all(&mut self, held: &mut Held, delivered: &AtomicU64) -> std::io::Result<Written> {
        while let Some(frame) = held.pop() {
            let size = jpeg_size(&frame.jpeg);
            match self.size {
                None => self.size = size,
                Some(mine) if size.is_some_and(|size| size != mine) => {
                    held.put_back(vec![frame]);
                    return Ok(Written::UpToNewSize);
                }
                Some(_) => {}
            }
            let bytes = self.muxer.frame(&frame.jpeg, frame.at);
            let ms = self.muxer.last_ms().unwrap_or(0);
            self.frames += 1;
            self.keep(ms, frame);
            delivered.fetch_add(1, Ordering::Relaxed);
            match self.stdin.as_mut() {
                Some(stdin) => stdin.write_all(&bytes).await?,
                None => return Err(std::io::ErrorKind::BrokenPipe.into()),
            }
        }
        if self.checked.elapsed() >= CONFIRM_EVERY {
            self.checked = Instant::now();
            self.confirm().await;
        }
        Ok(Written::All)
    }

    fn keep(&mut self, ms: u64, frame: Frame) {
        self.unconfirmed_bytes += frame.jpeg.len();
        self.unconfirmed.push_back((ms, frame));
        while let Some((oldest, frame)) = self.unconfirmed.front()
            && (ms.saturating_sub(*oldest) > UNCONFIRMED_FOR.as_millis() as u64
                || self.unconfirmed_bytes > UNCONFIRMED_BYTES)
        {
            self.unconfirmed_bytes -= frame.jpeg.len();
            self.unconfirmed.pop_front();
            self.unconfirmed_lost += 1;
        }
    }

    /// Looks at the boxes ffmpeg wrote since the last look, and lets go of the frames the
    /// file now holds.
    async fn confirm(&mut self) {
        let path = self.path.clone();
        let mut walk = std::mem::take(&mut self.walk);
        let walk = smol::unblock(move || {
            let file = std::fs::File::open(&path)?;
            walk.advance(&file)?;
            Ok::<_, std::io::Error>(walk)
        })
        .await;
        match walk {
            Ok(walk) => self.walk = walk,
            Err(error) => {
                debug!(segment = %self.stem, %error, "cannot look at the segment's progress");
                return;
            }
        }
        if let Some(end) = self.walk.end() {
            self.forget_before(end);
        }
    }

    /// Lets go of the frames before `end` on the file's timeline: the file holds them.
    fn forget_before(&mut self, end: Duration) {
        let end_ms = end.as_millis() as u64;
        while let Some((ms, frame)) = self.unconfirmed.front()
            && *ms < end_ms
        {
            self.unconfirmed_bytes -= frame.jpeg.len();
            self.unconfirmed.pop_front();
        }
    }

    /// Closes ffmpeg's stdin so it writes the last fragment and exits; signals it only if it
    /// hangs. (ffmpeg reading a pipe ignores SIGTERM while the pipe stays open.) Counts the
    /// segment in `stats`. Says which frames the file does not hold, for the next encoder.
    async fn finish(mut self, stats: &SinkStats) -> Finished {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.close().await;
        }
        let exit = self.child.stop(Ask::InputEnded, FINISH_WITHIN).await;
        let (status, tail) = (exit.status, exit.stderr);
        // A file no player can open (ffmpeg died before its first fragment, or could not
        // write at all) would only be a broken entry in the gallery; a cut-off last write
        // is cut away, so what is listed plays to its end.
        let path = self.path.clone();
        let settled = smol::unblock(move || crate::mp4::settle(&path)).await;
        let mut length = None;
        match settled {
            Ok((crate::mp4::Settled::Removed, _)) => {
                warn!(segment = %self.stem, stderr = %tail, "segment holds no complete fragment; removed");
                // Frames went in and nothing playable came out: ffmpeg could not write
                // (a full disk makes it fail only at its last write, and exit as if fine).
                if self.frames > 0 && self.opened.elapsed() >= Duration::from_secs(1) {
                    stats.set_problem(Some(Problem {
                        reason: CANNOT_WRITE.into(),
                        detail: tail.clone(),
                    }));
                    stats.counter(FFMPEG_RESTARTS).fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok((kept, summary)) => {
                if let crate::mp4::Settled::Truncated { from, to } = kept {
                    warn!(segment = %self.stem, from, to, "cut-off last fragment removed");
                }
                // A segment that plays means writing works again.
                if stats.problem().is_some_and(|p| p.reason == CANNOT_WRITE) {
                    stats.set_problem(None);
                }
                if let Some(end) = summary.end {
                    self.forget_before(end);
                }
                length = summary.duration;
                let path = self.path.clone();
                if let Err(error) = smol::unblock(move || crate::mp4::write_duration(&path)).await {
                    warn!(segment = %self.stem, %error, "cannot write the segment's length into it");
                }
            }
            Err(error) => warn!(segment = %self.stem, %error, "cannot check the segment"),
        }
        let bytes = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        if bytes > 0 {
            stats.counter(SEGMENTS).fetch_add(1, Ordering::Relaxed);
            stats.counter(BYTES).fetch_add(bytes, Ordering::Relaxed);
        }
        let clean = status.as_ref().is_ok_and(|s| s.success());
        match status {
            Ok(status) if status.success() => info!(segment = %self.stem, bytes, "segment finished"),
            Ok(status) => warn!(segment = %self.stem, %status, stderr = %tail, "ffmpeg exited with an error"),
            Err(error) => warn!(segment = %self.stem, %error, "cannot get ffmpeg's exit status"),
        }
        let mut unwritten: Vec<Frame> = self.unconfirmed.into_iter().map(|(_, f)| f).collect();
        if self.unconfirmed_lost > 0 && !unwritten.is_empty() {
            warn!(segment = %self.stem, lost = self.unconfirmed_lost, "ffmpeg fell far behind; frames it had not written were let go");
        }
        if clean {
            // A clean exit wrote everything; what the walk did not see is its last
            // fragment's own length, not frames missing.
            unwritten.clear();
        }
        Finished {
            tail,
            length,
            unwritten,
        }
    }
}

/// The ffmpeg command line for one segment, written to `path` (which exists, empty).
fn ffmpeg_args(config: &Config, path: &std::path::Path) -> Vec<String> {
    let mut args = input_args();
    args.extend(config.codec.args(None));
    args.extend(keyframe_args());
    args.extend(config.extra_args.iter().cloned());
    // A 90 kHz track clock, as broadcast video uses: frame times in whole ticks at any
    // common rate (ffmpeg would otherwise pick one from the input's millisecond stamps).
    args.extend(words("-video_track_timescale 90000"));
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
