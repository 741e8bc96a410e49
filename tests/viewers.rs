//! Live viewers end to end: the real binary and camera, real WebSocket clients, fast,
//! slow, crowded and rude ones: every frame byte-identical, nobody held up by anyone else,
//! and closes that arrive after whole frames.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use croissant::splitter::jpeg_size;
use tungstenite::Message;

/// Args for fakecam's 1280x720 frames of about 100 KB at 30 fps: a few fill a socket.
const HD_CAMERA: &str = r#""--fps", "30", "--width", "1280", "--height", "720", "--noise", "11""#;

fn start_with_hd_camera() -> Daemon {
    Daemon::start(&fakecam_config(HD_CAMERA, ""))
}

#[test]
fn two_viewers_get_the_same_frames_byte_identical_to_the_source() {
    let tee = tempfile::tempdir().expect("tee dir");
    let args = format!(r#""--fps", "20", "--nasty", "--tee", "{}""#, tee.path().display());
    let daemon = Daemon::start(&fakecam_config(&args, ""));
    let mut a = daemon.viewer("/");
    let mut b = daemon.viewer("/ws");
    a.send("start");
    b.send("start");
    let mut seqs = [BTreeSet::new(), BTreeSet::new()];
    for _ in 0..30 {
        for (viewer, seen) in [&mut a, &mut b].into_iter().zip(seqs.iter_mut()) {
            let frame = viewer.frame();
            let seq = frame_seq(&frame);
            let written =
                std::fs::read(tee.path().join(format!("{seq}.jpg"))).expect("the source wrote this frame");
            assert!(frame == written, "frame {seq} differs from what the source wrote");
            seen.insert(seq);
        }
    }
    let common: Vec<_> = seqs[0].intersection(&seqs[1]).collect();
    assert!(
        common.len() >= 20,
        "viewers should see mostly the same frames: {seqs:?}"
    );
    // The nasty stream has garbage and Exif thumbnails: nothing may have been cut wrongly.
    assert!(
        !daemon.log_text().contains("dropped a corrupt frame"),
        "{}",
        daemon.log_text()
    );
}

#[test]
fn a_crowd_gets_frames_byte_identical_to_the_source_even_its_slow_members() {
    // Enough viewers that the fan-out stages frames once and sends them from there (as it
    // does beyond a few viewers per core), some of them slow, so frames go out in pieces.
    let tee = tempfile::tempdir().expect("tee dir");
    let args = format!(r#"{HD_CAMERA}, "--tee", "{}""#, tee.path().display());
    let daemon = Daemon::start(&fakecam_config(&args, ""));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut crowd: Vec<Viewer> = (0..20 * cores).map(|_| daemon.viewer("/")).collect();
    for viewer in &mut crowd {
        viewer.send("start");
    }
    let check = |jpeg: &[u8]| {
        let seq = frame_seq(jpeg);
        let written =
            std::fs::read(tee.path().join(format!("{seq}.jpg"))).expect("the source wrote this frame");
        assert!(jpeg == written, "frame {seq} differs from what the source wrote");
        seq
    };
    let mut last = vec![None; crowd.len()];
    for round in 0..12 {
        for (i, viewer) in crowd.iter_mut().enumerate() {
            // Every fourth viewer reads only every third round, and falls behind.
            if i % 4 == 3 && round % 3 != 0 {
                continue;
            }
            let seq = check(&viewer.frame());
            assert!(last[i] < Some(seq), "viewer {i}: frame {seq} after {:?}", last[i]);
            last[i] = Some(seq);
        }
    }
}

#[test]
fn a_viewer_that_never_reads_does_not_slow_others_or_grow_memory() {
    let daemon = Daemon::start(&fakecam_config(
        r#""--fps", "30", "--width", "1280", "--height", "720""#,
        "",
    ));
    // The stalled viewer: subscribes, then never reads a byte.
    let mut stalled = daemon.viewer("/");
    stalled.send("start");
    let mut fast = daemon.viewer("/");
    fast.send("start");
    // Warm up: let the stalled socket's buffers fill.
    let warm_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < warm_until {
        fast.frame();
    }
    let rss_before = daemon.rss_kib();
    let started = Instant::now();
    let first = frame_seq(&fast.frame());
    let mut last = first;
    let mut received = 1u64;
    while started.elapsed() < Duration::from_secs(4) {
        last = frame_seq(&fast.frame());
        received += 1;
    }
    let span = last - first + 1;
    let rss_after = daemon.rss_kib();
    assert!(
        received * 100 >= span * 95,
        "the fast viewer missed frames: got {received} of {span}"
    );
    assert!(
        span >= 90,
        "the source should have delivered ~120 frames in 4 s, got {span}"
    );
    assert!(
        rss_after < rss_before + 4096,
        "memory grew from {rss_before} KiB to {rss_after} KiB with a stalled viewer"
    );
    drop(stalled);
}

#[test]
fn unknown_messages_are_ignored_and_oversized_ones_close_the_socket() {
    let daemon = Daemon::start(&fakecam_config(r#""--fps", "20""#, ""));
    let mut viewer = daemon.viewer("/");
    viewer.send("hello");
    viewer.ws.send(Message::binary(vec![1, 2, 3])).expect("send");
    viewer.send("start");
    viewer.frame();
    viewer
        .ws
        .send(Message::binary(vec![0u8; 100_000]))
        .expect("send a big message");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match viewer.next() {
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => assert!(Instant::now() < deadline, "the socket stayed open"),
        }
    }
    // The daemon is fine afterwards.
    assert_eq!(daemon.get("/health").0, 200);
}

#[test]
fn a_viewer_that_stopped_reading_can_still_stop() {
    let daemon = start_with_hd_camera();
    let mut viewer = daemon.viewer("/");
    viewer.send("start");
    viewer.frame();
    // Read nothing more: the daemon's write to this viewer blocks on a full socket.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(daemon.health()["subscribers"], 1);
    viewer.send("stop");
    daemon.wait_for("the stop to release the camera", Duration::from_secs(5), |d| {
        d.health()["subscribers"] == 0 && d.source_pid().is_none()
    });
}

#[test]
fn pings_from_a_viewer_behind_on_reading_never_split_a_frame() {
    // Client libraries (Python's websockets, for one) ping every few seconds. The answer must
    // go between frames even when the daemon is in the middle of a frame the viewer has not
    // made room for yet.
    let daemon = start_with_hd_camera();
    let mut viewer = daemon.viewer("/");
    viewer.send("start");
    viewer.frame();
    for round in 0..3 {
        // Fall behind until the socket is full and a frame is half written, then ping.
        std::thread::sleep(Duration::from_millis(700));
        for i in 0..5u8 {
            viewer
                .ws
                .send(Message::Ping(vec![round, i].into()))
                .expect("send ping");
        }
        std::thread::sleep(Duration::from_millis(300));
        let (mut frames, mut pongs) = (0, 0);
        while frames < 40 && pongs < 5 || frames < 5 {
            match viewer.next() {
                Ok(Message::Binary(jpeg)) => {
                    let whole = jpeg.starts_with(&[0xFF, 0xD8]) && jpeg.ends_with(&[0xFF, 0xD9]);
                    assert!(whole, "round {round}: a frame arrived cut or spliced");
                    assert_eq!(jpeg_size(&jpeg), Some((1280, 720)));
                    frames += 1;
                }
                Ok(Message::Pong(payload)) => {
                    assert_eq!(
                        payload.as_ref(),
                        [round, pongs as u8],
                        "pongs answer the pings in order"
                    );
                    pongs += 1;
                }
                other => panic!("round {round}: the stream broke: {other:?}"),
            }
        }
        assert_eq!(pongs, 5, "every ping is answered");
    }
}

#[test]
fn a_viewer_behind_on_reading_that_closes_gets_the_close_after_whole_frames() {
    // A client that closes while the daemon is half-way through a frame must get the rest of
    // that frame and then the answering close (RFC 6455 §5.5.1); a close written inside the
    // frame is read as frame bytes, and the client reports 1006 after its close timeout.
    // Whatever the viewer sends after its close (a ping, a message, the end of its side of
    // the connection) must not keep the answer from going out.
    let daemon = start_with_hd_camera();
    for round in 0..4 {
        let mut viewer = daemon.viewer("/");
        viewer.send("start");
        viewer.frame();
        // Fall behind until the socket is full and a frame is half written, then close.
        std::thread::sleep(Duration::from_millis(700));
        viewer.ws.close(None).expect("send close");
        viewer.ws.flush().expect("flush");
        let socket = viewer.ws.get_mut();
        match round {
            // A masked ping, then a masked "start", written past the client library (which
            // sends nothing after its close).
            1 => socket.write_all(&[0x89, 0x80, 1, 2, 3, 4]).expect("ping"),
            2 => socket
                .write_all(&[0x81, 0x85, 0, 0, 0, 0, b's', b't', b'a', b'r', b't'])
                .expect("text"),
            3 => socket.shutdown(std::net::Shutdown::Write).expect("shut down"),
            _ => {}
        }
        let mut frames = 0;
        let answer = loop {
            match viewer.next() {
                Ok(Message::Binary(jpeg)) => {
                    let whole = jpeg.starts_with(&[0xFF, 0xD8]) && jpeg.ends_with(&[0xFF, 0xD9]);
                    assert!(whole, "round {round}: a frame arrived cut");
                    frames += 1;
                }
                Ok(Message::Close(answer)) => break answer,
                other => panic!("round {round}: no close after {frames} frames: {other:?}"),
            }
        };
        assert!(
            frames > 0,
            "round {round}: the socket was full when the close went out"
        );
        assert!(answer.is_none(), "round {round}: an answering close: {answer:?}");
        assert!(
            matches!(viewer.next(), Err(tungstenite::Error::ConnectionClosed)),
            "round {round}: the close handshake completed"
        );
    }
}

/// A client that reads 8 KB every 20 ms through a 4 KB receive buffer, as a viewer on a
/// slow link does; once told what, it also sends those bytes every fifth read, past its
/// WebSocket library (which sends nothing after its close).
struct SlowReader {
    socket: std::net::TcpStream,
    reads: u32,
    keep_sending: Option<Vec<u8>>,
}

impl std::io::Read for SlowReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        std::thread::sleep(Duration::from_millis(20));
        self.reads += 1;
        if let Some(bytes) = &self.keep_sending
            && self.reads.is_multiple_of(5)
        {
            let _ = self.socket.write_all(bytes);
        }
        let n = buf.len().min(8192);
        std::io::Read::read(&mut self.socket, &mut buf[..n])
    }
}

impl Write for SlowReader {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.socket.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.socket.flush()
    }
}

#[test]
fn a_slow_viewer_that_sends_more_after_its_close_still_gets_the_close() {
    // Hanging up with bytes from the viewer unread makes the kernel reset the connection,
    // and the viewer's kernel then drops what the viewer had not read yet: the end of the
    // last frame and the close. (Big frames, about 300 KB.)
    let daemon = Daemon::start(&fakecam_config(
        r#""--fps", "15", "--width", "1280", "--height", "720", "--noise", "40""#,
        "",
    ));
    let ping = vec![0x89u8, 0x80, 1, 2, 3, 4];
    let text = vec![0x81u8, 0x85, 0, 0, 0, 0, b's', b't', b'a', b'r', b't'];
    for after in [ping, text] {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
        socket.set_recv_buffer_size(4096).expect("receive buffer");
        let address: std::net::SocketAddr = format!("127.0.0.1:{}", daemon.port).parse().expect("address");
        socket.connect(&address.into()).expect("connect");
        let socket: std::net::TcpStream = socket.into();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let slow = SlowReader {
            socket,
            reads: 0,
            keep_sending: None,
        };
        let (mut ws, _) =
            tungstenite::client(format!("ws://127.0.0.1:{}/", daemon.port), slow).expect("handshake");
        ws.send(Message::text("start")).expect("start");
        while !matches!(ws.read().expect("a frame"), Message::Binary(_)) {}
        // Behind, with a frame half written; then the close, and more while reading on.
        std::thread::sleep(Duration::from_millis(1300));
        ws.close(None).expect("close");
        ws.flush().expect("flush");
        ws.get_mut().keep_sending = Some(after);
        let mut frames = 0;
        loop {
            match ws.read() {
                Ok(Message::Binary(jpeg)) => {
                    assert!(jpeg.ends_with(&[0xFF, 0xD9]), "a frame arrived cut");
                    frames += 1;
                }
                Ok(Message::Close(_)) => break,
                other => panic!("no close after {frames} frames: {other:?}"),
            }
        }
    }
}

#[test]
fn a_slow_viewer_gets_whole_frames_in_order_and_never_falls_far_behind() {
    let daemon = start_with_hd_camera();
    let mut slow = daemon.viewer("/");
    // A small receive buffer, as on a slow link (on loopback Linux would otherwise let it
    // grow to megabytes and queue frames there, beyond the daemon's reach).
    let size: libc::c_int = 16 * 1024;
    // SAFETY: a valid socket and an option value of the size given.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(slow.ws.get_ref()),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUF");
    slow.send("start");
    let mut seqs = Vec::new();
    let mut oldest_ms = 0;
    for _ in 0..15 {
        // Read one frame every 200 ms: about one in six of the camera's.
        std::thread::sleep(Duration::from_millis(200));
        let jpeg = slow.frame();
        assert_eq!(jpeg_size(&jpeg), Some((1280, 720)), "a whole frame");
        assert!(jpeg.ends_with(&[0xFF, 0xD9]), "a whole frame");
        let written_us = comment_field(&jpeg, "us=").expect("fakecam's write time");
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_micros() as u64;
        oldest_ms = oldest_ms.max(now_us.saturating_sub(written_us) / 1000);
        seqs.push(frame_seq(&jpeg));
    }
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "frames out of order: {seqs:?}"
    );
    // Queued frames would come one after the other; skipping keeps up with the camera.
    let span = seqs[seqs.len() - 1] - seqs[0];
    assert!(
        span >= 3 * seqs.len() as u64,
        "the slow viewer should skip frames, not queue them: {seqs:?}"
    );
    // What it reads is at most about one frame older than its read pace (200 ms), never
    // seconds old (here about 215 ms; the bound leaves room for a busy machine).
    assert!(oldest_ms < 600, "a frame was {oldest_ms} ms old when read");
}

/// The next message, which must be text holding JSON.
fn json_message(viewer: &mut Viewer) -> serde_json::Value {
    match viewer.next().expect("a message") {
        Message::Text(text) => serde_json::from_str(text.as_str()).expect("JSON"),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// The next message, which must be a frame.
fn binary_message(viewer: &mut Viewer) -> Vec<u8> {
    match viewer.next().expect("a message") {
        Message::Binary(data) => data.to_vec(),
        other => panic!("expected a frame, got {other:?}"),
    }
}

/// The next message if one comes within `wait` (the viewer's usual 10 s after).
fn message_within(viewer: &mut Viewer, wait: Duration) -> Result<Message, tungstenite::Error> {
    let socket = viewer.ws.get_ref();
    socket.set_read_timeout(Some(wait)).expect("timeout");
    let message = viewer.next();
    viewer
        .ws
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    message
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// A stamp and the frame behind it: the stamp's capture time is when the daemon got the
/// frame, just after fakecam wrote its own time into it. Returns the stamp's `seq`.
fn stamped_frame(viewer: &mut Viewer) -> u64 {
    let stamp = json_message(viewer);
    let frame = binary_message(viewer);
    let at = stamp["at"].as_u64().expect("at");
    let written_ms = comment_field(&frame, "us=").expect("fakecam's time") / 1000;
    assert!(
        at >= written_ms && at - written_ms < 1000,
        "stamp {stamp} does not describe the frame written at {written_ms}"
    );
    stamp["seq"].as_u64().expect("seq")
}

#[test]
fn a_flow_controlled_viewer_gets_stamped_frames_only_as_it_draws_them() {
    let daemon = Daemon::start(&fakecam_config(r#""--fps", "30""#, ""));
    let mut plain = daemon.viewer("/");
    plain.send("start");
    let mut viewer = daemon.viewer("/");
    let asked = unix_ms();
    viewer.send("start credit=2");
    // The daemon's clock first, then two stamped frames, as much as the credit allows.
    let clock = json_message(&mut viewer)["clock"].as_u64().expect("clock");
    assert!((asked..=unix_ms()).contains(&clock), "clock {clock}");
    let first = stamped_frame(&mut viewer);
    let second = stamped_frame(&mut viewer);
    assert!(second > first);
    // At 30 fps, a second without a `drawn` would have brought 30 more frames.
    let beyond = message_within(&mut viewer, Duration::from_secs(1));
    assert!(beyond.is_err(), "a frame came beyond the credit: {beyond:?}");
    // One `drawn`: the newest frame, not the next in line.
    viewer.send("drawn");
    let newest = stamped_frame(&mut viewer);
    assert!(newest > second + 5, "got frame {newest} after {second}");
    // Each `drawn` brings one frame more.
    let mut last = newest;
    for _ in 0..3 {
        viewer.send("drawn");
        let next = stamped_frame(&mut viewer);
        assert!(next > last);
        last = next;
    }
    let beyond = message_within(&mut viewer, Duration::from_secs(1));
    assert!(beyond.is_err(), "a frame came with no credit left: {beyond:?}");
    // A viewer of the original protocol meanwhile got frames, and nothing else.
    for _ in 0..20 {
        assert!(
            matches!(plain.next().expect("a message"), Message::Binary(_)),
            "a plain `start` viewer got a message other than a frame"
        );
    }
}
