//! Drives the system's Chromium over the DevTools protocol, with the same WebSocket client
//! the other tests use: navigate, run JavaScript, take screenshots.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws: WebSocket<TcpStream>,
    next_id: u64,
}

impl Browser {
    /// Starts headless Chromium (Debian's `chromium`; scripts/test installs it).
    pub fn launch() -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--autoplay-policy=no-user-gesture-required",
                "--remote-debugging-port=0",
                "--window-size=1280,800",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium must be installed (scripts/test installs it)");
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port: u16 = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.lines().next()?.parse().ok())
            {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not open its DevTools port"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let (_, _, body) = super::http(
            port,
            "GET /json/list HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        );
        let targets: Value = serde_json::from_slice(&body).expect("DevTools target list");
        let url = targets
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_owned();
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to DevTools");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let (ws, _) = tungstenite::client(url, stream).expect("DevTools WebSocket");
        let mut browser = Browser {
            child,
            _profile: profile,
            ws,
            next_id: 0,
        };
        browser.call("Page.enable", json!({}));
        browser.call("Runtime.enable", json!({}));
        browser
    }

    /// Sends a command and returns its result, skipping events.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        match self.try_call(method, params) {
            Ok(result) => result,
            Err(error) => panic!("{method} failed: {error}"),
        }
    }

    /// Sends a command and returns its result or the protocol's error.
    fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({ "id": id, "method": method, "params": params });
        self.ws
            .send(Message::text(request.to_string()))
            .expect("send to DevTools");
        loop {
            let Message::Text(text) = self.ws.read().expect("read from DevTools") else {
                continue;
            };
            let reply: Value = serde_json::from_str(&text).expect("DevTools JSON");
            if reply["id"] == id {
                return match reply.get("error") {
                    Some(error) => Err(error.clone()),
                    None => Ok(reply["result"].clone()),
                };
            }
        }
    }

    /// Evaluates JavaScript (awaiting promises) and returns its value.
    pub fn eval(&mut self, js: &str) -> Value {
        match self.try_eval(js) {
            Ok(value) => value,
            Err(error) => panic!("{js} threw: {error}"),
        }
    }

    /// Evaluates JavaScript; a thrown exception or a context torn down by a navigation
    /// comes back as the error.
    fn try_eval(&mut self, js: &str) -> Result<Value, Value> {
        let result = self.try_call(
            "Runtime.evaluate",
            json!({ "expression": js, "returnByValue": true, "awaitPromise": true }),
        )?;
        match result.get("exceptionDetails") {
            Some(exception) => Err(exception.clone()),
            None => Ok(result["result"]["value"].clone()),
        }
    }

    /// Opens `url` and waits for the new page to load. The old page is marked first, so
    /// its own finished load is never mistaken for the new one's.
    pub fn goto(&mut self, url: &str) {
        self.eval("window.croissantTestLeaving = true");
        self.call("Page.navigate", json!({ "url": url }));
        self.wait_for(
            &format!("{url} to load"),
            Duration::from_secs(15),
            "!window.croissantTestLeaving && document.readyState === 'complete'",
        );
    }

    /// Polls a JavaScript condition until it is true. While a page is navigating the
    /// condition may see a half-parsed document and throw; that counts as "not yet", and
    /// the last error is shown if the wait times out.
    pub fn wait_for(&mut self, what: &str, timeout: Duration, condition: &str) {
        let deadline = Instant::now() + timeout;
        loop {
            let last_error = match self.try_eval(&format!("Boolean({condition})")) {
                Ok(Value::Bool(true)) => return,
                Ok(_) => None,
                Err(error) => Some(error),
            };
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} ({condition}); last error: {last_error:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sets the viewport: a desktop window or a phone.
    pub fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        );
    }

    /// Writes a PNG of the page as it is now.
    pub fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64 PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
