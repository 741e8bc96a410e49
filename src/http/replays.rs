//! The replays API: the list of segments, the MP4 files with single-range `Range` support
//! (browsers seek with it), and the thumbnails. Names are checked against the exact naming
//! patterns before the filesystem is touched.

use std::path::PathBuf;

use serde_json::json;
use tide::{Body, Request, Response, StatusCode};

use crate::http::admission::FilePermit;
use crate::http::body::FileBody;
use crate::http::{AppState, json_response};
use crate::recordings::{segment_stem, thumbnail_stem};

/// Registers the replay routes.
pub fn routes(app: &mut tide::Server<AppState>) {
    app.at("/api/replays").get(list);
    app.at("/recordings/:name").get(recording);
    app.at("/thumbnails/:name").get(thumbnail);
}

async fn list(req: Request<AppState>) -> tide::Result {
    let recordings = req.state().recordings.clone();
    let segments = smol::unblock(move || recordings.list()).await;
    json_response(StatusCode::Ok, &serde_json::to_value(segments)?)
}

fn bad_name() -> tide::Result {
    json_response(StatusCode::BadRequest, &json!({ "error": "Invalid file name" }))
}

fn not_found() -> tide::Result {
    json_response(StatusCode::NotFound, &json!({ "error": "Not found" }))
}

async fn recording(req: Request<AppState>) -> tide::Result {
    let name = req.param("name").unwrap_or_default();
    if segment_stem(name).is_none() {
        return bad_name();
    }
    let recordings = &req.state().recordings;
    let path = recordings.recordings_dir().join(name);
    let (file, len, permit) = match open(&req, path).await {
        Opened::File(file, len, permit) => (file, len, permit),
        Opened::Missing => return not_found(),
        Opened::Busy => return busy(),
    };
    // The segment being written holds only headers until its first fragment (2 s in):
    // no player could play it yet.
    let stem = segment_stem(name).unwrap_or_default().to_owned();
    let recordings = req.state().recordings.clone();
    if !smol::unblock(move || recordings.playable(&stem, len)).await {
        let mut res = json_response(
            StatusCode::NotFound,
            &json!({ "error": "Nothing recorded in this segment yet; try again in 2 s" }),
        )?;
        res.insert_header("Retry-After", "2");
        return Ok(res);
    }
    let range = req.header("Range").map(|h| h.last().as_str().to_owned());
    let (status, start, count) = match range.as_deref().map(|r| parse_range(r, len)) {
        None | Some(Range::Ignore) => (StatusCode::Ok, 0, len),
        Some(Range::Bytes(start, end)) => (StatusCode::PartialContent, start, end - start + 1),
        Some(Range::Unsatisfiable) => {
            let mut res = Response::new(StatusCode::RequestedRangeNotSatisfiable);
            res.insert_header("Content-Range", format!("bytes */{len}"));
            res.insert_header("Accept-Ranges", "bytes");
            return Ok(res);
        }
    };
    let mut res = Response::new(status);
    let body = FileBody::new(file, start, count, permit);
    res.set_body(Body::from_reader(body, usize::try_from(count).ok()));
    res.insert_header("Content-Type", "video/mp4");
    res.insert_header("Accept-Ranges", "bytes");
    if status == StatusCode::PartialContent {
        res.insert_header(
            "Content-Range",
            format!("bytes {start}-{}/{len}", start + count - 1),
        );
    }
    Ok(res)
}

async fn thumbnail(req: Request<AppState>) -> tide::Result {
    let name = req.param("name").unwrap_or_default();
    if thumbnail_stem(name).is_none() {
        return bad_name();
    }
    let path = req.state().recordings.thumbnails_dir().join(name);
    let (file, len, permit) = match open(&req, path).await {
        Opened::File(file, len, permit) => (file, len, permit),
        Opened::Missing => return not_found(),
        Opened::Busy => return busy(),
    };
    let mut res = Response::new(StatusCode::Ok);
    let body = FileBody::new(file, 0, len, permit);
    res.set_body(Body::from_reader(body, usize::try_from(len).ok()));
    res.insert_header("Content-Type", "image/jpeg");
    res.insert_header("Cache-Control", "max-age=3600");
    Ok(res)
}

/// A file to serve, or why not.
enum Opened {
    /// The file, its length, and its descriptor counted against the clients' budget.
    File(std::fs::File, u64, FilePermit),
    Missing,
    /// Clients hold every descriptor they may.
    Busy,
}

/// Opens a file to serve, off the executor (an SD card can be slow).
async fn open(req: &Request<AppState>, path: PathBuf) -> Opened {
    let Some(permit) = req.state().admission.file() else {
        return Opened::Busy;
    };
    let opened = smol::unblock(move || {
        // A symlink placed among the recordings is not followed (it could point anywhere),
        // and a FIFO neither blocks the open nor is served. (Hard links are served: making
        // one takes write access to the directory, i.e. being the daemon's own user, and
        // the kernel's protected_hardlinks already refuses links to others' files; a backup
        // tool's links must not make recordings vanish.)
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)?;
        let meta = file.metadata()?;
        Ok::<_, std::io::Error>((meta.is_file(), file, meta.len()))
    })
    .await;
    match opened {
        Ok((true, file, len)) => Opened::File(file, len, permit),
        _ => Opened::Missing,
    }
}

fn busy() -> tide::Result {
    let mut res = json_response(
        StatusCode::ServiceUnavailable,
        &json!({ "error": "Too many downloads at once; try again later" }),
    )?;
    res.insert_header("Retry-After", "10");
    Ok(res)
}

/// What a `Range` header asks of a file of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
enum Range {
    /// Serve the whole file (no usable single byte range).
    Ignore,
    /// Inclusive byte range.
    Bytes(u64, u64),
    /// 416.
    Unsatisfiable,
}

fn parse_range(header: &str, len: u64) -> Range {
    // The unit is case-insensitive (RFC 9110 §14.1); the positions are plain digits.
    let header = header.trim();
    let Some(spec) = header
        .get(..6)
        .filter(|unit| unit.eq_ignore_ascii_case("bytes="))
        .map(|_| &header[6..])
    else {
        return Range::Ignore;
    };
    if spec.contains(',') {
        // Multiple ranges: serving the whole file is allowed and simpler.
        return Range::Ignore;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Range::Ignore;
    };
    let parse = |s: &str| {
        let s = s.trim();
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (first.trim().is_empty(), parse(first), parse(last)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(n)) => {
            if n == 0 || len == 0 {
                Range::Unsatisfiable
            } else {
                Range::Bytes(len.saturating_sub(n), len - 1)
            }
        }
        (false, Some(start), end) if last.trim().is_empty() || end.is_some() => {
            if start >= len {
                return Range::Unsatisfiable;
            }
            let end = end.map_or(len - 1, |e| e.min(len - 1));
            if end < start {
                Range::Ignore
            } else {
                Range::Bytes(start, end)
            }
        }
        _ => Range::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000), Range::Bytes(0, 99));
        assert_eq!(parse_range("bytes=900-", 1000), Range::Bytes(900, 999));
        assert_eq!(parse_range("bytes=900-5000", 1000), Range::Bytes(900, 999));
        assert_eq!(parse_range("bytes=-100", 1000), Range::Bytes(900, 999));
        assert_eq!(parse_range("bytes=-5000", 1000), Range::Bytes(0, 999));
        assert_eq!(parse_range("bytes=1000-", 1000), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-2", 1000), Range::Ignore);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), Range::Ignore);
        assert_eq!(parse_range("items=0-1", 1000), Range::Ignore);
        assert_eq!(parse_range("bytes=x-y", 1000), Range::Ignore);
        assert_eq!(parse_range("bytes=0-", 0), Range::Unsatisfiable);
        assert_eq!(parse_range("BYTES=0-99", 1000), Range::Bytes(0, 99));
        assert_eq!(parse_range("bytes=+1-9", 1000), Range::Ignore);
        assert_eq!(parse_range("bytes=-+5", 1000), Range::Ignore);
    }
}
