//! The frame bus: one producer (the source), many consumers (sinks and their viewers).
//!
//! Every consumer gets its own bounded queue, so the producer never waits for anyone and a
//! slow consumer only ever costs its own queue. A frame is one shared allocation: cloning a
//! [`Frame`] clones a reference count, never the JPEG.
//!
//! A consumer that never waits (the live fan-out writing to sockets that have room) can
//! instead be [attached](Bus::attach): it is called on the publisher's own thread before
//! `publish` returns, so a frame reaches it without waking any other thread.
//!
//! One rule drives the source: it runs while anyone wants frames. A viewer wants them while
//! subscribed, a recording sink while enabled. [`Demand`] counts those wishes; the source
//! supervisor waits on it.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_channel::{Receiver, Sender, TrySendError};
use bytes::Bytes;
use event_listener::Event;

use crate::sync::lock;

/// One complete JPEG as it came from the source.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Position in the stream since the daemon started; gaps mean a consumer skipped frames.
    pub seq: u64,
    /// Wall-clock arrival time; the recorder stamps video with it.
    pub at: SystemTime,
    /// The whole image, SOI to EOI.
    pub jpeg: Bytes,
}

/// What a queue does when its consumer falls behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Keep only the newest frame: live viewers want now, not a backlog.
    Latest,
    /// Keep up to `n` frames in order and drop (and count) new ones beyond that: the recorder
    /// wants every frame but must not hold the camera up.
    Fifo(usize),
}

/// Cheap to clone; every clone publishes to and subscribes on the same bus.
#[derive(Clone, Default)]
pub struct Bus {
    inner: Arc<Inner>,
}

/// Called with every frame on the publisher's thread; it must never block.
pub type Deliver = Arc<dyn Fn(&Frame) + Send + Sync>;

#[derive(Default)]
struct Inner {
    subscribers: Mutex<Vec<Subscriber>>,
    /// Copied on change, so `publish` calls them without holding the lock.
    attached: Mutex<Arc<[(u64, Deliver)]>>,
    next_id: AtomicU64,
    next_seq: AtomicU64,
    latest: Mutex<Option<Frame>>,
    demand: Demand,
}

struct Subscriber {
    id: u64,
    tx: Sender<Frame>,
    policy: Policy,
    dropped: Arc<AtomicU64>,
    tally: Option<Arc<AtomicU64>>,
}

impl Bus {
    /// A bus whose subscriptions register demand on `demand`.
    pub fn new(demand: Demand) -> Self {
        Bus {
            inner: Arc::new(Inner {
                demand,
                ..Inner::default()
            }),
        }
    }

    /// Who currently wants frames; the source supervisor watches it.
    pub fn demand(&self) -> &Demand {
        &self.inner.demand
    }

    /// Wraps a JPEG into a [`Frame`] with the next sequence number and hands it to every
    /// subscriber. Never blocks.
    pub fn publish(&self, jpeg: Bytes, at: SystemTime) -> Frame {
        let frame = Frame {
            seq: self.inner.next_seq.fetch_add(1, Ordering::Relaxed),
            at,
            jpeg,
        };
        *lock(&self.inner.latest) = Some(frame.clone());
        let mut subscribers = lock(&self.inner.subscribers);
        subscribers.retain(|sub| {
            let sent = match sub.policy {
                Policy::Latest => sub
                    .tx
                    .force_send(frame.clone())
                    .map(|replaced| replaced.is_some()),
                Policy::Fifo(_) => match sub.tx.try_send(frame.clone()) {
                    Ok(()) => Ok(false),
                    Err(TrySendError::Full(_)) => Ok(true),
                    Err(TrySendError::Closed(f)) => Err(async_channel::SendError(f)),
                },
            };
            match sent {
                Ok(dropped_one) => {
                    if dropped_one {
                        sub.dropped.fetch_add(1, Ordering::Relaxed);
                        if let Some(tally) = &sub.tally {
                            tally.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    true
                }
                Err(_) => false,
            }
        });
        drop(subscribers);
        let attached = lock(&self.inner.attached).clone();
        for (_, deliver) in attached.iter() {
            deliver(&frame);
        }
        frame
    }

    /// The most recent frame, if any was published; it may be old when the source is stopped.
    pub fn latest(&self) -> Option<Frame> {
        lock(&self.inner.latest).clone()
    }

    /// Starts receiving frames. While the subscription lives, the source is wanted.
    pub fn subscribe(&self, policy: Policy) -> Subscription {
        self.subscribe_counted(policy, None)
    }

    /// [`Bus::subscribe`], also adding every frame this queue skips to `tally` (a sink's
    /// total across its viewers).
    pub fn subscribe_counted(&self, policy: Policy, tally: Option<Arc<AtomicU64>>) -> Subscription {
        let capacity = match policy {
            Policy::Latest => 1,
            Policy::Fifo(n) => n.max(1),
        };
        let (tx, rx) = async_channel::bounded(capacity);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let dropped = Arc::new(AtomicU64::new(0));
        lock(&self.inner.subscribers).push(Subscriber {
            id,
            tx,
            policy,
            dropped: dropped.clone(),
            tally,
        });
        Subscription {
            id,
            rx: Box::pin(rx),
            dropped,
            bus: self.clone(),
            _want: self.inner.demand.want(),
        }
    }

    /// Calls `deliver` with every frame, on the publisher's thread, for as long as the
    /// returned guard lives (and wants the source meanwhile).
    pub fn attach(&self, deliver: Deliver) -> Attached {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut attached = lock(&self.inner.attached);
        let mut list = attached.to_vec();
        list.push((id, deliver));
        *attached = list.into();
        Attached {
            id,
            bus: self.clone(),
            _want: self.inner.demand.want(),
        }
    }

    /// Number of live subscriptions and attached consumers.
    pub fn subscribers(&self) -> usize {
        lock(&self.inner.subscribers).len() + lock(&self.inner.attached).len()
    }
}

/// A consumer's end of its queue. Dropping it unsubscribes and withdraws its demand.
pub struct Subscription {
    id: u64,
    /// Boxed so the subscription is `Unpin` (the receiver's stream state is not).
    rx: Pin<Box<Receiver<Frame>>>,
    dropped: Arc<AtomicU64>,
    bus: Bus,
    _want: Want,
}

impl Subscription {
    /// The next frame in the queue, waiting for one if it is empty.
    pub async fn recv(&self) -> Frame {
        match self.rx.recv().await {
            Ok(frame) => frame,
            // The bus holds the sender for as long as this subscription exists.
            Err(_) => std::future::pending().await,
        }
    }

    /// A frame if one is queued right now.
    pub fn try_recv(&self) -> Option<Frame> {
        self.rx.try_recv().ok()
    }

    /// Poll-style [`Subscription::recv`], for readers implemented by hand.
    pub fn poll_recv(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Frame> {
        match futures_lite::StreamExt::poll_next(&mut self.rx.as_mut(), cx) {
            std::task::Poll::Ready(Some(frame)) => std::task::Poll::Ready(frame),
            // The bus holds the sender while the subscription exists; never ready otherwise.
            _ => std::task::Poll::Pending,
        }
    }

    /// Frames this consumer skipped because it was slower than the source.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        lock(&self.bus.inner.subscribers).retain(|sub| sub.id != self.id);
    }
}

/// A consumer [attached](Bus::attach) to the bus; dropping it detaches it. A frame being
/// delivered on another thread at that moment may still reach it.
pub struct Attached {
    id: u64,
    bus: Bus,
    _want: Want,
}

impl Drop for Attached {
    fn drop(&mut self) {
        let mut attached = lock(&self.bus.inner.attached);
        let list: Vec<_> = attached
            .iter()
            .filter(|(id, _)| *id != self.id)
            .cloned()
            .collect();
        *attached = list.into();
    }
}

/// A count of outstanding wishes for frames. Clones share the count.
#[derive(Clone, Default)]
pub struct Demand {
    inner: Arc<DemandInner>,
}

#[derive(Default)]
struct DemandInner {
    count: AtomicUsize,
    changed: Event,
}

/// One wish for frames; withdrawn when dropped.
pub struct Want {
    demand: Demand,
}

impl Demand {
    /// Registers a wish for frames that lasts as long as the returned guard.
    pub fn want(&self) -> Want {
        self.inner.count.fetch_add(1, Ordering::SeqCst);
        self.inner.changed.notify(usize::MAX);
        Want { demand: self.clone() }
    }

    /// How many wishes are outstanding.
    pub fn count(&self) -> usize {
        self.inner.count.load(Ordering::SeqCst)
    }

    /// Whether anyone wants frames.
    pub fn is_wanted(&self) -> bool {
        self.count() > 0
    }

    /// Waits until `wanted` matches whether anyone wants frames.
    pub async fn until_wanted(&self, wanted: bool) {
        loop {
            if self.is_wanted() == wanted {
                return;
            }
            let listener = self.inner.changed.listen();
            if self.is_wanted() == wanted {
                return;
            }
            listener.await;
        }
    }
}

impl Drop for Want {
    fn drop(&mut self) {
        self.demand.inner.count.fetch_sub(1, Ordering::SeqCst);
        self.demand.inner.changed.notify(usize::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(n: u8) -> Bytes {
        Bytes::from(vec![0xFF, 0xD8, n, 0xFF, 0xD9])
    }

    #[test]
    fn latest_keeps_only_the_newest_frame() {
        let bus = Bus::default();
        let sub = bus.subscribe(Policy::Latest);
        for n in 0..5 {
            bus.publish(jpeg(n), SystemTime::now());
        }
        let frame = sub.try_recv().expect("a frame");
        assert_eq!(frame.seq, 4);
        assert!(sub.try_recv().is_none());
        assert_eq!(sub.dropped(), 4);
    }

    #[test]
    fn fifo_keeps_order_and_counts_overflow() {
        let bus = Bus::default();
        let sub = bus.subscribe(Policy::Fifo(3));
        for n in 0..5 {
            bus.publish(jpeg(n), SystemTime::now());
        }
        let seqs: Vec<u64> = std::iter::from_fn(|| sub.try_recv()).map(|f| f.seq).collect();
        assert_eq!(seqs, vec![0, 1, 2]);
        assert_eq!(sub.dropped(), 2);
    }

    #[test]
    fn frames_share_one_allocation() {
        let bus = Bus::default();
        let a = bus.subscribe(Policy::Latest);
        let b = bus.subscribe(Policy::Latest);
        bus.publish(jpeg(1), SystemTime::now());
        let fa = a.try_recv().expect("frame for a");
        let fb = b.try_recv().expect("frame for b");
        assert_eq!(fa.jpeg.as_ptr(), fb.jpeg.as_ptr());
    }

    #[test]
    fn attached_consumers_get_every_frame_on_the_publishers_thread_until_detached() {
        let bus = Bus::default();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let attached = bus.attach(Arc::new(move |frame: &Frame| {
            lock(&record).push((frame.seq, std::thread::current().id()));
        }));
        assert_eq!(bus.demand().count(), 1);
        for n in 0..3 {
            bus.publish(jpeg(n), SystemTime::now());
        }
        assert_eq!(bus.subscribers(), 1);
        drop(attached);
        assert_eq!(bus.subscribers(), 0);
        bus.publish(jpeg(3), SystemTime::now());
        let here = std::thread::current().id();
        assert_eq!(*lock(&seen), vec![(0, here), (1, here), (2, here)]);
        assert_eq!(bus.demand().count(), 0);
    }

    #[test]
    fn subscriptions_register_demand_until_dropped() {
        let bus = Bus::default();
        assert_eq!(bus.demand().count(), 0);
        let a = bus.subscribe(Policy::Latest);
        let b = bus.subscribe(Policy::Fifo(2));
        assert_eq!(bus.demand().count(), 2);
        drop(a);
        assert_eq!((bus.demand().count(), bus.subscribers()), (1, 1));
        drop(b);
        assert_eq!((bus.demand().count(), bus.subscribers()), (0, 0));
    }

    #[test]
    fn until_wanted_wakes_on_change() {
        let demand = Demand::default();
        let d = demand.clone();
        let (woke, woken) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            smol::block_on(d.until_wanted(true));
            let _ = woke.send(());
        });
        // (Most likely parked by now, so the wake-up itself is what is tested.)
        std::thread::sleep(std::time::Duration::from_millis(20));
        let want = demand.want();
        let within = std::time::Duration::from_secs(5);
        assert!(woken.recv_timeout(within).is_ok(), "a want woke nobody");
        drop(want);
        let released = smol::block_on(futures_lite::future::or(
            async {
                demand.until_wanted(false).await;
                true
            },
            async {
                smol::Timer::after(within).await;
                false
            },
        ));
        assert!(released, "dropping the want woke nobody");
    }
}
