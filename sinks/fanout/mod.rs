//! Live frames to many sockets from a few threads.
//!
//! With one task per viewer, every frame costs every viewer a wake-up, a poll and often a
//! context switch before its one system call. Here a few shards (one per core) each take a
//! frame once and write it to each of their viewers with one non-blocking system call. The
//! first shard runs on the thread that read the frame from the camera (it is
//! [attached](crate::bus::Bus::attach) to the bus) and takes the first viewers alone: with
//! a few viewers, a frame is read, cut and written without waking any other thread. The
//! others are tasks on the executor, which take their share of the viewers once there are
//! enough of them that a second core pays for its wake-ups. A viewer whose socket cannot take the whole frame right away is
//! handed over to its own task (see [`Seat::catch_up`]), which finishes the frame when the
//! socket has room and then sends the newest frame it missed; until then the shard only
//! leaves it the newest frame. So a viewer is never more than one frame behind its own read
//! pace, and never holds up anyone else.
//!
//! A WebSocket has one more writer, tungstenite answering pings and closing; the socket's
//! turn (see [`FrameWriter`]) keeps their messages whole. An HTTP response (MJPEG) has the
//! HTTP layer, which writes the head before the fan-out's first frame and the end after its
//! last.

use std::io::{self, IoSlice, Write};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use smol::Task;
use smol::lock::MutexGuardArc;
use tracing::Instrument;

pub mod staging;
mod writer;

pub use writer::{FrameWriter, Turn};

use crate::bus::{Attached, Frame, Policy, Subscription};
use crate::sinks::SinkContext;
use crate::sync::lock;
use staging::{Stage, Staged};

/// How a sink wraps each frame for its viewers.
#[derive(Clone, Copy)]
pub struct Framing {
    /// Appends what goes before a JPEG of the given length.
    pub head: fn(&mut Vec<u8>, usize),
    /// What goes after the JPEG.
    pub tail: &'static [u8],
    /// Appends the message a flow-controlled viewer gets before each frame (its number and
    /// capture time); other viewers skip those bytes.
    pub stamp: Option<fn(&mut Vec<u8>, &Frame)>,
}

/// The viewers of one sink, spread over a few shards.
pub struct Fanout {
    ctx: SinkContext,
    shards: Vec<Arc<Shard>>,
    prepare: Arc<Prepare>,
}

/// How a frame becomes the bytes every viewer of a sink gets.
struct Prepare {
    framing: Framing,
    /// Where frames are staged once for all viewers; without it each viewer gets a copy.
    stage: Option<Stage>,
}

struct Shard {
    registry: Mutex<Registry>,
    /// Runs on the camera's thread rather than as a task.
    attached: bool,
}

#[derive(Default)]
struct Registry {
    /// Copied on change, so a shard takes the list without holding the lock.
    seats: Arc<[Arc<Seat>]>,
    /// Runs while the shard has viewers (and keeps the camera wanted meanwhile).
    running: Option<Running>,
}

/// What delivers a shard's frames; dropping it stops them.
enum Running {
    Attached { _guard: Attached },
    Task { _task: Task<()> },
}

/// Viewers the attached shard takes before any other shard gets one: below this, the wake-up
/// of a second thread costs more than the writes it would take over.
const ATTACHED_ALONE: usize = 16;

impl Fanout {
    /// The fan-out of a sink that wraps frames in `framing`.
    pub fn new(ctx: SinkContext, framing: Framing) -> Fanout {
        let stage = Stage::new(&format!("croissant-{}", ctx.name))
            .map_err(|error| tracing::warn!(%error, "frames will be copied to every viewer"))
            .ok();
        let shards = std::thread::available_parallelism().map_or(1, |n| n.get());
        Fanout {
            ctx,
            shards: (0..shards.max(1))
                .map(|n| {
                    Arc::new(Shard {
                        registry: Mutex::new(Registry::default()),
                        attached: n == 0,
                    })
                })
                .collect(),
            prepare: Arc::new(Prepare { framing, stage }),
        }
    }

    /// Starts sending frames to `seat`: on the attached shard while it has few viewers,
    /// else on the shard with the fewest.
    pub fn join(&self, seat: &Arc<Seat>) {
        let first = &self.shards[0];
        let shard = if lock(&first.registry).seats.len() < ATTACHED_ALONE {
            first
        } else {
            self.shards
                .iter()
                .min_by_key(|shard| lock(&shard.registry).seats.len())
                .unwrap_or(first)
        };
        let mut registry = lock(&shard.registry);
        let mut seats = registry.seats.to_vec();
        seats.push(seat.clone());
        registry.seats = seats.into();
        if registry.running.is_none() {
            // Started here rather than in the task, so the camera is wanted from now on.
            registry.running = Some(self.start(shard));
        }
    }

    fn start(&self, shard: &Arc<Shard>) -> Running {
        let (prepare, ctx) = (self.prepare.clone(), self.ctx.clone());
        if shard.attached {
            let shard = shard.clone();
            let span = tracing::Span::current();
            let deliver = move |frame: &Frame| {
                let _span = span.enter();
                shard.deliver(frame, &prepare, &ctx);
            };
            return Running::Attached {
                _guard: self.ctx.attach(Arc::new(deliver)),
            };
        }
        let subscription = self.ctx.subscribe(Policy::Latest);
        let work = run_shard(shard.clone(), subscription, prepare, ctx);
        Running::Task {
            _task: crate::runtime::spawn(work.in_current_span()),
        }
    }

    /// Stops sending frames to `seat`; a frame it is in the middle of is still finished by
    /// its own task. The last viewer of a shard stops the shard.
    pub fn leave(&self, seat: &Arc<Seat>) {
        for shard in &self.shards {
            let mut registry = lock(&shard.registry);
            if registry.seats.iter().any(|s| Arc::ptr_eq(s, seat)) {
                let seats: Vec<_> = registry
                    .seats
                    .iter()
                    .filter(|s| !Arc::ptr_eq(s, seat))
                    .cloned()
                    .collect();
                registry.seats = seats.into();
                if registry.seats.is_empty() {
                    registry.running = None;
                }
            }
        }
        lock(&seat.work).newer = None;
    }
}

impl Drop for Fanout {
    /// A running shard holds itself (its task or the bus's attached consumer owns an `Arc`
    /// of it), and every viewer leaving ends that. Ending it here as well means a sink
    /// that is gone (a reload rebuilt it) never leaves a shard delivering, whatever its
    /// viewers do.
    fn drop(&mut self) {
        for shard in &self.shards {
            let mut registry = lock(&shard.registry);
            registry.running = None;
            registry.seats = Arc::from([]);
        }
    }
}

/// A shard's task: each frame, once, to each of its viewers.
async fn run_shard(shard: Arc<Shard>, subscription: Subscription, prepare: Arc<Prepare>, ctx: SinkContext) {
    loop {
        let frame = subscription.recv().await;
        shard.deliver(&frame, &prepare, &ctx);
    }
}

impl Shard {
    /// The frame, once, to each of the shard's viewers.
    fn deliver(&self, frame: &Frame, prepare: &Prepare, ctx: &SinkContext) {
        let seats = lock(&self.registry).seats.clone();
        if seats.is_empty() {
            return;
        }
        let message = prepare.message(frame, seats.len());
        let delivered = seats
            .iter()
            .filter(|seat| seat.offer(frame.seq, &message, ctx))
            .count();
        // Once per frame: shards on other cores would fight over the counter's cache line.
        ctx.stats.delivered.fetch_add(delivered as u64, Ordering::Relaxed);
    }
}

impl Prepare {
    /// The frame as `viewers` viewers of one shard get it.
    fn message(&self, frame: &Frame, viewers: usize) -> Message {
        let mut head = Vec::with_capacity(128);
        if let Some(stamp) = self.framing.stamp {
            stamp(&mut head, frame);
        }
        let stamp_len = head.len();
        (self.framing.head)(&mut head, frame.jpeg.len());
        let tail = self.framing.tail;
        if let Some(stage) = self.stage.as_ref().filter(|_| viewers >= STAGE_FROM_VIEWERS) {
            // Staging can only fail for want of memory; the copying path needs none of its own.
            if let Ok(staged) = stage.frame(frame.seq, &[&head, &frame.jpeg, tail]) {
                return Message {
                    body: Body::Staged(staged),
                    stamp_len,
                };
            }
        }
        Message {
            body: Body::Copied(Arc::new(Copied {
                head,
                jpeg: frame.jpeg.clone(),
                tail,
            })),
            stamp_len,
        }
    }
}

/// Staging a frame costs more than a copy (fresh pages for every frame, released again
/// later) and saves a copy per viewer, so below about this many viewers of a shard copying
/// is cheaper. Measured with `perf stat` on the daemon under `loadclient`: staging cost
/// 10-25% more CPU at 4 and 10 viewers, and saved 5% (30 KB frames) to 20% (100 KB) at 200.
const STAGE_FROM_VIEWERS: usize = 16;

/// One frame as its viewers get it: stamp, head, JPEG and tail.
#[derive(Clone)]
struct Message {
    body: Body,
    /// The stamp's bytes at the start, which viewers that are not flow-controlled skip.
    stamp_len: usize,
}

#[derive(Clone)]
enum Body {
    Staged(Arc<Staged>),
    Copied(Arc<Copied>),
}

struct Copied {
    head: Vec<u8>,
    jpeg: Bytes,
    tail: &'static [u8],
}

impl Message {
    fn len(&self) -> usize {
        match &self.body {
            Body::Staged(staged) => staged.len(),
            Body::Copied(copied) => copied.head.len() + copied.jpeg.len() + copied.tail.len(),
        }
    }

    /// Where a viewer's bytes of it begin: at the stamp if it asked for stamps.
    fn start(&self, stamped: bool) -> usize {
        if stamped { 0 } else { self.stamp_len }
    }

    /// Writes bytes `from..` with one system call; returns how many the socket took.
    fn write_from(&self, socket: &std::net::TcpStream, from: usize) -> io::Result<usize> {
        match &self.body {
            Body::Staged(staged) => staged.send_from(socket, from),
            Body::Copied(copied) => {
                let (head, jpeg) = (copied.head.len(), copied.jpeg.len());
                let parts = [
                    IoSlice::new(copied.head.get(from..).unwrap_or_default()),
                    IoSlice::new(copied.jpeg.get(from.saturating_sub(head)..).unwrap_or_default()),
                    IoSlice::new(
                        copied
                            .tail
                            .get(from.saturating_sub(head + jpeg)..)
                            .unwrap_or_default(),
                    ),
                ];
                let mut socket = socket;
                socket.write_vectored(&parts)
            }
        }
    }
}

/// One viewer's place in the fan-out.
pub struct Seat {
    writer: FrameWriter,
    /// One more than the sequence number of the newest frame begun; older ones are stale.
    begun: AtomicU64,
    work: Mutex<Work>,
    doorbell: (async_channel::Sender<()>, async_channel::Receiver<()>),
    /// Frames this viewer missed because it was slower than the camera.
    dropped: AtomicU64,
    /// Flow-controlled: frames go out only while it has credit, each with its stamp first.
    stamped: AtomicBool,
    /// Frames it may be sent before it says it has drawn one (flow-controlled only).
    credit: AtomicU32,
    /// The credit it asked for, which `drawn` never takes it beyond.
    max_credit: AtomicU32,
}

/// What a shard leaves a viewer's task to do.
#[derive(Default)]
struct Work {
    /// A frame the socket took only part of, with the turn held so nothing else gets in.
    rest: Option<Rest>,
    /// The newest frame the viewer has not been sent.
    newer: Option<(u64, Message)>,
    /// Why the socket cannot be written any more.
    failed: Option<io::Error>,
}

struct Rest {
    message: Message,
    /// Where in the message the socket is; it began at `start`.
    written: usize,
    start: usize,
    _turn: MutexGuardArc<()>,
}

impl Rest {
    fn new(message: Message, start: usize, turn: MutexGuardArc<()>) -> Rest {
        Rest {
            message,
            written: start,
            start,
            _turn: turn,
        }
    }

    /// Whether nothing of it went out yet.
    fn untouched(&self) -> bool {
        self.written == self.start
    }
}

impl Seat {
    /// A seat for the viewer on the other end of `writer`.
    pub fn new(writer: FrameWriter) -> Arc<Seat> {
        Arc::new(Seat {
            writer,
            begun: AtomicU64::new(0),
            work: Mutex::new(Work::default()),
            doorbell: async_channel::bounded(1),
            dropped: AtomicU64::new(0),
            stamped: AtomicBool::new(false),
            credit: AtomicU32::new(0),
            max_credit: AtomicU32::new(0),
        })
    }

    /// How frames go to this viewer from now on: with `Some(credit)` (it sent `start
    /// credit=N`), each frame follows its stamp, and at most `credit` are sent before the
    /// viewer says it has drawn one; with `None` (a plain `start`), every frame it has room
    /// for, without stamps.
    pub fn set_credit(&self, credit: Option<u32>) {
        let credit = credit.unwrap_or(0);
        self.max_credit.store(credit, Ordering::Relaxed);
        self.credit.store(credit, Ordering::Relaxed);
        self.stamped.store(credit > 0, Ordering::Release);
    }

    /// The viewer drew a frame: it may be sent one more, the newest it missed first.
    pub fn drawn(&self) {
        if !self.stamped() {
            return;
        }
        let max = self.max_credit.load(Ordering::Relaxed);
        let _ = self
            .credit
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                (c < max).then_some(c + 1)
            });
        if lock(&self.work).newer.is_some() {
            self.ring();
        }
    }

    fn stamped(&self) -> bool {
        self.stamped.load(Ordering::Acquire)
    }

    /// Takes one credit for a frame about to be written; always granted to viewers that are
    /// not flow-controlled.
    fn take_credit(&self) -> bool {
        !self.stamped()
            || self
                .credit
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_sub(1))
                .is_ok()
    }

    /// A credit taken for a frame that was not written after all.
    fn return_credit(&self) {
        if self.stamped() {
            self.credit.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Keeps `message` as the newest frame to send later, replacing (and counting as
    /// skipped) any older one.
    fn hold(&self, seq: u64, message: &Message, ctx: &SinkContext) {
        let replaced = lock(&self.work).newer.replace((seq, message.clone()));
        if replaced.is_some() {
            self.skipped(ctx);
        }
    }

    /// Frames this viewer missed because it was slower than the camera.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Lets go of any frame still to be written, and of the socket's turn with it.
    /// Also keeps a shard that has not yet seen the viewer leave from writing after the
    /// close message that comes next.
    pub fn abandon(&self) {
        let mut work = lock(&self.work);
        work.rest = None;
        work.newer = None;
        work.failed = Some(io::ErrorKind::NotConnected.into());
    }

    /// Waits until the shard leaves this viewer's task something to do (see
    /// [`Seat::catch_up`]).
    pub async fn work_waiting(&self) {
        let _ = self.doorbell.1.recv().await;
    }

    /// From a shard: writes the frame now if the socket takes it whole (and says so), else
    /// leaves it (or what is left of it) to the viewer's task.
    fn offer(&self, seq: u64, message: &Message, ctx: &SinkContext) -> bool {
        if !self.take_credit() {
            // It has not drawn what it was sent: the newest frame waits for its `drawn`.
            self.hold(seq, message, ctx);
            return false;
        }
        let Some(turn) = self.writer.try_turn() else {
            // The viewer's task or tungstenite is writing: leave the newest frame for later.
            self.return_credit();
            self.hold(seq, message, ctx);
            self.ring();
            return false;
        };
        {
            let mut work = lock(&self.work);
            if work.failed.is_some() {
                return false;
            }
            if work.newer.take().is_some() {
                self.skipped(ctx);
            }
        }
        self.begun.store(seq + 1, Ordering::Relaxed);
        let start = message.start(self.stamped());
        match message.write_from(self.writer.socket().get_ref(), start) {
            Ok(n) if start + n == message.len() => return true,
            Ok(written) => self.hand_over(message, start, written, turn),
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                self.hand_over(message, start, 0, turn)
            }
            Err(error) => {
                lock(&self.work).failed = Some(error);
                self.ring();
            }
        }
        false
    }

    fn hand_over(&self, message: &Message, start: usize, written: usize, turn: MutexGuardArc<()>) {
        let mut rest = Rest::new(message.clone(), start, turn);
        rest.written += written;
        lock(&self.work).rest = Some(rest);
        self.ring();
    }

    fn ring(&self) {
        let _ = self.doorbell.0.try_send(());
    }

    fn skipped(&self, ctx: &SinkContext) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        ctx.stats.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// From the viewer's task: finishes what the shard could not write, then the newest
    /// frame the viewer missed meanwhile, waiting for the socket as long as it takes.
    /// Returns once nothing is left, or the socket failed. Dropped half-way through a frame,
    /// it leaves the rest of that frame (and the turn) with the seat, for [`Seat::finish`].
    pub async fn catch_up(&self, ctx: &SinkContext) -> io::Result<()> {
        loop {
            let rest = {
                let mut work = lock(&self.work);
                if let Some(error) = work.failed.take() {
                    return Err(error);
                }
                match work.rest.take() {
                    // Nothing of it went out yet and a newer frame is waiting: skip to that.
                    Some(rest) if rest.untouched() && work.newer.is_some() => {
                        drop(work);
                        drop(rest);
                        self.skipped(ctx);
                        // Its credit goes to the newer frame.
                        self.return_credit();
                        continue;
                    }
                    rest => rest,
                }
            };
            if let Some(rest) = rest {
                self.write_rest(rest, ctx.send_timeout).await?;
                ctx.stats.delivered.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            // A flow-controlled viewer's newest frame waits for its `drawn` (which rings).
            if lock(&self.work).newer.is_none() || !self.take_credit() {
                return Ok(());
            }
            // tungstenite holds the turn while it writes a pong or a close to this socket.
            let turn = within(ctx.send_timeout, async { Ok(self.writer.turn().await) }).await?;
            // Taken only now: anything newer that came while waiting for the turn wins.
            let Some((seq, message)) = lock(&self.work).newer.take() else {
                self.return_credit();
                continue;
            };
            if seq < self.begun.load(Ordering::Relaxed) {
                self.skipped(ctx);
                self.return_credit();
                continue;
            }
            self.begun.store(seq + 1, Ordering::Relaxed);
            let start = message.start(self.stamped());
            let rest = Rest::new(message, start, turn);
            self.write_rest(rest, ctx.send_timeout).await?;
            ctx.stats.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Before a close message: stops taking frames and writes the rest of a frame already
    /// begun, so the close does not land inside it (a viewer's library would read it as part
    /// of the frame and never see the close). Fails if the socket is broken or takes nothing
    /// for `stall`; then nothing more should be written to it.
    pub async fn finish(&self, stall: Duration) -> io::Result<()> {
        {
            let mut work = lock(&self.work);
            work.newer = None;
            if let Some(error) = work.failed.take() {
                work.failed = Some(error.kind().into());
                return Err(error);
            }
            // A shard that has not yet seen the viewer leave writes nothing from now on.
            work.failed = Some(io::ErrorKind::NotConnected.into());
        }
        loop {
            let rest = lock(&self.work).rest.take();
            match rest {
                Some(rest) if !rest.untouched() => self.write_rest(rest, stall).await?,
                Some(untouched) => drop(untouched),
                None => {
                    // A shard may be writing a frame this moment. Once the turn is free
                    // nothing is half-written; if it leaves a rest instead, it rings.
                    let free = async { Ok(Some(self.writer.turn().await)) };
                    let rang = async {
                        self.work_waiting().await;
                        Ok(None)
                    };
                    if within(stall, futures_lite::future::or(free, rang))
                        .await?
                        .is_some()
                    {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Writes the rest of a frame; fails with `TimedOut` when the socket takes nothing for
    /// `stall` (a viewer that stopped reading gives its place back). If this is dropped
    /// before the frame is whole, what is left goes back to the seat.
    async fn write_rest(&self, rest: Rest, stall: Duration) -> io::Result<()> {
        let mut writing = Writing {
            seat: self,
            rest: Some(rest),
        };
        while let Some(rest) = writing.rest.as_mut()
            && rest.written < rest.message.len()
        {
            let (message, written) = (&rest.message, rest.written);
            let write = self
                .writer
                .socket()
                .write_with(|socket| message.write_from(socket, written));
            match within(stall, write).await? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => rest.written += n,
            }
        }
        writing.rest = None;
        Ok(())
    }
}

/// A frame on its way to the socket, for [`Seat::write_rest`].
struct Writing<'a> {
    seat: &'a Seat,
    rest: Option<Rest>,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        if let Some(rest) = self.rest.take()
            && !rest.untouched()
        {
            lock(&self.seat.work).rest = Some(rest);
        }
    }
}

/// `work`, unless the socket makes it wait longer than `stall`.
async fn within<T>(stall: Duration, work: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    let stalled = async {
        smol::Timer::after(stall).await;
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("its connection took nothing for {} s", stall.as_secs_f32()),
        ))
    };
    futures_lite::future::or(work, stalled).await
}
