//! The thumbnailer: small JPEGs of the recording, made from live frames in Rust (decoded at
//! reduced scale, which is cheap, then re-encoded), never by spawning ffmpeg per picture.
//!
//! At each segment start it writes the poster `<stem>.jpg`; then every `every_seconds` a
//! `<stem>-t<seconds>.jpg`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tracing::{debug, warn};

use super::{BoxFuture, Resource, Sink, SinkConfig, SinkContext};
use crate::bus::Policy;
use crate::mode::Mode;
use crate::shutdown::Signal;

/// `type = "thumbnailer"`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Seconds between thumbnails within a segment.
    #[serde(
        default = "default_every",
        deserialize_with = "crate::config::seconds::<_, 1, 86400>"
    )]
    pub every_seconds: u64,
    /// Thumbnail width in pixels; the height keeps the aspect ratio.
    #[serde(
        default = "default_width",
        deserialize_with = "crate::config::count::<_, 16, 4096>"
    )]
    pub width: usize,
}

fn default_every() -> u64 {
    60
}
fn default_width() -> usize {
    320
}

impl SinkConfig for Config {
    fn default_modes(&self) -> &'static [Mode] {
        &[Mode::Continuous]
    }

    fn resources(&self) -> Vec<Resource> {
        vec![Resource::Directory("thumbnails".into())]
    }

    fn build(&self, ctx: SinkContext) -> Result<Arc<dyn Sink>, String> {
        Ok(Arc::new(Thumbnailer {
            config: self.clone(),
            ctx,
        }))
    }
}

/// The running thumbnailer.
pub struct Thumbnailer {
    config: Config,
    ctx: SinkContext,
}

impl Sink for Thumbnailer {
    fn run(self: Arc<Self>, disabled: Signal) -> BoxFuture<()> {
        Box::pin(async move { self.work(disabled).await })
    }
}

impl Thumbnailer {
    async fn work(&self, disabled: Signal) {
        let recordings = self.ctx.recordings.clone();
        let dir = recordings.thumbnails_dir().to_owned();
        if let Err(error) = std::fs::create_dir_all(&dir) {
            warn!(dir = %dir.display(), %error, "cannot create the thumbnails directory");
        }
        let frames = self.ctx.subscribe(Policy::Latest);
        let every = Duration::from_secs(self.config.every_seconds);
        let mut poster_for: Option<String> = None;
        let mut last_at = SystemTime::UNIX_EPOCH;
        let mut failures = crate::ratelimit::RateLimit::new(Duration::from_secs(30));
        loop {
            let frame = crate::shutdown::unless(&disabled, frames.recv()).await;
            let Some(frame) = frame else { break };
            let Some(current) = recordings.current() else {
                continue;
            };
            let name = if poster_for.as_deref() != Some(current.stem.as_str()) {
                poster_for = Some(current.stem.clone());
                format!("{}.jpg", current.stem)
            } else if frame.at.duration_since(last_at).unwrap_or_default() >= every {
                let offset = frame
                    .at
                    .duration_since(current.started)
                    .unwrap_or_default()
                    .as_secs();
                format!("{}-t{offset}.jpg", current.stem)
            } else {
                continue;
            };
            last_at = frame.at;
            let width = self.config.width;
            let path = dir.join(&name);
            let jpeg = frame.jpeg.clone();
            let written = smol::unblock(move || {
                let small = shrink(&jpeg, width)?;
                write_atomically(&path, &small)
            })
            .await;
            match written {
                Ok(()) => {
                    self.ctx.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    debug!(thumbnail = %name, "thumbnail written");
                }
                // A full disk fails every attempt; say so twice a minute, not every second.
                Err(error) => {
                    if let Some(suppressed) = failures.allow() {
                        warn!(thumbnail = %name, %error, suppressed, "cannot write thumbnail");
                    }
                }
            }
        }
    }
}

/// Decodes `jpeg` at the smallest DCT scale that is still at least `width` wide, averages
/// it down to `width`, and encodes the result.
pub fn shrink(jpeg: &[u8], width: usize) -> std::io::Result<Vec<u8>> {
    let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let mut decoder = jpeg_decoder::Decoder::new(jpeg);
    decoder.read_info().map_err(|e| bad(e.to_string()))?;
    let info = decoder.info().ok_or_else(|| bad("no image info".into()))?;
    let target_w = width.min(usize::from(info.width)).max(1);
    let target_h = (usize::from(info.height) * target_w / usize::from(info.width).max(1)).max(1);
    let (sw, sh) = decoder
        .scale(target_w as u16, target_h as u16)
        .map_err(|e| bad(e.to_string()))?;
    let pixels = decoder.decode().map_err(|e| bad(e.to_string()))?;
    let (sw, sh) = (usize::from(sw), usize::from(sh));
    let channels = pixels.len() / (sw * sh).max(1);
    if channels != 1 && channels != 3 {
        return Err(bad(format!("unsupported JPEG with {channels} channels")));
    }
    let mut out = vec![0u8; target_w * target_h * 3];
    for ty in 0..target_h {
        let (y0, y1) = (
            ty * sh / target_h,
            ((ty + 1) * sh / target_h).max(ty * sh / target_h + 1),
        );
        for tx in 0..target_w {
            let (x0, x1) = (
                tx * sw / target_w,
                ((tx + 1) * sw / target_w).max(tx * sw / target_w + 1),
            );
            let mut sum = [0u32; 3];
            for y in y0..y1.min(sh) {
                for x in x0..x1.min(sw) {
                    let i = (y * sw + x) * channels;
                    for (c, s) in sum.iter_mut().enumerate() {
                        *s += u32::from(pixels[i + if channels == 3 { c } else { 0 }]);
                    }
                }
            }
            let n = ((y1.min(sh) - y0) * (x1.min(sw) - x0)).max(1) as u32;
            let o = (ty * target_w + tx) * 3;
            for c in 0..3 {
                out[o + c] = (sum[c] / n) as u8;
            }
        }
    }
    let mut encoded = Vec::new();
    jpeg_encoder::Encoder::new(&mut encoded, 75)
        .encode(
            &out,
            target_w as u16,
            target_h as u16,
            jpeg_encoder::ColorType::Rgb,
        )
        .map_err(|e| bad(e.to_string()))?;
    Ok(encoded)
}

/// Writes to a temp file and renames it, so readers never see half a thumbnail.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("jpg.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrinks_to_the_requested_width_keeping_the_aspect() {
        let big = crate::testpattern::render(3, SystemTime::now(), 1280, 720, None);
        let small = shrink(&big, 320).expect("shrink");
        let mut decoder = jpeg_decoder::Decoder::new(&small[..]);
        decoder.read_info().expect("valid JPEG");
        let info = decoder.info().expect("info");
        assert_eq!((info.width, info.height), (320, 180));
        assert!(small.len() < big.len());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(shrink(b"\xFF\xD8\xFF\xD9", 320).is_err());
        assert!(shrink(b"", 320).is_err());
    }
}
