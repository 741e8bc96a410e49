//! The recordings on disk: where they live, how they are named, which one is being written.
//!
//! Segments are `recordings/YYYYMMDD-HHMMSS.mp4`, named by their local start time (with a
//! `-N` suffix in the rare case two start within one second). Thumbnails share the stem:
//! `thumbnails/<stem>.jpg` is the poster, `thumbnails/<stem>-t<seconds>.jpg` the ones taken
//! during the segment. Names from requests are checked against exactly these patterns
//! before any filesystem access.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::sync::lock;
use chrono::{DateTime, Local, NaiveDateTime, TimeZone};
use event_listener::Event;
use serde::Serialize;

/// The recording directories and the live state of the recorder.
#[derive(Debug)]
pub struct Recordings {
    recordings: PathBuf,
    thumbnails: PathBuf,
    current: Mutex<Option<Current>>,
    /// Stems whose ffmpeg has not exited yet: the current one and any still finishing.
    open: Mutex<Vec<String>>,
    /// Exact lengths of the segments finished by this process.
    lengths: Mutex<std::collections::HashMap<String, Duration>>,
    /// Play times read from the files themselves, by stem, with the size they were read at.
    walked: Mutex<std::collections::HashMap<String, (u64, Option<Duration>)>>,
    /// Fires when a segment starts or finishes.
    changed: Event,
}

/// The segment being written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    /// File stem, e.g. `20261124-134400`.
    pub stem: String,
    /// Arrival time of its first frame.
    pub started: SystemTime,
}

/// One segment as the replays API describes it.
#[derive(Debug, Clone, Serialize)]
pub struct Segment {
    /// `<stem>.mp4`
    pub filename: String,
    /// `/recordings/<filename>`
    pub url: String,
    /// `/thumbnails/<stem>.jpg`
    #[serde(rename = "thumbnailUrl")]
    pub thumbnail_url: String,
    /// Start time, RFC 3339 with the local offset.
    pub start: String,
    /// Seconds recorded (for the segment being written: so far).
    pub duration: f64,
    /// File size.
    pub bytes: u64,
    /// Whether the recorder is still writing it.
    pub in_progress: bool,
    /// Whether its poster exists yet.
    pub has_thumbnail: bool,
    /// Stem of the file, for matching thumbnails.
    #[serde(skip)]
    pub stem: String,
}

impl Recordings {
    /// The directories under `storage_dir`.
    pub fn new(storage_dir: &Path) -> Self {
        Recordings {
            recordings: storage_dir.join("recordings"),
            thumbnails: storage_dir.join("thumbnails"),
            current: Mutex::new(None),
            open: Mutex::new(Vec::new()),
            lengths: Mutex::new(std::collections::HashMap::new()),
            walked: Mutex::new(std::collections::HashMap::new()),
            changed: Event::new(),
        }
    }

    /// `<storage>/recordings`
    pub fn recordings_dir(&self) -> &Path {
        &self.recordings
    }

    /// `<storage>/thumbnails`
    pub fn thumbnails_dir(&self) -> &Path {
        &self.thumbnails
    }

    /// Creates the file of a segment starting at `at`, under a free stem. Made here, never
    /// by following a name: anything already at a name (a file, a symlink, dangling or
    /// not) makes the next name be tried, so a segment is never written outside the
    /// directory. The segment counts as being written from before its file exists (so it
    /// is never listed as a finished, empty one) until [`Recordings::finished`].
    pub fn create_segment(&self, at: SystemTime) -> std::io::Result<(String, std::fs::File)> {
        use std::os::unix::fs::OpenOptionsExt;
        let base = DateTime::<Local>::from(at).format("%Y%m%d-%H%M%S").to_string();
        let mut last_error = None;
        for stem in std::iter::once(base.clone()).chain((1..1000).map(|n| format!("{base}-{n}"))) {
            lock(&self.open).push(stem.clone());
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(self.recordings.join(format!("{stem}.mp4")));
            if created.is_err() {
                let mut open = lock(&self.open);
                if let Some(last) = open.iter().rposition(|s| *s == stem) {
                    open.remove(last);
                }
            }
            match created {
                Ok(file) => return Ok((stem, file)),
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => last_error = Some(error),
                Err(error) => return Err(error),
            }
        }
        Err(last_error.unwrap_or_else(|| std::io::ErrorKind::AlreadyExists.into()))
    }

    /// A free stem for a segment starting at `at`.
    pub fn new_stem(&self, at: SystemTime) -> String {
        let base = DateTime::<Local>::from(at).format("%Y%m%d-%H%M%S").to_string();
        let taken = |stem: &str| self.recordings.join(format!("{stem}.mp4")).exists();
        if !taken(&base) {
            return base;
        }
        (1..1000)
            .map(|n| format!("{base}-{n}"))
            .find(|s| !taken(s))
            .unwrap_or(base)
    }

    /// Records which segment is being written (`None`: none). A new one stays "in
    /// progress" until [`Recordings::finished`] is called for it.
    pub fn set_current(&self, current: Option<Current>) {
        if let Some(c) = &current {
            self.writing(&c.stem);
        }
        *lock(&self.current) = current;
        self.changed.notify(usize::MAX);
    }

    /// Records that `stem` is being written until [`Recordings::finished`] is called for it.
    fn writing(&self, stem: &str) {
        lock(&self.open).push(stem.to_owned());
        self.changed.notify(usize::MAX);
    }

    /// Whether `stem`'s file of `len` bytes can be played: any finished one (what does not
    /// play is removed when its ffmpeg exits), one being written once its first fragment
    /// is complete.
    pub fn playable(&self, stem: &str, len: u64) -> bool {
        !self.is_open(stem) || self.walked_duration(stem, len).is_some_and(|d| !d.is_zero())
    }

    /// Announces that a segment's ffmpeg has exited: the file is complete and holds
    /// `length` of video, if known.
    pub fn finished(&self, stem: &str, length: Option<Duration>) {
        lock(&self.open).retain(|s| s != stem);
        if let Some(length) = length {
            let mut lengths = lock(&self.lengths);
            lengths.insert(stem.to_owned(), length);
        }
        self.changed.notify(usize::MAX);
    }

    /// Drops what is remembered about a deleted segment.
    pub fn forget(&self, stem: &str) {
        lock(&self.lengths).remove(stem);
        lock(&self.walked).remove(stem);
    }

    /// At start-up, before anything records: segments an earlier run left cut off (ffmpeg
    /// or the daemon killed, the power gone) lose their partial last fragment, and those
    /// with no complete fragment at all, which no player can open, are removed. Returns
    /// what was done, one line per file.
    pub fn repair(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.recordings) else {
            return Vec::new();
        };
        let mut done = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let Some(name) = entry.file_name().into_string().ok() else {
                continue;
            };
            if segment_stem(&name).is_none() || !entry.metadata().is_ok_and(|m| m.is_file()) {
                continue;
            }
            let settled = crate::mp4::settle(&entry.path()).map(|(settled, _)| settled);
            // Its headers get its length, as the recorder gives every finished segment.
            if matches!(
                settled,
                Ok(crate::mp4::Settled::Whole | crate::mp4::Settled::Truncated { .. })
            ) && let Err(error) = crate::mp4::write_duration(&entry.path())
            {
                done.push(format!("{name}: cannot write its length: {error}"));
            }
            match settled {
                Ok(crate::mp4::Settled::Whole) => {}
                Ok(crate::mp4::Settled::Truncated { from, to }) => done.push(format!(
                    "{name}: cut-off last fragment removed ({from} -> {to} bytes)"
                )),
                Ok(crate::mp4::Settled::Removed) => {
                    done.push(format!("{name}: no complete fragment; removed"))
                }
                Err(error) => done.push(format!("{name}: cannot check: {error}")),
            }
        }
        done
    }

    /// The play time of a segment file of `len` bytes, read from its boxes once per length.
    fn walked_duration(&self, stem: &str, len: u64) -> Option<Duration> {
        if let Some((at_len, duration)) = lock(&self.walked).get(stem)
            && *at_len == len
        {
            return *duration;
        }
        let duration = std::fs::File::open(self.recordings.join(format!("{stem}.mp4")))
            .and_then(|file| crate::mp4::summarize(&file))
            .ok()
            .and_then(|summary| summary.duration);
        lock(&self.walked).insert(stem.to_owned(), (len, duration));
        duration
    }

    /// Whether `stem` is still being written (or finished) by an ffmpeg.
    pub fn is_open(&self, stem: &str) -> bool {
        lock(&self.open).iter().any(|s| s == stem)
    }

    /// The segment being written.
    pub fn current(&self) -> Option<Current> {
        lock(&self.current).clone()
    }

    /// The segment `stem` is no longer being written; another recorder's may be by now.
    pub fn end_current(&self, stem: &str) {
        let mut current = lock(&self.current);
        if current.as_ref().is_some_and(|c| c.stem == stem) {
            *current = None;
        }
    }

    /// Resolves at the next segment start or finish. Create the future before checking
    /// state to not miss a change.
    pub fn changed(&self) -> event_listener::EventListener {
        self.changed.listen()
    }

    /// Every segment on disk, newest first.
    pub fn list(&self) -> Vec<Segment> {
        let Ok(entries) = std::fs::read_dir(&self.recordings) else {
            return Vec::new();
        };
        let mut segments: Vec<Segment> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let stem = segment_stem(&name)?.to_owned();
                // Not followed: only real files are recordings (a symlink could point anywhere).
                let meta = entry.metadata().ok().filter(|m| m.is_file())?;
                let start = stem_time(&stem)?;
                let in_progress = self.is_open(&stem);
                let known = lock(&self.lengths).get(&stem).copied();
                // A file says itself how long it plays: the one being written, up to its
                // last complete fragment (nothing before the first, 2 s in).
                let duration = known
                    .or_else(|| self.walked_duration(&stem, meta.len()))
                    .unwrap_or(Duration::ZERO)
                    .as_secs_f64();
                Some(Segment {
                    url: format!("/recordings/{name}"),
                    thumbnail_url: format!("/thumbnails/{stem}.jpg"),
                    start: DateTime::<Local>::from(start).to_rfc3339(),
                    duration: (duration * 10.0).round() / 10.0,
                    bytes: meta.len(),
                    in_progress,
                    has_thumbnail: self.thumbnails.join(format!("{stem}.jpg")).exists(),
                    filename: name,
                    stem,
                })
            })
            .collect();
        // ffmpeg creates the file only once it has encoded the first frame; list the
        // segment being recorded from the moment it starts.
        if let Some(current) = self.current()
            && !segments.iter().any(|s| s.stem == current.stem)
        {
            let stem = current.stem;
            segments.push(Segment {
                filename: format!("{stem}.mp4"),
                url: format!("/recordings/{stem}.mp4"),
                thumbnail_url: format!("/thumbnails/{stem}.jpg"),
                start: DateTime::<Local>::from(current.started).to_rfc3339(),
                duration: 0.0,
                bytes: 0,
                in_progress: true,
                has_thumbnail: self.thumbnails.join(format!("{stem}.jpg")).exists(),
                stem,
            });
        }
        segments.sort_by(|a, b| b.stem.cmp(&a.stem));
        segments
    }

    /// The thumbnails belonging to `stem` (poster and in-segment ones).
    pub fn thumbnails_of(&self, stem: &str) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.thumbnails) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| thumbnail_stem(name) == Some(stem))
            .map(|name| self.thumbnails.join(name))
            .collect()
    }
}

/// Free (for unprivileged users) and total bytes of the filesystem holding `path`, or of
/// its nearest existing parent.
pub fn disk_space(path: &Path) -> Option<(u64, u64)> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let stat = rustix::fs::statvfs(existing).ok()?;
    Some((
        stat.f_bavail.saturating_mul(stat.f_frsize),
        stat.f_blocks.saturating_mul(stat.f_frsize),
    ))
}

/// The stem of a valid segment file name (`YYYYMMDD-HHMMSS[-N].mp4`), or `None`.
pub fn segment_stem(name: &str) -> Option<&str> {
    let stem = name.strip_suffix(".mp4")?;
    valid_stem(stem).then_some(stem)
}

/// The segment stem of a valid thumbnail name (`<stem>.jpg` or `<stem>-t<seconds>.jpg`).
pub fn thumbnail_stem(name: &str) -> Option<&str> {
    let base = name.strip_suffix(".jpg")?;
    if valid_stem(base) {
        return Some(base);
    }
    let (stem, secs) = base.rsplit_once("-t")?;
    (valid_stem(stem) && !secs.is_empty() && secs.len() <= 6 && secs.bytes().all(|b| b.is_ascii_digit()))
        .then_some(stem)
}

fn valid_stem(stem: &str) -> bool {
    let b = stem.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    if b.len() < 15 || !digits(0..8) || b[8] != b'-' || !digits(9..15) {
        return false;
    }
    match &b[15..] {
        [] => true,
        [b'-', rest @ ..] => (1..=3).contains(&rest.len()) && rest.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// The local start time a stem names.
fn stem_time(stem: &str) -> Option<SystemTime> {
    let naive = NaiveDateTime::parse_from_str(stem.get(..15)?, "%Y%m%d-%H%M%S").ok()?;
    Local.from_local_datetime(&naive).earliest().map(SystemTime::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_exactly() {
        assert_eq!(segment_stem("20261124-134400.mp4"), Some("20261124-134400"));
        assert_eq!(segment_stem("20261124-134400-2.mp4"), Some("20261124-134400-2"));
        for bad in [
            "../state.ron",
            "20261124-134400.mp4/..",
            "/etc/passwd",
            "20261124-13440.mp4",
            "20261124_134400.mp4",
            "20261124-134400-.mp4",
            "20261124-134400-1234.mp4",
            "2026112a-134400.mp4",
            "20261124-134400.MP4",
            "%2e%2e",
            "",
        ] {
            assert_eq!(segment_stem(bad), None, "{bad}");
        }
        assert_eq!(thumbnail_stem("20261124-134400.jpg"), Some("20261124-134400"));
        assert_eq!(
            thumbnail_stem("20261124-134400-1-t60.jpg"),
            Some("20261124-134400-1")
        );
        assert_eq!(thumbnail_stem("20261124-134400-t.jpg"), None);
        assert_eq!(thumbnail_stem("../20261124-134400.jpg"), None);
    }

    #[test]
    fn stems_are_unique_and_sorted_by_time() {
        let dir = tempfile::tempdir().expect("dir");
        let recordings = Recordings::new(dir.path());
        std::fs::create_dir_all(recordings.recordings_dir()).expect("mkdir");
        let at = SystemTime::now();
        let first = recordings.new_stem(at);
        std::fs::write(recordings.recordings_dir().join(format!("{first}.mp4")), b"x").expect("write");
        let second = recordings.new_stem(at);
        assert_eq!(second, format!("{first}-1"));
        assert!(second > first);
        assert!(stem_time(&second).is_some());
    }

    #[test]
    fn a_segment_is_never_created_through_a_symlink() {
        let dir = tempfile::tempdir().expect("dir");
        let recordings = Recordings::new(dir.path());
        std::fs::create_dir_all(recordings.recordings_dir()).expect("mkdir");
        let at = SystemTime::now();
        let planted = recordings.new_stem(at);
        let outside = dir.path().join("outside.mp4");
        std::os::unix::fs::symlink(
            &outside,
            recordings.recordings_dir().join(format!("{planted}.mp4")),
        )
        .expect("symlink");
        let (stem, _file) = recordings.create_segment(at).expect("created");
        assert_eq!(
            stem,
            format!("{planted}-1"),
            "the dangling symlink's name is skipped"
        );
        assert!(!outside.exists(), "nothing written through it");
    }
}
