//! The built-in test pattern: moving colours, a sweeping bar, a clock and a frame counter,
//! JPEG-encoded in-process. It lets a first `cargo run` show live video with no camera and
//! nothing installed, and it makes a frozen stream obvious at a glance.

use std::time::SystemTime;

use chrono::{DateTime, Local};

/// Renders frame `seq` of a `width` x `height` pattern for time `at` and encodes it as JPEG.
/// `comment`, if given, is stored in a COM segment right after SOI (the benchmark's fake
/// camera puts its sequence number and write time there).
pub fn render(seq: u64, at: SystemTime, width: u32, height: u32, comment: Option<&[u8]>) -> Vec<u8> {
    render_noisy(seq, at, width, height, comment, 0)
}

/// Like [`render`], with pixel noise of up to `noise` levels added. Noise costs JPEG bits,
/// so it brings frames to the sizes real cameras produce (for benchmarks).
pub fn render_noisy(
    seq: u64,
    at: SystemTime,
    width: u32,
    height: u32,
    comment: Option<&[u8]>,
    noise: u8,
) -> Vec<u8> {
    let (w, h) = (width.clamp(16, 8192), height.clamp(16, 8192));
    let mut canvas = Canvas::new(w, h);
    canvas.background(seq);
    canvas.sweep(seq);
    if noise > 0 {
        canvas.noise(seq, noise);
    }

    let local: DateTime<Local> = at.into();
    let scale = (w / 160).clamp(1, 12);
    let lines = [
        "CROISSANT".to_owned(),
        local.format("%Y-%m-%d").to_string(),
        local.format("%H:%M:%S%.3f").to_string(),
        format!("FRAME {seq}"),
    ];
    let line_height = 9 * scale;
    let top = h.saturating_sub(line_height * lines.len() as u32) / 2;
    for (i, line) in lines.iter().enumerate() {
        let text_width = line.chars().count() as u32 * 6 * scale;
        let x = w.saturating_sub(text_width) / 2;
        let y = top + i as u32 * line_height;
        canvas.panel(
            x.saturating_sub(scale),
            y.saturating_sub(scale),
            text_width + scale,
            8 * scale + scale,
        );
        canvas.text(x, y, scale, line);
    }
    encode(&canvas, comment)
}

/// A `width` x `height` JPEG of 16 full-height bars, white for each set bit of `number`
/// (most significant first): a picture that still says which frame it was after lossy
/// re-encoding (tests decode recordings scaled down to 16x1 pixels and read the bits).
pub fn barcode(number: u16, width: u32, height: u32) -> Vec<u8> {
    let (w, h) = (width.clamp(16, 8192), height.clamp(16, 8192));
    let mut canvas = Canvas::new(w, h);
    for x in 0..w {
        let bit = 15 - (x * 16 / w);
        let level = if number >> bit & 1 == 1 { 255 } else { 0 };
        for y in 0..h {
            let at = ((y * w + x) * 3) as usize;
            canvas.pixels[at..at + 3].fill(level);
        }
    }
    encode(&canvas, None)
}

/// Reads [`barcode`]'s number back from 16 gray levels (one per bar).
pub fn read_barcode(bars: &[u8]) -> Option<u16> {
    if bars.len() != 16 {
        return None;
    }
    Some(
        bars.iter()
            .fold(0u16, |n, level| n << 1 | u16::from(*level >= 128)),
    )
}

fn encode(canvas: &Canvas, comment: Option<&[u8]>) -> Vec<u8> {
    let mut jpeg = Vec::with_capacity(canvas.pixels.len() / 10);
    // Sizes are clamped to 8192, which fits u16.
    let (w, h) = (canvas.width as u16, canvas.height as u16);
    let encoded =
        jpeg_encoder::Encoder::new(&mut jpeg, 80).encode(&canvas.pixels, w, h, jpeg_encoder::ColorType::Rgb);
    if encoded.is_err() {
        // Only possible for zero sizes, which the clamp rules out.
        unreachable!("encoding a {w}x{h} RGB buffer cannot fail");
    }
    match comment {
        Some(text) => with_comment(&jpeg, text),
        None => jpeg,
    }
}

/// Inserts a COM segment after SOI. Text longer than a segment holds is cut.
pub fn with_comment(jpeg: &[u8], text: &[u8]) -> Vec<u8> {
    with_segment(jpeg, 0xFE, text)
}

/// Inserts a marker segment (`FF <marker> <length> <payload>`) right after SOI. A payload
/// longer than a segment holds is cut.
pub fn with_segment(jpeg: &[u8], marker: u8, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(65_533)];
    let mut out = Vec::with_capacity(jpeg.len() + payload.len() + 4);
    out.extend_from_slice(&jpeg[..2.min(jpeg.len())]);
    out.extend_from_slice(&[0xFF, marker]);
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(jpeg.get(2..).unwrap_or_default());
    out
}

struct Canvas {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl Canvas {
    fn new(width: u32, height: u32) -> Self {
        Canvas {
            width,
            height,
            pixels: vec![0; width as usize * height as usize * 3],
        }
    }

    /// Diagonal colour gradients that drift with time.
    fn background(&mut self, seq: u64) {
        let t = (seq % 1024) as u32;
        let w = self.width as usize;
        for (y, row) in self.pixels.chunks_exact_mut(w * 3).enumerate() {
            let y = y as u32;
            for (x, px) in row.chunks_exact_mut(3).enumerate() {
                let x = x as u32;
                px[0] = ((x + t * 3) / 4) as u8;
                px[1] = ((y + t * 2) / 3) as u8;
                px[2] = ((x + y + t * 5) / 6) as u8;
            }
        }
    }

    /// Deterministic pseudo-random noise (xorshift), like a sensor's grain.
    fn noise(&mut self, seed: u64, amount: u8) {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let span = u64::from(amount) * 2 + 1;
        for px in self.pixels.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let delta = (state % span) as i16 - i16::from(amount);
            *px = (i16::from(*px) + delta).clamp(0, 255) as u8;
        }
    }

    /// A white bar that crosses the picture, so motion is obvious even when the clock is
    /// out of view.
    fn sweep(&mut self, seq: u64) {
        let bar = (self.width / 40).max(2);
        let x0 = ((seq * u64::from(bar) / 2) % u64::from(self.width)) as u32;
        self.fill(x0, 0, bar, self.height, [255, 255, 255]);
    }

    fn panel(&mut self, x: u32, y: u32, w: u32, h: u32) {
        self.fill(x, y, w, h, [16, 16, 16]);
    }

    fn fill(&mut self, x: u32, y: u32, w: u32, h: u32, rgb: [u8; 3]) {
        let x1 = (x + w).min(self.width);
        let y1 = (y + h).min(self.height);
        for yy in y.min(self.height)..y1 {
            let row = yy as usize * self.width as usize * 3;
            for xx in x.min(self.width)..x1 {
                let i = row + xx as usize * 3;
                self.pixels[i..i + 3].copy_from_slice(&rgb);
            }
        }
    }

    fn text(&mut self, x: u32, y: u32, scale: u32, text: &str) {
        for (i, c) in text.chars().enumerate() {
            let glyph = glyph(c);
            let gx = x + i as u32 * 6 * scale;
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0b10000 >> col) != 0 {
                        self.fill(
                            gx + col * scale,
                            y + row as u32 * scale,
                            scale,
                            scale,
                            [255, 255, 255],
                        );
                    }
                }
            }
        }
    }
}

/// A 5x7 bitmap font with the characters the pattern writes.
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        _ => [0; 7],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::splitter::Splitter;

    #[test]
    fn frames_are_whole_jpegs_and_change_over_time() {
        let a = render(0, SystemTime::now(), 320, 240, None);
        let b = render(1, SystemTime::now(), 320, 240, Some(b"seq=1"));
        assert_ne!(a, b);
        let mut splitter = Splitter::new(1 << 20);
        let mut frames = Vec::new();
        splitter.push(&[a.clone(), b.clone()].concat(), |f| frames.push(f));
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].as_ref(), b.as_slice());
        assert!(b.windows(5).any(|w| w == b"seq=1"));
    }

    #[test]
    fn odd_sizes_render() {
        for (w, h) in [(16, 16), (17, 33), (641, 479)] {
            let jpeg = render(7, SystemTime::now(), w, h, None);
            assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
        }
    }
}
