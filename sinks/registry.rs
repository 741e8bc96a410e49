//! Every sink type the daemon has. The config parses `[sinks.*]` tables with it and the
//! daemon builds them with it; it is the one list a new sink joins.

use super::{Registry, SinkType, mjpeg, recorder, relay, retention, thumbnailer, websocket};

/// The sink types, by their `type` names.
pub static TYPES: Registry = Registry(&[
    SinkType::of::<websocket::Config>("websocket"),
    SinkType::of::<mjpeg::Config>("http-mjpeg"),
    SinkType::of::<recorder::Config>("recorder"),
    SinkType::of::<thumbnailer::Config>("thumbnailer"),
    SinkType::of::<retention::Config>("retention"),
    SinkType::of::<relay::Config>("relay"),
]);
