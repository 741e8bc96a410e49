//! The live viewer sink: browsers connect over WebSocket, send `start`, and receive every
//! frame as one binary message holding one JPEG, as the original server did.
//!
//! Each viewer has a newest-frame-wins queue of one frame, so a slow viewer skips frames;
//! it never holds up the camera or other viewers, and never costs more than its queue.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use futures_lite::{StreamExt, future};
use serde::Deserialize;
use tracing::{Instrument, debug, info};

use super::{Resource, Sink, SinkConfig, SinkContext};
use crate::bus::{Policy, Subscription};
use crate::http::{Routes, WsStream};
use crate::mode::Mode;
use crate::ratelimit::RateLimit;

/// `type = "websocket"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Paths that accept the WebSocket upgrade.
    #[serde(default = "default_paths")]
    pub paths: Vec<String>,
}

fn default_paths() -> Vec<String> {
    vec!["/".into(), "/ws".into()]
}

impl Default for Config {
    fn default() -> Self {
        Config {
            paths: default_paths(),
        }
    }
}

impl SinkConfig for Config {
    fn default_modes(&self) -> &'static [Mode] {
        &Mode::ALL
    }

    fn resources(&self) -> Vec<Resource> {
        self.paths.iter().map(|p| Resource::HttpPath(p.clone())).collect()
    }

    fn build(&self, ctx: SinkContext) -> Result<Arc<dyn Sink>, String> {
        if let Some(bad) = self.paths.iter().find(|p| !p.starts_with('/')) {
            return Err(format!("path `{bad}` must start with /"));
        }
        Ok(Arc::new(WebSocketSink {
            paths: self.paths.clone(),
            ctx,
            viewers: AtomicUsize::new(0),
            next_viewer: AtomicU64::new(1),
        }))
    }
}

/// The running sink: a registry of viewers, each served by its own task.
pub struct WebSocketSink {
    paths: Vec<String>,
    ctx: SinkContext,
    viewers: AtomicUsize,
    next_viewer: AtomicU64,
}

impl Sink for WebSocketSink {
    fn routes(self: Arc<Self>, routes: &mut Routes) {
        for path in &self.paths {
            let sink = self.clone();
            routes.websocket(
                path,
                Arc::new(move |ws, peer| {
                    let sink = sink.clone();
                    let id = sink.next_viewer.fetch_add(1, Ordering::Relaxed);
                    let span = tracing::info_span!("sink", name = %sink.ctx.name)
                        .in_scope(|| tracing::info_span!("viewer", id, %peer));
                    Box::pin(async move { sink.serve(ws, peer).await }.instrument(span))
                }),
            );
        }
    }
}

/// What woke a viewer's task.
enum Event {
    Message(Option<Result<Message, async_tungstenite::tungstenite::Error>>),
    Frame(crate::bus::Frame),
    Shutdown,
}

impl WebSocketSink {
    async fn serve(&self, ws: WsStream, peer: SocketAddr) {
        self.ctx.viewers.fetch_add(1, Ordering::Relaxed);
        let viewers = self.viewers.fetch_add(1, Ordering::Relaxed) + 1;
        info!(viewers, "viewer connected");
        let (mut tx, mut rx) = ws.split();
        let mut subscription: Option<Subscription> = None;
        let mut slow = RateLimit::new(Duration::from_secs(30));
        let mut last_dropped = 0;
        let close = loop {
            let event = future::or(
                future::or(async { Event::Message(rx.next().await) }, async {
                    match &subscription {
                        Some(sub) => Event::Frame(sub.recv().await),
                        None => std::future::pending().await,
                    }
                }),
                async {
                    self.ctx.shutdown.wait().await;
                    Event::Shutdown
                },
            )
            .await;
            match event {
                Event::Frame(frame) => {
                    if let Err(error) = tx.send(Message::Binary(frame.jpeg)).await {
                        debug!(%error, "send failed");
                        break None;
                    }
                    if let Some(sub) = &subscription {
                        let dropped = sub.dropped();
                        if dropped > last_dropped && slow.allow().is_some() {
                            info!(dropped, "viewer too slow; skipping frames");
                            last_dropped = dropped;
                        }
                    }
                }
                Event::Message(Some(Ok(Message::Text(text)))) => match text.as_str().trim() {
                    "start" if subscription.is_none() => {
                        if !self.ctx.is_enabled() {
                            break Some((CloseCode::Policy, "live view is off in this mode"));
                        }
                        debug!("start");
                        subscription = Some(self.ctx.bus.subscribe(Policy::Latest));
                    }
                    "stop" if subscription.is_some() => {
                        debug!("stop");
                        subscription = None;
                    }
                    _ => {}
                },
                Event::Message(Some(Ok(Message::Close(_)))) | Event::Message(None) => break None,
                Event::Message(Some(Ok(_))) => {}
                Event::Message(Some(Err(error))) => {
                    debug!(%error, "viewer connection failed");
                    break Some((CloseCode::Size, "message too large or malformed"));
                }
                Event::Shutdown => break Some((CloseCode::Away, "server shutting down")),
            }
        };
        drop(subscription);
        let frame = close.map(|(code, reason)| CloseFrame {
            code,
            reason: reason.into(),
        });
        let _ = future::or(async { tx.close(frame).await.ok() }, async {
            smol::Timer::after(Duration::from_secs(1)).await;
            None
        })
        .await;
        self.ctx.viewers.fetch_sub(1, Ordering::Relaxed);
        let viewers = self.viewers.fetch_sub(1, Ordering::Relaxed) - 1;
        info!(viewers, "viewer left");
        let _ = peer;
    }

    /// Viewers connected right now.
    pub fn viewers(&self) -> usize {
        self.viewers.load(Ordering::Relaxed)
    }
}
