//! MJPEG over HTTP (`type = "http-mjpeg"`): `multipart/x-mixed-replace`, the format `<img>`
//! tags, VLC, ffmpeg, Home Assistant and OctoPrint read. Every part carries its
//! `Content-Length`. Each client is a viewer like a WebSocket one: it counts for on-demand
//! mode and has a newest-frame-wins queue, so a slow client skips frames.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use serde::Deserialize;
use tide::{Body, Response, StatusCode};
use tracing::info;

use super::{Client, Endpoint, Resource, Sink, SinkConfig, SinkContext, ViewerSlot};
use crate::bus::{Policy, Subscription};
use crate::metrics::SinkStats;
use crate::mode::Mode;

const BOUNDARY: &str = "croissantframe";
/// What ends the multipart body (RFC 2046 §5.1.1), sent when the daemon stops.
const CLOSING: &[u8] = b"--croissantframe--\r\n";

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
            ctx,
        }))
    }
}

/// The running sink.
pub struct MjpegSink {
    path: String,
    ctx: SinkContext,
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
        let Some(viewer) = self.ctx.viewer() else {
            let mut res = Response::new(StatusCode::ServiceUnavailable);
            res.set_body(self.ctx.too_many_viewers());
            res.insert_header("Retry-After", "30");
            return res;
        };
        info!(sink = %self.ctx.name, peer = %client.peer, "MJPEG client connected");
        let shutdown = self.ctx.shutdown.clone();
        let retired = self.ctx.retired.clone();
        let ends = async move {
            // The login session the client came with, if any: its stream ends with it.
            match client.session {
                Some(session) => futures_lite::future::or(shutdown.wait(), session.wait()).await,
                None => shutdown.wait().await,
            }
        };
        // A reload that removes or rebuilds the sink ends the stream too; the client's
        // reconnect finds the new one.
        let ends = async move { futures_lite::future::or(ends, async move { retired.wait().await }).await };
        let parts = Parts {
            subscription: self.ctx.subscribe(Policy::Latest),
            pending: None,
            closing: None,
            stats: self.ctx.stats.clone(),
            ends: Box::pin(ends),
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

/// The response body: one part per frame, read from the client's queue as the
/// connection drains. Dropped (unsubscribing) when the client goes away; ends, so the
/// chunked body is terminated properly, when the daemon stops or the client's session does.
struct Parts {
    subscription: Subscription,
    /// The part being sent: its header, its JPEG, and how much of both went out.
    pending: Option<(Vec<u8>, Bytes, usize)>,
    /// Once the daemon stops: how much of [`CLOSING`] went out.
    closing: Option<usize>,
    stats: Arc<SinkStats>,
    /// The daemon's shutdown, the end of the client's login session, or a reload retiring
    /// the sink.
    ends: Pin<Box<dyn Future<Output = ()> + Send + Sync>>,
    _viewer: ViewerSlot,
}

impl futures_lite::AsyncBufRead for Parts {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<&[u8]>> {
        let this = self.get_mut();
        if let Some(sent) = this.closing {
            return Poll::Ready(Ok(&CLOSING[sent.min(CLOSING.len())..]));
        }
        if this.pending.is_none() {
            // Between parts is the only place the stream can end cleanly.
            if this.ends.as_mut().poll(cx).is_ready() {
                this.closing = Some(0);
                return Poll::Ready(Ok(CLOSING));
            }
            match this.subscription.poll_recv(cx) {
                Poll::Ready(frame) => {
                    let header = format!(
                        "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                        frame.jpeg.len()
                    );
                    this.pending = Some((header.into_bytes(), frame.jpeg, 0));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        let Some((header, jpeg, sent)) = &this.pending else {
            return Poll::Pending;
        };
        // The part goes out as its header, its JPEG (straight from the shared frame), and
        // the line break before the next boundary.
        let sent = *sent;
        let rest: &[u8] = if sent < header.len() {
            &header[sent..]
        } else if sent < header.len() + jpeg.len() {
            &jpeg[sent - header.len()..]
        } else {
            &b"\r\n"[sent - header.len() - jpeg.len()..]
        };
        Poll::Ready(Ok(rest))
    }

    fn consume(self: Pin<&mut Self>, amount: usize) {
        let this = self.get_mut();
        if let Some(sent) = &mut this.closing {
            *sent += amount;
        } else if let Some((header, jpeg, sent)) = &mut this.pending {
            *sent += amount;
            if *sent >= header.len() + jpeg.len() + 2 {
                this.pending = None;
                this.stats.delivered.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl futures_lite::AsyncRead for Parts {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
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
