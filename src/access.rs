//! The HTTP side of access control: who may reach which route, cross-origin refusals, and
//! the login and logout endpoints. [`crate::auth`] knows users and sessions; this module
//! applies them to requests, both tide's and the WebSocket upgrades routed before tide.

use std::sync::Arc;

use serde_json::json;
use tide::{Request, Response, StatusCode};

use crate::auth::{Auth, COOKIE, Identity, Role};
use crate::http::{AppState, json_response};

/// Routes anyone may reach: monitoring, and what the login page itself needs.
const PUBLIC: [&str; 5] = [
    "/health",
    "/login",
    "/logout",
    "/assets/style.css",
    "/assets/login.js",
];
/// What asks a tool (VLC, curl, Home Assistant) for Basic credentials.
const BASIC_CHALLENGE: &str = "Basic realm=\"Croissant\", charset=\"UTF-8\"";
/// Pages a login may return to (relative to the login page, so subpaths keep working).
const PAGES: [&str; 3] = ["", "stream", "recordings"];

/// What a WebSocket upgrade carries that access control looks at.
#[derive(Debug, Default)]
pub struct UpgradeHeads {
    /// `Cookie`
    pub cookie: Option<String>,
    /// `Authorization`
    pub authorization: Option<String>,
    /// `Origin`
    pub origin: Option<String>,
    /// `Host`
    pub host: Option<String>,
}

/// Checks every request: origin for state changes, then identity when `[auth]` is on.
#[derive(Clone)]
pub struct Guard {
    /// `None` when everyone may do everything.
    pub auth: Option<Arc<Auth>>,
    /// `[server] cors_origin`: another origin allowed to post.
    pub cors_origin: String,
}

/// A refused WebSocket upgrade: the status code, the message, and the `WWW-Authenticate`
/// challenge to send with it, if any.
pub type Refusal = (u16, &'static str, Option<&'static str>);

impl Guard {
    /// Whether a browser request from `origin` may change state here. Requests without an
    /// `Origin` (curl, scripts, old clients) are not cross-site requests and pass.
    fn origin_allowed(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else { return true };
        if host.is_some_and(|host| hostname(origin_authority(origin)) == hostname(host)) {
            return true;
        }
        // "*" kept the original server's open posting; with logins it no longer applies.
        origin == self.cors_origin || (self.cors_origin == "*" && self.auth.is_none())
    }

    /// Checks a WebSocket upgrade. Without `[auth]` anyone may watch from anywhere, as
    /// before; with it, the viewer must be logged in and the page must be ours.
    pub async fn upgrade(&self, heads: &UpgradeHeads) -> Result<(), Refusal> {
        let Some(auth) = &self.auth else { return Ok(()) };
        if !self.origin_allowed(heads.origin.as_deref(), heads.host.as_deref()) {
            return Err((403, "Cross-origin request refused", None));
        }
        match auth
            .identify(heads.cookie.as_deref(), heads.authorization.as_deref())
            .await
        {
            Some(_) => Ok(()),
            None => Err((401, "Login required", Some(BASIC_CHALLENGE))),
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
        let header = |req: &Request<AppState>, name: &str| req.header(name).map(|v| v.as_str().to_owned());
        if changes_state
            && !self.origin_allowed(header(&req, "Origin").as_deref(), header(&req, "Host").as_deref())
        {
            return json_response(
                StatusCode::Forbidden,
                &json!({ "error": "Cross-origin request refused" }),
            );
        }
        let Some(auth) = &self.auth else {
            return Ok(next.run(req).await);
        };
        let path = req.url().path().to_owned();
        if PUBLIC.contains(&path.as_str()) || req.method() == tide::http::Method::Options {
            return Ok(next.run(req).await);
        }
        let identity = auth
            .identify(
                header(&req, "Cookie").as_deref(),
                header(&req, "Authorization").as_deref(),
            )
            .await;
        let Some(identity) = identity else {
            return Ok(unauthenticated(&req, &path));
        };
        if changes_state && path == "/settings" && identity.role < Role::Admin {
            return json_response(
                StatusCode::Forbidden,
                &json!({ "error": "Switching the mode needs an admin" }),
            );
        }
        req.set_ext(identity);
        Ok(next.run(req).await)
    }
}

/// A page navigation goes to the login page; anything else gets 401, with a Basic
/// challenge for tools (VLC, Home Assistant, curl) but not for our own pages' scripts,
/// where it would pop up the browser's password dialog.
fn unauthenticated(req: &Request<AppState>, path: &str) -> Response {
    let fetch_mode = req.header("Sec-Fetch-Mode").map(|v| v.as_str().to_owned());
    let wants_html = req
        .header("Accept")
        .is_some_and(|accept| accept.as_str().contains("text/html"));
    let navigation = fetch_mode.as_deref() == Some("navigate") || (fetch_mode.is_none() && wants_html);
    if navigation && req.method() == tide::http::Method::Get {
        let page = path.trim_start_matches('/');
        let location = if PAGES.contains(&page) && !page.is_empty() {
            format!("login?next={page}")
        } else {
            "login".to_owned()
        };
        let mut res = Response::new(StatusCode::SeeOther);
        res.insert_header("Location", location);
        res.insert_header("Cache-Control", "no-store");
        return res;
    }
    let mut res = Response::new(StatusCode::Unauthorized);
    res.set_body(json!({ "error": "Login required" }));
    res.insert_header("Cache-Control", "no-store");
    if !matches!(fetch_mode.as_deref(), Some("cors" | "same-origin")) {
        res.insert_header("WWW-Authenticate", BASIC_CHALLENGE);
    }
    res
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
    let Some((token, identity)) = auth.login(&field("user"), &field("password")).await else {
        let back = if next.is_empty() {
            "login?failed=1".to_owned()
        } else {
            format!("login?failed=1&next={next}")
        };
        return Ok(redirect(&back));
    };
    tracing::info!(user = %identity.name, role = ?identity.role, "logged in");
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

/// `POST /logout`: ends the session and clears the cookie.
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

/// `host[:port]` of an origin such as `https://cam.example.org:8443`.
fn origin_authority(origin: &str) -> &str {
    origin.split_once("://").map_or(origin, |(_, rest)| rest)
}

/// The host name of `host[:port]` (IPv6 in brackets), lowercased for comparison.
fn hostname(authority: &str) -> String {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        authority.split(':').next().unwrap_or(authority)
    };
    host.to_ascii_lowercase()
}

/// The identity a handler runs for, when `[auth]` is on.
pub fn identity(req: &Request<AppState>) -> Option<Identity> {
    req.ext::<Identity>().cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(cors: &str, auth: bool) -> Guard {
        let auth = auth.then(|| {
            let hash = crate::auth::hash_password("x").expect("hash");
            let config = toml::from_str(&format!(
                "[users.a]\nrole = \"admin\"\npassword_hash = \"{hash}\""
            ))
            .expect("auth config");
            Arc::new(Auth::new(config))
        });
        Guard {
            auth,
            cors_origin: cors.into(),
        }
    }

    #[test]
    fn origins_are_compared_by_host_name() {
        let open = guard("*", false);
        assert!(open.origin_allowed(None, Some("pi:8080")));
        assert!(
            open.origin_allowed(Some("http://evil.example"), Some("pi:8080")),
            "as before"
        );
        let locked = guard("*", true);
        assert!(locked.origin_allowed(Some("http://PI:8080"), Some("pi:8080")));
        assert!(locked.origin_allowed(Some("https://[::1]:8443"), Some("[::1]:8080")));
        assert!(!locked.origin_allowed(Some("http://evil.example"), Some("pi:8080")));
        assert!(!locked.origin_allowed(Some("null"), Some("pi:8080")));
        let partner = guard("https://dash.example", true);
        assert!(partner.origin_allowed(Some("https://dash.example"), Some("pi:8080")));
        assert!(!partner.origin_allowed(Some("https://evil.example"), Some("pi:8080")));
        assert!(
            !guard("https://dash.example", false).origin_allowed(Some("https://evil.example"), Some("pi"))
        );
    }
}
