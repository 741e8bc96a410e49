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
//!
//! That holds only if every range is made of whole pages of the *kernel's* page size: a
//! hole punched in part of a page zeroes those bytes in place, under the sockets still
//! sending them. The Raspberry Pi 5 runs 16 KB pages, so the size comes from the kernel
//! (`sysconf`), never a constant.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::sync::lock;
use rustix::fs::{FallocateFlags, MemfdFlags};

/// Frames of one sink, staged one after the other in a memfd.
pub struct Stage {
    file: Arc<File>,
    /// Where the next frame goes; ranges are page-aligned and never reused.
    next_offset: AtomicU64,
    /// The frame most recently staged, for the viewers that have not sent it yet.
    current: Mutex<Option<(u64, Arc<Staged>)>>,
    /// Ranges start and end on multiples of this: the kernel's page size, or a multiple.
    page: u64,
}

/// One frame in a [`Stage`]: a range of the file, released when the last holder drops it.
pub struct Staged {
    file: Arc<File>,
    offset: u64,
    len: usize,
    span: u64,
}

/// The kernel's page size (4 KB on most machines, 16 KB on a Raspberry Pi 5).
pub fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

impl Stage {
    /// A new, empty stage; fails only where memfds are not available.
    pub fn new(name: &str) -> io::Result<Stage> {
        Stage::with_page_size(name, page_size())
    }

    /// A stage whose ranges are aligned to `page`, which must be a multiple of the
    /// kernel's page size (a larger one stands in for a larger-page kernel in tests).
    pub fn with_page_size(name: &str, page: u64) -> io::Result<Stage> {
        if page == 0 || !page.is_multiple_of(page_size()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{page} is not a multiple of the kernel's page size {}",
                    page_size()
                ),
            ));
        }
        Stage::aligned(name, page)
    }

    fn aligned(name: &str, page: u64) -> io::Result<Stage> {
        let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC)?;
        Ok(Stage {
            file: Arc::new(File::from(fd)),
            next_offset: AtomicU64::new(0),
            current: Mutex::new(None),
            page,
        })
    }

    /// The staged bytes of frame `seq`, staging `parts` (concatenated) if no viewer has yet.
    /// Viewers of one sink all ask for the same frames, so only the first one writes.
    pub fn frame(&self, seq: u64, parts: &[&[u8]]) -> io::Result<Arc<Staged>> {
        let mut current = lock(&self.current);
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
        let span = (len as u64).div_ceil(self.page).max(1) * self.page;
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

    /// Frames staged in `stage` and sent with `sendfile` over loopback TCP, as the fan-out
    /// does: each viewer's sender takes the newest frame when it is free (skipping others),
    /// and a frame's range is punched once every sender is done with it, while the slow
    /// viewers' sockets may still hold its pages. Returns (frames received, frames that
    /// arrived different from what was staged).
    fn send_to_fast_and_slow_viewers(stage: Stage) -> (usize, usize) {
        use std::io::Write;
        use std::net::{TcpListener, TcpStream};
        use std::sync::mpsc;
        use std::time::Duration;

        const VIEWERS: usize = 12;
        const SLOW: usize = 4;
        const FRAMES: u64 = 40;
        fn payload(seq: u64, len: usize) -> Vec<u8> {
            (0..len)
                .map(|j| (seq as usize * 31 + j * 7 + j / 251) as u8 | 1)
                .collect()
        }
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let address = listener.local_addr().expect("address");
        let mut senders = Vec::new();
        let mut readers = Vec::new();
        for viewer in 0..VIEWERS {
            let client = TcpStream::connect(address).expect("connect");
            let (server, _) = listener.accept().expect("accept");
            // Small buffers keep frames queued in the kernel while later ones are staged.
            socket2::SockRef::from(&server)
                .set_send_buffer_size(8192)
                .expect("sndbuf");
            socket2::SockRef::from(&client)
                .set_recv_buffer_size(8192)
                .expect("rcvbuf");
            let slow = viewer < SLOW;
            readers.push(std::thread::spawn(move || {
                let mut client = client;
                let (mut received, mut corrupt) = (0, 0);
                loop {
                    let mut head = [0u8; 12];
                    if client.read_exact(&mut head).is_err() {
                        return (received, corrupt);
                    }
                    let seq = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
                    let len = u32::from_le_bytes(head[8..].try_into().expect("4 bytes")) as usize;
                    if seq >= FRAMES || !(5000..64 * 1024).contains(&len) {
                        // A damaged header: the stream is lost from here on.
                        return (received + 1, corrupt + 1);
                    }
                    let mut body = vec![0u8; len];
                    let mut at = 0;
                    while at < len {
                        let end = (at + if slow { 1024 } else { len }).min(len);
                        if client.read_exact(&mut body[at..end]).is_err() {
                            return (received + 1, corrupt + 1);
                        }
                        at = end;
                        if slow {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                    }
                    received += 1;
                    corrupt += usize::from(body != payload(seq, len));
                }
            }));
            let (to_sender, frames) = mpsc::sync_channel::<Arc<Staged>>(1);
            let sender = std::thread::spawn(move || {
                let mut server = server;
                for staged in frames {
                    let mut from = 0;
                    while from < staged.len() {
                        match staged.send_from(&server, from) {
                            Ok(sent) => from += sent,
                            // The reader saw damage and hung up.
                            Err(_) => return,
                        }
                    }
                }
                let _ = server.flush();
            });
            senders.push((to_sender, sender));
        }
        for seq in 0..FRAMES {
            let len = 5000 + (seq as usize * 7919) % 30000;
            let mut bytes = seq.to_le_bytes().to_vec();
            bytes.extend_from_slice(&(len as u32).to_le_bytes());
            bytes.extend_from_slice(&payload(seq, len));
            let staged = stage.frame(seq, &[&bytes]).expect("stage");
            for (to_sender, _) in &senders {
                // A busy viewer skips the frame, as in the fan-out.
                let _ = to_sender.try_send(staged.clone());
            }
            drop(staged);
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(stage);
        for (to_sender, sender) in senders {
            drop(to_sender);
            sender.join().expect("sender");
        }
        readers
            .into_iter()
            .map(|reader| reader.join().expect("reader"))
            .fold((0, 0), |(r, c), (received, corrupt)| (r + received, c + corrupt))
    }

    #[test]
    fn frames_reach_slow_and_fast_viewers_intact_at_the_kernels_page_size_and_larger() {
        // The kernel's own page size, and four times it (what a 16 KB-page kernel, like
        // the Raspberry Pi 5's, asks of a stage on this machine's 4 KB one).
        for page in [page_size(), 4 * page_size()] {
            let stage = Stage::with_page_size("test", page).expect("memfd");
            let (received, corrupt) = send_to_fast_and_slow_viewers(stage);
            eprintln!("{page}-byte pages: {corrupt} of {received} frames damaged");
            assert!(received > 60, "{received} frames received");
            assert_eq!(
                corrupt, 0,
                "{corrupt} of {received} frames damaged with {page}-byte pages"
            );
        }
        // The check sees what ranges smaller than a page do (as a 4 KB constant did on the
        // Pi 5): holes punched into pages still queued for the slow viewers' sockets.
        let too_small = Stage::aligned("test", page_size() / 4).expect("memfd");
        let (received, corrupt) = send_to_fast_and_slow_viewers(too_small);
        eprintln!("quarter pages: {corrupt} of {received} frames damaged");
        assert!(
            corrupt > 0,
            "no damage seen in {received} frames with quarter pages"
        );
        // And such a stage cannot be made.
        assert!(Stage::with_page_size("test", page_size() / 4).is_err());
        assert!(Stage::with_page_size("test", page_size() + 512).is_err());
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
