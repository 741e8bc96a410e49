//! Retention: keeps the newest `keep` segments and their thumbnails, optionally also
//! dropping segments older than `max_age_seconds` and the oldest ones while free disk space
//! is below `min_free_bytes`. Never touches the segment being written. Runs when enabled,
//! after each finished segment, and every minute.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use serde::Deserialize;
use tracing::{info, warn};

use super::{BoxFuture, Sink, SinkConfig, SinkContext};
use crate::mode::Mode;
use crate::recordings::Recordings;
use crate::shutdown::Signal;

/// `type = "retention"`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Finished segments to keep.
    #[serde(
        default = "default_keep",
        deserialize_with = "crate::config::count::<_, 1, 1000000>"
    )]
    pub keep: usize,
    /// Also delete segments older than this.
    #[serde(default)]
    pub max_age_seconds: Option<u64>,
    /// Also delete the oldest segments while free space is below this.
    #[serde(default)]
    pub min_free_bytes: Option<u64>,
}

fn default_keep() -> usize {
    36
}

impl SinkConfig for Config {
    fn default_modes(&self) -> &'static [Mode] {
        &[Mode::Continuous]
    }

    fn build(&self, ctx: SinkContext) -> Result<Arc<dyn Sink>, String> {
        Ok(Arc::new(Retention {
            config: self.clone(),
            ctx,
        }))
    }
}

/// The running retention sink.
pub struct Retention {
    config: Config,
    ctx: SinkContext,
}

impl Sink for Retention {
    fn run(self: Arc<Self>, disabled: Signal) -> BoxFuture<()> {
        Box::pin(async move {
            let recordings = self.ctx.recordings.clone();
            loop {
                let changed = recordings.changed();
                let config = self.config.clone();
                let r = recordings.clone();
                smol::unblock(move || sweep(&config, &r)).await;
                let stop = future::or(
                    future::or(
                        async {
                            changed.await;
                            false
                        },
                        async {
                            smol::Timer::after(Duration::from_secs(60)).await;
                            false
                        },
                    ),
                    async {
                        disabled.wait().await;
                        true
                    },
                );
                if stop.await {
                    break;
                }
            }
        })
    }
}

/// One pass: decides what to delete and deletes it. Returns the stems deleted.
pub fn sweep(config: &Config, recordings: &Recordings) -> Vec<String> {
    let current = recordings.current().map(|c| c.stem);
    // Newest first; the segment being written is never a candidate.
    let finished: Vec<_> = recordings
        .list()
        .into_iter()
        .filter(|s| {
            !s.in_progress && !recordings.is_open(&s.stem) && current.as_deref() != Some(s.stem.as_str())
        })
        .collect();
    let mut doomed: Vec<&crate::recordings::Segment> = finished.iter().skip(config.keep).collect();
    if let Some(max_age) = config.max_age_seconds {
        let limit = chrono::Local::now() - chrono::Duration::seconds(max_age as i64);
        for segment in finished.iter().take(config.keep) {
            let old = chrono::DateTime::parse_from_rfc3339(&segment.start).is_ok_and(|start| start < limit);
            if old {
                doomed.push(segment);
            }
        }
    }
    let mut deleted = Vec::new();
    for segment in doomed {
        if delete(recordings, &segment.stem, &segment.filename) {
            deleted.push(segment.stem.clone());
        }
    }
    if let Some(floor) = config.min_free_bytes {
        // Oldest first, while below the floor.
        for segment in finished.iter().rev() {
            if deleted.contains(&segment.stem) {
                continue;
            }
            match free_bytes(recordings.recordings_dir()) {
                Some(free) if free < floor => {
                    if delete(recordings, &segment.stem, &segment.filename) {
                        info!(segment = %segment.stem, free, floor, "deleted for disk space");
                        deleted.push(segment.stem.clone());
                    }
                }
                _ => break,
            }
        }
    }
    if !deleted.is_empty() {
        info!(
            deleted = deleted.len(),
            kept = finished.len() - deleted.len(),
            "retention removed old segments"
        );
    }
    deleted
}

fn delete(recordings: &Recordings, stem: &str, filename: &str) -> bool {
    let path = recordings.recordings_dir().join(filename);
    if let Err(error) = std::fs::remove_file(&path) {
        warn!(segment = %stem, %error, "cannot delete segment");
        return false;
    }
    recordings.forget(stem);
    for thumb in recordings.thumbnails_of(stem) {
        if let Err(error) = std::fs::remove_file(&thumb) {
            warn!(thumbnail = %thumb.display(), %error, "cannot delete thumbnail");
        }
    }
    true
}

/// Bytes available to unprivileged users on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    crate::recordings::disk_space(dir).map(|(free, _)| free)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_and_never_the_current() {
        let dir = tempfile::tempdir().expect("dir");
        let recordings = Recordings::new(dir.path());
        std::fs::create_dir_all(recordings.recordings_dir()).expect("mkdir");
        std::fs::create_dir_all(recordings.thumbnails_dir()).expect("mkdir");
        let stems: Vec<String> = (0..6).map(|i| format!("20261124-1200{i:02}")).collect();
        for stem in &stems {
            std::fs::write(recordings.recordings_dir().join(format!("{stem}.mp4")), b"mp4").expect("write");
            std::fs::write(recordings.thumbnails_dir().join(format!("{stem}.jpg")), b"jpg").expect("write");
            std::fs::write(
                recordings.thumbnails_dir().join(format!("{stem}-t60.jpg")),
                b"jpg",
            )
            .expect("write");
        }
        recordings.set_current(Some(crate::recordings::Current {
            stem: stems[5].clone(),
            started: std::time::SystemTime::now(),
        }));
        let config = Config {
            keep: 3,
            max_age_seconds: None,
            min_free_bytes: None,
        };
        let deleted = sweep(&config, &recordings);
        assert_eq!(deleted, vec![stems[1].clone(), stems[0].clone()]);
        let left: Vec<String> = recordings.list().into_iter().map(|s| s.stem).collect();
        assert_eq!(
            left,
            vec![
                stems[5].clone(),
                stems[4].clone(),
                stems[3].clone(),
                stems[2].clone()
            ]
        );
        assert!(recordings.thumbnails_of(&stems[0]).is_empty());
        assert_eq!(recordings.thumbnails_of(&stems[2]).len(), 2);
    }

    #[test]
    fn old_segments_go_even_within_keep() {
        let dir = tempfile::tempdir().expect("dir");
        let recordings = Recordings::new(dir.path());
        std::fs::create_dir_all(recordings.recordings_dir()).expect("mkdir");
        let fresh = recordings.new_stem(std::time::SystemTime::now());
        for stem in ["20200101-120000", fresh.as_str()] {
            std::fs::write(recordings.recordings_dir().join(format!("{stem}.mp4")), b"mp4").expect("write");
        }
        let config = Config {
            keep: 10,
            max_age_seconds: Some(3600),
            min_free_bytes: None,
        };
        assert_eq!(sweep(&config, &recordings), vec!["20200101-120000".to_owned()]);
        let left: Vec<String> = recordings.list().into_iter().map(|s| s.stem).collect();
        assert_eq!(left, vec![fresh]);
    }

    #[test]
    fn free_space_is_readable() {
        assert!(free_bytes(Path::new("/")).is_some_and(|b| b > 0));
    }
}
