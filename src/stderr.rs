//! A child process's stderr (the camera's, ffmpeg's): read line by line into the log,
//! keeping the last few lines for the message that reports the child's death.

use crate::sync::lock;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// The last lines a child wrote to stderr. Clones share the lines.
#[derive(Debug, Clone, Default)]
pub struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    /// How many lines are kept.
    const LINES: usize = 5;

    fn push(&self, line: String) {
        let mut lines = lock(&self.0);
        if lines.len() == Self::LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The kept lines joined with ` | `, empty if there were none.
    pub fn joined(&self) -> String {
        let lines = lock(&self.0);
        lines.iter().cloned().collect::<Vec<_>>().join(" | ")
    }
}

/// Longest line kept; the rest of a longer one is dropped (a program writing megabytes
/// without a newline must not grow the daemon or the log).
const MAX_LINE: usize = 2048;

/// Reads `stderr` until it closes, giving each non-empty line to `log` and keeping the last
/// ones in `tail`, secrets masked (see [`crate::secrets`]): each of `hidden` (such as a
/// stream key) replaced by what may be shown instead, and anything shaped like a secret.
///
/// Whatever the program writes is read to the end: bytes that are not UTF-8 are replaced,
/// control characters escaped, and lines cut at [`MAX_LINE`]. (Stopping at the first bad
/// byte closed the pipe, and the camera died of SIGPIPE at its next message, forever.)
pub async fn follow(
    stderr: impl futures_lite::AsyncRead + Unpin,
    tail: Tail,
    hidden: Vec<(String, String)>,
    mut log: impl FnMut(&str),
) {
    use futures_lite::AsyncReadExt;
    let mut stderr = stderr;
    let mut chunk = vec![0u8; 4096];
    let mut line: Vec<u8> = Vec::new();
    let mut cut = false;
    let mut emit = |line: &mut Vec<u8>, cut: &mut bool| {
        // CRLF endings, and progress lines redrawn with CR, end at their last CR.
        while line.last() == Some(&b'\r') {
            line.pop();
        }
        let text = printable(line, *cut);
        line.clear();
        *cut = false;
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        // A camera or ffmpeg quotes its URL, credentials and keys included.
        let text = crate::secrets::mask_with(text, &hidden);
        log(&text);
        tail.push(text);
    };
    loop {
        let read = match stderr.read(&mut chunk).await {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        for piece in chunk[..read].split_inclusive(|b| *b == b'\n') {
            let ends = piece.last() == Some(&b'\n');
            let piece = if ends { &piece[..piece.len() - 1] } else { piece };
            let room = MAX_LINE.saturating_sub(line.len());
            line.extend_from_slice(&piece[..piece.len().min(room)]);
            cut |= piece.len() > room;
            if ends {
                emit(&mut line, &mut cut);
            }
        }
    }
    emit(&mut line, &mut cut);
}

/// A line as text for the log: invalid UTF-8 replaced, control characters (NUL, CR, ESC...)
/// shown as `\u{..}` escapes, and a cut line marked.
fn printable(bytes: &[u8], cut: bool) -> String {
    let mut text = String::with_capacity(bytes.len());
    for c in String::from_utf8_lossy(bytes).chars() {
        if c.is_control() && c != '\t' {
            text.extend(c.escape_unicode());
        } else {
            text.push(c);
        }
    }
    if cut {
        text.push_str(" [cut]");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_and_skips_blank_ones() {
        let tail = Tail::default();
        let text = "one\n\ntwo\nthree\nfour\nfive\nsix\n";
        let mut logged = Vec::new();
        smol::block_on(follow(
            futures_lite::io::Cursor::new(text),
            tail.clone(),
            Vec::new(),
            |l| logged.push(l.to_owned()),
        ));
        assert_eq!(logged.len(), 6);
        assert_eq!(tail.joined(), "two | three | four | five | six");
    }

    #[test]
    fn bad_bytes_long_lines_and_controls_neither_stop_the_reading_nor_grow_it() {
        let mut text = b"caf\xe9 latin-1\nnul\x00 and cr\r\n".to_vec();
        text.extend(std::iter::repeat_n(b'B', 1 << 20));
        text.extend_from_slice(b"\nafter\n");
        let mut logged = Vec::new();
        smol::block_on(follow(
            futures_lite::io::Cursor::new(text),
            Tail::default(),
            Vec::new(),
            |l| logged.push(l.to_owned()),
        ));
        assert_eq!(logged.len(), 4, "{logged:?}");
        assert_eq!(logged[0], "caf\u{fffd} latin-1");
        assert_eq!(logged[1], "nul\\u{0} and cr");
        assert!(logged[2].len() < MAX_LINE + 16 && logged[2].ends_with("[cut]"));
        assert_eq!(logged[3], "after", "reading goes on after all of that");
    }
}
