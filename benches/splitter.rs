//! Splitter throughput: `cargo bench --bench splitter`. Feeds a stream of real JPEG frames
//! (as the camera writes them) in 64 KiB chunks, like the source's pipe reads, and reports
//! GB/s. No harness crate: the loop is simple and the number is what matters.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use croissant::splitter::Splitter;
use croissant::testpattern;

fn main() {
    for (w, h) in [(640, 480), (1280, 720), (1920, 1080)] {
        let frames: Vec<Vec<u8>> = (0..8)
            .map(|i| testpattern::render(i * 5, SystemTime::now(), w, h, None))
            .collect();
        let stream: Vec<u8> = frames.concat();
        let frame_bytes = stream.len() / frames.len();
        let mut total = 0usize;
        let mut emitted = 0usize;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(2) {
            let mut splitter = Splitter::new(8 << 20);
            for chunk in stream.chunks(64 * 1024) {
                splitter.push(black_box(chunk), |f| {
                    emitted += 1;
                    black_box(f);
                });
            }
            total += stream.len();
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "splitter {w}x{h} (~{} KB frames, 64 KiB chunks): {:.2} GB/s, {:.0} frames/s",
            frame_bytes / 1000,
            total as f64 / secs / 1e9,
            emitted as f64 / secs
        );
    }
}
