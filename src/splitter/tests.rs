//! Hand-made vectors for every way real MJPEG streams break naive splitters, plus a property
//! test over random frames, garbage and chunkings.

use super::*;
use proptest::prelude::*;

/// Builds a syntactically valid JPEG from header segments and raw (already stuffed) scan data.
fn jpeg(segments: &[(u8, &[u8])], scan: &[u8]) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8];
    for (code, payload) in segments {
        push_segment(&mut out, *code, payload);
    }
    push_segment(&mut out, 0xDA, &[1, 1, 0, 0, 0x3F, 0]);
    out.extend_from_slice(scan);
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

fn push_segment(out: &mut Vec<u8>, code: u8, payload: &[u8]) {
    let len = u16::try_from(payload.len() + 2).expect("test segment fits a length field");
    out.extend_from_slice(&[0xFF, code]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
}

fn simple(tag: u8) -> Vec<u8> {
    jpeg(&[(0xE0, b"JFIF\0"), (0xDB, &[tag; 65])], &[tag, 0x12, 0x34, tag])
}

/// A real JPEG from the encoder the test pattern uses.
fn encoded(w: u16, h: u16, seed: u8) -> Vec<u8> {
    let pixels: Vec<u8> = (0..usize::from(w) * usize::from(h) * 3)
        .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed))
        .collect();
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 80)
        .encode(&pixels, w, h, jpeg_encoder::ColorType::Rgb)
        .expect("encoding a test image");
    out
}

fn split_in_chunks(input: &[u8], sizes: &[usize], max: usize) -> (Vec<Bytes>, Splitter) {
    let mut s = Splitter::new(max);
    let mut frames = Vec::new();
    let mut rest = input;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(4096)
            .clamp(1, rest.len());
        s.push(&rest[..n], |f| frames.push(f));
        rest = &rest[n..];
        i += 1;
    }
    (frames, s)
}

fn split(input: &[u8]) -> Vec<Bytes> {
    split_in_chunks(input, &[usize::MAX], 1 << 24).0
}

#[test]
fn whole_frames_in_one_chunk() {
    let a = simple(1);
    let b = simple(2);
    let input = [a.clone(), b.clone()].concat();
    assert_eq!(split(&input), vec![Bytes::from(a), Bytes::from(b)]);
}

#[test]
fn real_encoded_frames() {
    let frames = [encoded(64, 48, 3), encoded(33, 17, 7), encoded(320, 240, 11)];
    let input = frames.concat();
    let got = split(&input);
    assert_eq!(got.len(), 3);
    for (g, f) in got.iter().zip(&frames) {
        assert_eq!(g.as_ref(), f.as_slice());
    }
}

#[test]
fn exif_app1_holding_a_whole_jpeg_thumbnail() {
    let thumb = encoded(16, 16, 5);
    let mut exif = b"Exif\0\0".to_vec();
    exif.extend_from_slice(&thumb);
    let frame = jpeg(&[(0xE1, &exif)], &[1, 2, 3]);
    let input = [frame.clone(), simple(9)].concat();
    assert_eq!(split(&input), vec![Bytes::from(frame), Bytes::from(simple(9))]);
}

#[test]
fn eoi_and_soi_inside_a_com_segment() {
    let frame = jpeg(&[(0xFE, &[0xFF, 0xD9, 0xFF, 0xD8, 0xFF, 0xD9])], &[7, 7]);
    assert_eq!(split(&frame), vec![Bytes::from(frame)]);
}

#[test]
fn garbage_without_ff_between_frames() {
    let a = simple(1);
    let b = simple(2);
    let input = [
        b"hello".to_vec(),
        a.clone(),
        b"\x00\x01 noise".to_vec(),
        b.clone(),
        b"tail".to_vec(),
    ]
    .concat();
    assert_eq!(split(&input), vec![Bytes::from(a), Bytes::from(b)]);
}

#[test]
fn garbage_with_ff_bytes_between_frames() {
    let a = simple(1);
    let b = simple(2);
    let input = [
        vec![0xFF, 0xFF, 0x00, 0xFF, 0xD9, 0xFF],
        a.clone(),
        vec![0xFF, 0xDA, 0xFF, 0x12, 0xFF],
        b.clone(),
        vec![0xFF],
    ]
    .concat();
    assert_eq!(split(&input), vec![Bytes::from(a), Bytes::from(b)]);
}

#[test]
fn truncated_in_scan_data_then_a_good_frame() {
    let a = simple(1);
    let b = simple(2);
    let cut = &a[..a.len() - 4];
    let input = [cut, &b].concat();
    let (frames, s) = split_in_chunks(&input, &[7], 1 << 20);
    assert_eq!(frames, vec![Bytes::from(b)]);
    assert_eq!(s.stats().corrupt, 1);
}

#[test]
fn truncated_in_a_header_segment_then_a_good_frame() {
    // The cut happens inside a long APP segment whose length swallows the next frame's SOI.
    let a = jpeg(&[(0xE2, &[0x55; 3000])], &[1]);
    let b = simple(2);
    let c = simple(3);
    let cut = &a[..100];
    // The bogus skip only ends once enough bytes arrived; then the splitter rescans them.
    let later: Vec<Vec<u8>> = (10..60).map(simple).collect();
    let input = [cut.to_vec(), b.clone(), c.clone(), later.concat()].concat();
    let mut want = vec![Bytes::from(b), Bytes::from(c)];
    want.extend(later.into_iter().map(Bytes::from));
    assert_eq!(split_in_chunks(&input, &[512], 1 << 20).0, want);
}

#[test]
fn truncated_right_after_soi() {
    let b = simple(2);
    let input = [&[0xFF, 0xD8][..], &b].concat();
    assert_eq!(split(&input), vec![Bytes::from(b)]);
}

#[test]
fn restart_markers_and_stuffing_in_scan_data() {
    let scan = [
        0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xD7, 0xFF, 0x00, 0xFF, 0xFF, 0xD3, 0x78,
    ];
    let frame = jpeg(&[(0xDD, &[0, 4])], &scan);
    let input = [frame.clone(), simple(1)].concat();
    assert_eq!(split(&input), vec![Bytes::from(frame), Bytes::from(simple(1))]);
}

#[test]
fn progressive_jpeg_with_several_scans() {
    let mut frame = vec![0xFF, 0xD8];
    push_segment(&mut frame, 0xC2, &[8, 0, 8, 0, 8, 1, 1, 0x11, 0]);
    push_segment(&mut frame, 0xDA, &[1, 1, 0, 0, 0, 0]);
    frame.extend_from_slice(&[1, 0xFF, 0x00, 2]);
    push_segment(&mut frame, 0xC4, &[0; 17]);
    push_segment(&mut frame, 0xDA, &[1, 1, 0, 1, 5, 0]);
    frame.extend_from_slice(&[3, 4]);
    frame.extend_from_slice(&[0xFF, 0xD9]);
    assert_eq!(split(&frame), vec![Bytes::from(frame)]);
}

#[test]
fn one_byte_at_a_time() {
    let frames = [encoded(40, 30, 1), simple(4), encoded(8, 8, 2)];
    let mut input = b"junk".to_vec();
    for f in &frames {
        input.extend_from_slice(f);
        input.extend_from_slice(&[0xFF, 0x00, 0x42]);
    }
    let (got, _) = split_in_chunks(&input, &[1], 1 << 20);
    assert_eq!(got.len(), 3);
    for (g, f) in got.iter().zip(&frames) {
        assert_eq!(g.as_ref(), f.as_slice());
    }
}

#[test]
fn oversized_frame_is_dropped_and_the_next_one_kept() {
    let big = jpeg(&[(0xE3, &[0x11; 60_000])], &[0x22; 50_000]);
    let small = simple(5);
    let input = [big, small.clone(), simple(6)].concat();
    for chunk in [1000, 65536, usize::MAX] {
        let (got, s) = split_in_chunks(&input, &[chunk], 10_000);
        assert_eq!(
            got,
            vec![Bytes::from(small.clone()), Bytes::from(simple(6))],
            "chunk {chunk}"
        );
        assert_eq!(s.stats().oversized, 1);
        assert!(s.buffered() < 10_000 + chunk.min(input.len()));
    }
}

#[test]
fn eoi_before_any_scan_is_not_a_frame() {
    let input = [vec![0xFF, 0xD8, 0xFF, 0xD9], simple(1)].concat();
    assert_eq!(split(&input), vec![Bytes::from(simple(1))]);
}

#[test]
fn reset_drops_a_partial_frame() {
    let a = simple(1);
    let mut s = Splitter::new(1 << 20);
    let mut got = Vec::new();
    s.push(&a[..10], |f| got.push(f));
    s.reset();
    s.push(&a[10..], |f| got.push(f));
    s.push(&a, |f| got.push(f));
    assert_eq!(got, vec![Bytes::from(a)]);
}

#[test]
fn nested_soi_bombs_stay_bounded() {
    // Many SOIs with long lengths: every resync rescans, but memory stays bounded and it ends.
    let mut input = Vec::new();
    for _ in 0..2000 {
        input.extend_from_slice(&[0xFF, 0xD8, 0xFF, 0xE0, 0xFF, 0xF0]);
    }
    let good: Vec<Vec<u8>> = (0..1000u32).map(|i| simple((i % 200) as u8)).collect();
    input.extend_from_slice(&good.concat());
    let (got, s) = split_in_chunks(&input, &[333], 1 << 16);
    assert_eq!(got, good.into_iter().map(Bytes::from).collect::<Vec<_>>());
    assert!(s.buffered() <= (1 << 16) + 333);
}

/// Random but valid frames: random header segments (any payload bytes, including FF D8 and
/// FF D9), and scan data whose FF bytes are stuffed or restart markers.
fn arb_frame() -> impl Strategy<Value = Vec<u8>> {
    let segment = (
        prop_oneof![
            Just(0xE0u8),
            Just(0xE1),
            Just(0xFE),
            Just(0xDB),
            Just(0xC4),
            Just(0xC0)
        ],
        proptest::collection::vec(any::<u8>(), 0..300),
    );
    let scan = proptest::collection::vec((any::<u8>(), 0u8..10), 0..400).prop_map(|pairs| {
        let mut out = Vec::new();
        for (b, follow) in pairs {
            out.push(b);
            if b == 0xFF {
                out.push(if follow < 8 { 0xD0 + follow } else { 0x00 });
            }
        }
        out
    });
    (proptest::collection::vec(segment, 0..5), scan).prop_map(|(segments, scan)| {
        let segs: Vec<(u8, &[u8])> = segments.iter().map(|(c, p)| (*c, p.as_slice())).collect();
        jpeg(&segs, &scan)
    })
}

/// Random garbage that holds no SOI, so it can never start a frame.
fn arb_garbage() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(prop_oneof![any::<u8>(), Just(0xFF), Just(0xD9)], 0..64).prop_map(|mut g| {
        for i in 1..g.len() {
            if g[i - 1] == 0xFF && g[i] == 0xD8 {
                g[i] = 0x00;
            }
        }
        g
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_chunking_yields_exactly_the_valid_frames(
        items in proptest::collection::vec((arb_garbage(), arb_frame()), 0..12),
        tail in arb_garbage(),
        chunks in proptest::collection::vec(1usize..700, 1..20),
    ) {
        let mut input = Vec::new();
        let mut want = Vec::new();
        for (garbage, frame) in &items {
            input.extend_from_slice(garbage);
            input.extend_from_slice(frame);
            want.push(Bytes::from(frame.clone()));
        }
        input.extend_from_slice(&tail);
        let (got, _) = split_in_chunks(&input, &chunks, 1 << 20);
        prop_assert_eq!(got, want);
    }

    #[test]
    fn never_panics_and_stays_bounded(
        input in proptest::collection::vec(prop_oneof![any::<u8>(), Just(0xFF), Just(0xD8), Just(0xD9), Just(0xDA), Just(0x00)], 0..4000),
        chunks in proptest::collection::vec(1usize..300, 1..10),
        max in 4usize..2000,
    ) {
        let (got, s) = split_in_chunks(&input, &chunks, max);
        prop_assert!(s.buffered() <= max + 300 + 2);
        for f in got {
            prop_assert!(f.len() <= max);
            prop_assert_eq!(&f[..2], &[0xFF, 0xD8]);
            prop_assert_eq!(&f[f.len() - 2..], &[0xFF, 0xD9]);
        }
    }
}

/// Found by the fuzzer: a marker whose length field lay just past the limit kept the
/// splitter holding two bytes more than the limit plus the chunk while it waited.
#[test]
fn a_marker_straddling_the_limit_is_not_held_beyond_it() {
    let max = 64;
    let mut stream = vec![0xFF, 0xD8, 0xFF, 0xFE, 0x00, 60];
    stream.extend_from_slice(&[b'c'; 58]);
    assert_eq!(stream.len(), max, "the next marker starts exactly at the limit");
    stream.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x11]);
    stream.extend_from_slice(&[0u8; 15]);
    let next = [0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02, 0x12, 0x34, 0xFF, 0xD9];
    stream.extend_from_slice(&next);
    let mut splitter = Splitter::new(max);
    let mut frames = Vec::new();
    for byte in &stream {
        splitter.push(std::slice::from_ref(byte), |f| frames.push(f));
        assert!(
            splitter.buffered() <= max + 1,
            "held {} bytes",
            splitter.buffered()
        );
    }
    assert_eq!(
        frames,
        vec![bytes::Bytes::copy_from_slice(&next)],
        "the next frame survives"
    );
    assert_eq!(splitter.stats().oversized, 1);
}
