//! The core's own routes: `/health`, `/api/status`, `/metrics`, `/snapshot.jpg` and
//! `/settings`, and the helpers every handler uses for small bodies and JSON answers.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_lite::future;
use serde_json::json;
use tide::{Body, Request, Response, StatusCode};
use tracing::warn;

use super::{AppState, body};
use crate::mode::Mode;

/// Mounts the core's routes.
pub(super) fn routes(app: &mut tide::Server<AppState>) {
    app.at("/health").get(health);
    app.at("/api/status").get(status);
    app.at("/metrics").get(metrics_text);
    app.at("/snapshot.jpg").get(snapshot);
    app.at("/settings")
        .get(get_settings)
        .post(post_settings)
        .options(preflight);
}

/// A source that should run but sent nothing for this long makes `/health` answer 503
/// (so does an enabled sink that cannot do its work: `degraded`).
const HEALTH_STARVED_MS: u64 = 5_000;

async fn health(req: Request<AppState>) -> tide::Result {
    let state = req.state();
    let snap = state.status.snapshot();
    let wanted = state.bus.demand().is_wanted();
    let starved = wanted && snap.starved_ms.is_some_and(|ms| ms > HEALTH_STARVED_MS);
    // Public: state and counters in the daemon's own words, never what a program printed.
    let problems: Vec<_> = state
        .metrics
        .problems()
        .into_iter()
        .map(|(sink, problem)| json!({ "sink": sink, "reason": problem.reason }))
        .collect();
    let health = match (starved, problems.is_empty()) {
        (true, _) => "stalled",
        (false, false) => "degraded",
        (false, true) => "ok",
    };
    let body = json!({
        "status": health,
        "problems": problems,
        "uptime": state.status.started_at().elapsed().as_secs(),
        "mode": state.mode.current(),
        "recording": state.recordings.current().map(|c| c.stem),
        "source": {
            "kind": state.status.config().kind_name(),
            "state": snap.state,
            "pid": snap.pid,
            "wanted": wanted,
            "restarts": snap.restarts,
            "frames": snap.frames,
            // While it waits to retry: why, in the daemon's words (the program's own
            // output may hold addresses or credentials; /api/status shows it).
            "reason": (snap.state == crate::source::State::Backoff).then_some(snap.last_reason).flatten(),
        },
        "last_frame_age_ms": snap.last_frame_age_ms,
        "fps": snap.fps,
        "subscribers": state.bus.subscribers(),
        "viewers": state.viewers.load(Ordering::Relaxed),
    });
    let mut res = Response::new(if health == "ok" {
        StatusCode::Ok
    } else {
        StatusCode::ServiceUnavailable
    });
    res.set_body(Body::from_json(&body)?);
    res.insert_header("Cache-Control", "no-store");
    Ok(res)
}

/// `GET /api/status`: everything the dashboard shows.
async fn status(req: Request<AppState>) -> tide::Result {
    let state = req.state();
    let snap = state.status.snapshot();
    let recordings = state.recordings.clone();
    let dir = state.config.storage.dir.clone();
    let (segments, disk) =
        smol::unblock(move || (recordings.list(), crate::recordings::disk_space(&dir))).await;
    let current = state.recordings.current();
    let source = state.status.config();
    let sized_by_config = !matches!(source.kind, crate::config::SourceKind::Command);
    let user = crate::http::access::identity(&req);
    let body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "user": user,
        "uptime": state.status.started_at().elapsed().as_secs(),
        "mode": state.mode.current(),
        "source": {
            "kind": source.kind_name(),
            "state": snap.state,
            "pid": snap.pid,
            "wanted": state.bus.demand().is_wanted(),
            "restarts": snap.restarts,
            "frames": snap.frames,
            "fps": snap.fps,
            // A command's own arguments decide its picture; the config's size is not it.
            "width": sized_by_config.then_some(source.width),
            "height": sized_by_config.then_some(source.height),
            "framerate": source.nominal_framerate(),
            "last_frame_age_ms": snap.last_frame_age_ms,
            "last_error": snap.last_error,
            "last_reason": snap.last_reason,
        },
        "viewers": state.viewers.load(Ordering::Relaxed),
        "problems": state
            .metrics
            .problems()
            .into_iter()
            .map(|(sink, problem)| json!({ "sink": sink, "reason": problem.reason, "detail": problem.detail }))
            .collect::<Vec<_>>(),
        "recording": {
            "active": current.is_some(),
            "segment": current.map(|c| c.stem),
        },
        "disk": {
            "free_bytes": disk.map(|(free, _)| free),
            "total_bytes": disk.map(|(_, total)| total),
            "recordings_bytes": segments.iter().map(|s| s.bytes).sum::<u64>(),
            "segments": segments.len(),
        },
    });
    json_response(StatusCode::Ok, &body)
}

/// `GET /metrics`: Prometheus text format. Rendered off the executor: it reads the disk's
/// free space, which a hung filesystem could make slow.
async fn metrics_text(req: Request<AppState>) -> tide::Result {
    let exporter = req.state().exporter.clone();
    let text = smol::unblock(move || exporter.render()).await;
    let mut res = Response::new(StatusCode::Ok);
    res.set_body(text);
    res.insert_header("Content-Type", crate::metrics::CONTENT_TYPE);
    res.insert_header("Cache-Control", "no-store");
    Ok(res)
}

/// `GET /snapshot.jpg`: the newest frame, at most one frame interval old. With the camera
/// off (on-demand, nobody watching) it starts it, answers with its first frame, and lets it
/// stop again after the grace period.
async fn snapshot(req: Request<AppState>) -> tide::Result {
    let state = req.state();
    let interval = Duration::from_secs_f64(1.0 / f64::from(state.status.config().framerate.max(1)));
    let fresh = state
        .bus
        .latest()
        .filter(|f| f.at.elapsed().is_ok_and(|age| age <= interval));
    let frame = match fresh {
        Some(frame) => Some(frame),
        None => {
            let subscription = state.bus.subscribe(crate::bus::Policy::Latest);
            let wait = Duration::from_secs(state.config.server.snapshot_timeout_seconds);
            future::or(async { Some(subscription.recv().await) }, async {
                smol::Timer::after(wait).await;
                None
            })
            .await
        }
    };
    let Some(frame) = frame else {
        let error = format!(
            "no frame from the camera within {} s; see /api/status for its state",
            state.config.server.snapshot_timeout_seconds
        );
        return json_response(StatusCode::ServiceUnavailable, &json!({ "error": error }));
    };
    let mut res = Response::new(StatusCode::Ok);
    res.set_body(body::SharedBody::new(frame.jpeg).into_body());
    res.insert_header("Content-Type", "image/jpeg");
    res.insert_header("Cache-Control", "no-store");
    Ok(res)
}

async fn get_settings(req: Request<AppState>) -> tide::Result {
    json_response(StatusCode::Ok, &json!({ "mode": req.state().mode.current() }))
}

/// `POST /settings` with `{"mode": "..."}`, answering exactly as the original server did.
async fn post_settings(mut req: Request<AppState>) -> tide::Result {
    let body = small_body(&mut req).await;
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return json_response(StatusCode::BadRequest, &json!({ "error": "Invalid JSON" }));
    };
    let Some(mode) = value.get("mode").and_then(|m| m.as_str()).and_then(Mode::parse) else {
        return json_response(StatusCode::BadRequest, &json!({ "error": "Invalid mode" }));
    };
    let switch = req.state().mode.clone();
    if let Err(error) = switch.set(mode).await {
        warn!(%error, "cannot save the mode");
        return json_response(
            StatusCode::InternalServerError,
            &json!({ "error": format!("cannot save the mode: {error}") }),
        );
    }
    json_response(StatusCode::Ok, &json!({ "status": "updated", "mode": mode }))
}

/// A request body: the engine has already read it whole (at most
/// [`super::engine::MAX_BODY`] bytes, within the body deadline), so this does not wait.
pub async fn small_body(req: &mut Request<AppState>) -> Vec<u8> {
    req.body_bytes().await.unwrap_or_default()
}

/// CORS preflight for `POST /settings` from another origin (a JSON body is not a "simple"
/// request).
/// Only the configured `cors_origin` (a single origin) may post from its pages; `*`
/// opens reads, never writes, so the browser is told nothing that would let it post.
async fn preflight(req: Request<AppState>) -> tide::Result {
    let mut res = Response::new(StatusCode::NoContent);
    let cors = &req.state().config.server.cors_origin;
    if !cors.is_empty() && cors != "*" {
        res.insert_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        res.insert_header("Access-Control-Allow-Headers", "Content-Type");
        res.insert_header("Access-Control-Max-Age", "600");
    }
    Ok(res)
}

/// A JSON response with `status`.
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> tide::Result {
    let mut res = Response::new(status);
    res.set_body(Body::from_json(body)?);
    res.insert_header("Cache-Control", "no-store");
    Ok(res)
}
