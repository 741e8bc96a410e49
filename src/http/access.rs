//! The HTTP side of access control: who may reach which route, cross-site refusals, and
//! the login and logout endpoints. [`crate::auth`] knows users and sessions; this module
//! applies them to requests, both tide's and the WebSocket upgrades the engine answers.
//!
//! Cross-site protection holds with or without `[auth]`: a request that changes state
//! must come from a page of this daemon's own origin (scheme, host and port) or of the
//! configured `cors_origin`. Browsers say where a request comes from in `Origin` (or, for
//! some, only in `Referer`); a request with neither is not a browser's and passes, so curl
//! and scripts keep working.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tide::{Request, Response, StatusCode};

use crate::auth::{Auth, COOKIE, Denied, Identity, Role};
use crate::http::{AppState, json_response};
use crate::shutdown::Ending;

/// Routes anyone may reach: monitoring, and what the login page itself needs.
const PUBLIC: [&str; 5] = [
    "/health",
    "/login",
    "/logout",
    "/assets/style.css",
    "/assets/login.js",
];
/// Said to a browser that reached us by a name we do not answer to.
const UNKNOWN_HOST: &str = "Unknown host name: without [auth], add it to [server] allowed_hosts";
/// What asks a tool (VLC, curl, Home Assistant) for Basic credentials.
const BASIC_CHALLENGE: &str = "Basic realm=\"Croissant\", charset=\"UTF-8\"";
/// Pages a login may return to (relative to the login page, so subpaths keep working).
const PAGES: [&str; 3] = ["", "stream", "recordings"];

/// What a WebSocket upgrade carries that access control looks at.
#[derive(Debug)]
pub struct UpgradeHeads {
    /// `Cookie`
    pub cookie: Option<String>,
    /// `Authorization`
    pub authorization: Option<String>,
    /// Every `Origin` (a browser sends one).
    pub origins: Vec<String>,
    /// `Referer`
    pub referer: Option<String>,
    /// `Host`
    pub host: Option<String>,
    /// `X-Forwarded-Proto`, from a TLS proxy in front.
    pub forwarded_proto: Option<String>,
    /// Who is asking.
    pub client: IpAddr,
}

/// Checks every request: where it comes from for state changes, then identity when
/// `[auth]` is on.
#[derive(Clone)]
pub struct Guard {
    /// `None` when everyone may do everything.
    pub auth: Option<Arc<Auth>>,
    /// `[server] cors_origin`: `*` lets any page read; a single origin may also post.
    pub cors_origin: String,
    /// `[server] allowed_hosts`: names beyond the local ones that, without `[auth]`,
    /// browsers may reach us by.
    pub allowed_hosts: Vec<String>,
}

/// A refused WebSocket upgrade: status, message, and headers to send with it.
#[derive(Debug)]
pub struct Refusal {
    /// The HTTP status.
    pub status: u16,
    /// Said in the JSON body.
    pub error: &'static str,
    /// Such as `WWW-Authenticate` or `Retry-After`.
    pub headers: Vec<(&'static str, String)>,
}

impl Guard {
    /// Whether a request that claims to come from `origin` (or, without one, from the page
    /// in `referer`) may act here, reaching us at `host` over `https` or not.
    fn same_site(
        &self,
        origin: Option<&str>,
        referer: Option<&str>,
        host: Option<&str>,
        https: bool,
    ) -> bool {
        let source = match (origin, referer) {
            (Some(origin), _) => origin.trim().to_owned(),
            (None, Some(referer)) => match referer_origin(referer) {
                Some(origin) => origin,
                None => return false,
            },
            // Not a browser: curl, scripts, the original server's clients.
            (None, None) => return true,
        };
        let configured = !self.cors_origin.is_empty() && self.cors_origin != "*";
        if configured && same_origin(&source, &self.cors_origin) {
            return true;
        }
        let Some(host) = host else { return false };
        let own = format!("{}://{}", if https { "https" } else { "http" }, host.trim());
        same_origin(&source, &own)
    }

    /// Without `[auth]`, whether a browser reached us by a name it may: an address, or a
    /// name only the LAN resolves. A page of any site can point its own name at our
    /// address (DNS rebinding) and then be of "our own origin"; with `[auth]` it gets
    /// nothing from that (the cookie stays with the real name), without it everything.
    fn host_allowed(&self, host: Option<&str>) -> bool {
        if self.auth.is_some() || self.allowed_hosts.iter().any(|h| h == "*") {
            return true;
        }
        // No Host: HTTP/1.0 tools, never a browser.
        let Some(host) = host.map(str::trim) else {
            return true;
        };
        let name = match host.strip_prefix('[') {
            Some(v6) => {
                return v6
                    .split_once(']')
                    .is_some_and(|(a, _)| a.parse::<std::net::Ipv6Addr>().is_ok());
            }
            None => host.rsplit_once(':').map_or(host, |(name, _)| name),
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if name.parse::<std::net::Ipv4Addr>().is_ok() || !name.contains('.') {
            return true;
        }
        const LOCAL: [&str; 7] = [
            ".localhost",
            ".local",
            ".lan",
            ".home.arpa",
            ".internal",
            ".localdomain",
            ".home",
        ];
        LOCAL.iter().any(|suffix| name.ends_with(suffix)) || self.allowed_hosts.contains(&name)
    }

    /// Checks a WebSocket upgrade. Without `[auth]`, pages of any site may watch while
    /// `cors_origin = "*"` lets them read everything else too; otherwise the page must be
    /// ours (or the configured origin), and with `[auth]` the viewer logged in. On success,
    /// when the viewer's session ends, if it has one.
    pub async fn upgrade(&self, heads: &UpgradeHeads) -> Result<Option<Ending>, Refusal> {
        let https = heads
            .forwarded_proto
            .as_deref()
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
        if !self.host_allowed(heads.host.as_deref()) {
            return Err(Refusal {
                status: 403,
                error: UNKNOWN_HOST,
                headers: Vec::new(),
            });
        }
        let open_reads = self.cors_origin == "*" && self.auth.is_none();
        // Two Origin headers are no browser's doing.
        let allowed = heads.origins.len() <= 1
            && self.same_site(
                heads.origins.first().map(String::as_str),
                heads.referer.as_deref(),
                heads.host.as_deref(),
                https,
            );
        if !open_reads && !allowed {
            return Err(Refusal {
                status: 403,
                error: "Cross-origin request refused",
                headers: Vec::new(),
            });
        }
        let Some(auth) = &self.auth else { return Ok(None) };
        match auth
            .identify(
                heads.cookie.as_deref(),
                heads.authorization.as_deref(),
                heads.client,
            )
            .await
        {
            Ok(Some((_, ending))) => Ok(ending),
            Ok(None) => Err(Refusal {
                status: 401,
                error: "Login required",
                headers: vec![("WWW-Authenticate", BASIC_CHALLENGE.to_owned())],
            }),
            Err(wait) => Err(Refusal {
                status: 429,
                error: "Too many login attempts; try again later",
                headers: vec![("Retry-After", retry_after(wait))],
            }),
        }
    }
}

#[tide::utils::async_trait]
impl tide::Middleware<AppState> for Guard {
    async fn handle(&self, mut req: Request<AppState>, next: tide::Next<'_, AppState>) -> tide::Result {
        let changes_state = !matches!(
            req.method(),
            tide::http::Method::Get | tide::http::Method::Head | tide::http::Method::Options
        );
        let header =
            |req: &Request<AppState>, name: &str| req.header(name).map(|v| v.last().as_str().to_owned());
        if !self.host_allowed(header(&req, "Host").as_deref()) && req.url().path() != "/health" {
            return json_response(StatusCode::Forbidden, &json!({ "error": UNKNOWN_HOST }));
        }
        if changes_state {
            let https =
                header(&req, "X-Forwarded-Proto").is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
            // Two Origin headers are no browser's doing.
            let origins = req.header("Origin").map_or(0, |values| values.iter().count());
            let allowed = origins <= 1
                && self.same_site(
                    header(&req, "Origin").as_deref(),
                    header(&req, "Referer").as_deref(),
                    header(&req, "Host").as_deref(),
                    https,
                );
            if !allowed {
                return json_response(
                    StatusCode::Forbidden,
                    &json!({ "error": "Cross-origin request refused" }),
                );
            }
        }
        let Some(auth) = &self.auth else {
            return Ok(next.run(req).await);
        };
        let path = req.url().path().to_owned();
        if PUBLIC.contains(&path.as_str()) || req.method() == tide::http::Method::Options {
            return Ok(next.run(req).await);
        }
        let identified = auth
            .identify(
                header(&req, "Cookie").as_deref(),
                header(&req, "Authorization").as_deref(),
                client_address(&req),
            )
            .await;
        let (identity, ending) = match identified {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(unauthenticated(&req, &path)),
            Err(wait) => return Ok(too_many_attempts(&req, wait)),
        };
        if changes_state && path == "/settings" && identity.role < Role::Admin {
            return json_response(
                StatusCode::Forbidden,
                &json!({ "error": "Switching the mode needs an admin" }),
            );
        }
        req.set_ext(identity);
        if let Some(ending) = ending {
            req.set_ext(ending);
        }
        Ok(next.run(req).await)
    }
}

/// The client's address, as the engine saw it.
pub fn client_address(req: &Request<AppState>) -> IpAddr {
    req.peer_addr()
        .and_then(|peer| peer.parse::<std::net::SocketAddr>().ok())
        // An IPv4 client of a dual-stack listener as itself, not as `::ffff:a.b.c.d`, so
        // every log line names it the same way.
        .map_or(IpAddr::from([0, 0, 0, 0]), |peer| peer.ip().to_canonical())
}

/// A page navigation goes to the login page; anything else gets 401, with a Basic
/// challenge for tools (VLC, Home Assistant, curl) but not for our own pages' scripts,
/// where it would pop up the browser's password dialog.
fn unauthenticated(req: &Request<AppState>, path: &str) -> Response {
    if is_navigation(req) && req.method() == tide::http::Method::Get {
        let page = path.trim_start_matches('/');
        let location = if PAGES.contains(&page) && !page.is_empty() {
            format!("login?next={page}")
        } else {
            "login".to_owned()
        };
        return redirect(&location);
    }
    let mut res = Response::new(StatusCode::Unauthorized);
    res.set_body(json!({ "error": "Login required" }));
    res.insert_header("Cache-Control", "no-store");
    let fetch_mode = req.header("Sec-Fetch-Mode").map(|v| v.as_str().to_owned());
    if !matches!(fetch_mode.as_deref(), Some("cors" | "same-origin")) {
        res.insert_header("WWW-Authenticate", BASIC_CHALLENGE);
    }
    res
}

/// Whether a browser is loading a page (rather than a script fetching data).
fn is_navigation(req: &Request<AppState>) -> bool {
    let fetch_mode = req.header("Sec-Fetch-Mode").map(|v| v.as_str().to_owned());
    let wants_html = req
        .header("Accept")
        .is_some_and(|accept| accept.as_str().contains("text/html"));
    fetch_mode.as_deref() == Some("navigate") || (fetch_mode.is_none() && wants_html)
}

/// 429: this client (or this user) tried too many passwords; when to try again.
fn too_many_attempts(req: &Request<AppState>, wait: Duration) -> Response {
    let mut res = Response::new(StatusCode::TooManyRequests);
    let seconds = retry_after(wait);
    if is_navigation(req) || req.method() == tide::http::Method::Post {
        res.set_body(format!(
            "<!doctype html><meta charset=\"utf-8\"><title>Too many attempts</title>\
             <p>Too many login attempts from your address or for this user. Try again in {seconds} s. \
             <a href=\"login\">Back to the login page</a></p>"
        ));
        res.insert_header("Content-Type", "text/html; charset=utf-8");
    } else {
        res.set_body(json!({ "error": "Too many login attempts; try again later" }));
    }
    res.insert_header("Retry-After", seconds);
    res.insert_header("Cache-Control", "no-store");
    res
}

/// Whole seconds, rounded up, for `Retry-After`.
fn retry_after(wait: Duration) -> String {
    wait.as_secs_f64().ceil().max(1.0).to_string()
}

/// `POST /login` from the login form: on success a session cookie and a redirect to the
/// page the user came for; on failure back to the form with a notice.
pub async fn login(mut req: Request<AppState>) -> tide::Result {
    let Some(auth) = req.state().auth.clone() else {
        return Ok(redirect("./"));
    };
    let body = crate::http::small_body(&mut req).await;
    let field = |name: &str| {
        form_urlencoded::parse(&body)
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default()
    };
    let next = Some(field("next"))
        .filter(|page| PAGES.contains(&page.as_str()))
        .unwrap_or_default();
    let (token, identity) = match auth
        .login(&field("user"), &field("password"), client_address(&req))
        .await
    {
        Ok(session) => session,
        Err(Denied::Throttled(wait)) => return Ok(too_many_attempts(&req, wait)),
        Err(Denied::Wrong) => {
            let back = if next.is_empty() {
                "login?failed=1".to_owned()
            } else {
                format!("login?failed=1&next={next}")
            };
            return Ok(redirect(&back));
        }
    };
    tracing::info!(user = %identity.name, role = ?identity.role, client = %client_address(&req), "logged in");
    let mut res = redirect(&format!("./{next}"));
    let secure = req
        .header("X-Forwarded-Proto")
        .is_some_and(|p| p.as_str().eq_ignore_ascii_case("https"));
    res.insert_header(
        "Set-Cookie",
        format!(
            "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            auth.session_lifetime().as_secs(),
            if secure { "; Secure" } else { "" }
        ),
    );
    Ok(res)
}

/// `POST /logout`: ends the session, and every stream opened with it, and clears the
/// cookie.
pub async fn logout(req: Request<AppState>) -> tide::Result {
    if let Some(auth) = &req.state().auth {
        auth.logout(req.header("Cookie").map(|v| v.as_str()));
    }
    let mut res = redirect("login");
    res.insert_header(
        "Set-Cookie",
        format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(res)
}

fn redirect(location: &str) -> Response {
    let mut res = Response::new(StatusCode::SeeOther);
    res.insert_header("Location", location);
    res.insert_header("Cache-Control", "no-store");
    res
}

/// Whether two origins (`scheme://host[:port]`) are the same: scheme and host compared
/// without case, a missing port taken as the scheme's default.
fn same_origin(a: &str, b: &str) -> bool {
    match (parse_origin(a), parse_origin(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// `(scheme, host, port)` of `scheme://host[:port]`; `None` for `null` or anything else.
fn parse_origin(origin: &str) -> Option<(String, String, u16)> {
    let (scheme, authority) = origin.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    // A browser's Origin is its page's: http or https, never ws.
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    if authority.is_empty() || authority.contains(['/', '@', '?', '#']) {
        return None;
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        (format!("[{host}]"), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (authority.to_owned(), None),
        }
    };
    let port = match port {
        Some(port) => port.parse().ok()?,
        None => default_port,
    };
    Some((scheme, host.to_ascii_lowercase(), port))
}

/// The origin of the page a `Referer` names.
fn referer_origin(referer: &str) -> Option<String> {
    let (scheme, rest) = referer.trim().split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    Some(format!("{scheme}://{authority}"))
}

/// The identity a handler runs for, when `[auth]` is on.
pub fn identity(req: &Request<AppState>) -> Option<Identity> {
    req.ext::<Identity>().cloned()
}

/// When the session a request came with ends (logout, expiry), if it came with one.
pub fn session_ending(req: &Request<AppState>) -> Option<Ending> {
    req.ext::<Ending>().cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(cors: &str) -> Guard {
        Guard {
            auth: None,
            cors_origin: cors.into(),
            allowed_hosts: vec!["cam.example.org".into()],
        }
    }

    #[test]
    fn without_auth_browsers_must_reach_us_by_a_local_name() {
        let open = guard("*");
        for host in [
            None,
            Some("192.168.1.20:8080"),
            Some("[fe80::1]:8080"),
            Some("localhost:8080"),
            Some("raspberrypi:8080"),
            Some("raspberrypi.local"),
            Some("cam.lan:8080"),
            Some("cam.home.arpa"),
            Some("CAM.EXAMPLE.ORG:8080"),
            Some("cam.example.org."),
        ] {
            assert!(open.host_allowed(host), "{host:?}");
        }
        for host in [
            "rebind.evil.example:8080",
            "evil.example",
            "[not-an-ip]:80",
            "127.0.0.1.evil.example",
        ] {
            assert!(!open.host_allowed(Some(host)), "{host}");
        }
        let any = Guard {
            allowed_hosts: vec!["*".into()],
            ..guard("*")
        };
        assert!(any.host_allowed(Some("evil.example")));
    }

    #[test]
    fn only_pages_of_our_own_origin_or_the_configured_one_may_act() {
        let open = guard("*");
        let host = Some("pi:8080");
        assert!(open.same_site(None, None, host, false), "not a browser");
        assert!(open.same_site(Some("http://PI:8080"), None, host, false));
        assert!(open.same_site(None, Some("http://pi:8080/stream?x=1"), host, false));
        for other in [
            "http://evil.example",
            "null",
            "http://pi:9999",
            "https://pi:8080",
            "http://pi:8080.evil.com",
            "http://pi",
            "ws://pi:8080",
        ] {
            assert!(!open.same_site(Some(other), None, host, false), "{other}");
        }
        assert!(!open.same_site(None, Some("http://evil.example/page"), host, false));
        // Behind a TLS proxy on the default port.
        assert!(open.same_site(
            Some("https://cam.example.org"),
            None,
            Some("cam.example.org"),
            true
        ));
        assert!(!open.same_site(
            Some("http://cam.example.org"),
            None,
            Some("cam.example.org"),
            true
        ));
        assert!(open.same_site(Some("http://[::1]:8080"), None, Some("[::1]:8080"), false));
        let partner = guard("https://dash.example");
        assert!(partner.same_site(Some("https://dash.example"), None, host, false));
        assert!(partner.same_site(Some("https://dash.example:443"), None, host, false));
        assert!(!partner.same_site(Some("https://evil.example"), None, host, false));
    }
}
