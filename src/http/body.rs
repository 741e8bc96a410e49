//! Response bodies that hold little memory however slowly the client reads.
//!
//! [`Outgoing`] hands a handler's body to hyper one bounded chunk at a time, and only when
//! hyper asks for the next one, i.e. once the socket took most of the last. [`FileBody`]
//! reads a file in bounded chunks on the blocking pool: `smol::fs::File` would read up to
//! 8 MB ahead of a client that never reads (200 such downloads held 1.6 GB).
//! [`SharedBody`] serves bytes that already exist (a frame, an embedded page) without a
//! copy of their own.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_lite::{AsyncBufRead, AsyncRead, Future};
use hyper::body::{Frame, SizeHint};
use tide::http as http_types;

use super::admission::FilePermit;

/// The largest piece of a body copied out for hyper at once.
const CHUNK: usize = 64 * 1024;
/// How much of a file is read ahead of the client.
const FILE_CHUNK: usize = 32 * 1024;

/// A response body as hyper pulls it: tide's body (a page, JSON, an MJPEG stream, a file)
/// read piece by piece as the connection drains.
pub struct Outgoing {
    body: Option<http_types::Body>,
    /// Bytes still to come, when the length is known.
    remaining: Option<u64>,
}

impl Outgoing {
    /// The body of a handler's response.
    pub fn new(body: http_types::Body) -> Outgoing {
        let remaining = body.len().map(|len| len as u64);
        Outgoing {
            body: Some(body),
            remaining,
        }
    }

    /// No body at all.
    pub fn empty() -> Outgoing {
        Outgoing {
            body: None,
            remaining: Some(0),
        }
    }

    /// A small body made by the engine itself (an error message).
    pub fn text(text: String) -> Outgoing {
        Outgoing::new(http_types::Body::from_string(text))
    }
}

impl hyper::body::Body for Outgoing {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let this = &mut *self;
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        let chunk = match Pin::new(&mut *body).poll_fill_buf(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(error)) => {
                this.body = None;
                return Poll::Ready(Some(Err(error)));
            }
            Poll::Ready(Ok([])) => {
                this.body = None;
                return Poll::Ready(None);
            }
            Poll::Ready(Ok(buffered)) => {
                let take = buffered.len().min(CHUNK);
                Bytes::copy_from_slice(&buffered[..take])
            }
        };
        Pin::new(body).consume(chunk.len());
        if let Some(remaining) = this.remaining.as_mut() {
            *remaining = remaining.saturating_sub(chunk.len() as u64);
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_none() || self.remaining == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(exact) => SizeHint::with_exact(exact),
            None => SizeHint::default(),
        }
    }
}

type Read = Pin<Box<dyn Future<Output = (Vec<u8>, io::Result<usize>)> + Send + Sync>>;

/// `count` bytes of a file from `start`, read a chunk at a time on the blocking pool and
/// only once the previous chunk was taken.
pub struct FileBody {
    file: Arc<File>,
    position: u64,
    left: u64,
    /// The chunk read last, and how much of it was consumed.
    buffer: Vec<u8>,
    consumed: usize,
    reading: Option<Read>,
    /// The descriptor this file holds, counted against the clients' budget.
    _permit: FilePermit,
}

impl FileBody {
    /// Serves `count` bytes of `file` from `start`.
    pub fn new(file: File, start: u64, count: u64, permit: FilePermit) -> FileBody {
        FileBody {
            file: Arc::new(file),
            position: start,
            left: count,
            buffer: Vec::new(),
            consumed: 0,
            reading: None,
            _permit: permit,
        }
    }
}

impl AsyncBufRead for FileBody {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.consumed < this.buffer.len() {
            return Poll::Ready(Ok(&this.buffer[this.consumed..]));
        }
        if this.left == 0 {
            return Poll::Ready(Ok(&[]));
        }
        let reading = this.reading.get_or_insert_with(|| {
            // One buffer per download, allocated here rather than on a pool thread (whose
            // allocator arena would keep the memory after the thread moves on).
            let mut buffer = std::mem::take(&mut this.buffer);
            let want = usize::try_from(this.left).map_or(FILE_CHUNK, |left| left.min(FILE_CHUNK));
            buffer.resize(want, 0);
            let file = this.file.clone();
            let at = this.position;
            Box::pin(smol::unblock(move || {
                let result = file.read_at(&mut buffer, at);
                (buffer, result)
            }))
        });
        let (mut buffer, result) = match reading.as_mut().poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(done) => done,
        };
        this.reading = None;
        match result {
            Ok(0) => {
                // The file shrank under us: end here rather than promise bytes that are gone.
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file ended early",
                )))
            }
            Ok(n) => {
                buffer.truncate(n);
                this.position += n as u64;
                this.left -= n as u64;
                this.buffer = buffer;
                this.consumed = 0;
                Poll::Ready(Ok(&this.buffer[..]))
            }
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    fn consume(mut self: Pin<&mut Self>, amount: usize) {
        self.consumed = (self.consumed + amount).min(self.buffer.len());
    }
}

impl AsyncRead for FileBody {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut [u8]) -> Poll<io::Result<usize>> {
        let available = match self.as_mut().poll_fill_buf(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Ready(Ok(available)) => available,
        };
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Poll::Ready(Ok(n))
    }
}

/// A body made of bytes that are already shared: a snapshot is the camera's own frame, a
/// page the binary's own text. Each client holds a reference, not a copy.
pub struct SharedBody {
    bytes: Bytes,
    sent: usize,
}

impl SharedBody {
    /// Serves `bytes` whole.
    pub fn new(bytes: Bytes) -> SharedBody {
        SharedBody { bytes, sent: 0 }
    }

    /// As a tide body of known length.
    pub fn into_body(self) -> http_types::Body {
        let len = self.bytes.len();
        http_types::Body::from_reader(self, Some(len))
    }
}

impl AsyncBufRead for SharedBody {
    fn poll_fill_buf(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        Poll::Ready(Ok(&this.bytes[this.sent..]))
    }

    fn consume(mut self: Pin<&mut Self>, amount: usize) {
        self.sent = (self.sent + amount).min(self.bytes.len());
    }
}

impl AsyncRead for SharedBody {
    fn poll_read(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, out: &mut [u8]) -> Poll<io::Result<usize>> {
        let rest = &self.bytes[self.sent..];
        let n = rest.len().min(out.len());
        out[..n].copy_from_slice(&rest[..n]);
        self.sent += n;
        Poll::Ready(Ok(n))
    }
}
