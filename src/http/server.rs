//! The tiny_http driver: one acceptor thread, a bounded worker pool, and the
//! hand-off to the core through [`crate::channel`].
//!
//! Contracts:
//! - At most `workers` requests are being handled and at most `queue` wait;
//!   beyond that the acceptor answers 503 + `Retry-After: 1` at once, without
//!   reading the body.
//! - A body is read only on a worker, and never more than `body_limit + 1`
//!   bytes (413 above the limit).
//! - A command waits at most `reply_timeout` for the core (then 503); the core
//!   must not assume the reply is read (a failed `send` means the client got a 503).
//! - At most `per_connection` requests of one connection (pipelining) are
//!   queued or in progress; more → 503 from the acceptor.
//! - Every response is counted by status in `HttpConfig::counters` (`/metrics`).
//! - If `server.recv()` fails, tiny_http's accept thread is gone: the process
//!   exits with status 1 so a supervisor restarts it.
//!
//! tiny_http 0.12 hazard handled here: dropping a `Request` whose fixed-length
//! body was not read makes tiny_http read the rest, allocating a buffer of the
//! *declared* size first (`EqualReader::drop`), so a request claiming
//! `Content-Length: 1000000000000000` aborts the process, and a client that
//! never sends its body blocks the dropping thread. Requests with more than
//! [`MAX_DRAIN`] unread bytes are therefore leaked (never dropped, never
//! answered; counted as abandoned in `HttpCounters`), and requests with an unread body
//! are never dropped on the acceptor thread. Behind the front on plain HTTP
//! ([`super::bind_fronted`] without TLS) such a request never gets here: the front
//! reads each request head and answers an over-cap `Content-Length` with 413
//! itself ([`super::front`]). The leak remains the guard over TLS (the
//! front sees only ciphertext), for [`super::bind`], and for requests pipelined
//! behind a chunked one (the front stops following such a connection).
//!
//! What tiny_http 0.12 cannot do itself: a read or header timeout per
//! connection (the accepted sockets are never exposed, and a receive timeout
//! set on the listener would also time out `accept()`, which ends tiny_http's
//! accept thread), and a cap on connections (one thread each). [`super::bind_fronted`]
//! (what the binary uses) adds both with [`super::front`]: tiny_http then
//! listens on a private Unix socket, so `remote_addr()` is `None` (logged as
//! `-`; the front logs client addresses) and the per-connection limit below
//! cannot tell connections apart: every request counts as the only one of its
//! connection. Known gap: a request pipelined behind a pending one on the same
//! connection (e.g. behind an event stream) that gets its 503 on the acceptor
//! (queue full) blocks the acceptor until the earlier response is written.
//! [`super::bind`] serves TCP directly, without the front's guards.

use std::collections::HashMap;
use std::io::Read;
use std::mem::ManuallyDrop;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use log::{debug, error, info, warn};

use crate::channel::{CoreLink, CoreRequest};
use crate::metrics::HttpCounters;

use super::routes::{handle_streaming, Handled};
use super::sse::{write_stream, Pace, SseStart};
use super::types::{HttpConfig, HttpRequest, HttpResponse};

/// Most unread body bytes a `Request` may have when it is dropped (tiny_http
/// then reads and discards them). Above this the request is leaked instead.
pub const MAX_DRAIN: usize = 16 * 1024 * 1024;

/// Bodies up to this size are read by tiny_http before the request is handed
/// out (unless the client sent `Expect: 100-continue`).
const TINY_HTTP_PREBUFFER: usize = 1024;

/// Sizes and timeouts of the pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Worker threads (requests handled at once).
    pub workers: usize,
    /// Requests waiting for a worker; more → 503 from the acceptor.
    pub queue: usize,
    /// Requests waiting to get a 503 when their body still has to be drained.
    pub reject_queue: usize,
    /// How long a worker waits for the core's reply before answering 503.
    pub reply_timeout: Duration,
    /// Requests of one connection queued or in progress at once; more → 503.
    pub per_connection: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            workers: 16,
            queue: 64,
            reject_queue: 64,
            reply_timeout: Duration::from_secs(2),
            per_connection: 4,
        }
    }
}

/// Start the acceptor and the default pool ([`PoolConfig::default`]).
///
/// Returns the acceptor's handle; it only ends by exiting the process.
pub fn spawn(
    server: tiny_http::Server,
    cfg: HttpConfig,
    tx: Sender<CoreRequest>,
    waker: Arc<mio::Waker>,
) -> std::io::Result<JoinHandle<()>> {
    spawn_with(server, cfg, tx, waker, PoolConfig::default())
}

/// [`spawn`] with explicit pool sizes and timeout.
pub fn spawn_with(
    server: tiny_http::Server,
    cfg: HttpConfig,
    tx: Sender<CoreRequest>,
    waker: Arc<mio::Waker>,
    pool: PoolConfig,
) -> std::io::Result<JoinHandle<()>> {
    let core = CoreLink::new(tx, waker, pool.reply_timeout);
    spawn_link(server, cfg, core, pool)
}

/// [`spawn_with`] on any [`CoreLink`] (e.g. several workers'); the link's
/// own reply timeout applies, not `pool.reply_timeout`.
pub fn spawn_link(
    server: tiny_http::Server,
    cfg: HttpConfig,
    core: CoreLink,
    pool: PoolConfig,
) -> std::io::Result<JoinHandle<()>> {
    let (work_tx, work_rx) = bounded::<Job>(pool.queue);
    let (reject_tx, reject_rx) = bounded::<tiny_http::Request>(pool.reject_queue);
    let cfg = Arc::new(cfg);
    let counters = cfg.counters.clone();
    let in_flight = InFlight::new(pool.per_connection);
    for i in 0..pool.workers.max(1) {
        let ctx = Worker {
            cfg: cfg.clone(),
            core: core.clone(),
        };
        let rx = work_rx.clone();
        thread::Builder::new()
            .name(format!("wisp-http-{i}"))
            .spawn(move || ctx.run(rx))?;
    }
    let reject_counters = counters.clone();
    thread::Builder::new()
        .name("wisp-http-reject".into())
        .spawn(move || {
            for rq in reject_rx {
                finish(
                    rq,
                    &HttpResponse::busy(),
                    0,
                    Instant::now(),
                    &reject_counters,
                );
            }
        })?;
    // tiny_http's `Drop` panics for a listener in the abstract namespace;
    // the server lives as long as the process anyway.
    let server = ManuallyDrop::new(server);
    thread::Builder::new()
        .name("wisp-http-accept".into())
        .spawn(move || {
            let e = accept_loop(&server, &work_tx, &reject_tx, &in_flight, &counters);
            error!("HTTP listener failed, exiting so a supervisor can restart wisp: {e}");
            std::process::exit(1);
        })
}

/// A request for a worker, holding its connection's in-flight slot.
type Job = (tiny_http::Request, Slot);

/// Requests queued or in progress per connection (keyed by peer address).
#[derive(Clone)]
struct InFlight {
    cap: usize,
    map: Arc<Mutex<HashMap<SocketAddr, usize>>>,
}

/// One taken in-flight place; given back on drop.
struct Slot {
    owner: Option<(InFlight, SocketAddr)>,
    /// No other request of this connection was in flight: answering it cannot
    /// wait behind earlier responses (tiny_http writes them in order).
    first: bool,
}

impl InFlight {
    fn new(cap: usize) -> InFlight {
        InFlight {
            cap: cap.max(1),
            map: Arc::default(),
        }
    }

    /// A place for a request from `peer`, or `None` if that connection is at the cap.
    fn acquire(&self, peer: Option<SocketAddr>) -> Option<Slot> {
        let Some(peer) = peer else {
            // A Unix peer (behind the front): connections cannot be told
            // apart. Treated as alone, so that overload 503s stay immediate;
            // the hazard (a pipelined request behind a pending one, answered
            // here, waits for it) is described in the module docs.
            return Some(Slot {
                owner: None,
                first: true,
            });
        };
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(peer).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(Slot {
            owner: Some((self.clone(), peer)),
            first: *n == 1,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((f, peer)) = self.owner.take() {
            let mut map = f.map.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = map.get_mut(&peer) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&peer);
                }
            }
        }
    }
}

/// Hand requests to the workers until `recv` fails; returns that error.
fn accept_loop(
    server: &tiny_http::Server,
    work: &Sender<Job>,
    reject: &Sender<tiny_http::Request>,
    in_flight: &InFlight,
    counters: &HttpCounters,
) -> std::io::Error {
    loop {
        let rq = match server.recv() {
            Ok(rq) => rq,
            Err(e) => return e,
        };
        // `alone`: no earlier request of this connection is pending, so
        // responding cannot wait behind it.
        let (rq, alone) = match in_flight.acquire(rq.remote_addr().copied()) {
            Some(slot) => {
                let alone = slot.first;
                match work.try_send((rq, slot)) {
                    Ok(()) => continue,
                    Err(TrySendError::Full((rq, _))) => {
                        debug!("HTTP queue full, 503 to {}", peer(&rq));
                        (rq, alone)
                    }
                    Err(TrySendError::Disconnected((rq, _))) => {
                        finish(rq, &HttpResponse::busy(), 0, Instant::now(), counters);
                        return std::io::Error::other("all HTTP workers are gone");
                    }
                }
            }
            None => {
                debug!("too many requests in flight on {}, 503", peer(&rq));
                (rq, false)
            }
        };
        if alone && unread_body(&rq, 0) == 0 {
            // Nothing to drain or wait for: answering here cannot block for long.
            finish(rq, &HttpResponse::busy(), 0, Instant::now(), counters);
        } else if let Err(e) = reject.try_send(rq) {
            leak(e.into_inner(), "reject queue full", counters);
        }
    }
}

struct Worker {
    cfg: Arc<HttpConfig>,
    core: CoreLink,
}

impl Worker {
    fn run(&self, rx: Receiver<Job>) {
        for (rq, _slot) in rx {
            // A panic here loses one request, never the worker.
            if catch_unwind(AssertUnwindSafe(|| self.serve(rq))).is_err() {
                error!("panic while serving an HTTP request");
            }
        }
    }

    fn serve(&self, mut rq: tiny_http::Request) {
        let start = Instant::now();
        let limit = self.cfg.body_limit;
        if has_token(&rq, "Connection", "upgrade") {
            // tiny_http hands out the raw stream for upgrades; we never want it.
            let resp = HttpResponse::error(400, "protocol upgrade not supported");
            return finish(rq, &resp, 0, start, &self.cfg.counters);
        }
        if rq.body_length().is_some_and(|n| n > limit) {
            return finish(rq, &HttpResponse::too_large(), 0, start, &self.cfg.counters);
        }
        let mut body = Vec::with_capacity(rq.body_length().unwrap_or(0).min(limit));
        // `as_reader` sends `100 Continue` if the client asked for it.
        let read = rq.as_reader().take(limit as u64 + 1).read_to_end(&mut body);
        if let Err(e) = read {
            debug!("reading an HTTP body failed: {e}");
            let resp = HttpResponse::error(400, "could not read the request body");
            return finish(rq, &resp, body.len(), start, &self.cfg.counters);
        }
        if body.len() > limit {
            return finish(
                rq,
                &HttpResponse::too_large(),
                body.len(),
                start,
                &self.cfg.counters,
            );
        }
        let consumed = body.len();
        let req = HttpRequest {
            method: rq.method().as_str().to_string(),
            url: rq.url().to_string(),
            headers: rq
                .headers()
                .iter()
                .map(|h| (h.field.as_str().to_string(), h.value.as_str().to_string()))
                .collect(),
            body,
        };
        let handled = catch_unwind(AssertUnwindSafe(|| {
            handle_streaming(&req, &self.cfg, &mut |command| self.core.call(command))
        }))
        .unwrap_or_else(|_| {
            error!("panic in the HTTP handler");
            Handled::Response(HttpResponse::internal())
        });
        match handled {
            Handled::Response(resp) => finish(rq, &resp, consumed, start, &self.cfg.counters),
            Handled::Stream(sse) => self.stream(rq, sse),
        }
    }

    /// Hand a WHEP event stream to a thread of its own, so that it never
    /// holds a worker. Their number is capped by `HttpConfig::sse` (the
    /// handler answered 503 above the cap); the place is given back when the
    /// thread ends.
    fn stream(&self, rq: tiny_http::Request, sse: Box<SseStart>) {
        self.cfg.counters.record(200);
        info!(
            "GET {:?} -> 200 event stream ({})",
            loggable_path(rq.url()),
            peer(&rq)
        );
        let core = self.core.clone();
        let spawned = thread::Builder::new()
            .name("wisp-sse".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                if catch_unwind(AssertUnwindSafe(|| run_sse(rq, *sse, &core))).is_err() {
                    error!("panic in an event stream");
                }
            });
        if let Err(e) = spawned {
            // The request went down with the closure (tiny_http answers 500).
            warn!("cannot start an event stream thread: {e}");
        }
    }
}

/// One event stream on tiny_http's raw writer ([`write_stream`]), written by
/// hand: tiny_http's own chunked encoder buffers 8 KiB before writing anything.
fn run_sse(rq: tiny_http::Request, sse: SseStart, core: &CoreLink) {
    let chunked = rq.http_version() >= &tiny_http::HTTPVersion(1, 1);
    let mut w = rq.into_writer();
    let end = write_stream(&mut w, chunked, sse, Pace::default(), &mut |c| core.call(c));
    debug!("event stream ended: {end}");
}

/// Write `resp` to `rq`, or leak `rq` if dropping it is unsafe. Logs one
/// line and counts the response (or the abandoned request) in `counters`.
fn finish(
    rq: tiny_http::Request,
    resp: &HttpResponse,
    consumed: usize,
    start: Instant,
    counters: &HttpCounters,
) {
    let line = format!(
        "{} {:?} -> {} ({} ms, {})",
        rq.method(),
        loggable_path(rq.url()),
        resp.status,
        start.elapsed().as_millis(),
        peer(&rq)
    );
    if unread_body(&rq, consumed) > MAX_DRAIN {
        leak(rq, "body too large to drain", counters);
        return;
    }
    counters.record(resp.status);
    if resp.status >= 500 {
        warn!("{line}");
    } else {
        info!("{line}");
    }
    let mut out = tiny_http::Response::from_data(resp.body.clone()).with_status_code(resp.status);
    for (k, v) in &resp.headers {
        match tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()) {
            Ok(h) => out.add_header(h),
            Err(()) => warn!("dropping an unencodable response header {k:?}"),
        }
    }
    // Dropping `rq` inside `respond` drains at most MAX_DRAIN unread bytes.
    if let Err(e) = rq.respond(out) {
        debug!("writing an HTTP response failed: {e}");
    }
}

/// The client address for logs: `-` behind the front (a Unix peer; the front
/// logs the TCP address at accept).
fn peer(rq: &tiny_http::Request) -> String {
    rq.remote_addr()
        .map_or_else(|| "-".to_string(), |a| a.to_string())
}

/// Never drop `rq`: its socket, buffers and tiny_http connection thread are lost.
fn leak(rq: tiny_http::Request, why: &str, counters: &HttpCounters) {
    let n = counters.record_abandoned();
    // Log the first few, then at powers of two, so a flood cannot flood the log.
    if n > 8 && !n.is_power_of_two() {
        std::mem::forget(rq);
        return;
    }
    warn!(
        "{why}: abandoning {} {:?} from {} declaring {:?} body bytes ({n} abandoned so far)",
        rq.method(),
        loggable_path(rq.url()),
        peer(&rq),
        rq.body_length()
    );
    std::mem::forget(rq);
}

/// Body bytes tiny_http would read when `rq` is dropped, after `consumed` were read.
fn unread_body(rq: &tiny_http::Request, consumed: usize) -> usize {
    if has_token(rq, "Connection", "upgrade") {
        return 0; // raw stream, no draining reader
    }
    match rq.body_length() {
        Some(n) if n > TINY_HTTP_PREBUFFER || has_token(rq, "Expect", "100-continue") => {
            n.saturating_sub(consumed)
        }
        _ => 0,
    }
}

/// True if the first header `name` contains `token` (ASCII case-insensitive).
fn has_token(rq: &tiny_http::Request, name: &'static str, token: &str) -> bool {
    rq.headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .is_some_and(|h| {
            h.value
                .as_str()
                .to_ascii_lowercase()
                .contains(&token.to_ascii_lowercase())
        })
}

/// The path for logs: no query, session tokens replaced, at most 100 chars.
fn loggable_path(url: &str) -> String {
    let path = url.split_once('?').map_or(url, |(p, _)| p);
    let segs: Vec<&str> = path.split('/').collect();
    let shown = match segs.as_slice() {
        ["", r @ ("whip" | "whep"), room, _token] => format!("/{r}/{room}/<token>"),
        _ => path.to_string(),
    };
    shown.chars().take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::DEFAULT_BODY_LIMIT;
    use crate::sfu::command::{ApiError, Command, Reply};
    use crate::sfu::id::SessionToken;
    use std::io::Write;
    use std::net::{SocketAddr, TcpStream};

    const TOKEN: &str = "00112233445566778899aabbccddeeff";

    struct Harness {
        addr: SocketAddr,
        core_rx: Receiver<CoreRequest>,
        counters: Arc<HttpCounters>,
        _poll: mio::Poll,
    }

    fn start(pool: PoolConfig, links: Vec<String>) -> Harness {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let addr = server.server_addr().to_ip().unwrap();
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (tx, core_rx) = bounded(8);
        let cfg = HttpConfig::new(links);
        let counters = cfg.counters.clone();
        spawn_with(server, cfg, tx, waker, pool).unwrap();
        Harness {
            addr,
            core_rx,
            counters,
            _poll: poll,
        }
    }

    /// A core thread that answers every command like a healthy core.
    fn serve_core(rx: Receiver<CoreRequest>) {
        thread::spawn(move || {
            for r in rx {
                let reply = match r.command {
                    Command::Publish { .. } | Command::Subscribe { .. } => Ok(Reply::Created {
                        token: SessionToken::parse(TOKEN).unwrap(),
                        answer: "v=0\r\n".into(),
                        etag: "\"e1\"".into(),
                    }),
                    Command::DeleteSession { .. } => Err(ApiError::NotFound),
                    _ => Ok(Reply::Rooms(vec![])),
                };
                let _ = r.reply.send(reply);
            }
        });
    }

    /// Send raw bytes, read the whole response (the request should say `Connection: close`).
    fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(bytes).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    fn post(path: &str, body: &[u8], extra: &str) -> Vec<u8> {
        let mut v = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n{extra}\r\n",
            body.len()
        )
        .into_bytes();
        v.extend_from_slice(body);
        v
    }

    fn default_pool() -> PoolConfig {
        PoolConfig {
            workers: 2,
            queue: 4,
            reject_queue: 4,
            reply_timeout: Duration::from_millis(300),
            per_connection: 4,
        }
    }

    #[test]
    fn post_created_with_separate_link_lines() {
        let h = start(
            default_pool(),
            vec![
                "<stun:a:1>; rel=\"ice-server\"".into(),
                "<stun:b:2>; rel=\"ice-server\"".into(),
            ],
        );
        serve_core(h.core_rx);
        let resp = raw(h.addr, &post("/whip/r1", b"v=0\r\n", ""));
        assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
        assert!(
            resp.contains(&format!("Location: /whip/r1/{TOKEN}\r\n")),
            "{resp}"
        );
        assert!(
            resp.contains("\r\nLink: <stun:a:1>; rel=\"ice-server\"\r\n"),
            "{resp}"
        );
        assert!(
            resp.contains("\r\nLink: <stun:b:2>; rel=\"ice-server\"\r\n"),
            "{resp}"
        );
        assert!(resp.ends_with("\r\n\r\nv=0\r\n"), "{resp}");

        let del =
            format!("DELETE /whep/r1/{TOKEN} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert!(raw(h.addr, del.as_bytes()).starts_with("HTTP/1.1 404"));
        let health = raw(
            h.addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(
            health.starts_with("HTTP/1.1 200") && health.ends_with("ok"),
            "{health}"
        );
    }

    #[test]
    fn bodies_over_the_limit_get_413() {
        let h = start(default_pool(), vec![]);
        serve_core(h.core_rx);
        // Declared too large (and sent).
        let big = vec![b'a'; DEFAULT_BODY_LIMIT + 1];
        let resp = raw(h.addr, &post("/whip/r", &big, ""));
        assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
        // Declared too large with Expect: the body is never requested.
        let mut s = TcpStream::connect(h.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(
            b"POST /whip/r HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n\
              Content-Length: 100000\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"HTTP/1.1 413");
        drop(s);
        // Chunked, endless: cut after limit + 1 bytes.
        let mut req = b"POST /whep/r HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
            Content-Type: application/sdp\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
        for _ in 0..80 {
            req.extend_from_slice(b"400\r\n");
            req.extend_from_slice(&[b'a'; 0x400]);
            req.extend_from_slice(b"\r\n");
        }
        let resp = raw(h.addr, &req);
        assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    }

    #[test]
    fn absurd_content_length_does_not_abort() {
        let h = start(default_pool(), vec![]);
        let counters = h.counters.clone();
        serve_core(h.core_rx);
        let before = counters.abandoned();
        let mut s = TcpStream::connect(h.addr).unwrap();
        s.write_all(
            b"POST /whip/r HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n\
              Content-Length: 1000000000000000\r\n\r\nv=0\r\n",
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while counters.abandoned() == before && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        assert!(counters.abandoned() > before);
        drop(s);
        // Still alive and serving.
        let health = raw(
            h.addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    }

    #[test]
    fn silent_core_gives_503() {
        let h = start(default_pool(), vec![]);
        // Keep the channel open but never answer.
        let _keep = h.core_rx;
        let resp = raw(h.addr, &post("/whep/r", b"v=0\r\n", ""));
        assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
        assert!(resp.contains("Retry-After: 1\r\n"), "{resp}");
    }

    #[test]
    fn closed_core_gives_503() {
        let h = start(default_pool(), vec![]);
        drop(h.core_rx);
        let resp = raw(h.addr, &post("/whip/r", b"v=0\r\n", ""));
        assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
    }

    #[test]
    fn full_queue_gives_503_from_acceptor() {
        let pool = PoolConfig {
            workers: 1,
            queue: 1,
            reject_queue: 1,
            reply_timeout: Duration::from_secs(3),
            per_connection: 4,
        };
        let h = start(pool, vec![]);
        // Request A occupies the only worker (the core never answers)...
        let addr = h.addr;
        let a = thread::spawn(move || raw(addr, &post("/whip/a", b"v=0\r\n", "")));
        let first = h.core_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        // ... B waits in the queue ...
        let mut b = TcpStream::connect(h.addr).unwrap();
        b.write_all(&post("/whip/b", b"v=0\r\n", "")).unwrap();
        thread::sleep(Duration::from_millis(200));
        // ... so C is turned away at once.
        let t = Instant::now();
        let c = raw(h.addr, &post("/whip/c", b"v=0\r\n", ""));
        assert!(c.starts_with("HTTP/1.1 503"), "{c}");
        assert!(c.contains("Retry-After: 1\r\n"), "{c}");
        assert!(t.elapsed() < Duration::from_secs(2));
        drop(first);
        let _ = a.join();
    }

    #[test]
    fn pipelined_requests_are_capped_per_connection() {
        let pool = PoolConfig {
            workers: 8,
            queue: 8,
            reject_queue: 8,
            reply_timeout: Duration::from_millis(500),
            per_connection: 2,
        };
        let h = start(pool, vec![]);
        let counters = h.counters.clone();
        // Six pipelined POSTs in one write; the core never answers.
        let mut all = Vec::new();
        for _ in 0..6 {
            all.extend(post("/whip/a", b"v=0\r\n", ""));
        }
        let all = String::from_utf8(all)
            .unwrap()
            .replace("Connection: close\r\n", "");
        let mut s = TcpStream::connect(h.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(all.as_bytes()).unwrap();
        // Read the six responses (all 503: two timed out, four capped).
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(5);
        while String::from_utf8_lossy(&got)
            .matches("HTTP/1.1 503")
            .count()
            < 6
            && Instant::now() < deadline
        {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&got);
        assert_eq!(text.matches("HTTP/1.1 503").count(), 6, "{text}");
        // Only two reached the core.
        let mut commands = 0;
        while h.core_rx.try_recv().is_ok() {
            commands += 1;
        }
        assert_eq!(commands, 2);
        assert_eq!(counters.count(503), 6);
    }

    #[test]
    fn responses_are_counted() {
        let h = start(default_pool(), vec![]);
        let counters = h.counters.clone();
        serve_core(h.core_rx);
        raw(h.addr, &post("/whip/r1", b"v=0\r\n", ""));
        raw(
            h.addr,
            b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert_eq!((counters.count(201), counters.count(404)), (1, 1));
    }

    #[test]
    fn log_paths_hide_tokens_and_queries() {
        assert_eq!(
            loggable_path(&format!("/whip/r/{TOKEN}?x=1")),
            "/whip/r/<token>"
        );
        assert_eq!(loggable_path("/api/rooms?token=secret"), "/api/rooms");
        assert_eq!(loggable_path(&"/x".repeat(200)).len(), 100);
    }
}
