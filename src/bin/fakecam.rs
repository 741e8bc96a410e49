//! A fake camera for tests and benchmarks: writes real JPEG frames to stdout at a given size
//! and rate, like `rpicam-vid --codec mjpeg -o -` does.
//!
//! Each frame carries `seq=<n> us=<unix micros>` in a COM segment right after SOI, so a
//! client can count gaps and measure latency. `--tee DIR` also writes every frame to
//! `DIR/<seq>.jpg` so tests can compare what viewers got byte for byte. `--nasty` adds what
//! real cameras do to naive splitters: garbage between frames and an Exif APP1 segment that
//! holds a whole JPEG thumbnail.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use croissant::testpattern;

/// A fake camera for tests and benchmarks: writes numbered, timestamped JPEG frames to stdout.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Frame width.
    #[arg(long, default_value_t = 640)]
    width: u32,
    /// Frame height.
    #[arg(long, default_value_t = 480)]
    height: u32,
    /// Frames per second.
    #[arg(long, default_value_t = 30.0)]
    fps: f64,
    /// Stop after this many frames (default: run until stdout closes).
    #[arg(long)]
    frames: Option<u64>,
    /// Distinct pictures rendered up front and cycled through (rendering is the costly part).
    #[arg(long, default_value_t = 30)]
    distinct: u64,
    /// Also write each frame to `DIR/<seq>.jpg`.
    #[arg(long, value_name = "DIR")]
    tee: Option<PathBuf>,
    /// Garbage between frames and an Exif thumbnail inside every frame.
    #[arg(long)]
    nasty: bool,
    /// Draw each frame's number as 16 black and white bars instead (see
    /// `testpattern::barcode`), so a recording tells which frames it holds.
    #[arg(long)]
    barcode: bool,
    /// Pixel noise (0-255) to make frames as large as a real camera's: 6 gives about 30 KB
    /// at 640x480, 11 about 100 KB at 1280x720.
    #[arg(long, default_value_t = 0)]
    noise: u8,
}

fn main() {
    let args = Args::parse();
    let pictures: Vec<Vec<u8>> = (0..args.distinct.max(1))
        .map(|i| {
            let jpeg = testpattern::render_noisy(
                i * 7,
                SystemTime::now(),
                args.width,
                args.height,
                None,
                args.noise,
            );
            if args.nasty {
                with_exif_thumbnail(&jpeg)
            } else {
                jpeg
            }
        })
        .collect();
    let interval = Duration::from_secs_f64(1.0 / args.fps.max(0.1));
    // Straight to the file descriptor, each frame with one write(2) as a camera writing whole
    // frames does (Rust's stdout would split a frame at its last newline byte).
    let Ok(stdout) = std::os::fd::AsFd::as_fd(&std::io::stdout()).try_clone_to_owned() else {
        eprintln!("fakecam: no stdout");
        std::process::exit(1);
    };
    let mut stdout = std::fs::File::from(stdout);
    let start = Instant::now();
    let mut seq = 0u64;
    while args.frames.is_none_or(|n| seq < n) {
        let due = start + interval.mul_f64(seq as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let drawn;
        let picture = if args.barcode {
            drawn = testpattern::barcode(seq as u16, args.width, args.height);
            &drawn
        } else {
            &pictures[(seq % pictures.len() as u64) as usize]
        };
        let frame = testpattern::with_comment(picture, format!("seq={seq} us={micros}").as_bytes());
        if let Some(dir) = &args.tee
            && let Err(error) = std::fs::write(dir.join(format!("{seq}.jpg")), &frame)
        {
            eprintln!("fakecam: cannot write to {}: {error}", dir.display());
            std::process::exit(1);
        }
        let mut out = Vec::with_capacity(frame.len() + 16);
        if args.nasty && seq % 3 == 1 {
            out.extend_from_slice(b"\x00garbage\xFF\xFF\xD9\xFF");
        }
        out.extend_from_slice(&frame);
        if stdout.write_all(&out).and_then(|()| stdout.flush()).is_err() {
            // The reader went away: a camera stops quietly too.
            return;
        }
        seq += 1;
    }
}

/// Inserts an APP1 Exif segment holding a small but complete JPEG after SOI.
fn with_exif_thumbnail(jpeg: &[u8]) -> Vec<u8> {
    let thumb = testpattern::render(0, SystemTime::now(), 16, 16, None);
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(&thumb);
    testpattern::with_segment(jpeg, 0xE1, &payload)
}
