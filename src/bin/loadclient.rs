//! The benchmark's load client: N WebSocket viewers against a running daemon whose camera is
//! `fakecam` (every frame carries `seq=<n> us=<unix micros>` in a COM segment).
//!
//! After a warm-up it measures for a while and prints one JSON line: per-viewer frame rates,
//! missing frames (sequence gaps), latency percentiles (receive time minus the frame's write
//! time), throughput, and the same for the slow viewers (a small receive buffer and a pause
//! per frame). With `--pid` it also samples the daemon's CPU time over the measured window
//! and its peak RSS. It speaks just enough WebSocket to stay cheap: it never copies or
//! unmasks a payload, it reads the first bytes for the COM segment and skips the rest.
//! With `--mjpeg` its viewers are MJPEG-over-HTTP clients instead (HTTP/1.0, so the body is
//! the plain multipart stream).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use smol::Async;

/// The benchmark's load client: opens WebSocket viewers, reports what they got as JSON.
#[derive(Parser, Clone)]
#[command(version)]
struct Args {
    /// The daemon's address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// WebSocket path (or the MJPEG stream's, with `--mjpeg`).
    #[arg(long, default_value = "/")]
    path: String,
    /// Viewers are MJPEG-over-HTTP clients of `--path`.
    #[arg(long)]
    mjpeg: bool,
    /// Viewers that read as fast as they can.
    #[arg(long, default_value_t = 10)]
    viewers: usize,
    /// Viewers that read one frame, then pause.
    #[arg(long, default_value_t = 0)]
    slow: usize,
    /// The slow viewers' pause per frame, in milliseconds.
    #[arg(long, default_value_t = 500)]
    slow_ms: u64,
    /// Seconds to run before measuring.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Seconds to measure.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// The daemon's pid, to sample its CPU time and peak RSS.
    #[arg(long)]
    pid: Option<u32>,
}

/// What one viewer saw during the measured window.
#[derive(Default, Clone)]
struct Seen {
    frames: u64,
    bytes: u64,
    missing: u64,
    latencies_us: Vec<u64>,
    error: Option<String>,
}

fn main() {
    let args = Args::parse();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(2);
    let ex = std::sync::Arc::new(smol::Executor::new());
    let (stop, stopped) = async_channel::bounded::<()>(1);
    for _ in 1..threads {
        let (ex, stopped) = (ex.clone(), stopped.clone());
        std::thread::spawn(move || smol::block_on(ex.run(stopped.recv())));
    }
    let report = smol::block_on(ex.run(run(&ex, args)));
    drop(stop);
    println!("{report}");
}

async fn run(ex: &smol::Executor<'_>, args: Args) -> String {
    let start = Instant::now() + Duration::from_millis(200);
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let measure_to = measure_from + Duration::from_secs_f64(args.duration);
    let mut tasks = Vec::new();
    for i in 0..args.viewers + args.slow {
        let slow = i >= args.viewers;
        let a = args.clone();
        tasks.push(ex.spawn(async move {
            match viewer(&a, slow, measure_from, measure_to).await {
                Ok(seen) => (slow, seen),
                Err(e) => (
                    slow,
                    Seen {
                        error: Some(e.to_string()),
                        ..Seen::default()
                    },
                ),
            }
        }));
    }
    // Sample the daemon and ourselves exactly over the measured window.
    smol::Timer::at(measure_from).await;
    let daemon_before = args.pid.and_then(cpu_seconds);
    let threads_before = args.pid.map(thread_times).unwrap_or_default();
    let own_before = cpu_seconds_of("self");
    smol::Timer::at(measure_to).await;
    let daemon_after = args.pid.and_then(cpu_seconds);
    let threads_after = args.pid.map(thread_times).unwrap_or_default();
    let own_after = cpu_seconds_of("self");
    let peak_rss_kib = args.pid.and_then(peak_rss_kib);

    let mut fast = Vec::new();
    let mut slow = Vec::new();
    for task in tasks {
        let (is_slow, seen) = task.await;
        if is_slow { slow.push(seen) } else { fast.push(seen) }
    }
    let fast_summary = summarize(&fast, args.duration);
    let slow_summary = summarize(&slow, args.duration);
    let delivered: u64 = fast.iter().chain(&slow).map(|s| s.frames).sum();
    let daemon_cpu = match (daemon_before, daemon_after) {
        (Some(a), Some(b)) => format!("{:.3}", b - a),
        _ => "null".into(),
    };
    let cpu_per_frame_us = match (daemon_before, daemon_after) {
        (Some(a), Some(b)) if delivered > 0 => format!("{:.2}", (b - a) * 1e6 / delivered as f64),
        _ => "null".into(),
    };
    let errors: Vec<String> = fast.iter().chain(&slow).filter_map(|s| s.error.clone()).collect();
    let threads = per_thread(&threads_before, &threads_after, delivered);
    format!(
        "{{\"viewers\":{},\"slow_viewers\":{},\"duration_s\":{},\"fast\":{},\"slow\":{},\"frames_delivered\":{},\"daemon_cpu_s\":{},\"daemon_cpu_per_frame_us\":{},\"daemon_threads\":{},\"daemon_peak_rss_kib\":{},\"client_cpu_s\":{:.3},\"errors\":{}}}",
        args.viewers,
        args.slow,
        args.duration,
        fast_summary,
        slow_summary,
        delivered,
        daemon_cpu,
        cpu_per_frame_us,
        threads,
        peak_rss_kib.map_or("null".into(), |v| v.to_string()),
        own_after.unwrap_or(0.0) - own_before.unwrap_or(0.0),
        serde_json::to_string(&errors.iter().take(5).collect::<Vec<_>>()).unwrap_or_default(),
    )
}

fn summarize(seen: &[Seen], duration: f64) -> String {
    if seen.is_empty() {
        return "null".into();
    }
    let mut fps: Vec<f64> = seen.iter().map(|s| s.frames as f64 / duration).collect();
    fps.sort_by(f64::total_cmp);
    let mut latencies: Vec<u64> = seen.iter().flat_map(|s| s.latencies_us.iter().copied()).collect();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .map_or("null".into(), |us| format!("{:.2}", *us as f64 / 1000.0))
    };
    let bytes: u64 = seen.iter().map(|s| s.bytes).sum();
    format!(
        "{{\"fps_min\":{:.2},\"fps_median\":{:.2},\"missing\":{},\"latency_ms\":{{\"p50\":{},\"p95\":{},\"p99\":{},\"max\":{}}},\"bytes_per_s\":{:.0}}}",
        fps[0],
        fps[fps.len() / 2],
        seen.iter().map(|s| s.missing).sum::<u64>(),
        pct(0.5),
        pct(0.95),
        pct(0.99),
        pct(1.0),
        bytes as f64 / duration,
    )
}

/// One viewer: handshake, `start`, then read frames until the window closes.
async fn viewer(args: &Args, slow: bool, from: Instant, to: Instant) -> std::io::Result<Seen> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(args.addr),
        socket2::Type::STREAM,
        None,
    )?;
    if slow {
        socket.set_recv_buffer_size(4096)?;
    }
    socket.connect(&args.addr.into())?;
    let mut stream = Async::new(std::net::TcpStream::from(socket))?;
    if args.mjpeg {
        let request = format!("GET {} HTTP/1.0\r\nHost: {}\r\n\r\n", args.path, args.addr);
        stream.write_all(request.as_bytes()).await?;
        let reader = futures_lite::io::BufReader::with_capacity(64 * 1024, stream);
        return mjpeg_viewer(reader, args, slow, from, to).await;
    }
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: Y3JvaXNzYW50LWJlbmNoIQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        args.path, args.addr
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await?;
        head.push(byte[0]);
        if head.len() > 4096 {
            return Err(std::io::Error::other("response head too large"));
        }
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(std::io::Error::other(
            String::from_utf8_lossy(&head)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned(),
        ));
    }
    // A masked text frame "start" (client frames must be masked).
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut start = vec![0x81, 0x80 | 5];
    start.extend_from_slice(&mask);
    start.extend(b"start".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&start).await?;

    let mut reader = futures_lite::io::BufReader::with_capacity(64 * 1024, stream);
    let mut seen = Seen::default();
    let mut last_seq: Option<u64> = None;
    let mut scratch = vec![0u8; 64 * 1024];
    loop {
        let mut h = [0u8; 2];
        reader.read_exact(&mut h).await?;
        let len = match h[1] & 0x7F {
            126 => {
                let mut b = [0u8; 2];
                reader.read_exact(&mut b).await?;
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                reader.read_exact(&mut b).await?;
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        } as usize;
        let opcode = h[0] & 0x0F;
        let (first, head_len) = read_frame(&mut reader, len, &mut scratch).await?;
        let now = Instant::now();
        if opcode == 0x8 {
            return Ok(seen);
        }
        if opcode != 0x2 {
            continue;
        }
        if now >= to {
            return Ok(seen);
        }
        seen.count(&first[..head_len], len, now >= from, slow, &mut last_seq);
        if slow {
            smol::Timer::after(Duration::from_millis(args.slow_ms)).await;
        }
    }
}

/// An MJPEG client: the response head, then parts (`Content-Length` headers) until the end.
async fn mjpeg_viewer(
    mut reader: futures_lite::io::BufReader<Async<std::net::TcpStream>>,
    args: &Args,
    slow: bool,
    from: Instant,
    to: Instant,
) -> std::io::Result<Seen> {
    use futures_lite::AsyncBufReadExt;
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    if !line.starts_with("HTTP/1.1 200") && !line.starts_with("HTTP/1.0 200") {
        return Err(std::io::Error::other(line.trim().to_owned()));
    }
    let mut seen = Seen::default();
    let mut last_seq: Option<u64> = None;
    let mut scratch = vec![0u8; 64 * 1024];
    let mut len = None;
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(seen);
        }
        let header = line.trim_end();
        if let Some(value) = header.strip_prefix("Content-Length: ") {
            len = value.parse::<usize>().ok();
            continue;
        }
        // A part's body follows the blank line after its headers.
        let (true, Some(part_len)) = (header.is_empty(), len.take()) else {
            continue;
        };
        let (first, head_len) = read_frame(&mut reader, part_len, &mut scratch).await?;
        let now = Instant::now();
        if now >= to {
            return Ok(seen);
        }
        seen.count(&first[..head_len], part_len, now >= from, slow, &mut last_seq);
        if slow {
            smol::Timer::after(Duration::from_millis(args.slow_ms)).await;
        }
    }
}

/// Reads a frame of `len` bytes, keeping its first 64 (where fakecam's COM segment is) and
/// skipping the rest through `scratch`. Returns those bytes and how many of them there are.
async fn read_frame(
    reader: &mut (impl futures_lite::AsyncRead + Unpin),
    len: usize,
    scratch: &mut [u8],
) -> std::io::Result<([u8; 64], usize)> {
    let head_len = len.min(64);
    let mut first = [0u8; 64];
    reader.read_exact(&mut first[..head_len]).await?;
    let mut rest = len - head_len;
    while rest > 0 {
        let n = rest.min(scratch.len());
        reader.read_exact(&mut scratch[..n]).await?;
        rest -= n;
    }
    Ok((first, head_len))
}

impl Seen {
    /// A frame that arrived now; it counts if `measured`.
    fn count(&mut self, first: &[u8], len: usize, measured: bool, slow: bool, last_seq: &mut Option<u64>) {
        let (seq, us) = com_fields(first);
        if measured {
            self.frames += 1;
            self.bytes += len as u64;
            if let (Some(seq), Some(last)) = (seq, *last_seq)
                && !slow
                && seq > last + 1
            {
                self.missing += seq - last - 1;
            }
            if let Some(us) = us {
                let now_us = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as u64);
                self.latencies_us.push(now_us.saturating_sub(us));
            }
        }
        *last_seq = seq.or(*last_seq);
    }
}

/// `seq` and `us` from a COM segment right after SOI.
fn com_fields(jpeg: &[u8]) -> (Option<u64>, Option<u64>) {
    if jpeg.len() < 6 || jpeg[..4] != [0xFF, 0xD8, 0xFF, 0xFE] {
        return (None, None);
    }
    let len = usize::from(u16::from_be_bytes([jpeg[4], jpeg[5]]));
    let text = String::from_utf8_lossy(&jpeg[6..jpeg.len().min(4 + len)]).into_owned();
    let field = |key: &str| text.split(' ').find_map(|f| f.strip_prefix(key)?.parse().ok());
    (field("seq="), field("us="))
}

/// CPU time of a process so far, in seconds: the scheduler's nanosecond count summed over
/// its threads, or (without schedstats) utime + stime in 10 ms ticks, too coarse for a few
/// viewers.
fn cpu_seconds(pid: u32) -> Option<f64> {
    scheduled_seconds(pid).or_else(|| cpu_seconds_of(&pid.to_string()))
}

/// The first field of `/proc/<pid>/task/<tid>/schedstat` is the thread's time on a CPU, in ns.
fn scheduled_seconds(pid: u32) -> Option<f64> {
    let mut nanos = 0u64;
    for thread in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let schedstat = std::fs::read_to_string(thread.ok()?.path().join("schedstat")).ok()?;
        nanos += schedstat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(nanos as f64 / 1e9)
}

/// Per thread name: nanoseconds on a CPU and the number of times it was scheduled in (the
/// first and third fields of `schedstat`). Shows where the daemon's time goes: its own
/// executor threads, or the runtime's reactor thread waking them.
fn thread_times(pid: u32) -> BTreeMap<String, (u64, u64)> {
    let mut threads = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for task in tasks.flatten() {
        let read = |file: &str| std::fs::read_to_string(task.path().join(file)).unwrap_or_default();
        let schedstat = read("schedstat");
        let fields: Vec<u64> = schedstat
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        if let (Some(&nanos), Some(&runs)) = (fields.first(), fields.get(2)) {
            let entry = threads.entry(read("comm").trim().to_owned()).or_insert((0, 0));
            entry.0 += nanos;
            entry.1 += runs;
        }
    }
    threads
}

/// JSON: per daemon thread, CPU µs and times scheduled per delivered frame over the window.
fn per_thread(
    before: &BTreeMap<String, (u64, u64)>,
    after: &BTreeMap<String, (u64, u64)>,
    delivered: u64,
) -> String {
    let frames = delivered.max(1) as f64;
    let threads: serde_json::Map<String, serde_json::Value> = after
        .iter()
        .filter_map(|(name, &(nanos, runs))| {
            let (nanos0, runs0) = before.get(name).copied().unwrap_or((0, 0));
            let cpu_us = nanos.saturating_sub(nanos0) as f64 / 1e3 / frames;
            (cpu_us > 0.0).then(|| {
                let runs = runs.saturating_sub(runs0) as f64 / frames;
                let round = |v: f64| (v * 100.0).round() / 100.0;
                (
                    name.clone(),
                    serde_json::json!({ "cpu_per_frame_us": round(cpu_us), "runs_per_frame": round(runs) }),
                )
            })
        })
        .collect();
    serde_json::Value::Object(threads).to_string()
}

fn cpu_seconds_of(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
