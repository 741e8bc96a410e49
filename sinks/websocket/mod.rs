//! The live viewer sink: browsers connect over WebSocket, send `start`, and receive every
//! frame as one binary message holding one JPEG, as the original server did.
//!
//! A viewer on a slow link would still fall seconds behind: whatever the daemon keeps on its
//! side, the link's own buffers (a router's queue, the client's socket) fill with frames.
//! So a viewer may instead send `start credit=N` (the project's own page sends `credit=1`):
//! it then gets at most N frames before it sends `drawn` for one, and each frame comes
//! right after a text message with its number and capture time (`{"seq":…,"at":…}`, Unix
//! milliseconds). Nothing waits in the link's buffers but the frames the viewer asked for,
//! and while it has no credit, only the newest frame is kept for it. Such a viewer is first
//! told the daemon's clock (`{"clock":…}`), so it can work out how old a frame is when drawn.
//!
//! Frames reach viewers through the sink's [`Fanout`]: a viewer not ready for a frame gets
//! only the newest one once it is, so a slow viewer skips frames; it never holds up the
//! camera or other viewers, and never costs more than two frames. Each viewer's own task
//! handles its messages (`start`, `stop`) and the frames it has to catch up on.

pub mod turns;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use futures_lite::{StreamExt, future};
use serde::Deserialize;
use tracing::{Instrument, debug, info};

use super::{Client, Endpoint, Resource, Sink, SinkConfig, SinkContext, Upgraded, ViewerSlot, WsHandler};
use crate::bus::Frame;
use crate::mode::Mode;
use crate::ratelimit::RateLimit;
use crate::sinks::fanout::{Fanout, FrameWriter, Framing, Seat};
use turns::TurnTaking;

/// `type = "websocket"`
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
        self.paths
            .iter()
            .map(|p| Resource::WebSocketPath(p.clone()))
            .collect()
    }

    fn build(&self, ctx: SinkContext) -> Result<Arc<dyn Sink>, String> {
        ctx.count_viewers();
        if let Some(bad) = self.paths.iter().find(|p| !p.starts_with('/')) {
            return Err(format!("path `{bad}` must start with /"));
        }
        Ok(Arc::new(WebSocketSink {
            fanout: Fanout::new(ctx.clone(), FRAMING),
            paths: self.paths.clone(),
            ctx,
            next_viewer: AtomicU64::new(1),
            refusals: std::sync::Mutex::new(RateLimit::new(Duration::from_secs(30))),
        }))
    }
}

/// The running sink: a registry of viewers, each served by its own task.
pub struct WebSocketSink {
    paths: Vec<String>,
    /// Sends every frame to the viewers that asked for them.
    fanout: Fanout,
    ctx: SinkContext,
    next_viewer: AtomicU64,
    /// Refusals beyond `max_viewers` are logged at most this often.
    refusals: std::sync::Mutex<RateLimit>,
}

impl Sink for WebSocketSink {
    fn endpoints(self: Arc<Self>) -> Vec<(String, Endpoint)> {
        self.paths
            .iter()
            .map(|path| {
                let sink = self.clone();
                let handler: WsHandler = Arc::new(move |upgraded: Upgraded, client: Client| {
                    let sink = sink.clone();
                    let id = sink.next_viewer.fetch_add(1, Ordering::Relaxed);
                    let peer = client.peer;
                    let span = tracing::info_span!("sink", name = %sink.ctx.name)
                        .in_scope(|| tracing::info_span!("viewer", id, %peer));
                    Box::pin(
                        async move {
                            let stream = TurnTaking::new(upgraded.stream);
                            let ws = WebSocketStream::from_partially_read(
                                stream,
                                upgraded.early,
                                Role::Server,
                                Some(viewer_ws_config()),
                            )
                            .await;
                            sink.serve(ws, client).await
                        }
                        .instrument(span),
                    )
                });
                (path.clone(), Endpoint::WebSocket(handler))
            })
            .collect()
    }
}

/// Viewers send a few bytes ("start", "stop"); keep their buffers small so a thousand of
/// them cost little, and refuse anything large.
fn viewer_ws_config() -> WebSocketConfig {
    let mut config = WebSocketConfig::default();
    config.read_buffer_size = 4096;
    config.write_buffer_size = 0;
    config.max_message_size = Some(4096);
    config.max_frame_size = Some(4096);
    // tungstenite's own writes are pongs and closes. A client that sends pings and never
    // reads would otherwise queue pongs without bound; past this, only the newest waits.
    config.max_write_buffer_size = 4096;
    config
}

/// Unsent bytes the kernel may hold per viewer: a slow viewer's backlog stays under about
/// one frame, so what it sees is never seconds old.
const UNSENT_LIMIT: u32 = 16 * 1024;

/// Each frame is one binary message, after its stamp for flow-controlled viewers.
const FRAMING: Framing = Framing {
    head: frame_header,
    tail: b"",
    stamp: Some(frame_stamp),
};

/// The most frames a viewer may ask to have in flight (`start credit=N`).
const MAX_CREDIT: u32 = 8;

/// Appends the header of a final, unmasked binary frame of `len` bytes. Server frames are
/// not masked, so the rest of the message on the wire is the shared JPEG itself, sent to
/// every viewer without a copy of its own (see [`Fanout`]).
fn frame_header(out: &mut Vec<u8>, len: usize) {
    out.push(0x82); // FIN + binary
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Appends a text message with the frame's number and capture time, for flow-controlled
/// viewers.
fn frame_stamp(out: &mut Vec<u8>, frame: &Frame) {
    text_message(
        out,
        &format!(r#"{{"seq":{},"at":{}}}"#, frame.seq, unix_ms(frame.at)),
    );
}

/// Appends a final, unmasked text message shorter than 126 bytes.
fn text_message(out: &mut Vec<u8>, text: &str) {
    out.push(0x81); // FIN + text
    out.push(text.len().min(125) as u8);
    out.extend_from_slice(&text.as_bytes()[..text.len().min(125)]);
}

fn unix_ms(at: std::time::SystemTime) -> u128 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// What woke a viewer's task.
enum Event {
    /// The fan-out left this viewer a frame to finish or catch up on.
    Work,
    Control(Control),
}

/// What a viewer is told when the daemon stops.
const GOING_AWAY: Control = Control::Closed(Ending::Close((CloseCode::Away, "server shutting down")));
/// What a viewer is told when a reload removes or rebuilds the sink: reconnecting finds the
/// new one (1012, Service Restart).
const RECONFIGURED: Control = Control::Closed(Ending::Close((CloseCode::Restart, "reconfigured; reconnect")));
/// What a viewer is told when the login session it came with ends (logout, expiry).
const SESSION_ENDED: Control =
    Control::Closed(Ending::Close((CloseCode::Policy, "session ended; log in again")));
/// A connection must send its first `start` within this long, or give its socket back.
/// Until then it is not a viewer (it takes no place among `max_viewers`).
const START_WITHIN: (Duration, &str) = (Duration::from_secs(10), "no start within 10 s");
/// How long the end of a frame and the close message may take to go out.
const CLOSE_WITHIN: Duration = Duration::from_secs(1);
/// After `stop`, a connection is no viewer either, and must start again within this long.
/// (Pages close their socket when they stop; a tool may pause and resume on the same one.)
const RESTART_WITHIN: (Duration, &str) = (Duration::from_secs(60), "no start within 60 s of stop");

/// What else, besides the viewer's own messages, can end a connection.
struct Endings<'a> {
    shutdown: &'a crate::shutdown::Signal,
    /// A reload removed or rebuilt the sink.
    retired: &'a crate::shutdown::Signal,
    /// The viewer's login session.
    session: Option<&'a crate::shutdown::Ending>,
    /// While not watching: when the connection must have sent `start`, and what it is told
    /// if it has not.
    start_by: Option<(Instant, &'static str)>,
}

impl Endings<'_> {
    /// Starts the clock for `start`.
    fn expect_start(&mut self, (within, reason): (Duration, &'static str)) {
        self.start_by = Some((Instant::now() + within, reason));
    }
}

/// What a connection that did not ask for frames in time is told.
fn no_start(reason: &'static str) -> Control {
    Control::Closed(Ending::Close((CloseCode::Policy, reason)))
}

impl Endings<'_> {
    /// An ending that has already happened.
    fn now(&self) -> Option<Control> {
        if self.shutdown.fired() {
            Some(GOING_AWAY)
        } else if self.retired.fired() {
            Some(RECONFIGURED)
        } else if self.session.is_some_and(|s| s.ended()) {
            Some(SESSION_ENDED)
        } else if let Some((at, reason)) = self.start_by
            && Instant::now() >= at
        {
            Some(no_start(reason))
        } else {
            None
        }
    }

    /// Resolves when one of them happens.
    async fn wait(&self) -> Control {
        let session = async {
            match self.session {
                Some(session) => session.wait().await,
                None => future::pending().await,
            }
            SESSION_ENDED
        };
        let idle = async {
            match self.start_by {
                Some((at, reason)) => {
                    smol::Timer::at(at).await;
                    no_start(reason)
                }
                None => future::pending().await,
            }
        };
        let shutdown = async {
            self.shutdown.wait().await;
            GOING_AWAY
        };
        let retired = async {
            self.retired.wait().await;
            // The daemon's shutdown drops the sinks too; say the truer of the two.
            if self.shutdown.fired() {
                GOING_AWAY
            } else {
                RECONFIGURED
            }
        };
        future::or(future::or(shutdown, retired), future::or(session, idle)).await
    }
}

/// The viewer's next message, or an ending, whichever comes first.
async fn next_control(control: &async_channel::Receiver<Control>, endings: &Endings<'_>) -> Control {
    let message = async { control.recv().await.unwrap_or(Control::Closed(Ending::Broken)) };
    // Endings first, so a viewer that never stops sending cannot keep them from being seen.
    future::or(endings.wait(), message).await
}

/// What the viewer asked for, as read by [`read_controls`].
enum Control {
    /// `start`, or `start credit=N` for flow control.
    Start(Option<u32>),
    Stop,
    /// A flow-controlled viewer drew a frame.
    Drawn,
    /// The connection is over.
    Closed(Ending),
}

/// How a connection ends.
enum Ending {
    /// With our close message, saying why.
    Close((CloseCode, &'static str)),
    /// The viewer closed; tungstenite has queued the answering close.
    Answer,
    /// The connection broke: nothing more can be written on it.
    Broken,
    /// The viewer ended the connection without a close message: nothing more can be
    /// written on it either.
    HungUp,
}

impl Ending {
    /// Why the viewer left, for the log.
    fn why(&self) -> &'static str {
        match self {
            Ending::Close((_, reason)) => reason,
            Ending::Answer => "it closed the connection",
            Ending::Broken => "its connection broke",
            Ending::HungUp => "it ended the connection without a close message",
        }
    }
}

/// Ends a connection whose close went out, without a reset: closing a socket that still
/// holds bytes from the viewer (a ping or a message it sent after its close) makes the
/// kernel send a reset, and the viewer's kernel then throws away what the viewer had not
/// read yet: the end of the last frame, and the close. So the daemon stops writing, and
/// reads and drops what comes until the viewer hangs up (for a second at most).
async fn linger(socket: &FrameWriter) {
    let socket = socket.socket();
    let _ = socket.get_ref().shutdown(std::net::Shutdown::Write);
    let drain = async {
        let mut buf = [0u8; 4096];
        loop {
            let read = socket
                .read_with(|s| std::io::Read::read(&mut &*s, &mut buf))
                .await;
            if !matches!(read, Ok(n) if n > 0) {
                break;
            }
        }
    };
    future::or(drain, async {
        smol::Timer::after(CLOSE_WITHIN).await;
    })
    .await;
}

/// A viewer's text message, if it is one the daemon knows (others are ignored, as the
/// original server ignored them).
fn parse_control(text: &str) -> Option<Control> {
    let mut words = text.split_ascii_whitespace();
    let control = match (words.next()?, words.next()) {
        ("start", None) => Control::Start(None),
        ("start", Some(option)) => {
            let credit = option.strip_prefix("credit=")?.parse::<u32>().ok()?;
            if !(1..=MAX_CREDIT).contains(&credit) {
                return None;
            }
            Control::Start(Some(credit))
        }
        ("stop", None) => Control::Stop,
        ("drawn", None) => Control::Drawn,
        _ => return None,
    };
    words.next().is_none().then_some(control)
}

/// Reads the viewer's messages (see [`parse_control`]), until the connection closes or
/// breaks.
async fn read_controls(
    mut rx: async_tungstenite::WebSocketReceiver<turns::TurnTaking>,
    out: async_channel::Sender<Control>,
    frame_finished: async_channel::Receiver<()>,
) {
    loop {
        let control = match rx.next().await {
            Some(Ok(Message::Text(text))) => match parse_control(text.as_str()) {
                Some(control) => control,
                None => continue,
            },
            Some(Ok(Message::Close(_))) => {
                // tungstenite has queued its answering Close (RFC 6455 §5.5.1); it goes out
                // on the next read, which then sees the end of the connection. That read
                // waits for the frame in progress to be finished: while it cannot write,
                // tungstenite reads on, and whatever the viewer sent after its close (a
                // ping, its end of the connection) would end the read before the answer
                // went out.
                let _ = out.send(Control::Closed(Ending::Answer)).await;
                let _ = frame_finished.recv().await;
                continue;
            }
            None => Control::Closed(Ending::Broken),
            Some(Ok(_)) => continue,
            Some(Err(error)) => {
                debug!(%error, "viewer connection failed");
                use async_tungstenite::tungstenite::Error;
                use async_tungstenite::tungstenite::error::ProtocolError;
                Control::Closed(match error {
                    Error::Capacity(_) => Ending::Close((CloseCode::Size, "message too large")),
                    Error::Utf8(_) => Ending::Close((CloseCode::Invalid, "text is not UTF-8")),
                    // What a closed tab or a lost link looks like: the connection ends with
                    // no close message.
                    Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Ending::HungUp,
                    Error::Protocol(_) => Ending::Close((CloseCode::Protocol, "protocol error")),
                    // The connection itself broke: nothing can be said on it.
                    _ => Ending::Broken,
                })
            }
        };
        let done = matches!(control, Control::Closed(_));
        if out.send(control).await.is_err() || done {
            return;
        }
    }
}

impl WebSocketSink {
    async fn serve(&self, ws: WebSocketStream<TurnTaking>, client: Client) {
        // Frames go straight to the socket from the fan-out; tungstenite keeps the reading
        // side and the control frames it answers (pong, close).
        let writer = ws.get_ref().frame_writer();
        let hang_up = ws.get_ref().frame_writer();
        if let Err(error) = crate::net::limit_unsent(&writer, UNSENT_LIMIT) {
            debug!(%error, "cannot limit the socket's unsent bytes");
        }
        let seat = Seat::new(writer);
        let (mut tx, rx) = ws.split();
        // The reading side parks in its own task until the viewer sends something, so
        // frames cost this connection nothing but the fan-out's one system call each.
        let (control_tx, control) = async_channel::bounded(4);
        let (frame_finished, frame_finished_rx) = async_channel::bounded(1);
        let reader =
            crate::runtime::spawn(read_controls(rx, control_tx, frame_finished_rx).in_current_span());
        let mut endings = Endings {
            shutdown: &self.ctx.shutdown,
            retired: &self.ctx.retired,
            session: client.session.as_ref(),
            start_by: None,
        };
        endings.expect_start(START_WITHIN);
        // Held from `start` to `stop`: a connection that is not asking for frames is no
        // viewer, and takes no place among `max_viewers`.
        let mut slot = None;
        let mut watched = false;
        let mut slow = RateLimit::new(Duration::from_secs(30));
        let mut last_dropped = 0;
        // Why a send failed, which says more than `Ending::Broken` (a viewer that stopped
        // reading, or a connection reset).
        let mut send_failed = None;
        let ending = loop {
            // A viewer slower than the camera always has work waiting; look at its messages
            // and at the endings first, so `stop`, logout and going-away still get through.
            let pending = endings.now().or_else(|| control.try_recv().ok());
            let event = match pending {
                Some(control) => Event::Control(control),
                None => {
                    future::or(
                        async {
                            seat.work_waiting().await;
                            Event::Work
                        },
                        async { Event::Control(next_control(&control, &endings).await) },
                    )
                    .await
                }
            };
            match event {
                Event::Work => {
                    // A full socket can hold this for as long as the viewer does not read
                    // (up to the send timeout); meanwhile still obey `stop` (it releases the
                    // camera) and the endings. The frame in progress is finished, or the
                    // connection closed.
                    let work = seat.catch_up(&self.ctx);
                    futures_lite::pin!(work);
                    let outcome = loop {
                        let interrupt = next_control(&control, &endings);
                        let step =
                            future::or(async { Ok(work.as_mut().await) }, async { Err(interrupt.await) });
                        match step.await {
                            Ok(Ok(())) => break Ok(()),
                            Ok(Err(error)) => {
                                send_failed = Some(error);
                                break Err(Ending::Broken);
                            }
                            Err(Control::Stop) => self.stop(&seat, &mut slot, &mut endings),
                            Err(Control::Drawn) => seat.drawn(),
                            Err(Control::Start(_)) => {}
                            Err(Control::Closed(close)) => break Err(close),
                        }
                    };
                    if let Err(close) = outcome {
                        break close;
                    }
                    let dropped = seat.dropped();
                    if dropped > last_dropped && slow.allow().is_some() {
                        info!(dropped, "viewer too slow; skipping frames");
                        last_dropped = dropped;
                    }
                }
                Event::Control(Control::Start(credit)) if slot.is_none() => {
                    if !self.ctx.is_enabled() {
                        break Ending::Close((CloseCode::Policy, "live view is off in this mode"));
                    }
                    let Some(taken) = self.ctx.viewer() else {
                        self.refused();
                        break Ending::Close((CloseCode::Again, TOO_MANY_VIEWERS));
                    };
                    if credit.is_some() && !tell_clock(&mut tx).await {
                        break Ending::Broken;
                    }
                    info!(viewers = taken.total(), ?credit, "viewer started watching");
                    slot = Some(taken);
                    watched = true;
                    endings.start_by = None;
                    seat.set_credit(credit);
                    self.fanout.join(&seat);
                }
                Event::Control(Control::Stop) => self.stop(&seat, &mut slot, &mut endings),
                Event::Control(Control::Drawn) => seat.drawn(),
                Event::Control(Control::Start(_)) => {}
                Event::Control(Control::Closed(close)) => break close,
            }
        };
        if slot.is_some() {
            self.fanout.leave(&seat);
        }
        // A frame begun is finished first: a close inside it would never be read as one.
        let closing =
            !matches!(ending, Ending::Broken | Ending::HungUp) && seat.finish(CLOSE_WITHIN).await.is_ok();
        seat.abandon();
        drop(frame_finished);
        if closing {
            let close = async {
                if let Ending::Close((code, reason)) = ending {
                    let frame = CloseFrame {
                        code,
                        reason: reason.into(),
                    };
                    let _ = tx.close(Some(frame)).await;
                }
                // The reading side sends the answer to the viewer's close, and sees the
                // viewer's answer to ours; then the connection is done (RFC 6455 §7.1.1).
                drop(control);
                reader.await;
            };
            let late = async {
                smol::Timer::after(CLOSE_WITHIN).await;
            };
            future::or(close, late).await;
            linger(&hang_up).await;
        }
        let why = match &send_failed {
            Some(error) => error.to_string(),
            None => ending.why().to_owned(),
        };
        let left = slot.take().is_some();
        if left {
            info!(
                viewers = self.ctx.viewers.load(Ordering::Relaxed),
                dropped = seat.dropped(),
                why = %why,
                "viewer left"
            );
        } else {
            debug!(watched, why = %why, "connection closed while not watching");
        }
    }

    /// `stop`: the connection leaves the fan-out and gives its place back, and must start
    /// again in time or be closed.
    fn stop(&self, seat: &Arc<Seat>, slot: &mut Option<ViewerSlot>, endings: &mut Endings<'_>) {
        if slot.take().is_some() {
            debug!("stop");
            self.fanout.leave(seat);
            info!(
                viewers = self.ctx.viewers.load(Ordering::Relaxed),
                "viewer stopped watching"
            );
            endings.expect_start(RESTART_WITHIN);
        }
    }

    /// Logs (at most every 30 s) that a viewer was turned away.
    fn refused(&self) {
        if let Some(suppressed) = self.refusals.lock().map_or(None, |mut r| r.allow()) {
            tracing::warn!(
                max = self.ctx.max_viewers,
                suppressed,
                "viewer refused: too many viewers"
            );
        }
    }
}

/// Tells a flow-controlled viewer the daemon's clock, before its first frame; false if the
/// socket takes nothing for a while (the viewer is not reading).
async fn tell_clock(tx: &mut async_tungstenite::WebSocketSender<TurnTaking>) -> bool {
    let clock = format!(r#"{{"clock":{}}}"#, unix_ms(std::time::SystemTime::now()));
    let send = async { tx.send(Message::text(clock)).await.is_ok() };
    let late = async {
        smol::Timer::after(CLOSE_WITHIN).await;
        false
    };
    future::or(send, late).await
}

/// What a viewer beyond `max_viewers` is told.
const TOO_MANY_VIEWERS: &str = "too many viewers; try again later";

#[cfg(test)]
mod tests {
    use super::*;
    use async_tungstenite::tungstenite::protocol::Role;

    /// Our hand-built frames must be exactly what tungstenite reads as a binary message.
    #[test]
    fn hand_built_frames_parse_as_binary_messages() {
        for len in [0usize, 5, 125, 126, 65_535, 65_536, 200_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut wire = Vec::new();
            frame_header(&mut wire, len);
            wire.extend_from_slice(&payload);
            let mut ws = async_tungstenite::tungstenite::WebSocket::from_raw_socket(
                std::io::Cursor::new(wire),
                Role::Client,
                None,
            );
            match ws.read().expect("a message") {
                Message::Binary(got) => assert_eq!(got.as_ref(), payload.as_slice(), "len {len}"),
                other => panic!("not binary: {other:?}"),
            }
        }
    }

    #[test]
    fn stamps_parse_as_text_messages_with_the_frames_number_and_time() {
        let at = std::time::UNIX_EPOCH + Duration::from_millis(1_764_770_000_123);
        let frame = Frame {
            seq: u64::MAX,
            at,
            jpeg: bytes::Bytes::new(),
        };
        let mut wire = Vec::new();
        frame_stamp(&mut wire, &frame);
        let mut ws = async_tungstenite::tungstenite::WebSocket::from_raw_socket(
            std::io::Cursor::new(wire),
            Role::Client,
            None,
        );
        match ws.read().expect("a message") {
            Message::Text(text) => assert_eq!(
                text.as_str(),
                r#"{"seq":18446744073709551615,"at":1764770000123}"#
            ),
            other => panic!("not text: {other:?}"),
        }
    }

    #[test]
    fn controls_are_start_with_or_without_credit_stop_and_drawn() {
        let parsed = |text| match parse_control(text) {
            Some(Control::Start(credit)) => format!("start {credit:?}"),
            Some(Control::Stop) => "stop".into(),
            Some(Control::Drawn) => "drawn".into(),
            Some(Control::Closed(_)) => "closed".into(),
            None => "ignored".into(),
        };
        assert_eq!(parsed(" start\n"), "start None");
        assert_eq!(parsed("start credit=1"), "start Some(1)");
        assert_eq!(parsed("start credit=8"), "start Some(8)");
        assert_eq!(parsed("stop"), "stop");
        assert_eq!(parsed("drawn"), "drawn");
        for ignored in [
            "start credit=0",
            "start credit=9",
            "start credit=x",
            "start now",
            "start credit=1 x",
            "drawn 5",
            "",
            "hello",
        ] {
            assert_eq!(parsed(ignored), "ignored", "{ignored:?}");
        }
    }
}
