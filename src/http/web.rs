//! The pages and assets, embedded so the binary is the whole product. Every URL in them is
//! relative, so the UI also works behind a reverse proxy on a subpath.

use tide::{Request, Response, StatusCode};

use crate::http::AppState;
use crate::http::body::SharedBody;

const INDEX_HTML: &str = include_str!("web/index.html");
const STREAM_HTML: &str = include_str!("web/stream.html");
const RECORDINGS_HTML: &str = include_str!("web/recordings.html");
const STYLE_CSS: &str = include_str!("web/style.css");
const COMMON_JS: &str = include_str!("web/common.js");
const DASHBOARD_JS: &str = include_str!("web/dashboard.js");
const STREAM_JS: &str = include_str!("web/stream.js");
const RECORDINGS_JS: &str = include_str!("web/recordings.js");
const LOGIN_HTML: &str = include_str!("web/login.html");
const LOGIN_JS: &str = include_str!("web/login.js");

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// Registers the pages and their assets.
pub fn routes(app: &mut tide::Server<AppState>) {
    app.at("/").get(|_| async { Ok(asset(INDEX_HTML, HTML)) });
    app.at("/stream").get(stream_page);
    app.at("/recordings")
        .get(|_| async { Ok(asset(RECORDINGS_HTML, HTML)) });
    app.at("/assets/style.css")
        .get(|_| async { Ok(asset(STYLE_CSS, "text/css; charset=utf-8")) });
    app.at("/assets/common.js")
        .get(|_| async { Ok(asset(COMMON_JS, JS)) });
    app.at("/assets/dashboard.js")
        .get(|_| async { Ok(asset(DASHBOARD_JS, JS)) });
    app.at("/assets/stream.js")
        .get(|_| async { Ok(asset(STREAM_JS, JS)) });
    app.at("/assets/recordings.js")
        .get(|_| async { Ok(asset(RECORDINGS_JS, JS)) });
    app.at("/assets/login.js")
        .get(|_| async { Ok(asset(LOGIN_JS, JS)) });
}

/// `GET /login`: the form, or straight to the dashboard when there is nothing to log in to.
pub async fn login_page(req: Request<AppState>) -> tide::Result {
    if req.state().auth.is_none() {
        let mut res = Response::new(StatusCode::SeeOther);
        res.insert_header("Location", "./");
        return Ok(res);
    }
    Ok(asset(LOGIN_HTML, HTML))
}

/// The viewer page, with `[viewer] ws_url` (if set) in a meta tag for the script.
async fn stream_page(req: Request<AppState>) -> tide::Result {
    let ws_url = html_attribute(&req.state().config.viewer.ws_url);
    Ok(asset(STREAM_HTML.replace("{{ws_url}}", &ws_url), HTML))
}

fn asset(body: impl Into<bytes::Bytes>, mime: &str) -> Response {
    let mut res = Response::new(StatusCode::Ok);
    res.set_body(SharedBody::new(body.into()).into_body());
    res.insert_header("Content-Type", mime);
    res.insert_header("Cache-Control", "no-cache");
    res
}

/// Escapes text for a double-quoted HTML attribute.
fn html_attribute(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    #[test]
    fn attributes_are_escaped() {
        assert_eq!(
            super::html_attribute(r#"ws://x/"><script>"#),
            "ws://x/&quot;&gt;&lt;script&gt;"
        );
    }
}
