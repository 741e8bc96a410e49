//! The HTTP and WebSocket front door on one port.
//!
//! Layers, from the socket up: [`server`] accepts connections within the caps
//! [`admission`] keeps; [`engine`] runs hyper on each (HTTP/1.0 and 1.1, deadlines, body
//! limits), answers WebSocket upgrades on the sinks' paths, and hands every other request
//! to tide; the routes and handlers below know nothing of sockets. [`body`] streams
//! responses with bounded memory and [`socket`] drops clients that stop reading.
//!
//! In tide, every request passes `middleware.rs` (the request counter, the security
//! headers) and [`access`]'s guard, then reaches a sink's `GET` endpoint, the core's
//! routes (`api.rs`), the pages (`web.rs`) or the recordings (`replays.rs`). This file
//! holds what they all share ([`AppState`]) and mounts them ([`Routes`]); the sinks'
//! endpoints come from the table the sinks keep, so a reload changes them.

pub mod access;
pub mod admission;
mod api;
pub mod body;
pub mod engine;
mod middleware;
mod replays;
pub mod server;
pub mod socket;
mod web;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use crate::auth::Auth;
use crate::bus::Bus;
use crate::config::Config;
use crate::http::access::Guard;
use crate::metrics::{Exporter, Metrics};
use crate::recordings::Recordings;
use crate::shutdown::Signal;
use crate::sinks::Endpoints;
use crate::sinks::switch::ModeSwitch;
use crate::source;

pub use api::{json_response, small_body};
pub use middleware::RouteLabels;
use middleware::{CountRequests, SecurityHeaders, SinkEndpoints, content_security_policy};
pub use server::{bind, serve};

/// What every HTTP handler can see.
#[derive(Clone)]
pub struct AppState {
    /// The configuration the daemon runs with.
    pub config: Arc<Config>,
    /// The frame bus.
    pub bus: Bus,
    /// The source's status.
    pub status: Arc<source::Status>,
    /// The current mode and the switch between modes.
    pub mode: Arc<ModeSwitch>,
    /// The recordings on disk.
    pub recordings: Arc<Recordings>,
    /// Live viewers connected right now.
    pub viewers: Arc<AtomicUsize>,
    /// The daemon's counters.
    pub metrics: Arc<Metrics>,
    /// Renders `/metrics`.
    pub exporter: Arc<Exporter>,
    /// Users and sessions, when `[auth]` is configured.
    pub auth: Option<Arc<Auth>>,
    /// The connection caps, which also count the files downloads hold open.
    pub admission: Arc<admission::Admission>,
    /// The paths the sinks answer (a reload changes them).
    pub endpoints: Arc<Endpoints>,
}

/// The core's routes, and the sinks' endpoints mounted on them.
pub struct Routes {
    app: tide::Server<AppState>,
    endpoints: Arc<Endpoints>,
    metrics: Arc<Metrics>,
    /// Checks WebSocket upgrades, which bypass tide's middleware.
    guard: Guard,
    config: Arc<Config>,
}

impl Routes {
    /// The core routes (pages, assets, `/health`, the API), then whatever the sinks answer.
    pub fn new(state: AppState) -> Routes {
        let cors = state.config.server.cors_origin.clone();
        let metrics = state.metrics.clone();
        let config = state.config.clone();
        let endpoints = state.endpoints.clone();
        let counter = CountRequests {
            labels: RouteLabels::new(endpoints.clone()),
        };
        let guard = Guard {
            auth: state.auth.clone(),
            cors_origin: state.config.server.cors_origin.clone(),
            allowed_hosts: state.config.server.allowed_hosts.clone(),
        };
        let headers = SecurityHeaders {
            cors,
            csp: content_security_policy(&state.config.viewer.ws_url),
            private: state.auth.is_some(),
        };
        let mut app = tide::with_state(state);
        app.with(counter);
        // Before the guard, so its refusals and redirects carry the headers too.
        app.with(headers);
        app.with(guard.clone());
        // Behind the guard like any route; looked up per request, since a reload may change
        // the sinks' paths.
        app.with(SinkEndpoints);
        web::routes(&mut app);
        api::routes(&mut app);
        replays::routes(&mut app);
        app.at("/login").get(web::login_page).post(access::login);
        app.at("/logout").post(access::logout);
        Routes {
            app,
            endpoints,
            metrics,
            guard,
            config,
        }
    }

    /// Everything mounted, as the engine serves it.
    pub fn into_front(self, shutdown: Signal) -> engine::Front {
        let server = &self.config.server;
        engine::Front {
            app: self.app,
            labels: RouteLabels::new(self.endpoints.clone()),
            endpoints: self.endpoints,
            guard: self.guard,
            metrics: self.metrics,
            head_timeout: Duration::from_secs(server.header_timeout_seconds),
            body_timeout: Duration::from_secs(server.body_timeout_seconds),
            send_timeout: Duration::from_secs(server.send_timeout_seconds),
            shutdown,
        }
    }
}
