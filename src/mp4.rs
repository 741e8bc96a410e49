//! A quick walk over a fragmented MP4's boxes, reading headers and the small `moof` boxes
//! only, never the media: how many fragments the file holds complete, where the last one
//! ends, and how long they play.
//!
//! The recorder's segments are `ftyp`, an empty `moov`, then one `moof` + `mdat` pair per
//! fragment (a keyframe every 2 s). ffmpeg killed mid-write, or a power cut, leaves a
//! partial pair at the end; killed before its first fragment, a file with no frame at all,
//! which no player can open. The walk tells both apart without decoding anything.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::time::Duration;

/// What a walk found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// `moof` + `mdat` pairs wholly in the file.
    pub fragments: usize,
    /// Where the last complete box ends: anything after it is a cut-off write.
    pub complete_len: u64,
    /// Bytes in the file.
    pub len: u64,
    /// Play time of the complete fragments, by their own timestamps.
    pub duration: Option<Duration>,
    /// Where the complete fragments end on the media timeline (see [`Walk::end`]).
    pub end: Option<Duration>,
}

impl Summary {
    /// Whether a player can show anything of it.
    pub fn playable(&self) -> bool {
        self.fragments > 0
    }
}

/// What [`settle`] did to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Nothing to do.
    Whole,
    /// A cut-off write at the end was cut away.
    Truncated {
        /// Bytes before.
        from: u64,
        /// Bytes after.
        to: u64,
    },
    /// No complete fragment: the file was removed.
    Removed,
}

/// Leaves a finished segment playable to its last complete fragment: a partial write at
/// the end is cut away (what a player would stop at anyway), and a file with no complete
/// fragment is removed.
pub fn settle(path: &std::path::Path) -> io::Result<(Settled, Summary)> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let summary = summarize(&file)?;
    if !summary.playable() {
        drop(file);
        std::fs::remove_file(path)?;
        return Ok((Settled::Removed, summary));
    }
    if summary.complete_len < summary.len {
        file.set_len(summary.complete_len)?;
        let settled = Settled::Truncated {
            from: summary.len,
            to: summary.complete_len,
        };
        return Ok((settled, summary));
    }
    Ok((Settled::Whole, summary))
}

/// Writes a finished segment's play time into its headers: `mvhd`, `tkhd` and `mdhd` (and
/// `mehd`, if ffmpeg wrote one). A fragmented file is written with zeros there, and some
/// players (GStreamer) then take the last keyframe's time from the index at the end for the
/// length, seconds short. The values go over the zeros in place: a few bytes in the first
/// kilobyte, no other byte of the file moves. Returns the play time written.
pub fn write_duration(path: &std::path::Path) -> io::Result<Option<Duration>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let mut walk = Walk::default();
    walk.advance(&file)?;
    let (Some(first), Some(end), Some(media_scale)) = (walk.first_start, walk.end, walk.timescale) else {
        return Ok(None);
    };
    let ticks = end.saturating_sub(first);
    let len = file.metadata()?.len();
    let mut at = 0;
    while let Some((kind, size, header)) = box_at(&file, at, len)? {
        if &kind == b"moov" && at + size <= len {
            let moov = read(&file, at + header, size - header)?;
            for (offset, value) in duration_fields(&moov, ticks, media_scale) {
                // Already there (a file finished before) is not written again.
                if moov.get(offset..offset + value.len()) != Some(&value[..]) {
                    file.write_all_at(&value, at + header + offset as u64)?;
                }
            }
            return Ok(walk.seconds(ticks));
        }
        at += size;
    }
    Ok(None)
}

/// Where in `moov`'s content the duration fields are, each with its new value (`ticks` of
/// the media's `media_scale`, in each box's own time scale and width).
fn duration_fields(moov: &[u8], ticks: u64, media_scale: u32) -> Vec<(usize, Vec<u8>)> {
    let mut fields = Vec::new();
    // A full box's version decides whether its times are 32 or 64 bits wide.
    let value = |version: u8, units: u64| match version {
        1 => Some(units.to_be_bytes().to_vec()),
        _ => u32::try_from(units).ok().map(|u| u.to_be_bytes().to_vec()),
    };
    let rescale =
        |scale: u32| (u128::from(ticks) * u128::from(scale) / u128::from(media_scale.max(1))) as u64;
    let Some((mvhd_at, mvhd)) = child_at(moov, b"mvhd") else {
        return fields;
    };
    let version = mvhd.first().copied().unwrap_or(0);
    // mvhd: version+flags, creation, modification, time scale, duration.
    let (scale_at, duration_at) = if version == 1 { (20, 24) } else { (12, 16) };
    let Some(movie_scale) = be32(mvhd, scale_at) else {
        return fields;
    };
    let movie = rescale(movie_scale);
    fields.extend(value(version, movie).map(|v| (mvhd_at + duration_at, v)));
    for (trak_at, trak) in children_at(moov)
        .filter(|(_, (k, _))| k == b"trak")
        .map(|(at, (_, c))| (at, c))
    {
        if let Some((tkhd_at, tkhd)) = child_at(trak, b"tkhd") {
            let version = tkhd.first().copied().unwrap_or(0);
            // tkhd: version+flags, creation, modification, track id, reserved, duration.
            let duration_at = if version == 1 { 28 } else { 20 };
            fields.extend(value(version, movie).map(|v| (trak_at + tkhd_at + duration_at, v)));
        }
        if let Some((mdia_at, mdia)) = child_at(trak, b"mdia")
            && let Some((mdhd_at, mdhd)) = child_at(mdia, b"mdhd")
        {
            let version = mdhd.first().copied().unwrap_or(0);
            let (scale_at, duration_at) = if version == 1 { (20, 24) } else { (12, 16) };
            if let Some(scale) = be32(mdhd, scale_at) {
                let at = trak_at + mdia_at + mdhd_at + duration_at;
                fields.extend(value(version, rescale(scale)).map(|v| (at, v)));
            }
        }
    }
    if let Some((mvex_at, mvex)) = child_at(moov, b"mvex")
        && let Some((mehd_at, mehd)) = child_at(mvex, b"mehd")
    {
        let version = mehd.first().copied().unwrap_or(0);
        fields.extend(value(version, movie).map(|v| (mvex_at + mehd_at + 4, v)));
    }
    fields
}

/// Like [`children`], with where each child's content starts in `body`.
fn children_at(body: &[u8]) -> impl Iterator<Item = (usize, ([u8; 4], &[u8]))> {
    let mut at = 0;
    children(body).map(move |(kind, content)| {
        let start = at + 8;
        at = start + content.len();
        (start, (kind, content))
    })
}

/// The first child of type `kind`, with where its content starts in `body`.
fn child_at<'a>(body: &'a [u8], kind: &[u8; 4]) -> Option<(usize, &'a [u8])> {
    children_at(body)
        .find(|(_, (k, _))| k == kind)
        .map(|(at, (_, content))| (at, content))
}

/// `moof` boxes larger than this are not ours (ours hold one track's sample table).
const MAX_MOOF: u64 = 1 << 20;

/// Walks the boxes of `file`.
pub fn summarize(file: &File) -> io::Result<Summary> {
    let mut walk = Walk::default();
    walk.advance(file)?;
    Ok(walk.summary())
}

/// A walk over a file that may still be growing: [`Walk::advance`] goes on from where the
/// last call stopped, over what was written since. The recorder uses it to learn which
/// frames its encoder has safely in the file.
#[derive(Debug, Default, Clone)]
pub struct Walk {
    /// Where the next box starts.
    at: u64,
    len: u64,
    complete_len: u64,
    fragments: usize,
    timescale: Option<u32>,
    first_start: Option<u64>,
    end: Option<u64>,
    /// The fragment whose `moof` was read and whose `mdat` is still to come.
    pending: Option<(u64, u64)>,
}

impl Walk {
    /// Walks the boxes written since the last call.
    pub fn advance(&mut self, file: &File) -> io::Result<()> {
        let len = file.metadata()?.len();
        self.len = len;
        while let Some((kind, size, header)) = box_at(file, self.at, len)? {
            if self.at + size > len {
                break;
            }
            match &kind {
                b"moov" => {
                    let body = read(file, self.at + header, size - header)?;
                    self.timescale = media_timescale(&body);
                }
                b"moof" if size <= MAX_MOOF => {
                    let body = read(file, self.at + header, size - header)?;
                    self.pending = fragment_times(&body);
                }
                b"mdat" => {
                    if let Some((start, duration)) = self.pending.take() {
                        self.fragments += 1;
                        self.first_start.get_or_insert(start);
                        self.end = Some(start + duration);
                    }
                }
                _ => {}
            }
            self.at += size;
            // A fragment is whole once its `mdat` is; a `moof` alone is not yet.
            if self.pending.is_none() {
                self.complete_len = self.at;
            }
        }
        Ok(())
    }

    /// Where the complete fragments end on the media timeline (from its zero, which is
    /// the first frame's time): every frame before it is in the file.
    pub fn end(&self) -> Option<Duration> {
        self.seconds(self.end?)
    }

    fn seconds(&self, ticks: u64) -> Option<Duration> {
        let scale = self.timescale.filter(|s| *s > 0)?;
        Some(Duration::from_secs_f64(ticks as f64 / f64::from(scale)))
    }

    /// What the walk found so far.
    pub fn summary(&self) -> Summary {
        let duration = match (self.first_start, self.end) {
            (Some(first), Some(end)) => self.seconds(end.saturating_sub(first)),
            _ => None,
        };
        Summary {
            fragments: self.fragments,
            complete_len: self.complete_len,
            len: self.len,
            duration,
            end: self.end(),
        }
    }
}

/// The box at `at`: its type, total size and header size; `None` at the end of the file or
/// where no box header fits.
fn box_at(file: &File, at: u64, len: u64) -> io::Result<Option<([u8; 4], u64, u64)>> {
    if at + 8 > len {
        return Ok(None);
    }
    let head = read(file, at, 8)?;
    let kind = [head[4], head[5], head[6], head[7]];
    let (size, header) = match u32::from_be_bytes([head[0], head[1], head[2], head[3]]) {
        0 => (len - at, 8),
        1 => {
            if at + 16 > len {
                return Ok(None);
            }
            let large = read(file, at + 8, 8)?;
            (u64::from_be_bytes(large.try_into().unwrap_or_default()), 16)
        }
        size => (u64::from(size), 8),
    };
    if size < header {
        return Ok(None);
    }
    Ok(Some((kind, size, header)))
}

fn read(file: &File, at: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; usize::try_from(len).map_err(|_| io::ErrorKind::InvalidData)?];
    file.read_exact_at(&mut buf, at)?;
    Ok(buf)
}

/// The children of a box's content: (type, content).
fn children(mut body: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    std::iter::from_fn(move || {
        if body.len() < 8 {
            return None;
        }
        let size = u32::from_be_bytes([body[0], body[1], body[2], body[3]]) as usize;
        let kind = [body[4], body[5], body[6], body[7]];
        if size < 8 || size > body.len() {
            return None;
        }
        let content = &body[8..size];
        body = &body[size..];
        Some((kind, content))
    })
}

fn child<'a>(body: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    children(body).find(|(k, _)| k == kind).map(|(_, c)| c)
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The first track's `mdhd` time scale, from `moov`'s content.
fn media_timescale(moov: &[u8]) -> Option<u32> {
    let mdhd = child(child(child(moov, b"trak")?, b"mdia")?, b"mdhd")?;
    // version 1 has 64-bit creation and modification times.
    match mdhd.first()? {
        1 => be32(mdhd, 20),
        _ => be32(mdhd, 12),
    }
}

/// A fragment's start (`tfdt`) and the sum of its samples' durations, in media time
/// units, from `moof`'s content.
fn fragment_times(moof: &[u8]) -> Option<(u64, u64)> {
    let traf = child(moof, b"traf")?;
    let tfhd = child(traf, b"tfhd")?;
    let tfhd_flags = be32(tfhd, 0)? & 0x00ff_ffff;
    // tfhd: version+flags, track id, then the optional fields in this order.
    let mut at = 8;
    if tfhd_flags & 0x01 != 0 {
        at += 8; // base data offset
    }
    if tfhd_flags & 0x02 != 0 {
        at += 4; // sample description index
    }
    let default_duration = (tfhd_flags & 0x08 != 0).then(|| be32(tfhd, at)).flatten();
    let tfdt = child(traf, b"tfdt")?;
    let start = match tfdt.first()? {
        1 => be64(tfdt, 4)?,
        _ => u64::from(be32(tfdt, 4)?),
    };
    let mut duration = 0u64;
    for (kind, trun) in children(traf) {
        if &kind != b"trun" {
            continue;
        }
        let flags = be32(trun, 0)? & 0x00ff_ffff;
        let count = be32(trun, 4)? as usize;
        let mut at = 8;
        if flags & 0x001 != 0 {
            at += 4; // data offset
        }
        if flags & 0x004 != 0 {
            at += 4; // first sample flags
        }
        let per_sample = [0x100, 0x200, 0x400, 0x800]
            .iter()
            .filter(|bit| flags & **bit != 0)
            .count()
            * 4;
        for n in 0..count {
            let sample = if flags & 0x100 != 0 {
                be32(trun, at + n * per_sample)?
            } else {
                default_duration?
            };
            duration += u64::from(sample);
        }
    }
    Some((start, duration))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn boxed(kind: &[u8; 4], content: &[u8]) -> Vec<u8> {
        let mut out = ((content.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(content);
        out
    }

    fn full(version: u8, flags: u32, rest: &[u8]) -> Vec<u8> {
        let mut out = (u32::from(version) << 24 | flags).to_be_bytes().to_vec();
        out.extend_from_slice(rest);
        out
    }

    /// ftyp, a moov with a 90 kHz track, then `fragments` fragments of 30 samples of 3000.
    fn segment(fragments: u64) -> Vec<u8> {
        let mut mdhd = [0u8; 20];
        mdhd[8..12].copy_from_slice(&90_000u32.to_be_bytes());
        // mvhd: times, a 1 kHz movie clock, a zero duration (and the rest, unread here).
        let mut mvhd = [0u8; 96];
        mvhd[8..12].copy_from_slice(&1000u32.to_be_bytes());
        let trak = [
            boxed(b"tkhd", &full(0, 3, &[0u8; 80])),
            boxed(b"mdia", &boxed(b"mdhd", &full(0, 0, &mdhd))),
        ]
        .concat();
        let moov = boxed(
            b"moov",
            &[boxed(b"mvhd", &full(0, 0, &mvhd)), boxed(b"trak", &trak)].concat(),
        );
        let mut out = boxed(b"ftyp", b"isom\0\0\x02\0");
        out.extend(moov);
        for n in 0..fragments {
            let tfhd = boxed(
                b"tfhd",
                &full(0, 0x08 | 0x02_0000, &[0, 0, 0, 1, 0, 0, 0x0b, 0xb8]),
            );
            let tfdt = boxed(b"tfdt", &full(1, 0, &(n * 90_000).to_be_bytes()));
            let mut trun = 30u32.to_be_bytes().to_vec();
            trun.extend(std::iter::repeat_n([0u8, 0, 0x10, 0], 30).flatten()); // sizes only
            let trun = boxed(b"trun", &full(0, 0x200, &trun));
            let traf = boxed(b"traf", &[tfhd, tfdt, trun].concat());
            out.extend(boxed(b"moof", &traf));
            out.extend(boxed(b"mdat", &[7u8; 100]));
        }
        out
    }

    fn walk(bytes: &[u8]) -> Summary {
        let mut file = tempfile::tempfile().expect("file");
        file.write_all(bytes).expect("write");
        summarize(&file).expect("walk")
    }

    #[test]
    fn counts_whole_fragments_and_their_play_time() {
        let whole = segment(3);
        let summary = walk(&whole);
        assert_eq!(summary.fragments, 3);
        assert_eq!(summary.complete_len, whole.len() as u64);
        assert_eq!(summary.duration, Some(Duration::from_secs(3)));
        assert!(summary.playable());
    }

    #[test]
    fn the_play_time_is_written_into_the_headers_in_place() {
        let whole = segment(3);
        let mut file = tempfile::NamedTempFile::new().expect("file");
        file.write_all(&whole).expect("write");
        let written = write_duration(file.path()).expect("written");
        assert_eq!(written, Some(Duration::from_secs(3)));
        let after = std::fs::read(file.path()).expect("read");
        assert_eq!(after.len(), whole.len(), "nothing added");
        let changed: Vec<usize> = (0..after.len()).filter(|&i| after[i] != whole[i]).collect();
        assert!(changed.iter().all(|&i| i < 300), "only the headers: {changed:?}");
        let moov = &after[16 + 8..];
        // mvhd (1 kHz): 3000; tkhd: 3000; mdhd (90 kHz): 270000.
        let at = |kind: &[u8]| moov.windows(4).position(|w| w == kind).expect("box") + 4;
        let be32 = |i: usize| u32::from_be_bytes(moov[i..i + 4].try_into().expect("4"));
        assert_eq!(be32(at(b"mvhd") + 16), 3000);
        assert_eq!(be32(at(b"tkhd") + 20), 3000);
        assert_eq!(be32(at(b"mdhd") + 16), 270_000);
        // Once there, not written again.
        let modified = std::fs::metadata(file.path())
            .and_then(|m| m.modified())
            .expect("time");
        std::thread::sleep(Duration::from_millis(20));
        write_duration(file.path()).expect("again");
        let again = std::fs::metadata(file.path())
            .and_then(|m| m.modified())
            .expect("time");
        assert_eq!(modified, again, "no second write");
    }

    #[test]
    fn a_cut_off_write_is_found_and_a_file_with_no_fragment_is_unplayable() {
        let whole = segment(3);
        let two = segment(2).len();
        for cut in [two + 10, two + 200, whole.len() - 1] {
            let summary = walk(&whole[..cut]);
            assert_eq!(summary.fragments, 2, "cut at {cut}");
            assert_eq!(summary.complete_len, two as u64, "cut at {cut}");
            assert_eq!(summary.duration, Some(Duration::from_secs(2)));
        }
        let empty = segment(0);
        for cut in [0, 5, empty.len(), empty.len() + 30] {
            let bytes = &segment(1)[..cut];
            assert!(!walk(bytes).playable(), "cut at {cut}");
        }
    }
}
