//! Cuts a byte stream of concatenated JPEGs (MJPEG as cameras and ffmpeg write it) into
//! whole frames.
//!
//! A naive splitter looks for `FF D8` and `FF D9`, and breaks on real camera output: an Exif
//! APP1 segment carries a whole thumbnail JPEG, a COM segment may hold any bytes, and a
//! camera that dies mid-frame leaves a truncated image in front of the next one. This one
//! parses the marker structure instead: it walks header segments by their length fields and
//! scans for markers only inside entropy-coded data, where `FF 00` (stuffing) and `FF D0..D7`
//! (restart markers) are data. A frame is emitted at the EOI that really ends it.
//!
//! It does no I/O and keeps at most the frame being assembled plus the chunk being fed, so
//! it can sit directly behind a pipe read. It never panics on any input.

use bytes::Bytes;

/// Marker bytes (the byte after `FF`) that the splitter cares about.
mod marker {
    pub const SOI: u8 = 0xD8;
    pub const EOI: u8 = 0xD9;
    pub const SOS: u8 = 0xDA;
    pub const TEM: u8 = 0x01;
    pub const RST0: u8 = 0xD0;
    pub const RST7: u8 = 0xD7;
    pub const STUFFING: u8 = 0x00;
    pub const FILL: u8 = 0xFF;
}

/// Why bytes were thrown away; counted in [`Stats`] so operators can tell a noisy pipe from a
/// misconfigured `max_frame_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// The frame's structure broke (a truncated frame, a bad marker, a bogus length).
    Corrupt,
    /// The frame grew beyond `max_frame_bytes`.
    Oversized,
}

/// Running counters of what the splitter saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Frames emitted.
    pub frames: u64,
    /// Frames dropped because their structure broke.
    pub corrupt: u64,
    /// Frames dropped because they exceeded `max_frame_bytes`.
    pub oversized: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for an SOI; `buf` holds at most one trailing `FF`.
    Seek,
    /// Inside a frame's headers: a marker is expected at `pos`.
    Marker,
    /// Inside entropy-coded data after SOS.
    Scan,
}

/// Incremental MJPEG splitter. Feed it chunks with [`Splitter::push`]; whole frames come out.
///
/// ```
/// use croissant::splitter::Splitter;
/// let jpeg = [0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02, 0x12, 0x34, 0xFF, 0xD9];
/// let mut splitter = Splitter::new(1 << 20);
/// let mut frames = Vec::new();
/// splitter.push(b"garbage", |f| frames.push(f));
/// splitter.push(&jpeg[..5], |f| frames.push(f));
/// splitter.push(&jpeg[5..], |f| frames.push(f));
/// assert_eq!(frames, vec![bytes::Bytes::copy_from_slice(&jpeg)]);
/// ```
#[derive(Debug)]
pub struct Splitter {
    /// The frame being assembled, starting at its SOI (or a lone `FF` while seeking).
    buf: Vec<u8>,
    /// How far `buf` has been parsed; may point past its end while a segment is skipped.
    pos: usize,
    state: State,
    /// Whether the current frame has reached a start-of-scan; an EOI before one is corrupt.
    seen_sos: bool,
    max_frame_bytes: usize,
    /// Size of the last good frame, to size the next buffer in one allocation.
    last_frame_len: usize,
    stats: Stats,
    last_discard: Option<Discard>,
}

impl Splitter {
    /// A splitter that drops frames larger than `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        Splitter {
            buf: Vec::new(),
            pos: 0,
            state: State::Seek,
            seen_sos: false,
            max_frame_bytes: max_frame_bytes.max(4),
            last_frame_len: 0,
            stats: Stats::default(),
            last_discard: None,
        }
    }

    /// Counters since creation.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The reason for the most recent discard, cleared when read; lets the caller log
    /// drops without the splitter doing I/O.
    pub fn take_discard(&mut self) -> Option<Discard> {
        self.last_discard.take()
    }

    /// Bytes currently held (the partial frame). Bounded by `max_frame_bytes` plus one chunk.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Forget any partial frame, e.g. when the source process restarts: its half-written
    /// image must not be glued to the new process's first frame.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.pos = 0;
        self.state = State::Seek;
        self.seen_sos = false;
    }

    /// Feeds one chunk of any size and calls `emit` for every frame it completes.
    pub fn push(&mut self, chunk: &[u8], mut emit: impl FnMut(Bytes)) {
        if chunk.is_empty() {
            return;
        }
        if self.state == State::Seek && self.buf.is_empty() {
            // Skip garbage without copying it: only bytes from the first FF on matter.
            match memchr::memchr(0xFF, chunk) {
                Some(i) => self.buf.extend_from_slice(&chunk[i..]),
                None => return,
            }
        } else {
            self.buf.extend_from_slice(chunk);
        }
        self.parse(&mut emit);
    }

    fn parse(&mut self, emit: &mut impl FnMut(Bytes)) {
        loop {
            // The frame cannot end before `pos + 2` (an EOI right there): once that is past the
            // limit it is certainly too large, and dropping it now keeps what is held within
            // the limit plus one chunk even while a marker straddles the limit.
            if self.state != State::Seek && self.pos.min(self.buf.len()) + 2 > self.max_frame_bytes {
                self.discard_oversized();
                continue;
            }
            let progressed = match self.state {
                State::Seek => self.seek(),
                State::Marker => self.marker(emit),
                State::Scan => self.scan(emit),
            };
            if !progressed {
                return;
            }
        }
    }

    /// Finds the next SOI. Returns false when more input is needed.
    fn seek(&mut self) -> bool {
        let mut from = 0;
        while let Some(off) = memchr::memchr(0xFF, &self.buf[from..]) {
            let i = from + off;
            match self.buf.get(i + 1) {
                None => {
                    // A lone trailing FF may be the first half of an SOI.
                    self.buf.drain(..i);
                    return false;
                }
                Some(&marker::SOI) => {
                    self.buf.drain(..i);
                    self.start_frame_at_soi();
                    return true;
                }
                Some(_) => from = i + 1,
            }
        }
        self.buf.clear();
        false
    }

    /// `buf` starts with `FF D8`: begin a frame there.
    fn start_frame_at_soi(&mut self) {
        self.pos = 2;
        self.state = State::Marker;
        self.seen_sos = false;
    }

    /// Handles the marker expected at `pos`. Returns false when more input is needed.
    fn marker(&mut self, emit: &mut impl FnMut(Bytes)) -> bool {
        let Some(&first) = self.buf.get(self.pos) else {
            return false;
        };
        if first != 0xFF {
            self.discard_corrupt();
            return true;
        }
        let Some(&code) = self.buf.get(self.pos + 1) else {
            return false;
        };
        match code {
            marker::FILL => {
                // Fill bytes may pad before a marker.
                self.pos += 1;
                true
            }
            marker::SOI => {
                // A new image starts where this one should have continued: the previous
                // one was truncated.
                self.restart_at(self.pos);
                true
            }
            marker::EOI => {
                if self.seen_sos {
                    self.finish_frame(self.pos + 2, emit);
                } else {
                    self.discard_corrupt();
                }
                true
            }
            marker::STUFFING => {
                self.discard_corrupt();
                true
            }
            marker::TEM | marker::RST0..=marker::RST7 => {
                self.pos += 2;
                true
            }
            _ => {
                let (Some(&hi), Some(&lo)) = (self.buf.get(self.pos + 2), self.buf.get(self.pos + 3)) else {
                    return false;
                };
                let len = usize::from(u16::from_be_bytes([hi, lo]));
                if len < 2 {
                    self.discard_corrupt();
                    return true;
                }
                self.pos += 2 + len;
                if code == marker::SOS {
                    self.seen_sos = true;
                    self.state = State::Scan;
                }
                true
            }
        }
    }

    /// Scans entropy-coded data for the next real marker. Returns false when more input is
    /// needed.
    fn scan(&mut self, emit: &mut impl FnMut(Bytes)) -> bool {
        if self.pos >= self.buf.len() {
            // Still skipping the SOS header.
            return false;
        }
        let Some(off) = memchr::memchr(0xFF, &self.buf[self.pos..]) else {
            self.pos = self.buf.len();
            return false;
        };
        let i = self.pos + off;
        let Some(&code) = self.buf.get(i + 1) else {
            self.pos = i;
            return false;
        };
        match code {
            marker::STUFFING | marker::RST0..=marker::RST7 => self.pos = i + 2,
            marker::FILL => self.pos = i + 1,
            marker::EOI => self.finish_frame(i + 2, emit),
            marker::SOI => self.restart_at(i),
            _ => {
                // Another header segment (progressive JPEGs have several scans).
                self.pos = i;
                self.state = State::Marker;
            }
        }
        true
    }

    fn finish_frame(&mut self, end: usize, emit: &mut impl FnMut(Bytes)) {
        if end > self.max_frame_bytes {
            self.pos = end;
            self.discard_oversized();
            return;
        }
        let rest = self.buf.split_off(end);
        self.last_frame_len = end;
        let mut next = Vec::with_capacity((self.last_frame_len + self.last_frame_len / 8).max(rest.len()));
        next.extend_from_slice(&rest);
        let frame = std::mem::replace(&mut self.buf, next);
        self.stats.frames += 1;
        self.pos = 0;
        self.state = State::Seek;
        emit(Bytes::from(frame));
    }

    /// The current frame was cut short by a new SOI at `at`: drop it, start there.
    fn restart_at(&mut self, at: usize) {
        self.note_discard(Discard::Corrupt);
        self.buf.drain(..at);
        self.start_frame_at_soi();
    }

    /// The current frame's structure broke. Its bytes may still hold the next frame (a bogus
    /// length may have skipped over its SOI), so search again from just after this SOI.
    fn discard_corrupt(&mut self) {
        self.note_discard(Discard::Corrupt);
        self.buf.drain(..1);
        self.pos = 0;
        self.state = State::Seek;
    }

    /// The frame is too large: forget what was parsed and look for the next SOI after it.
    fn discard_oversized(&mut self) {
        self.note_discard(Discard::Oversized);
        let upto = self.pos.min(self.buf.len());
        self.buf.drain(..upto);
        self.pos = 0;
        self.state = State::Seek;
    }

    fn note_discard(&mut self, why: Discard) {
        match why {
            Discard::Corrupt => self.stats.corrupt += 1,
            Discard::Oversized => self.stats.oversized += 1,
        }
        self.last_discard = Some(why);
    }
}

/// Width and height from a whole JPEG's frame header (any SOF marker), if it has one.
pub fn jpeg_size(jpeg: &[u8]) -> Option<(u16, u16)> {
    let mut i = 2;
    while i + 9 < jpeg.len() {
        if jpeg[i] != 0xFF {
            return None;
        }
        let code = jpeg[i + 1];
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        if matches!(code, 0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF) {
            let height = u16::from_be_bytes([jpeg[i + 5], jpeg[i + 6]]);
            let width = u16::from_be_bytes([jpeg[i + 7], jpeg[i + 8]]);
            return Some((width, height));
        }
        i += 2 + len;
    }
    None
}

#[cfg(test)]
mod tests;
