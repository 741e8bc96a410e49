//! What one frame costs per viewer before any of Croissant's code runs: the same frames sent
//! to the same number of loopback TCP readers by the plainest programs that can do it.
//! `cargo bench --bench fanout [-- VIEWERS [SECONDS]]` prints the sender's CPU time per
//! delivered frame for three ways of sending, at the two sizes `scripts/bench` uses:
//!
//! - `writev loop`: one thread writes every viewer in turn with one `writev` each (blocking
//!   sockets). No runtime, no wake-ups: the kernel's own cost of a send.
//! - `sendfile loop`: the same, but each frame is staged once (the daemon's own
//!   [`croissant::sinks::fanout::staging::Stage`]) and every viewer gets it with `sendfile`, so the kernel
//!   references the pages instead of copying them.
//! - `task per viewer`: smol on two threads, one task per viewer woken by its own queue for
//!   every frame, as a daemon with one task per connection does.
//! - `pipe relay`: the daemon's whole job at its plainest. A second process writes each
//!   frame into a pipe with one write, as a camera does; one thread, woken by the pipe,
//!   reads it with one read and writes it to every viewer with one `writev` each. Unlike
//!   the loops above it is woken by the pipe rather than a timer, as the daemon is; on a
//!   virtual machine a timer's wake-up alone can cost tens of microseconds.
//!
//! The readers run in a child process (this program again), reading as fast as they can, so
//! only the sender's CPU is counted. On loopback the sender also pays for the receiving side
//! of TCP (it runs in the sender's system call), which is why even the plainest send costs
//! several microseconds.

use std::io::{IoSlice, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use croissant::sinks::fanout::staging::Stage;
use futures_lite::AsyncWriteExt;

const SIZES: [(&str, usize, u32); 2] = [("640x480@30", 30_000, 30), ("1280x720@15", 100_000, 15)];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if args.first().map(String::as_str) == Some("receive") {
        return receive(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("camera") {
        return camera(&args[1..]);
    }
    let viewers: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(200);
    let seconds: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    println!("sender CPU per delivered frame, {viewers} loopback viewers, {seconds} s each");
    println!("| frames | writev loop | sendfile loop | task per viewer | pipe relay |");
    println!("|---|---:|---:|---:|---:|");
    for (label, size, fps) in SIZES {
        let run = |how: How| measure(how, viewers, size, fps, Duration::from_secs(seconds));
        println!(
            "| {label} ({} KB) | {} | {} | {} | {} |",
            size / 1000,
            run(How::WritevLoop),
            run(How::SendfileLoop),
            run(How::TaskPerViewer),
            run(How::PipeRelay)
        );
    }
}

#[derive(Clone, Copy)]
enum How {
    WritevLoop,
    SendfileLoop,
    TaskPerViewer,
    PipeRelay,
}

/// Connects `viewers` readers from a child process, sends `fps` frames of `size` bytes per
/// second to each for `length`, and formats the sender's CPU time per delivered frame.
fn measure(how: How, viewers: usize, size: usize, fps: u32, length: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let exe = std::env::current_exe().expect("own path");
    let mut child = Command::new(exe)
        .args(["receive", &addr.to_string(), &viewers.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .expect("start the readers");
    let sockets: Vec<TcpStream> = (0..viewers)
        .map(|_| {
            let (socket, _) = listener.accept().expect("accept");
            socket.set_nodelay(true).expect("nodelay");
            socket
        })
        .collect();
    // A WebSocket header and a payload that does not compress or repeat.
    let header = [0x82u8, 127, 0, 0, 0, 0, 0, 0, 0, 0];
    let payload: Vec<u8> = (0..size as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let frames = (length.as_secs_f64() * f64::from(fps)) as u64;
    let interval = Duration::from_secs(1) / fps;

    let before = cpu_time();
    match how {
        How::WritevLoop => {
            paced(frames, interval, |_| {
                for mut socket in &sockets {
                    write_all(&mut socket, &header, &payload);
                }
            });
            drop(sockets);
        }
        How::SendfileLoop => {
            let stage = Stage::new("frames").expect("memfd");
            paced(frames, interval, |n| {
                let staged = stage.frame(n, &[&header, &payload]).expect("stage");
                for socket in &sockets {
                    let mut sent = 0;
                    while sent < staged.len() {
                        sent += staged.send_from(socket, sent).expect("sendfile");
                    }
                }
            });
            drop(sockets);
        }
        How::TaskPerViewer => tasks(sockets, frames, interval, &header, &payload),
        How::PipeRelay => {
            relay(&sockets, frames, size, fps, &header);
            drop(sockets);
        }
    }
    let used = cpu_time() - before;
    let _ = child.wait();
    format!(
        "{:.1} µs",
        used.as_secs_f64() * 1e6 / (frames * viewers as u64) as f64
    )
}

/// Runs `send(n)` for frames `0..frames`, one every `interval`.
fn paced(frames: u64, interval: Duration, mut send: impl FnMut(u64)) {
    let start = Instant::now();
    for n in 0..frames {
        send(n);
        let next = start + interval * (n as u32 + 1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

fn write_all(socket: &mut &TcpStream, header: &[u8], payload: &[u8]) {
    let mut parts = [IoSlice::new(header), IoSlice::new(payload)];
    let mut parts = &mut parts[..];
    while !parts.is_empty() {
        let n = socket.write_vectored(parts).expect("writev");
        IoSlice::advance_slices(&mut parts, n);
    }
}

/// One task per viewer on a two-thread executor, each woken through its own one-frame queue.
fn tasks(sockets: Vec<TcpStream>, frames: u64, interval: Duration, header: &[u8], payload: &[u8]) {
    let executor = std::sync::Arc::new(smol::Executor::new());
    let (stop, stopped) = async_channel::bounded::<()>(1);
    let helper = {
        let executor = executor.clone();
        let stopped = stopped.clone();
        std::thread::spawn(move || smol::block_on(executor.run(stopped.recv())))
    };
    let frame: bytes::Bytes = [header, payload].concat().into();
    let mut queues = Vec::new();
    let mut viewers = Vec::new();
    for socket in sockets {
        let (tx, rx) = async_channel::bounded::<bytes::Bytes>(1);
        queues.push(tx);
        let mut socket = smol::net::TcpStream::try_from(socket).expect("async socket");
        viewers.push(executor.spawn(async move {
            while let Ok(frame) = rx.recv().await {
                let (head, body) = frame.split_at(10);
                let mut parts = [IoSlice::new(head), IoSlice::new(body)];
                let mut parts = &mut parts[..];
                while !parts.is_empty() {
                    let n = socket.write_vectored(parts).await.expect("writev");
                    IoSlice::advance_slices(&mut parts, n);
                }
            }
        }));
    }
    smol::block_on(executor.run(async {
        let start = Instant::now();
        for n in 0..frames {
            for queue in &queues {
                let _ = queue.force_send(frame.clone());
            }
            smol::Timer::at(start + interval * (n as u32 + 1)).await;
        }
        queues.clear();
        for viewer in viewers {
            viewer.await;
        }
    }));
    drop(stop);
    let _ = helper.join();
}

/// Starts a camera process writing `frames` frames of `size` bytes at `fps` into a pipe, and
/// relays each to every socket as it comes: one read, one `writev` per viewer.
fn relay(sockets: &[TcpStream], frames: u64, size: usize, fps: u32, header: &[u8]) {
    use std::io::Read;
    let exe = std::env::current_exe().expect("own path");
    let mut camera = Command::new(exe)
        .args(["camera", &frames.to_string(), &size.to_string(), &fps.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the camera");
    let mut pipe = camera.stdout.take().expect("the camera's pipe");
    // Room for a whole frame, as the daemon asks for.
    let _ = rustix::pipe::fcntl_setpipe_size(&pipe, 1 << 20);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = pipe.read(&mut buf).expect("read the pipe");
        if n == 0 {
            break;
        }
        for mut socket in sockets {
            write_all(&mut socket, header, &buf[..n]);
        }
    }
    let _ = camera.wait();
}

/// The camera process: `frames` frames of `size` bytes, `fps` a second, each with one write.
fn camera(args: &[String]) {
    let frames: u64 = args[0].parse().expect("frames");
    let size: usize = args[1].parse().expect("size");
    let fps: u32 = args[2].parse().expect("fps");
    let frame = vec![0x55u8; size];
    // Straight to the descriptor: one write(2) per frame.
    let stdout = std::os::fd::AsFd::as_fd(&std::io::stdout())
        .try_clone_to_owned()
        .expect("stdout");
    let mut stdout = std::fs::File::from(stdout);
    // Until the relay has made the pipe larger (it does so at once).
    std::thread::sleep(Duration::from_millis(100));
    paced(frames, Duration::from_secs(1) / fps, |_| {
        stdout.write_all(&frame).expect("write a frame");
    });
}

/// The sender's CPU time so far (all its threads; the readers are another process).
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// The child: connects the readers and reads everything until the sender closes.
fn receive(args: &[String]) {
    let addr: SocketAddr = args[0].parse().expect("address");
    let viewers: usize = args[1].parse().expect("viewer count");
    let executor = smol::LocalExecutor::new();
    smol::block_on(executor.run(async {
        let mut readers = Vec::new();
        for _ in 0..viewers {
            let mut socket = smol::net::TcpStream::connect(addr).await.expect("connect");
            readers.push(executor.spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = futures_lite::AsyncReadExt::read(&mut socket, &mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            }));
        }
        for reader in readers {
            reader.await;
        }
    }));
}
