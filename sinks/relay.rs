//! The relay: pushes the camera as H.264 to a media server (nginx-rtmp, MediaMTX, a cloud
//! ingest) that fans out to more viewers than one board can serve.
//!
//! Like the recorder, it feeds an `ffmpeg` child from the bus in Matroska with the frames'
//! arrival times. The server going away makes ffmpeg exit; the relay starts it again with
//! backoff, from the newest frames (nothing stale is replayed), so the stream resumes
//! seconds after the server is back. A server that accepts the connection and then stops
//! reading is caught by a write timeout.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_process::ChildStdin;
use futures_lite::{AsyncWriteExt, future};
use serde::Deserialize;
use tracing::{debug, info, warn};

use super::encoder::{Codec, FFMPEG_RESTARTS, FFMPEG_UP, input_args, keyframe_args, words};
use super::mkv;
use super::{BoxFuture, Sink, SinkConfig, SinkContext};
use crate::backoff::Backoff;
use crate::bus::{Policy, Subscription};
use crate::child::{Ask, Child, Pipes};
use crate::metrics::Problem;
use crate::mode::Mode;
use crate::shutdown::Signal;

/// `type = "relay"`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to push: `rtmp://`, `rtmps://`, `rtsp://`, `rtsps://` or `srt://`.
    #[serde(deserialize_with = "push_url")]
    pub url: String,
    /// Video encoder.
    #[serde(default)]
    pub codec: Codec,
    /// Target bitrate.
    #[serde(
        default = "default_bitrate_kbps",
        deserialize_with = "crate::config::count::<_, 100, 50000>"
    )]
    pub bitrate_kbps: usize,
    /// Scale the stream to this size, `"WIDTHxHEIGHT"` (default: the camera's size).
    #[serde(default, deserialize_with = "output_size")]
    pub size: Option<(u32, u32)>,
    /// Frames buffered for ffmpeg before new ones are dropped (and counted).
    #[serde(
        default = "default_queue_frames",
        deserialize_with = "crate::config::count::<_, 1, 1000>"
    )]
    pub queue_frames: usize,
    /// A write to ffmpeg blocked this long means the server stopped reading: restart.
    #[serde(
        default = "default_write_timeout_seconds",
        deserialize_with = "crate::config::seconds::<_, 1, 600>"
    )]
    pub write_timeout_seconds: u64,
    /// The ffmpeg program.
    #[serde(default = "default_ffmpeg")]
    pub ffmpeg: String,
    /// Extra output options for ffmpeg.
    #[serde(default)]
    pub extra_args: Vec<String>,
}

fn default_bitrate_kbps() -> usize {
    2000
}
fn default_queue_frames() -> usize {
    30
}
fn default_write_timeout_seconds() -> u64 {
    10
}
fn default_ffmpeg() -> String {
    "ffmpeg".into()
}

/// The URL schemes ffmpeg can push to, with the container each one needs.
const SCHEMES: [(&str, &str); 5] = [
    ("rtmp://", "flv"),
    ("rtmps://", "flv"),
    ("rtsp://", "rtsp"),
    ("rtsps://", "rtsp"),
    ("srt://", "mpegts"),
];

fn push_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let url = String::deserialize(d)?;
    // Never echoed: a mistyped URL may be a bare stream key or hold a password. Its scheme
    // is shown when it has one.
    let shown = match url.split_once("://") {
        Some((scheme, _))
            if scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            format!("`{scheme}://…`")
        }
        _ => "the value".to_owned(),
    };
    let schemes: Vec<&str> = SCHEMES.iter().map(|(s, _)| *s).collect();
    if container_for(&url).is_none() {
        return Err(serde::de::Error::custom(format!(
            "{shown} is not a push URL; it must start with one of {}",
            schemes.join(", ")
        )));
    }
    // A host right after the scheme (`rtmp:///x` would put a password in the path).
    let after = url.split_once("://").map_or("", |(_, rest)| rest);
    let authority = after.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    // (SRT alone may leave it out: `srt://:9000?mode=listener` waits for callers.)
    if !url.starts_with("srt") && (host.is_empty() || host.starts_with(':')) {
        return Err(serde::de::Error::custom(format!(
            "{shown} names no host; write it as {}host/...",
            schemes.first().copied().unwrap_or("rtmp://")
        )));
    }
    // Schemes are case-insensitive (RFC 3986 §3.1); ffmpeg knows its protocols in lower case.
    Ok(match url.split_once("://") {
        Some((scheme, rest)) => format!("{}://{rest}", scheme.to_ascii_lowercase()),
        None => url,
    })
}

fn container_for(url: &str) -> Option<&'static str> {
    let lower = url.to_ascii_lowercase();
    SCHEMES
        .iter()
        .find(|(scheme, _)| lower.starts_with(scheme) && lower.len() > scheme.len())
        .map(|(_, container)| *container)
}

fn output_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<(u32, u32)>, D::Error> {
    let text = String::deserialize(d)?;
    let even = |n: &str| {
        n.parse::<u32>()
            .ok()
            .filter(|n| (16..=7680).contains(n) && n % 2 == 0)
    };
    match text.split_once('x').map(|(w, h)| (even(w), even(h))) {
        Some((Some(w), Some(h))) => Ok(Some((w, h))),
        _ => Err(serde::de::Error::custom(format!(
            "`{text}` is not a size like \"1280x720\" (even numbers of pixels, 16 to 7680)"
        ))),
    }
}

impl SinkConfig for Config {
    /// Like the recorder: pushing keeps the camera on, which on-demand mode exists to avoid.
    /// List `"on-demand"` in `modes` to push in both.
    fn default_modes(&self) -> &'static [Mode] {
        &[Mode::Continuous]
    }

    fn build(&self, ctx: SinkContext) -> Result<Arc<dyn Sink>, String> {
        // Exported from the start, at zero.
        ctx.stats.counter(FFMPEG_RESTARTS);
        ctx.stats.gauge(FFMPEG_UP);
        Ok(Arc::new(Relay {
            config: self.clone(),
            ctx,
        }))
    }

    /// A media server takes one publisher per stream: the old relay lets go first.
    fn may_overlap(&self) -> bool {
        false
    }
}

/// An ffmpeg that has taken frames this long counts as working (a relay whose server is
/// down fails sooner).
const HEALTHY_AFTER: Duration = Duration::from_secs(5);
/// How long ffmpeg gets to flush and close the stream once its input ends.
const FINISH_WITHIN: Duration = Duration::from_secs(5);

/// The running relay sink.
pub struct Relay {
    config: Config,
    ctx: SinkContext,
}

impl Sink for Relay {
    fn run(self: Arc<Self>, disabled: Signal) -> BoxFuture<()> {
        Box::pin(async move { self.relay(disabled).await })
    }
}

/// Why one ffmpeg run ended.
enum Ended {
    /// The mode disabled the sink (or the daemon stops).
    Disabled,
    /// ffmpeg failed; the text says how.
    Failed(String),
}

impl Relay {
    async fn relay(&self, disabled: Signal) {
        let stats = self.ctx.stats.clone();
        let frames = self.ctx.subscribe(Policy::Fifo(self.config.queue_frames));
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
        let target = redacted(&self.config.url);
        loop {
            // Start from what the camera sends now, not what queued while ffmpeg was down.
            while frames.try_recv().is_some() {}
            let started = Instant::now();
            let ended = match self.spawn() {
                Ok(child) => {
                    info!(url = %target, pid = child.pid(), "relay started");
                    stats.gauge(FFMPEG_UP).store(1, Ordering::Relaxed);
                    let ended = self.push(child, &frames, &disabled).await;
                    stats.gauge(FFMPEG_UP).store(0, Ordering::Relaxed);
                    ended
                }
                Err(error) => Ended::Failed(error.to_string()),
            };
            let Ended::Failed(why) = ended else { break };
            stats.set_problem(Some(Problem {
                reason: "the relay's ffmpeg keeps failing".into(),
                detail: format!("{target}: {why}"),
            }));
            stats.counter(FFMPEG_RESTARTS).fetch_add(1, Ordering::Relaxed);
            if started.elapsed() > Duration::from_secs(60) {
                backoff.reset();
            }
            let pause = backoff.next_delay();
            warn!(url = %target, error = %why, retry_in_ms = pause.as_millis() as u64, "relay failed");
            let slept = crate::shutdown::unless(&disabled, smol::Timer::after(pause)).await;
            if slept.is_none() {
                break;
            }
        }
        stats.set_problem(None);
        info!(url = %target, "relay stopped");
    }

    fn spawn(&self) -> std::io::Result<Child> {
        // ffmpeg names the URL in its errors; keep the stream key out of the log and the
        // status.
        let hidden = hidden_parts(&self.config.url);
        tracing::debug_span!("ffmpeg").in_scope(|| {
            Child::spawn(
                &self.config.ffmpeg,
                &ffmpeg_args(&self.config),
                Pipes::Input,
                hidden,
                |line| debug!("{line}"),
            )
        })
    }

    /// Feeds one ffmpeg until it exits, stops reading, or the sink is disabled.
    async fn push(&self, mut child: Child, frames: &Subscription, disabled: &Signal) -> Ended {
        let Some(mut stdin) = child.take_stdin() else {
            return Ended::Failed("ffmpeg has no stdin".into());
        };
        let mut muxer = mkv::Muxer::new(self.ctx.frame_rate.get());
        let write_timeout = Duration::from_secs(self.config.write_timeout_seconds);
        let started = Instant::now();
        let mut working = false;
        let failure = loop {
            let next = async { Step::Frame(frames.recv().await) };
            let exited = async { Step::Exited(child.exited().await) };
            let stop = async {
                disabled.wait().await;
                Step::Stop
            };
            match future::or(stop, future::or(next, exited)).await {
                Step::Stop => {
                    end_stream(stdin, &mut child).await;
                    return Ended::Disabled;
                }
                Step::Exited(status) => break describe_exit(status),
                Step::Frame(frame) => {
                    let bytes = muxer.frame(&frame.jpeg, frame.at);
                    // A server that stopped reading must not hold up a mode switch, a
                    // reload or the shutdown for the whole write timeout.
                    let written =
                        crate::shutdown::unless(disabled, write_within(&mut stdin, &bytes, write_timeout))
                            .await;
                    match written {
                        None => {
                            end_stream(stdin, &mut child).await;
                            return Ended::Disabled;
                        }
                        Some(Ok(())) => {
                            // Taking frames for a while means the server accepted the stream.
                            if !working && started.elapsed() >= HEALTHY_AFTER {
                                self.ctx.stats.set_problem(None);
                                working = true;
                            }
                            self.ctx.stats.delivered.fetch_add(1, Ordering::Relaxed)
                        }
                        Some(Err(error)) => break error,
                    };
                }
            }
        };
        drop(stdin);
        let tail = child.stop(Ask::Kill, Duration::ZERO).await.stderr;
        Ended::Failed(if tail.is_empty() {
            failure
        } else {
            format!("{failure}: {tail}")
        })
    }
}

/// Ends the stream: ffmpeg flushes and closes the connection when its input ends, or is
/// killed if it has not within [`FINISH_WITHIN`].
async fn end_stream(mut stdin: ChildStdin, child: &mut Child) {
    let _ = future::or(async { stdin.close().await.map(drop) }, async {
        smol::Timer::after(FINISH_WITHIN).await;
        Ok(())
    })
    .await;
    drop(stdin);
    child.stop(Ask::InputEnded, FINISH_WITHIN).await;
}

/// What woke a feeding loop.
enum Step {
    Frame(crate::bus::Frame),
    Exited(std::io::Result<std::process::ExitStatus>),
    Stop,
}

fn describe_exit(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => format!("ffmpeg exited ({status})"),
        Err(error) => format!("cannot wait for ffmpeg: {error}"),
    }
}

async fn write_within(stdin: &mut ChildStdin, bytes: &[u8], limit: Duration) -> Result<(), String> {
    let write = async {
        stdin
            .write_all(bytes)
            .await
            .map_err(|e| format!("ffmpeg stopped reading: {e}"))
    };
    let timeout = async {
        smol::Timer::after(limit).await;
        Err(format!(
            "ffmpeg accepted no data for {} s (the server stopped reading?)",
            limit.as_secs()
        ))
    };
    future::or(write, timeout).await
}

/// The URL for logs: scheme, host and first path segment (the application). Credentials,
/// stream keys (often the last segment) and query strings are hidden.
fn redacted(url: &str) -> String {
    // Anything after `?`, `#` or `;` is parameters: hidden.
    let base = url.split(['?', '#', ';']).next().unwrap_or(url);
    let (scheme, rest) = base.split_at(base.find("://").map_or(0, |i| i + 3));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority
        .rsplit_once('@')
        .map_or_else(|| authority.to_owned(), |(_, host)| format!("***@{host}"));
    // RTMP's first path segment is the application ("live"), the rest the stream key; any
    // other protocol's path may be the key itself.
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rtmp = scheme.to_ascii_lowercase().starts_with("rtmp");
    let app = match segments.first() {
        Some(app) if rtmp && segments.len() >= 2 && !app.to_ascii_lowercase().contains("%2f") => {
            format!("/{app}")
        }
        _ => String::new(),
    };
    let hidden = path.len() > app.len() + usize::from(path.ends_with('/')) || base.len() < url.len();
    format!("{scheme}{host}{app}{}", if hidden { "/***" } else { "" })
}

/// What of `url` is never shown, each with what is shown instead: the whole URL, and the
/// parts [`redacted`] hides (ffmpeg may print them on their own, or the URL without its
/// userinfo).
fn hidden_parts(url: &str) -> Vec<(String, String)> {
    let mut hidden = vec![(url.to_owned(), redacted(url))];
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let query = query.split('#').next().unwrap_or(query);
    let after_scheme = base.find("://").map_or(base, |i| &base[i + 3..]);
    let (authority, path) = after_scheme.split_at(after_scheme.find('/').unwrap_or(after_scheme.len()));
    let mut parts: Vec<&str> = vec![query];
    parts.extend(
        query
            .split('&')
            .filter_map(|pair| pair.split_once('=').map(|(_, value)| value)),
    );
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        parts.push(userinfo);
        parts.extend(userinfo.split_once(':').map(|(_, password)| password));
    }
    // The path: the stream key, with or without the application before it.
    let path = path.trim_start_matches('/');
    parts.push(path);
    if let Some((_, key)) = path.split_once('/') {
        parts.push(key);
    }
    parts.extend(path.split([';', '#', '/']));
    // Short parts would mask ordinary words; keys and passwords are longer.
    hidden.extend(
        parts
            .into_iter()
            .filter(|p| p.len() >= 4)
            .map(|p| (p.to_owned(), "***".to_owned())),
    );
    hidden
}

/// The ffmpeg command line: Matroska MJPEG with arrival times in, H.264 out to the server.
fn ffmpeg_args(config: &Config) -> Vec<String> {
    let mut args = input_args();
    if let Some((width, height)) = config.size {
        args.push("-vf".into());
        args.push(format!("scale={width}:{height}"));
    }
    args.extend(config.codec.args(Some(config.bitrate_kbps)));
    args.extend(keyframe_args());
    args.extend(config.extra_args.iter().cloned());
    let container = container_for(&config.url).unwrap_or("flv");
    if container == "rtsp" {
        args.extend(words("-rtsp_transport tcp"));
    }
    args.extend(words(&format!("-flush_packets 1 -f {container}")));
    args.push(config.url.clone());
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn url_picks_the_container() {
        let rtmp = parse(r#"url = "rtmp://127.0.0.1/live/cam""#).expect("rtmp");
        let args = ffmpeg_args(&rtmp).join(" ");
        assert!(args.ends_with("-f flv rtmp://127.0.0.1/live/cam"), "{args}");
        assert!(args.contains("-b:v 2000k"), "{args}");
        let rtsp = parse("url = \"rtsp://m:8554/cam\"\nsize = \"640x360\"").expect("rtsp");
        let args = ffmpeg_args(&rtsp).join(" ");
        assert!(args.contains("-vf scale=640:360"), "{args}");
        assert!(args.contains("-rtsp_transport tcp -flush_packets 1 -f rtsp rtsp://m:8554/cam"));
    }

    #[test]
    fn bad_urls_and_sizes_are_refused() {
        for bad in [
            r#"url = "http://x/y""#,
            r#"url = "rtmp://""#,
            r#"url = "/tmp/file.flv""#,
            "url = \"rtmp://x/y\"\nsize = \"641x360\"",
            "url = \"rtmp://x/y\"\nsize = \"640\"",
            "url = \"rtmp://x/y\"\nsize = \"640x\"",
            "url = \"rtmp://x/y\"\nbitrate_kbps = 5",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn logs_never_show_credentials() {
        assert_eq!(redacted("rtmp://a.b/live/streamkey"), "rtmp://a.b/live/***");
        assert_eq!(redacted("rtmp://host/KEY5"), "rtmp://host/***");
        assert_eq!(
            redacted("rtsp://127.0.0.1:8554/KEY4;token=P4"),
            "rtsp://127.0.0.1:8554/***"
        );
        assert_eq!(redacted("rtmp://h/live%2FKEY6"), "rtmp://h/***");
        assert_eq!(redacted("rtmp://h/live#KEY7"), "rtmp://h/***");
        assert_eq!(redacted("srt://h:9000"), "srt://h:9000");
        assert_eq!(redacted("rtmp://user:pw@a.b/live"), "rtmp://***@a.b/***");
        assert_eq!(redacted("rtsp://m:8554"), "rtsp://m:8554");
        assert_eq!(redacted("rtmps://ingest/app?key=SECRET"), "rtmps://ingest/***");
        // However ffmpeg quotes it, the key stays hidden.
        for url in [
            "rtmp://a.b/streamkey42",
            "rtsp://a.b:8554/streamkey42;token=streamkey42",
            "rtmp://a.b/live/streamkey42",
            "rtmp://bob:hunter22@a.b/live/streamkey42",
            "rtmps://ingest/app?token=streamkey42",
        ] {
            let hidden = hidden_parts(url);
            for said in [
                format!("[rtmp] Cannot open {url}: I/O error"),
                "[flv] Failed to update header with correct duration: streamkey42".to_owned(),
                crate::secrets::mask(&format!("Error opening output {url}")),
                "rtmp://a.b/live/streamkey42: Broken pipe".to_owned(),
            ] {
                let shown = crate::secrets::mask_with(&said, &hidden);
                assert!(
                    !shown.contains("streamkey42") && !shown.contains("hunter22"),
                    "{url} in {said:?}: {shown}"
                );
            }
        }
    }
}
