//! The splitter on arbitrary camera output, cut into arbitrary chunks: it must never panic,
//! only ever emit whole JPEGs within the size limit, and never hold more than one frame
//! plus one chunk.
#![no_main]

use croissant::splitter::Splitter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [limit, step, stream @ ..] = data else { return };
    // Small limits exercise the oversized-frame path; the chunk size varies from 1 byte up.
    let max_frame_bytes = 64 + usize::from(*limit) * 64;
    let step = 1 + usize::from(*step);
    let mut splitter = Splitter::new(max_frame_bytes);
    let mut emitted = 0usize;
    for chunk in stream.chunks(step) {
        splitter.push(chunk, |frame| {
            assert!(frame.starts_with(&[0xFF, 0xD8]), "a frame starts with SOI");
            assert!(frame.ends_with(&[0xFF, 0xD9]), "a frame ends with EOI");
            assert!(frame.len() <= max_frame_bytes, "a frame fits the limit");
            emitted += frame.len();
        });
        assert!(splitter.buffered() <= max_frame_bytes + step, "bounded memory");
    }
    assert!(emitted <= stream.len(), "frames come from the input");
});
