//! A minimal Matroska writer: just enough to hand ffmpeg MJPEG frames together with their
//! arrival times.
//!
//! Raw MJPEG on a pipe carries no timestamps, so ffmpeg could only stamp frames with the
//! time it happened to read them (late after its start-up, bunched after a stall). Wrapping
//! each JPEG in a SimpleBlock with its own timestamp makes the recording's durations and
//! frame spacing exactly those of the camera. Sizes of the Segment and Clusters are left
//! "unknown", as in live WebM, so nothing needs to be patched afterwards.

use std::time::SystemTime;

/// The Matroska IDs used here (their length marker bits included).
mod id {
    pub const EBML: u32 = 0x1A45_DFA3;
    pub const EBML_VERSION: u32 = 0x4286;
    pub const EBML_READ_VERSION: u32 = 0x42F7;
    pub const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
    pub const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
    pub const DOC_TYPE: u32 = 0x4282;
    pub const DOC_TYPE_VERSION: u32 = 0x4287;
    pub const DOC_TYPE_READ_VERSION: u32 = 0x4285;
    pub const SEGMENT: u32 = 0x1853_8067;
    pub const INFO: u32 = 0x1549_A966;
    pub const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
    pub const MUXING_APP: u32 = 0x4D80;
    pub const WRITING_APP: u32 = 0x5741;
    pub const TRACKS: u32 = 0x1654_AE6B;
    pub const TRACK_ENTRY: u32 = 0xAE;
    pub const TRACK_NUMBER: u32 = 0xD7;
    pub const TRACK_UID: u32 = 0x73C5;
    pub const TRACK_TYPE: u32 = 0x83;
    pub const DEFAULT_DURATION: u32 = 0x23_E383;
    pub const FLAG_LACING: u32 = 0x9C;
    pub const CODEC_ID: u32 = 0x86;
    pub const VIDEO: u32 = 0xE0;
    pub const PIXEL_WIDTH: u32 = 0xB0;
    pub const PIXEL_HEIGHT: u32 = 0xBA;
    pub const CLUSTER: u32 = 0x1F43_B675;
    pub const TIMESTAMP: u32 = 0xE7;
    pub const SIMPLE_BLOCK: u32 = 0xA3;
}

/// Size field meaning "until the parent ends or the next element of this level starts".
const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
/// A block's timestamp is an i16 offset from its cluster's; start a new cluster well before.
const CLUSTER_MS: u64 = 10_000;

/// Turns frames into a Matroska byte stream, one call per frame.
#[derive(Debug, Default)]
pub struct Muxer {
    /// The camera's nominal frame rate: ffmpeg's encoder takes it for the stream's rate (for
    /// the H.264 level and the players that show a rate); without it, ffmpeg guesses from
    /// the millisecond timestamps, and once guessed 1000 fps.
    frame_rate: Option<u32>,
    start: Option<SystemTime>,
    last_ms: Option<u64>,
    cluster_ms: Option<u64>,
}

impl Muxer {
    /// A muxer whose first frame will be at time 0, for a camera of `frame_rate`, if known.
    pub fn new(frame_rate: Option<u32>) -> Self {
        Muxer {
            frame_rate: frame_rate.filter(|r| *r > 0),
            ..Self::default()
        }
    }

    /// The timestamp (milliseconds since the first frame) of the last frame muxed.
    pub fn last_ms(&self) -> Option<u64> {
        self.last_ms
    }

    /// The bytes that carry `jpeg`, arrived at `at`: the stream header before the first
    /// frame, a cluster header when one is due, then the frame's block.
    pub fn frame(&mut self, jpeg: &[u8], at: SystemTime) -> Vec<u8> {
        let mut out = Vec::with_capacity(jpeg.len() + 64);
        let frame_rate = self.frame_rate;
        let start = *self.start.get_or_insert_with(|| {
            header(&mut out, jpeg, frame_rate);
            at
        });
        // Milliseconds since the first frame, kept strictly increasing even if the wall
        // clock steps back.
        let mut ms = at.duration_since(start).map_or(0, |d| d.as_millis() as u64);
        if let Some(last) = self.last_ms {
            ms = ms.max(last + 1);
        }
        self.last_ms = Some(ms);
        let cluster = match self.cluster_ms {
            Some(c) if ms - c < CLUSTER_MS => c,
            _ => {
                put_id(&mut out, id::CLUSTER);
                out.extend_from_slice(&UNKNOWN_SIZE);
                put_uint(&mut out, id::TIMESTAMP, ms);
                self.cluster_ms = Some(ms);
                ms
            }
        };
        put_id(&mut out, id::SIMPLE_BLOCK);
        put_size(&mut out, jpeg.len() as u64 + 4);
        out.push(0x81); // track 1
        out.extend_from_slice(&((ms - cluster) as i16).to_be_bytes());
        out.push(0x80); // keyframe
        out.extend_from_slice(jpeg);
        out
    }
}

fn header(out: &mut Vec<u8>, first: &[u8], frame_rate: Option<u32>) {
    let mut ebml = Vec::new();
    put_uint(&mut ebml, id::EBML_VERSION, 1);
    put_uint(&mut ebml, id::EBML_READ_VERSION, 1);
    put_uint(&mut ebml, id::EBML_MAX_ID_LENGTH, 4);
    put_uint(&mut ebml, id::EBML_MAX_SIZE_LENGTH, 8);
    put_bytes(&mut ebml, id::DOC_TYPE, b"matroska");
    put_uint(&mut ebml, id::DOC_TYPE_VERSION, 4);
    put_uint(&mut ebml, id::DOC_TYPE_READ_VERSION, 2);
    put_bytes(out, id::EBML, &ebml);

    put_id(out, id::SEGMENT);
    out.extend_from_slice(&UNKNOWN_SIZE);

    let mut info = Vec::new();
    put_uint(&mut info, id::TIMESTAMP_SCALE, 1_000_000);
    put_bytes(&mut info, id::MUXING_APP, b"croissant");
    put_bytes(&mut info, id::WRITING_APP, b"croissant");
    put_bytes(out, id::INFO, &info);

    let (width, height) = crate::splitter::jpeg_size(first).unwrap_or((0, 0));
    let mut video = Vec::new();
    put_uint(&mut video, id::PIXEL_WIDTH, u64::from(width));
    put_uint(&mut video, id::PIXEL_HEIGHT, u64::from(height));
    let mut track = Vec::new();
    put_uint(&mut track, id::TRACK_NUMBER, 1);
    put_uint(&mut track, id::TRACK_UID, 1);
    put_uint(&mut track, id::TRACK_TYPE, 1);
    put_uint(&mut track, id::FLAG_LACING, 0);
    if let Some(rate) = frame_rate {
        put_uint(&mut track, id::DEFAULT_DURATION, 1_000_000_000 / u64::from(rate));
    }
    put_bytes(&mut track, id::CODEC_ID, b"V_MJPEG");
    put_bytes(&mut track, id::VIDEO, &video);
    let mut tracks = Vec::new();
    put_bytes(&mut tracks, id::TRACK_ENTRY, &track);
    put_bytes(out, id::TRACKS, &tracks);
}

fn put_id(out: &mut Vec<u8>, id: u32) {
    let bytes = id.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    out.extend_from_slice(&bytes[skip..]);
}

/// An EBML variable-size integer, in as few bytes as it fits (all-ones is reserved).
fn put_size(out: &mut Vec<u8>, size: u64) {
    let len = (1..=8).find(|&n| size < (1u64 << (7 * n)) - 1).unwrap_or(8);
    let marked = size | (1u64 << (7 * len));
    out.extend_from_slice(&marked.to_be_bytes()[8 - len..]);
}

fn put_bytes(out: &mut Vec<u8>, id: u32, data: &[u8]) {
    put_id(out, id);
    put_size(out, data.len() as u64);
    out.extend_from_slice(data);
}

fn put_uint(out: &mut Vec<u8>, id: u32, value: u64) {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
    put_bytes(out, id, &bytes[skip..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sizes_use_the_shortest_vint() {
        let enc = |n| {
            let mut v = Vec::new();
            put_size(&mut v, n);
            v
        };
        assert_eq!(enc(0), vec![0x80]);
        assert_eq!(enc(126), vec![0xFE]);
        assert_eq!(enc(127), vec![0x40, 0x7F]);
        assert_eq!(enc(16_382), vec![0x7F, 0xFE]);
        assert_eq!(enc(30_000), vec![0x20, 0x75, 0x30]);
        assert_eq!(enc(100_000), vec![0x21, 0x86, 0xA0]);
    }

    #[test]
    fn blocks_carry_offsets_and_clusters_roll_over() {
        let jpeg = crate::testpattern::render(0, SystemTime::now(), 64, 48, None);
        assert_eq!(crate::splitter::jpeg_size(&jpeg), Some((64, 48)));
        let t0 = SystemTime::now();
        let mut mux = Muxer::new(None);
        let first = mux.frame(&jpeg, t0);
        assert_eq!(&first[..4], &[0x1A, 0x45, 0xDF, 0xA3]);
        let second = mux.frame(&jpeg, t0 + Duration::from_millis(250));
        // SimpleBlock: ID, 2-byte size (a small frame), track, i16 offset 250, flags.
        assert!(jpeg.len() + 4 < 16_382);
        let block = second.iter().position(|b| *b == 0xA3).expect("a block");
        assert_eq!(&second[block + 3..block + 7], &[0x81, 0x00, 0xFA, 0x80]);
        let later = mux.frame(&jpeg, t0 + Duration::from_secs(11));
        assert_eq!(&later[..4], &[0x1F, 0x43, 0xB6, 0x75], "a new cluster after 10 s");
        let back = mux.frame(&jpeg, t0);
        assert_eq!(back[0], 0xA3, "same cluster, so just a block");
        assert_eq!(
            &back[3..7],
            &[0x81, 0x00, 0x01, 0x80],
            "time never goes backwards"
        );
    }
}
