//! MJPEG over HTTP (`type = "http-mjpeg"`): `multipart/x-mixed-replace`, the format `<img>`
//! tags, VLC, ffmpeg, Home Assistant and OctoPrint read. Every part carries its
//! `Content-Length`. Each client is a viewer like a WebSocket one: it counts for on-demand
//! mode, and its frames go through the same [`Fanout`], so they cost the same: the HTTP
//! layer writes the response head, then the fan-out writes each part straight to the
//! socket (in a chunk of its own for HTTP/1.1), and a slow client skips frames.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::future;
use serde::Deserialize;
use tide::{Body, Response, StatusCode};
use tracing::info;

use super::fanout::{Fanout, FrameWriter, Framing, Seat};
use super::{BodySocket, Client, Endpoint, Resource, Sink, SinkConfig, SinkContext, ViewerSlot};
use crate::mode::Mode;

const BOUNDARY: &str = "croissantframe";
/// What ends the multipart body (RFC 2046 §5.1.1), sent when the daemon stops.
const CLOSING: &[u8] = b"--croissantframe--\r\n";
/// How long a frame begun may take to finish when the stream ends.
const FINISH_WITHIN: Duration = Duration::from_secs(1);

/// `type = "http-mjpeg"`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The path serving the stream.
    #[serde(default = "default_path")]
    pub path: String,
}

fn default_path() -> String {
    "/stream.mjpeg".into()
}

impl SinkConfig for Config {
    fn default_modes(&self) -> &'static [Mode] {
        &Mode::ALL
    }

    fn resources(&self) -> Vec<Resource> {
        vec![Resource::HttpPath(self.path.clone())]
    }

    fn build(&self, ctx: SinkContext) -> Result<Arc<dyn Sink>, String> {
        ctx.count_viewers();
        if !self.path.starts_with('/') {
            return Err(format!("path `{}` must start with /", self.path));
        }
        Ok(Arc::new(MjpegSink {
            path: self.path.clone(),
            chunked: Arc::new(Fanout::new(ctx.clone(), CHUNKED)),
            whole: Arc::new(Fanout::new(ctx.clone(), WHOLE)),
            ctx,
        }))
    }
}

/// The running sink.
pub struct MjpegSink {
    path: String,
    /// HTTP/1.1 clients, whose body is chunked.
    chunked: Arc<Fanout>,
    /// HTTP/1.0 clients, whose body ends with the connection.
    whole: Arc<Fanout>,
    ctx: SinkContext,
}

/// Each frame is one part: its header, the JPEG, and the line break before the next
/// boundary.
const WHOLE: Framing = Framing {
    head: part_head,
    tail: b"\r\n",
    stamp: None,
};

/// The same parts, each in a chunk of its own (RFC 9112 §7.1).
const CHUNKED: Framing = Framing {
    head: chunk_and_part_head,
    tail: b"\r\n\r\n",
    stamp: None,
};

fn part_head(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(
        format!("--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len}\r\n\r\n").as_bytes(),
    );
}

fn chunk_and_part_head(out: &mut Vec<u8>, len: usize) {
    let mut part = Vec::with_capacity(96);
    part_head(&mut part, len);
    let chunk = part.len() + len + 2;
    out.extend_from_slice(format!("{chunk:x}\r\n").as_bytes());
    out.extend_from_slice(&part);
}

impl Sink for MjpegSink {
    fn endpoints(self: Arc<Self>) -> Vec<(String, Endpoint)> {
        let sink = self.clone();
        let answer = Arc::new(move |client: Client| sink.respond(client));
        vec![(self.path.clone(), Endpoint::Get(answer))]
    }
}

impl MjpegSink {
    fn respond(&self, client: Client) -> Response {
        if !self.ctx.is_enabled() {
            let mut res = Response::new(StatusCode::ServiceUnavailable);
            res.set_body("this stream is off in the current mode");
            return res;
        }
        let Some(socket) = client.body_socket.clone() else {
            // Every plain request comes with its socket; this one came another way.
            return Response::new(StatusCode::InternalServerError);
        };
        let Some(viewer) = self.ctx.viewer() else {
            let mut res = Response::new(StatusCode::ServiceUnavailable);
            res.set_body(self.ctx.too_many_viewers());
            res.insert_header("Retry-After", "30");
            return res;
        };
        info!(sink = %self.ctx.name, peer = %client.peer, "MJPEG client connected");
        let fanout = if socket.chunked {
            self.chunked.clone()
        } else {
            self.whole.clone()
        };
        let peer = client.peer;
        let stream = stream_frames(
            fanout,
            socket,
            self.ctx.clone(),
            Ends::new(&self.ctx, client),
            peer,
        );
        let parts = Parts {
            stream: Mutex::new(Some(Box::pin(stream))),
            closing: None,
            _viewer: viewer,
        };
        let mut res = Response::new(StatusCode::Ok);
        res.set_body(Body::from_reader(parts, None));
        res.insert_header(
            "Content-Type",
            format!("multipart/x-mixed-replace; boundary={BOUNDARY}"),
        );
        res.insert_header("Cache-Control", "no-cache, no-store, must-revalidate");
        res.insert_header("Pragma", "no-cache");
        res
    }
}

/// What ends a client's stream cleanly: the daemon stopping, a reload removing or
/// rebuilding the sink (the client's reconnect finds the new one), or the end of the login
/// session the client came with.
struct Ends {
    shutdown: crate::shutdown::Signal,
    retired: crate::shutdown::Signal,
    session: Option<crate::shutdown::Ending>,
}

impl Ends {
    fn new(ctx: &SinkContext, client: Client) -> Ends {
        Ends {
            shutdown: ctx.shutdown.clone(),
            retired: ctx.retired.clone(),
            session: client.session,
        }
    }

    /// Resolves when one of them happens (at once if one has), saying which.
    async fn wait(&self) -> &'static str {
        let sink = future::or(
            async {
                self.shutdown.wait().await;
                "the daemon stops"
            },
            async {
                self.retired.wait().await;
                "the sink was reconfigured"
            },
        );
        match &self.session {
            Some(session) => {
                let ended = async {
                    session.wait().await;
                    "its login session ended"
                };
                future::or(sink, ended).await
            }
            None => sink.await,
        }
    }

    /// `work`'s outcome, or which of them happened first.
    async fn unless<T>(&self, work: impl Future<Output = T>) -> Result<T, &'static str> {
        future::or(async { Ok(work.await) }, async { Err(self.wait().await) }).await
    }
}

/// A client's frames, written by the fan-out straight to its socket once the response head
/// is out. Resolves when the stream should end cleanly (with the closing delimiter, which
/// goes out through the HTTP layer), or fails when the client is gone or stopped reading.
async fn stream_frames(
    fanout: Arc<Fanout>,
    socket: BodySocket,
    ctx: SinkContext,
    ends: Ends,
    peer: std::net::SocketAddr,
) -> io::Result<()> {
    let mut left = Left {
        sink: ctx.name.clone(),
        peer,
        why: None,
        seat: None,
        stream: socket.stream.clone(),
    };
    // The HTTP layer asks for the body right after it buffered the head.
    socket.handover.ask();
    if let Err(why) = ends.unless(socket.handover.head_sent()).await {
        left.why = Some(why.into());
        return Ok(());
    }
    let seat = Seat::new(FrameWriter::alone(socket.stream.clone()));
    left.seat = Some(seat.clone());
    let watching = Watching::join(fanout, seat.clone());
    // A client slower than the camera has work waiting: its frame to finish, then the
    // newest it missed.
    let ended = loop {
        if let Err(why) = ends.unless(seat.work_waiting()).await {
            break why;
        }
        match ends.unless(seat.catch_up(&ctx)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                left.why = Some(error.to_string());
                return Err(error);
            }
            Err(why) => break why,
        }
    };
    drop(watching);
    // A part begun is finished first: the closing delimiter must not land inside it.
    let finished = seat.finish(FINISH_WITHIN).await;
    left.why = Some(match &finished {
        Ok(()) => ended.into(),
        Err(error) => format!("{ended}, and the part it was reading was cut: {error}"),
    });
    finished
}

/// Logs why a client's stream ended, however it ended (the HTTP layer may drop the stream
/// without another word: then the socket tells what the client did).
struct Left {
    sink: String,
    peer: std::net::SocketAddr,
    why: Option<String>,
    seat: Option<Arc<Seat>>,
    stream: smol::net::TcpStream,
}

impl Drop for Left {
    fn drop(&mut self) {
        let dropped = self.seat.as_ref().map_or(0, |seat| seat.dropped());
        let why = self.why.take().unwrap_or_else(|| {
            match crate::net::Peer::of(&self.stream) {
                // The HTTP layer may have read a reset already, which then reads as an end.
                crate::net::Peer::Closed => "it closed or reset the connection",
                crate::net::Peer::Reset => "its connection was reset",
                crate::net::Peer::Open => "the HTTP layer ended the connection",
            }
            .into()
        });
        info!(sink = %self.sink, peer = %self.peer, dropped, why = %why, "MJPEG client left");
    }
}

/// A seat in the fan-out, left when dropped (the client went away, or the stream ended).
struct Watching {
    fanout: Arc<Fanout>,
    seat: Arc<Seat>,
}

impl Watching {
    fn join(fanout: Arc<Fanout>, seat: Arc<Seat>) -> Watching {
        fanout.join(&seat);
        Watching { fanout, seat }
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.fanout.leave(&self.seat);
    }
}

type Stream = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

/// The response body as the HTTP layer sees it: nothing while the fan-out writes the parts
/// past it, then the closing delimiter. Dropped (leaving the fan-out) when the client goes
/// away.
struct Parts {
    /// In a mutex only so the body is `Sync`, as tide wants; never contended.
    stream: Mutex<Option<Stream>>,
    /// Once the stream has ended cleanly: how much of [`CLOSING`] went out.
    closing: Option<usize>,
    _viewer: ViewerSlot,
}

impl futures_lite::AsyncBufRead for Parts {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.closing.is_none() {
            let stream = this
                .stream
                .get_mut()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let Some(running) = stream.as_mut() else {
                return Poll::Ready(Ok(&[]));
            };
            let ended = match running.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(ended) => ended,
            };
            *stream = None;
            ended?;
            this.closing = Some(0);
        }
        let sent = this.closing.unwrap_or(0);
        Poll::Ready(Ok(&CLOSING[sent.min(CLOSING.len())..]))
    }

    fn consume(self: Pin<&mut Self>, amount: usize) {
        if let Some(sent) = &mut self.get_mut().closing {
            *sent += amount;
        }
    }
}

impl futures_lite::AsyncRead for Parts {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        use futures_lite::AsyncBufRead;
        let n = match self.as_mut().poll_fill_buf(cx) {
            Poll::Ready(Ok(available)) => {
                let n = available.len().min(buf.len());
                buf[..n].copy_from_slice(&available[..n]);
                n
            }
            other => return other.map(|r| r.map(|_| 0)),
        };
        self.consume(n);
        Poll::Ready(Ok(n))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_closing_delimiter_names_the_boundary() {
        assert_eq!(super::CLOSING, format!("--{}--\r\n", super::BOUNDARY).as_bytes());
    }
}
