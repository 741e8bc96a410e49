//! Frames staged once in memory the kernel can hand to sockets without copying.
//!
//! Fanning a frame out with `writev` copies it into every viewer's socket; at 200 viewers
//! that copy is a sixth of the daemon's CPU, and more for large frames. Instead, a sink
//! writes each frame (with its own framing bytes) once into an anonymous in-memory file, and
//! every viewer's socket gets it with `sendfile`, which makes the kernel reference those
//! pages rather than copy them (`cargo bench --bench fanout` measures the difference). The
//! staging itself costs more than one copy, so it pays only with many viewers.
//!
//! Pages handed to a socket may still be queued in the kernel long after `sendfile`
//! returns, so a staged frame's bytes are never overwritten: each frame gets a fresh range
//! of the file, and when the last viewer is done with it the range is punched out, which
//! releases the file's hold on the pages (the kernel keeps those it still queues, unchanged).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustix::fs::{FallocateFlags, MemfdFlags};

/// Frames of one sink, staged one after the other in a memfd.
pub struct Stage {
    file: Arc<File>,
    /// Where the next frame goes; ranges are page-aligned and never reused.
    next_offset: AtomicU64,
    /// The frame most recently staged, for the viewers that have not sent it yet.
    current: Mutex<Option<(u64, Arc<Staged>)>>,
}

/// One frame in a [`Stage`]: a range of the file, released when the last holder drops it.
pub struct Staged {
    file: Arc<File>,
    offset: u64,
    len: usize,
    span: u64,
}

const PAGE: u64 = 4096;

impl Stage {
    /// A new, empty stage; fails only where memfds are not available.
    pub fn new(name: &str) -> io::Result<Stage> {
        let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC)?;
        Ok(Stage {
            file: Arc::new(File::from(fd)),
            next_offset: AtomicU64::new(0),
            current: Mutex::new(None),
        })
    }

    /// The staged bytes of frame `seq`, staging `parts` (concatenated) if no viewer has yet.
    /// Viewers of one sink all ask for the same frames, so only the first one writes.
    pub fn frame(&self, seq: u64, parts: &[&[u8]]) -> io::Result<Arc<Staged>> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((staged_seq, staged)) = current.as_ref()
            && *staged_seq == seq
        {
            return Ok(staged.clone());
        }
        let staged = Arc::new(self.put(parts)?);
        *current = Some((seq, staged.clone()));
        Ok(staged)
    }

    fn put(&self, parts: &[&[u8]]) -> io::Result<Staged> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let span = (len as u64).div_ceil(PAGE).max(1) * PAGE;
        let offset = self.next_offset.fetch_add(span, Ordering::Relaxed);
        let mut at = offset;
        for part in parts {
            self.file.write_all_at(part, at)?;
            at += part.len() as u64;
        }
        Ok(Staged {
            file: self.file.clone(),
            offset,
            len,
            span,
        })
    }
}

impl Staged {
    /// Bytes staged.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was staged.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sends bytes `from..` of this frame to `socket` with one `sendfile`; returns how many
    /// went (a non-blocking socket may take fewer, or fail with `WouldBlock`).
    pub fn send_from(&self, socket: impl std::os::fd::AsFd, from: usize) -> io::Result<usize> {
        let mut offset = self.offset + from as u64;
        let count = self.len.saturating_sub(from);
        Ok(rustix::fs::sendfile(
            socket,
            &*self.file,
            Some(&mut offset),
            count,
        )?)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // Failing to punch only leaves the memory to the file until the daemon exits; the
        // bytes stay as they are either way.
        let mode = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        let _ = rustix::fs::fallocate(&*self.file, mode, self.offset, self.span);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sent(staged: &Staged) -> Vec<u8> {
        let (mut reader, writer) = std::os::unix::net::UnixStream::pair().expect("pair");
        let mut from = 0;
        while from < staged.len() {
            from += staged.send_from(&writer, from).expect("sendfile");
        }
        drop(writer);
        let mut out = Vec::new();
        reader.read_to_end(&mut out).expect("read");
        out
    }

    #[test]
    fn a_staged_frame_sends_its_parts_in_order() {
        let stage = Stage::new("test").expect("memfd");
        let payload = vec![7u8; 10_000];
        let staged = stage.frame(1, &[b"head", &payload, b"tail"]).expect("stage");
        let mut expected = b"head".to_vec();
        expected.extend_from_slice(&payload);
        expected.extend_from_slice(b"tail");
        assert_eq!(sent(&staged), expected);
    }

    #[test]
    fn viewers_of_one_frame_share_one_staging_and_new_frames_never_overwrite_old_ones() {
        let stage = Stage::new("test").expect("memfd");
        let first = stage.frame(1, &[b"one"]).expect("stage");
        let again = stage.frame(1, &[b"ignored"]).expect("stage");
        assert!(Arc::ptr_eq(&first, &again));
        let second = stage.frame(2, &[b"two"]).expect("stage");
        assert_eq!(sent(&first), b"one");
        assert_eq!(sent(&second), b"two");
        assert_ne!(first.offset, second.offset);
    }

    #[test]
    fn released_frames_give_their_memory_back() {
        let stage = Stage::new("test").expect("memfd");
        let big = vec![1u8; 1 << 20];
        for seq in 0..64 {
            let staged = stage.frame(seq, &[&big]).expect("stage");
            assert_eq!(staged.len(), big.len());
        }
        // Only the newest frame is still held (by the stage itself).
        drop(stage.current.lock().expect("lock").take());
        let blocks = rustix::fs::fstat(&*stage.file).expect("fstat").st_blocks;
        assert!(blocks < 64, "{blocks} blocks still allocated");
    }
}
