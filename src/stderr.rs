//! A child process's stderr (the camera's, ffmpeg's): read line by line into the log,
//! keeping the last few lines for the message that reports the child's death.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use futures_lite::{AsyncBufReadExt, StreamExt};

/// The last lines a child wrote to stderr. Clones share the lines.
#[derive(Debug, Clone, Default)]
pub struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    /// How many lines are kept.
    const LINES: usize = 5;

    fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == Self::LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The kept lines joined with ` | `, empty if there were none.
    pub fn joined(&self) -> String {
        let lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        lines.iter().cloned().collect::<Vec<_>>().join(" | ")
    }
}

/// Reads `stderr` until it closes, giving each non-empty line to `log` and keeping the last
/// ones in `tail`, secrets masked (see [`crate::secrets`]): each of `hidden` (such as a
/// stream key) replaced by what may be shown instead, and anything shaped like a secret.
pub async fn follow(
    stderr: impl futures_lite::AsyncRead + Unpin,
    tail: Tail,
    hidden: Vec<(String, String)>,
    mut log: impl FnMut(&str),
) {
    let mut lines = futures_lite::io::BufReader::new(stderr).lines();
    while let Some(Ok(line)) = lines.next().await {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        // A camera or ffmpeg quotes its URL, credentials and keys included.
        let line = crate::secrets::mask_with(line, &hidden);
        log(&line);
        tail.push(line);
    }
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
}
