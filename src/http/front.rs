//! The TCP front of the HTTP server: connection timeouts and a connection cap
//! that tiny_http 0.12 cannot provide (it has no read timeout and never
//! exposes its sockets).
//!
//! wisp binds the public TCP listener itself; tiny_http listens on a private
//! Unix socket in the Linux abstract namespace (nothing on the filesystem).
//! One thread (a non-blocking mio `Poll`) accepts TCP connections, opens a
//! Unix stream to tiny_http for each once the client has sent its first byte,
//! and copies bytes both ways through bounded buffers ([`BUFFER`]
//! per direction; a side is not read while its buffer is full).
//!
//! **Request heads (plain HTTP only).** tiny_http 0.12 cannot drop a request
//! whose declared body it has not read without allocating the whole declared
//! length (`EqualReader::drop`), so a `Content-Length: 1000000000000000`
//! would abort the process. The front therefore reads the client's byte
//! stream just enough to find each request head (up to `\r\n\r\n`, at most
//! [`HEAD_LIMIT`] bytes, else 431) and its body length, and forwards only
//! complete, acceptable heads and exactly `Content-Length` body bytes after
//! each (the next head follows). It answers itself, then closes:
//! - 413 when `Content-Length` exceeds [`FrontConfig::max_body`]
//!   ([`super::DEFAULT_BODY_LIMIT`], the limit of the HTTP workers);
//! - 400 for request smuggling shapes and heads tiny_http would misread:
//!   `Content-Length` together with
//!   `Transfer-Encoding`, two differing `Content-Length`s, a length that is
//!   not all digits, obs-fold (a header line starting with a space or tab),
//!   a bare CR or LF, a header line without `:` or with whitespace in the
//!   name, an empty request line.
//!
//! The front's own answer comes after the answers to the requests already
//! forwarded on that connection (the server's side is shut first and the
//! answer sent once the server closed); the client's further bytes are read
//! and discarded for up to [`LINGER`] after it, so that closing does not reset
//! the connection before the client reads the answer. With
//! `Transfer-Encoding` (chunked; no `Content-Length`) or `Connection: upgrade`,
//! the front stops inspecting that connection and passes every byte on
//! unchanged: tiny_http decodes chunked bodies and the workers cap what they
//! read, and an upgraded tiny_http connection parses no further requests.
//! Requests pipelined behind a chunked one are therefore covered only by the
//! workers' own guard (`super::server`: an over-cap length is leaked,
//! not dropped).
//!
//! **TLS** is passed through untouched: tiny_http runs it on whatever stream
//! it accepts, the front only sees ciphertext, so it cannot inspect heads
//! there. Over TLS an over-cap `Content-Length` still reaches tiny_http and is
//! handled as before by `super::server` (leaked: never answered, one
//! tiny_http thread and fd kept per such request, within the connection cap).
//!
//! Rules, checked every [`TICK`]:
//! - **Unanswered**: bytes from the client (or the connection itself, before
//!   any answer) not followed by any byte from the server for
//!   [`REQUEST_TIMEOUT`] → close. tiny_http and wisp answer only
//!   once a request is complete and the core answers within seconds, so this
//!   cuts slow headers, slow bodies, slow TLS handshakes and silent
//!   connections alike, while a server→client stream (the WHEP event stream)
//!   is never cut: its client sends nothing after the request.
//! - **Write stall**: response bytes waiting for the client and the client
//!   accepting none of them for [`REQUEST_TIMEOUT`] → close (slow reader).
//! - **Idle**: nothing in either direction for [`IDLE_TIMEOUT`]
//!   (keep-alive) → close; [`REQUEST_TIMEOUT`] once the server has finished
//!   its side.
//! - **Cap**: at most [`MAX_CONNECTIONS`] open; above it a new
//!   connection is closed at once (plain HTTP: after a minimal 503).
//!
//! - **Linger**: after the front's own answer, [`LINGER`] for the client to
//!   close → close.
//!
//! Half-close is forwarded once the buffer toward that side has drained. An
//! I/O error closes its own connection only; accept errors are retried.
//!
//! tiny_http sees a Unix peer: `Request::remote_addr()` is `None`, so the
//! client address is logged here (debug level, at accept).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::net::{TcpListener, TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token};

use crate::metrics::{CloseReason, HttpCounters};

use buf::{retry, Buf};
use rules::{Clock, Inspector};

mod buf;
mod rules;

/// How long client bytes may go unanswered (and a pending response unread).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may be silent in both directions.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Most TCP connections open at once.
pub const MAX_CONNECTIONS: usize = 512;
/// Bytes buffered per connection and direction.
pub const BUFFER: usize = 64 * 1024;
// A head must fit in the buffer to be seen whole.
const _: () = assert!(HEAD_LIMIT <= BUFFER);
/// How often the timers are checked.
pub const TICK: Duration = Duration::from_millis(250);
/// Longest request head (request line, headers and the blank line) on plain
/// HTTP; longer → 431.
pub const HEAD_LIMIT: usize = 16 * 1024;
/// How long the client's bytes are read and discarded after the front's own
/// answer before the connection is closed.
pub const LINGER: Duration = Duration::from_secs(2);

/// Sent to a plain-HTTP client refused over the cap.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
Content-Length: 0\r\nConnection: close\r\n\r\n";

/// Copy rounds for one connection before the others get a turn.
const ROUNDS: usize = 16;

const LISTENER: Token = Token(usize::MAX);

/// What the front needs to know of the server behind it.
#[derive(Debug, Clone)]
pub struct FrontConfig {
    /// Plain HTTP (not TLS): connections over the cap get a 503 before
    /// closing, and request heads are inspected (see the module docs).
    pub plain_http: bool,
    /// Largest `Content-Length` passed to the server (plain HTTP); above it
    /// the front answers 413. Match the workers' `HttpConfig::body_limit`.
    pub max_body: usize,
}

impl Default for FrontConfig {
    /// Plain HTTP, [`super::DEFAULT_BODY_LIMIT`].
    fn default() -> Self {
        FrontConfig {
            plain_http: true,
            max_body: super::DEFAULT_BODY_LIMIT,
        }
    }
}

/// The bound public listener and the private address tiny_http listens on.
#[derive(Debug)]
pub struct Front {
    listener: TcpListener,
    inner: UnixAddr,
    cfg: FrontConfig,
}

impl Front {
    /// Bind the public TCP listener on `addr` and a private Unix listener for
    /// tiny_http (abstract namespace, named after the pid and a random suffix).
    /// Hand the returned `UnixListener` to `tiny_http::Server::from_listener`.
    pub fn bind(addr: SocketAddr, cfg: FrontConfig) -> io::Result<(Front, UnixListener)> {
        let listener = TcpListener::bind(addr)?;
        // 64 random bits: another process's name never collides.
        let mut suffix = [0u8; 8];
        aws_lc_rs::rand::fill(&mut suffix).map_err(|_| io::Error::other("no random bytes"))?;
        let suffix = u64::from_le_bytes(suffix);
        let name = format!("wisp-http-{}-{suffix:016x}", std::process::id());
        let inner = UnixAddr::from_abstract_name(name.as_bytes())?;
        let unix = UnixListener::bind_addr(&inner)?;
        let front = Front {
            listener,
            inner,
            cfg,
        };
        Ok((front, unix))
    }

    /// The public address (with the port the OS chose for port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Run the front on a thread of its own; `counters` gets the connection
    /// counts (`/metrics`). The thread runs for the life of the process.
    pub fn spawn(self, counters: Arc<HttpCounters>) -> io::Result<JoinHandle<()>> {
        let poll = Poll::new()?;
        thread::Builder::new()
            .name("wisp-http-front".into())
            .spawn(move || {
                let mut state = State::new(self, poll, counters);
                if let Err(e) = state.run() {
                    // Only `Poll` itself failing ends up here.
                    log::error!("HTTP front failed, exiting so a supervisor can restart wisp: {e}");
                    std::process::exit(1);
                }
            })
    }
}

/// One proxied connection.
struct Conn {
    client: TcpStream,
    peer: SocketAddr,
    /// Connected when the client sends its first byte.
    inner: Option<UnixStream>,
    /// Client → server.
    up: Buf,
    /// Server → client.
    down: Buf,
    /// The client will send nothing more.
    client_eof: bool,
    /// The server will send nothing more.
    inner_eof: bool,
    /// The server's write side has been shut down (after `up` drained).
    up_shut: bool,
    /// The client's write side has been shut down (after `down` drained).
    down_shut: bool,
    /// When bytes last moved, for the timer rules.
    clock: Clock,
    /// Follows request heads in `up` (passes everything over TLS).
    inspector: Inspector,
    /// The front answers this request itself (then closes): the client's
    /// further bytes are discarded. Holds the answer and how much of it was
    /// written.
    answer: Option<(&'static [u8], usize)>,
}

/// Outcome of one round of copying.
enum Pump {
    /// Nothing more can move until the next readiness event.
    Idle,
    /// Round budget used up; bytes may still move.
    More,
    /// Close the connection.
    Close(CloseReason),
}

struct State {
    front: Front,
    poll: Poll,
    counters: Arc<HttpCounters>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Connections that used up their round budget.
    busy: Vec<usize>,
    /// Retry `accept` at this time after an error (e.g. out of fds).
    accept_retry: Option<Instant>,
    accept_errors: u64,
}

impl State {
    fn new(front: Front, poll: Poll, counters: Arc<HttpCounters>) -> State {
        State {
            front,
            poll,
            counters,
            conns: Vec::new(),
            free: Vec::new(),
            busy: Vec::new(),
            accept_retry: None,
            accept_errors: 0,
        }
    }

    fn run(&mut self) -> io::Result<()> {
        self.poll
            .registry()
            .register(&mut self.front.listener, LISTENER, Interest::READABLE)?;
        let mut events = Events::with_capacity(256);
        let mut next_tick = Instant::now() + TICK;
        loop {
            let now = Instant::now();
            let timeout = if self.busy.is_empty() {
                let mut t = next_tick.saturating_duration_since(now);
                if let Some(at) = self.accept_retry {
                    t = t.min(at.saturating_duration_since(now));
                }
                t
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut accept = self.accept_retry.is_some_and(|at| Instant::now() >= at);
            let mut ready = std::mem::take(&mut self.busy);
            for ev in events.iter() {
                if ev.token() == LISTENER {
                    accept = true;
                } else {
                    ready.push(ev.token().0 / 2);
                }
            }
            if accept {
                self.accept();
            }
            ready.sort_unstable();
            ready.dedup();
            for idx in ready {
                self.pump(idx);
            }
            let now = Instant::now();
            if now >= next_tick {
                next_tick = now + TICK;
                self.check_timers(now);
            }
        }
    }

    /// Accept until the backlog is empty.
    fn accept(&mut self) {
        self.accept_retry = None;
        loop {
            let (mut client, peer) = match self.front.listener.accept() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted) => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS…: the pending connection stays
                    // queued; try again shortly instead of spinning.
                    self.accept_errors += 1;
                    if self.accept_errors.is_power_of_two() {
                        warn!(
                            "HTTP accept failed ({} times so far): {e}",
                            self.accept_errors
                        );
                    }
                    self.accept_retry = Some(Instant::now() + Duration::from_millis(100));
                    return;
                }
            };
            let open = self.conns.len() - self.free.len();
            if open >= MAX_CONNECTIONS {
                self.counters.connections.record_rejected();
                debug!("HTTP connection from {peer} refused: {open} open");
                if self.front.cfg.plain_http {
                    // Take what already arrived, so that closing does not
                    // reset the connection before the client reads the 503.
                    let _ = client.read(&mut [0u8; 1024]);
                    let _ = client.write(BUSY);
                }
                let _ = client.shutdown(Shutdown::Both);
                continue;
            }
            let _ = client.set_nodelay(true);
            let idx = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            if let Err(e) = self.poll.registry().register(
                &mut client,
                Token(2 * idx),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                warn!("cannot register an HTTP connection: {e}");
                self.free.push(idx);
                continue;
            }
            debug!("HTTP connection {idx} from {peer}");
            let now = Instant::now();
            let cfg = &self.front.cfg;
            let inspector = if cfg.plain_http {
                Inspector::new(HEAD_LIMIT, cfg.max_body)
            } else {
                Inspector::pass()
            };
            self.conns[idx] = Some(Conn {
                client,
                peer,
                inner: None,
                up: Buf::new(BUFFER, true),
                down: Buf::new(BUFFER, false),
                client_eof: false,
                inner_eof: false,
                up_shut: false,
                down_shut: false,
                clock: Clock::new(now),
                inspector,
                answer: None,
            });
            self.counters.connections.record_accept();
            // Bytes may already be waiting (edge-triggered: no event for them).
            self.pump(idx);
        }
    }

    fn pump(&mut self, idx: usize) {
        let Some(Some(conn)) = self.conns.get_mut(idx) else {
            return;
        };
        match pump(conn, idx, &self.front.inner, &self.poll, &self.counters) {
            Pump::Idle => {}
            Pump::More => self.busy.push(idx),
            Pump::Close(reason) => self.close(idx, reason),
        }
    }

    fn check_timers(&mut self, now: Instant) {
        let mut expired = Vec::new();
        for (idx, conn) in self.conns.iter().enumerate() {
            let Some(c) = conn else { continue };
            if let Some(r) = c.clock.expired(now, !c.down.is_empty(), c.down_shut) {
                expired.push((idx, r));
            }
        }
        for (idx, reason) in expired {
            self.close(idx, reason);
        }
    }

    fn close(&mut self, idx: usize, reason: CloseReason) {
        let Some(mut c) = self.conns.get_mut(idx).and_then(Option::take) else {
            return;
        };
        let registry = self.poll.registry();
        let _ = registry.deregister(&mut c.client);
        let _ = c.client.shutdown(Shutdown::Both);
        if let Some(inner) = c.inner.as_mut() {
            let _ = registry.deregister(inner);
            let _ = inner.shutdown(Shutdown::Both);
        }
        if reason == CloseReason::Done {
            debug!("HTTP connection {idx} from {} closed", c.peer);
        } else {
            debug!(
                "HTTP connection {idx} from {} closed: {}",
                c.peer,
                reason.label()
            );
        }
        self.counters.connections.record_close(reason);
        self.free.push(idx);
    }
}

/// Move bytes both ways until nothing moves (or the round budget is used up).
fn pump(
    c: &mut Conn,
    idx: usize,
    inner_addr: &UnixAddr,
    poll: &Poll,
    counters: &HttpCounters,
) -> Pump {
    for _ in 0..ROUNDS {
        let mut moved = false;
        let now = Instant::now();

        if c.answer.is_some() {
            // Answered by the front: read and discard what the client sends.
            if !c.client_eof {
                match c.client.read(&mut [0u8; 4096]) {
                    Ok(0) => c.client_eof = true,
                    Ok(_) => moved = true,
                    Err(e) if retry(&e) => {}
                    Err(e) => {
                        debug!("HTTP connection {idx} from {}: read: {e}", c.peer);
                        return Pump::Close(CloseReason::Error);
                    }
                }
            }
        } else if !c.client_eof && !c.up.is_full() {
            // Client → buffer.
            match c.up.fill(&mut c.client) {
                Ok(Some(0)) => {
                    c.client_eof = true;
                    // An unfinished head is never forwarded.
                    c.up.discard_held();
                }
                Ok(Some(_)) => {
                    moved = true;
                    c.clock.last_activity = now;
                    c.clock.unanswered_since.get_or_insert(now);
                    let (forward, reject) = c.inspector.inspect(c.up.held());
                    c.up.release(forward);
                    if let Some(r) = reject {
                        debug!(
                            "HTTP connection {idx} from {}: {} -> {} (answered by the front)",
                            c.peer,
                            r.why(),
                            r.status()
                        );
                        counters.record(r.status());
                        c.up.discard_held();
                        c.answer = Some((r.answer(), 0));
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    debug!("HTTP connection {idx} from {}: read: {e}", c.peer);
                    return Pump::Close(CloseReason::Error);
                }
            }
        }
        // The server is reached once there is something to tell it.
        if c.inner.is_none() && c.up.has_ready() {
            match UnixStream::connect_addr(inner_addr) {
                Ok(mut s) => {
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if let Err(e) = poll
                        .registry()
                        .register(&mut s, Token(2 * idx + 1), interest)
                    {
                        warn!("cannot register the inner HTTP stream: {e}");
                        return Pump::Close(CloseReason::Error);
                    }
                    c.inner = Some(s);
                }
                Err(e) => {
                    warn!("cannot reach the HTTP server (for {}): {e}", c.peer);
                    return Pump::Close(CloseReason::Error);
                }
            }
        }
        if let Some(inner) = c.inner.as_mut() {
            // Buffer → server.
            if c.up.has_ready() {
                match c.up.drain(inner) {
                    Ok(Some(_)) => moved = true,
                    Ok(None) => {}
                    Err(e) => {
                        debug!("HTTP connection {idx}: write to the server: {e}");
                        return Pump::Close(CloseReason::Error);
                    }
                }
            }
            // Nothing more for the server: the client is done, or the front
            // answers the next request itself (after the server's answers).
            if (c.client_eof || c.answer.is_some()) && c.up.is_empty() && !c.up_shut {
                let _ = inner.shutdown(Shutdown::Write);
                c.up_shut = true;
            }
            // Server → buffer.
            if !c.inner_eof && !c.down.is_full() {
                match c.down.fill(inner) {
                    Ok(Some(0)) => c.inner_eof = true,
                    Ok(Some(_)) => {
                        moved = true;
                        c.clock.last_activity = now;
                        c.clock.unanswered_since = None;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        debug!("HTTP connection {idx}: read from the server: {e}");
                        return Pump::Close(CloseReason::Error);
                    }
                }
            }
        }
        // Buffer → client.
        if !c.down.is_empty() {
            match c.down.drain(&mut c.client) {
                Ok(Some(_)) => {
                    moved = true;
                    c.clock.last_down_progress = now;
                }
                Ok(None) => {}
                Err(e) => {
                    debug!("HTTP connection {idx} from {}: write: {e}", c.peer);
                    return Pump::Close(CloseReason::Error);
                }
            }
        } else {
            // Nothing pending: a stall can only start with the next bytes.
            c.clock.last_down_progress = now;
        }
        let server_done = c.inner.is_none() || c.inner_eof;
        // The front's own answer, once the server has answered everything
        // forwarded before it.
        if let Some((answer, written)) = c.answer.as_mut() {
            if server_done && c.down.is_empty() && *written < answer.len() {
                match c.client.write(&answer[*written..]) {
                    Ok(0) => return Pump::Close(CloseReason::Error),
                    Ok(n) => {
                        *written += n;
                        moved = true;
                        c.clock.last_activity = now;
                        c.clock.unanswered_since = None;
                        if *written == answer.len() {
                            c.clock.linger_until = Some(now + LINGER);
                        }
                    }
                    Err(e) if retry(&e) => {}
                    Err(e) => {
                        debug!("HTTP connection {idx} from {}: write: {e}", c.peer);
                        return Pump::Close(CloseReason::Error);
                    }
                }
            }
        }
        // Nothing more for the client: the server is done, or the front's
        // answer (written only once the server is done) went out.
        let down_finished = match c.answer {
            None => c.inner_eof,
            Some((answer, written)) => written == answer.len(),
        };
        if down_finished && c.down.is_empty() && !c.down_shut {
            let _ = c.client.shutdown(Shutdown::Write);
            c.down_shut = true;
        }
        // Done: both directions finished, or the client left before the
        // server was ever reached; after the front's answer, once the client
        // has closed.
        let done = if c.answer.is_some() {
            c.down_shut && c.client_eof
        } else {
            (c.up_shut && c.down_shut) || (c.client_eof && c.inner.is_none())
        };
        if done {
            return Pump::Close(CloseReason::Done);
        }
        if !moved {
            return Pump::Idle;
        }
    }
    Pump::More
}

#[cfg(test)]
mod tests {
    use super::rules::tests::post;
    use super::rules::{ANSWER_400, ANSWER_413};
    use super::*;
    use std::io::{Read, Write};

    /// A front on a free port with a fake server that reads one connection
    /// to its end, then answers `reply` and closes. Returns the public
    /// address and what the server received (once it has).
    fn front_with_server(reply: &'static [u8]) -> (SocketAddr, std::sync::mpsc::Receiver<Vec<u8>>) {
        let cfg = FrontConfig::default();
        let (front, unix) = Front::bind("127.0.0.1:0".parse().unwrap(), cfg).unwrap();
        let addr = front.local_addr().unwrap();
        front.spawn(Arc::new(HttpCounters::default())).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let (mut s, _) = unix.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            s.write_all(reply).unwrap();
            let _ = tx.send(got);
        });
        (addr, rx)
    }

    fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(bytes).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn front_answers_after_earlier_responses_and_forwards_only_good_requests() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let (addr, rx) = front_with_server(ok);
        let good = post("2", b"ok");
        let mut s = good.clone();
        s.extend_from_slice(&post("1000000000000000", b"v=0\r\n"));
        let text = exchange(addr, &s);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.ends_with(std::str::from_utf8(ANSWER_413).unwrap()),
            "{text}"
        );
        let got = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(got, good);
    }

    #[test]
    fn front_answers_a_first_bad_request_without_the_server() {
        let (addr, rx) = front_with_server(b"");
        let text = exchange(addr, &post("1000000000000000", b"v=0\r\n"));
        assert_eq!(text.as_bytes(), ANSWER_413);
        let text = exchange(
            addr,
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        );
        assert_eq!(text.as_bytes(), ANSWER_400);
        // The server was never reached.
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    }
}
