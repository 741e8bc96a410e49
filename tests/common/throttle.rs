//! A slow link for tests: a TCP proxy whose downstream direction (server to client) drains
//! at a fixed rate from a deep queue, as a home router or a cellular network does. What
//! the server sends beyond the rate waits in the queue (up to its size), so a client that
//! takes whatever comes sees it late.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A listening proxy to `127.0.0.1:upstream`; it serves until the test process ends.
pub struct SlowLink {
    pub port: u16,
}

impl SlowLink {
    /// Downstream at `bytes_per_second`, queueing up to `queue` bytes.
    pub fn start(upstream: u16, bytes_per_second: usize, queue: usize) -> SlowLink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the slow link");
        let port = listener.local_addr().expect("address").port();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                // The proxy's own socket buffers stay small, so the queue is the link's buffer.
                let _ = socket2::SockRef::from(&server).set_recv_buffer_size(16 * 1024);
                let _ = socket2::SockRef::from(&client).set_send_buffer_size(16 * 1024);
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                carry(&client, &server, bytes_per_second, queue);
            }
        });
        SlowLink { port }
    }
}

/// Starts the threads of one connection: upstream unthrottled, downstream through the queue.
fn carry(client: &TcpStream, server: &TcpStream, rate: usize, size: usize) {
    let (Ok(mut up_from), Ok(mut up_to)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut up_from, &mut up_to);
        let _ = up_to.shutdown(Shutdown::Write);
    });
    let queue = Arc::new(Queue {
        bytes: Mutex::new((VecDeque::new(), false)),
        changed: Condvar::new(),
        size,
    });
    let (Ok(mut down_from), Ok(mut down_to)) = (server.try_clone(), client.try_clone()) else {
        return;
    };
    let filling = queue.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match down_from.read(&mut buf) {
                Ok(0) | Err(_) => 0,
                Ok(n) => n,
            };
            if !filling.push(&buf[..n]) || n == 0 {
                return;
            }
        }
    });
    std::thread::spawn(move || {
        // Paced in 10 ms steps, each with its share of the rate.
        let step = Duration::from_millis(10);
        let per_step = (rate / 100).max(1);
        let mut next = Instant::now();
        loop {
            let Some(chunk) = queue.pop(per_step) else {
                let _ = down_to.shutdown(Shutdown::Write);
                return;
            };
            if down_to.write_all(&chunk).is_err() {
                queue.close();
                return;
            }
            next += step;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else {
                // Idle time is not saved up for a burst later.
                next = now;
            }
        }
    });
}

struct Queue {
    /// The bytes, and whether the sending side has ended (or the receiving side broke).
    bytes: Mutex<(VecDeque<u8>, bool)>,
    changed: Condvar,
    size: usize,
}

impl Queue {
    /// Queues `chunk` once there is room (an empty chunk ends the stream); false once the
    /// receiving side is gone.
    fn push(&self, chunk: &[u8]) -> bool {
        let mut guard = self.bytes.lock().expect("queue");
        if chunk.is_empty() {
            guard.1 = true;
            self.changed.notify_all();
            return false;
        }
        while !guard.1 && guard.0.len() + chunk.len() > self.size {
            guard = self.changed.wait(guard).expect("queue");
        }
        if guard.1 {
            return false;
        }
        guard.0.extend(chunk);
        self.changed.notify_all();
        true
    }

    /// Up to `most` bytes, waiting for some; `None` once the stream has ended and is drained.
    fn pop(&self, most: usize) -> Option<Vec<u8>> {
        let mut guard = self.bytes.lock().expect("queue");
        while guard.0.is_empty() {
            if guard.1 {
                return None;
            }
            guard = self.changed.wait(guard).expect("queue");
        }
        let n = most.min(guard.0.len());
        let chunk = guard.0.drain(..n).collect();
        self.changed.notify_all();
        Some(chunk)
    }

    fn close(&self) {
        self.bytes.lock().expect("queue").1 = true;
        self.changed.notify_all();
    }
}
