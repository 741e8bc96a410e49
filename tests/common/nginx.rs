//! Debian's nginx as a real peer: an RTMP server for the relay, an HTTP reverse proxy in
//! front of the daemon. One process, no master, no daemon mode, all files in a temp dir.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const NGINX: &str = "/usr/sbin/nginx";
pub const RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

pub struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    /// Serves RTMP on `port`: `rtmp://127.0.0.1:port/live/<name>`.
    pub fn rtmp(dir: &Path, port: u16) -> Nginx {
        assert!(
            Path::new(RTMP_MODULE).exists(),
            "{RTMP_MODULE} is missing: install libnginx-mod-rtmp (scripts/test does)"
        );
        Nginx::start(
            dir,
            &format!("load_module {RTMP_MODULE};\n"),
            &format!("rtmp {{ server {{ listen 127.0.0.1:{port}; application live {{ live on; }} }} }}\n"),
            port,
        )
    }

    /// A reverse proxy on `port` to the daemon on `upstream`, as a newcomer writes it:
    /// `proxy_pass` and nothing else, so nginx speaks HTTP/1.0 to the daemon and buffers.
    pub fn proxy(dir: &Path, port: u16, upstream: u16) -> Nginx {
        let d = dir.display();
        Nginx::start(
            dir,
            "",
            &format!(
                "http {{\n\
                   access_log {d}/access.log;\n\
                   client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
                   fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
                   server {{ listen 127.0.0.1:{port};\n\
                     location / {{ proxy_pass http://127.0.0.1:{upstream}; }} }}\n\
                 }}\n"
            ),
            port,
        )
    }

    /// Starts nginx with `modules` (`load_module` lines, which must come first) and
    /// `blocks` (top-level `http`/`rtmp` blocks), and waits until it listens on `port`.
    pub fn start(dir: &Path, modules: &str, blocks: &str, port: u16) -> Nginx {
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} is missing: install nginx (scripts/test does)"
        );
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "{modules}daemon off;\nmaster_process off;\n\
                 error_log {dir}/error.log info;\npid {dir}/nginx.pid;\n\
                 events {{}}\n{blocks}",
                dir = dir.display()
            ),
        )
        .expect("write nginx.conf");
        let child = Command::new(NGINX)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let nginx = Nginx {
            child,
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not listen: {}", nginx.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        nginx
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.kill();
    }
}
