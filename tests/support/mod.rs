//! Helpers for the HTTP tests: an `HttpRequest` for the pure handler, a small
//! HTTP/1.1 client (plain TCP or TLS), the wisp binary on 127.0.0.1, and a
//! self-signed certificate. Every wait is bounded.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wisp::http::HttpRequest;

pub mod redis;
pub mod sse;
pub mod udp;

// ---- requests for the pure handler ----------------------------------------------------

/// A request for `wisp::http::handle`: these headers, in order, and this body.
/// A test whose tools are missing (`why`, with how to install them) is
/// skipped with a SKIPPED line, unless `CI` is set: there `.ci/run` installs
/// everything, so a missing tool fails the test.
pub fn skip_unless_ci(test: &str, why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {why}, but CI is set (see .ci/run)");
    }
    eprintln!("SKIPPED {test}: {why}; set CI=1 to make this a failure");
}

pub fn req(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl AsRef<[u8]>,
) -> HttpRequest {
    let r = HttpRequest::new(method, url).with_body(body.as_ref());
    headers.iter().fold(r, |r, (k, v)| r.with_header(k, v))
}

// ---- HTTP/1.1 client --------------------------------------------------------------------

/// A response: status, lower-cased headers in order, body.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// The first header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of the headers `name` (case-insensitive), in order.
    pub fn header_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One request on a fresh connection (`Connection: close`), bounded by `timeout`.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    exchange(&mut s, &addr.to_string(), method, path, headers, body)
}

/// Write one request (`Connection: close`) to `s` and read its response.
pub fn exchange(
    s: &mut (impl Read + Write),
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Resp> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    s.flush()?;
    read_response(&mut BufReader::new(s), method)
}

/// Read one response: the head, then a `Content-Length` or chunked body, or
/// (neither, and not `HEAD`) everything until the connection closes.
pub fn read_response(r: &mut impl BufRead, method: &str) -> std::io::Result<Resp> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let mut resp = Resp {
        status,
        headers,
        body: Vec::new(),
    };
    if method == "HEAD" {
        return Ok(resp);
    }
    if let Some(n) = resp.header("content-length").and_then(|n| n.parse().ok()) {
        resp.body.resize(n, 0);
        r.read_exact(&mut resp.body)?;
    } else if resp
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(std::io::Error::other)?;
            if n == 0 {
                break;
            }
            let start = resp.body.len();
            resp.body.resize(start + n, 0);
            r.read_exact(&mut resp.body[start..])?;
            r.read_line(&mut line)?; // CRLF after the chunk
        }
    } else {
        r.read_to_end(&mut resp.body)?;
    }
    Ok(resp)
}

// ---- TLS ----------------------------------------------------------------------------------

/// A self-signed certificate for `localhost` and its key, as PEM files in a
/// directory of their own (removed on drop).
pub struct TlsFiles {
    dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate (DER), for a client to trust.
    pub der: Vec<u8>,
}

impl TlsFiles {
    /// Generate the pair, for `localhost` and `127.0.0.1`; `name` keeps the
    /// directories of concurrent tests apart.
    pub fn generate(name: &str) -> TlsFiles {
        let sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let ck = rcgen::generate_simple_self_signed(sans).unwrap();
        let dir = std::env::temp_dir().join(format!("wisp-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        TlsFiles {
            dir,
            cert,
            key,
            der: ck.cert.der().to_vec(),
        }
    }
}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One request over TLS to `addr` as `localhost`, trusting only `cert_der`
/// (rustls; the handshake verifies the chain and the name).
pub fn https(
    addr: SocketAddr,
    cert_der: &[u8],
    method: &str,
    path: &str,
    timeout: Duration,
) -> std::io::Result<Resp> {
    https_with(addr, cert_der, method, path, &[], b"", timeout)
}

/// [`https`] with request headers and a body.
pub fn https_with(
    addr: SocketAddr,
    cert_der: &[u8],
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<Resp> {
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(cert_der.to_vec()))
        .map_err(std::io::Error::other)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    let conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(std::io::Error::other)?;
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let host = format!("localhost:{}", addr.port());
    exchange(&mut tls, &host, method, path, headers, body)
}

// ---- the binary ---------------------------------------------------------------------------

/// Lines of wisp's log kept by [`Wisp::log_lines`].
const LOG_LINES: usize = 20_000;

/// The real wisp binary on 127.0.0.1 (HTTP and UDP on free ports); killed on drop.
pub struct Wisp {
    pub child: Child,
    /// The public HTTP(S) address.
    pub http: SocketAddr,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Drop for Wisp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Wisp {
    /// Start the binary with extra environment variables.
    pub fn start(env: &[(&str, &str)]) -> Wisp {
        Wisp::launch(Command::new(env!("CARGO_BIN_EXE_wisp")), env)
    }

    /// Start `cmd` (the binary, set up by the caller) on free local ports
    /// with `RUST_LOG=info`, `WISP_MAX_LOAD=off` and `env`, and wait (at most 20 s) for its
    /// `wisp listening: ... http=ADDR` (or `https=ADDR`) line. Its log is
    /// kept, and echoed to stderr when `WISP_TEST_LOG` is set.
    pub fn launch(mut cmd: Command, env: &[(&str, &str)]) -> Wisp {
        let mut child = cmd
            .env("WISP_HTTP_ADDR", "127.0.0.1:0")
            .env("WISP_UDP_ADDR", "127.0.0.1:0")
            // `WISP_TEST_RUST_LOG` overrides the level (e.g. `wisp=debug`).
            .env(
                "RUST_LOG",
                std::env::var("WISP_TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            // These tests run the debug build on a shared 2-core machine next
            // to browsers and GStreamer: its event loop is busy for reasons
            // that say nothing of a release node's capacity. Overload control
            // has its own tests (tests/overload_admission_and_shedding.rs);
            // a test that wants it sets WISP_MAX_LOAD itself.
            .env("WISP_MAX_LOAD", "off")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wisp");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let kept = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("wisp listening:") {
                    let addr = ["https=", "http="]
                        .iter()
                        .find_map(|k| line.split(k).nth(1))
                        .and_then(|r| r.split_whitespace().next())
                        .unwrap_or("")
                        .to_string();
                    let _ = tx.send(addr);
                }
                if std::env::var_os("WISP_TEST_LOG").is_some() {
                    eprintln!("[wisp] {line}");
                }
                let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                if kept.len() == LOG_LINES {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("wisp did not print its address within 20 s");
        Wisp {
            child,
            http: addr.parse().expect("wisp's http address"),
            log,
        }
    }

    /// The lines of wisp's log so far that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().filter(|l| l.contains(needle)).cloned().collect()
    }

    /// One plain-HTTP request (10 s bound).
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        http(
            self.http,
            method,
            path,
            headers,
            body,
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }
}

/// The thread count of a server that has finished starting: `/healthz`
/// answers, then the count holds still for a second. A count read right
/// after the port opens misses threads spawned later in start-up (seen in
/// CI with two workers: 22 read against 24 steady).
pub fn settled_threads(http: SocketAddr, pid: u32) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    let ok = || {
        self::http(http, "GET", "/healthz", &[], b"", Duration::from_secs(2))
            .is_ok_and(|r| r.status == 200)
    };
    while !ok() {
        assert!(Instant::now() < deadline, "no /healthz");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut last = threads(pid);
    let mut still = 0;
    while still < 10 {
        assert!(Instant::now() < deadline, "thread count never settled");
        std::thread::sleep(Duration::from_millis(100));
        let now = threads(pid);
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    last
}

/// Threads of process `pid` (Linux `/proc`).
pub fn threads(pid: u32) -> usize {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a Threads: line")
}
