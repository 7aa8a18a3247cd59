//! A real reverse proxy in front of a preview's application: Debian's nginx with its
//! `auth_request` module, configured as previewd's documentation tells platform teams to wire
//! forward authentication. Every request is first asked of previewd (`/_previewd/auth`); what
//! previewd lets through goes to the application with the user's name in `X-Previewd-User`, and
//! what it does not is answered by previewd's own page (`/_previewd/page`: the sign-in redirect,
//! a 403, the waking page).
//!
//! `e2e/proxy.sh up` installs nginx and prints `PREVIEWD_TEST_NGINX`; `e2e/test.sh` exports it.
//! A test that needs nginx and finds it unset fails and says how to get it. Each [`Nginx`] is a
//! process of its own with its configuration, logs, pid file and temporary files in a fresh
//! directory, so it runs as root or not and touches nothing outside that directory.

use anyhow::{Context, bail};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The nginx binary to run, with the `auth_request` module (`/usr/sbin/nginx`).
pub const NGINX_ENV: &str = "PREVIEWD_TEST_NGINX";

/// How long nginx may take to accept connections once started.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Starts tried on fresh ports when the port found free was taken before nginx bound it.
const START_ATTEMPTS: usize = 3;

/// What the proxy sends where.
#[derive(Debug, Clone, Copy)]
pub struct ProxyConfig {
    /// The application's upstream: where requests previewd lets through go.
    pub app: SocketAddr,
    /// previewd's HTTP server: `/_previewd/auth` decides, `/_previewd/page` answers the rest.
    pub previewd: SocketAddr,
}

/// The `nginx.conf` of a proxy listening on `127.0.0.1:listen_port`. Every path in it is
/// relative, so nginx resolves them against its prefix (`-p`): the directory it runs in.
pub fn nginx_conf(config: &ProxyConfig, listen_port: u16) -> String {
    let ProxyConfig { app, previewd } = config;
    format!(
        r#"# The process (run with -p DIR -g 'daemon off; master_process off;'): everything in DIR.
pid nginx.pid;
error_log error.log info;

events {{}}

http {{
  access_log access.log;
  client_body_temp_path client_body_temp;
  proxy_temp_path proxy_temp;
  fastcgi_temp_path fastcgi_temp;
  uwsgi_temp_path uwsgi_temp;
  scgi_temp_path scgi_temp;
  proxy_http_version 1.1;

  # Forward authentication through previewd.
  # The preview cookie opens previews; the application never sees it.
  map $http_cookie $cookie_for_the_app {{
    default $http_cookie;
    "~^(?<before>.*?)(?:^|;\s*)previewd_preview=[^;]*(?<after>.*)$" "$before$after";
  }}
  upstream app {{ server {app}; }}
  upstream previewd {{ server {previewd}; }}
  server {{
    listen 127.0.0.1:{listen_port};
    # every preview host
    location / {{
      auth_request /_previewd/auth;
      auth_request_set $previewd_user $upstream_http_x_previewd_user;
      auth_request_set $previewd_cookie $upstream_http_set_cookie;
      # `always`: the cookie previewd sets (a share link's) reaches the browser whatever the
      # application answers, its 404s and 500s too. Not added when previewd set none.
      add_header Set-Cookie $previewd_cookie always;
      # not let through: previewd's page answers (sign-in redirect, 403, the waking page)
      error_page 401 = @previewd;
      proxy_set_header Host $http_host;
      # Replaces any X-Previewd-User the client sent; not sent at all when previewd named no one.
      proxy_set_header X-Previewd-User $previewd_user;
      proxy_set_header Cookie $cookie_for_the_app;
      proxy_pass http://app;
    }}
    location = /_previewd/auth {{
      internal;
      proxy_pass http://previewd/_previewd/auth?mode=nginx;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
      proxy_set_header X-Forwarded-For $remote_addr;
    }}
    location @previewd {{
      # The trailing `?`: the page gets none of the original request's query arguments (they are
      # in X-Original-URL); without it nginx appends them to /_previewd/page.
      rewrite ^ /_previewd/page? break;
      proxy_set_header Host $http_host;
      proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
      proxy_pass http://previewd;
    }}
  }}
}}
"#
    )
}

/// An nginx process serving [`nginx_conf`] on a loopback port; killed on drop.
pub struct Nginx {
    port: u16,
    child: Child,
    /// Holds the configuration, logs and temporary files; removed on drop, after the process.
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Nginx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nginx").field("port", &self.port).field("pid", &self.child.id()).finish_non_exhaustive()
    }
}

/// The nginx binary named by [`NGINX_ENV`]; an error naming the script when it is not set.
pub fn binary() -> anyhow::Result<PathBuf> {
    match std::env::var(NGINX_ENV) {
        Ok(value) if !value.trim().is_empty() => Ok(PathBuf::from(value.trim())),
        _ => bail!(
            "{NGINX_ENV} is not set. The reverse-proxy tests need Debian's nginx (with its auth_request \
             module): run them through `e2e/test.sh`, or install it with `eval \"$(e2e/proxy.sh up)\"`"
        ),
    }
}

impl Nginx {
    /// Writes the configuration into a fresh directory, starts nginx on a free loopback port and
    /// waits (at most 10 s) until nginx has written its pid file and the port accepts
    /// connections; a port taken meanwhile by another process means another try on another
    /// port. Blocks the calling thread
    /// meanwhile: the upstreams need not answer yet, nginx only connects to them per request.
    pub fn start(config: &ProxyConfig) -> anyhow::Result<Nginx> {
        let binary = binary()?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let dir =
                tempfile::Builder::new().prefix("previewd-nginx-").tempdir().context("creating nginx's directory")?;
            let port = {
                let listener = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
                listener.local_addr()?.port()
            };
            std::fs::write(dir.path().join("nginx.conf"), nginx_conf(config, port)).context("writing nginx.conf")?;
            match Self::spawn(&binary, dir, port) {
                Ok(nginx) => return Ok(nginx),
                Err(Start::PortTaken(error)) => last_error = Some(error),
                Err(Start::Failed(error)) => return Err(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("nginx did not start")))
            .with_context(|| format!("nginx could not bind a free port in {START_ATTEMPTS} attempts"))
    }

    fn spawn(binary: &Path, dir: tempfile::TempDir, port: u16) -> Result<Nginx, Start> {
        let prefix = dir.path();
        let stderr = std::fs::File::create(prefix.join("stderr.log"))
            .context("creating nginx's stderr log")
            .map_err(Start::Failed)?;
        // `-e`: the log of start-up, before nginx has read `error_log` (else the compiled-in
        // path under /var/log, which a user other than root may not open).
        let child = Command::new(binary)
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            .arg("-e")
            .arg(prefix.join("error.log"))
            .args(["-g", "daemon off; master_process off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("running {} (named by {NGINX_ENV})", binary.display()))
            .map_err(Start::Failed)?;
        let mut nginx = Nginx { port, child, dir };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = nginx.child.try_wait().context("waiting for nginx").map_err(Start::Failed)? {
                let logs = nginx.logs();
                let error = anyhow::anyhow!("nginx exited at start ({status}):\n{logs}");
                return Err(if logs.contains("Address already in use") {
                    Start::PortTaken(error)
                } else {
                    Start::Failed(error)
                });
            }
            // nginx writes its pid file once it has bound its port: a connection accepted before
            // that is another process's, holding the port nginx is still trying to bind.
            let pid = std::fs::read_to_string(nginx.dir.path().join("nginx.pid")).unwrap_or_default();
            if pid.trim() == nginx.child.id().to_string()
                && TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(200))
                    .is_ok()
            {
                return Ok(nginx);
            }
            if Instant::now() > deadline {
                return Err(Start::Failed(anyhow::anyhow!(
                    "nginx did not accept connections on 127.0.0.1:{port} within {}s:\n{}",
                    START_TIMEOUT.as_secs(),
                    nginx.logs()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory nginx runs in: `nginx.conf`, `error.log`, `access.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// nginx's error log and standard error so far, for a failing test's message.
    pub fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("--- error.log\n{}--- stderr\n{}", read("error.log"), read("stderr.log"))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Why a start failed: a port another process took first (worth another port), or anything else.
enum Start {
    PortTaken(anyhow::Error),
    Failed(anyhow::Error),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A port taken between finding it free and nginx binding it is told apart from other
    /// failures, so [`Nginx::start`] tries another.
    #[test]
    fn a_taken_port_is_a_retry_and_a_bad_configuration_is_not() {
        let binary = binary().unwrap();
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let config = ProxyConfig { app: "127.0.0.1:1".parse().unwrap(), previewd: "127.0.0.1:2".parse().unwrap() };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nginx.conf"), nginx_conf(&config, port)).unwrap();
        match Nginx::spawn(&binary, dir, port) {
            Err(Start::PortTaken(error)) => assert!(format!("{error}").contains("Address already in use"), "{error}"),
            Err(Start::Failed(error)) => panic!("not seen as a taken port: {error:#}"),
            Ok(_) => panic!("nginx started on a port another socket holds"),
        }

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nginx.conf"), "events {}\nhttp { no_such_directive; }\n").unwrap();
        match Nginx::spawn(&binary, dir, port) {
            Err(Start::Failed(error)) => assert!(format!("{error}").contains("no_such_directive"), "{error}"),
            Err(Start::PortTaken(error)) => panic!("seen as a taken port: {error:#}"),
            Ok(_) => panic!("nginx started with an unknown directive"),
        }
        drop(taken);
    }
}
